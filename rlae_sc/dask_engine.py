"""Passes on Dask: the executor that computes a pass's blocks on Dask workers, and the clients it runs on.

:func:`on_dask` is the Dask executor of :func:`rlae_sc.engine.run_pass`; :func:`dask_client` starts a client
from a specification (local worker processes, a scheduler's address, or SLURM jobs through dask-jobqueue). Dask
itself is imported only when a client is started or a pass runs on one.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from rlae_sc.errors import InputError
from rlae_sc.rows import InMemory, Rows

log = logging.getLogger("rlae_sc")

BLOCK_RETRIES = 3  # times a Dask pass resubmits a block the scheduler gave up on (KilledWorker)
ONE_BLAS_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class WorkersLost(RuntimeError):
    """A Dask pass stopped because its workers were lost (its checkpoint, if any, is saved)."""


def on_dask(
    client, matrix: Rows, fn, starts: list[int], chunk_size: int, *, desc: str, no_workers_seconds: float
) -> Iterator[tuple[int, int, tuple]]:
    """The Dask executor: ``(start, stop, fn(block, start))`` for the blocks that begin at ``starts``, computed
    on the workers of ``client`` and handed back in row order.

    At most two blocks per worker are in flight; each worker reads its block itself (``matrix`` is pickled to
    it). A block whose worker dies is computed again on another: by the scheduler itself, and, when the
    scheduler gives up on it (``KilledWorker``, after its ``allowed-failures``), resubmitted here, up to
    :data:`BLOCK_RETRIES` times. While the cluster has no worker at all for ``no_workers_seconds``, or once a
    block is lost for good, :class:`WorkersLost` names the rows reached.
    """
    if isinstance(matrix, InMemory):
        raise ValueError("Dask passes read their blocks from a file: give an H5adMatrix")
    from distributed import KilledWorker

    n = matrix.shape[0]
    window = 2 * max(1, len(client.scheduler_info()["workers"]))

    def submit(start: int):
        return client.submit(_block, matrix, fn, start, min(start + chunk_size, n), pure=False)

    pending = deque((start, submit(start), 0) for start in starts[:window])
    queue = iter(starts[window:])
    while pending:
        start, future, retries = pending[0]
        stop = min(start + chunk_size, n)
        try:
            result = _result(client, future, no_workers_seconds)
        except (KilledWorker, WorkersLost) as exc:
            if isinstance(exc, KilledWorker) and retries < BLOCK_RETRIES:
                log.warning("rows %d-%d lost with their worker (%s); computing them again", start, stop, exc)
                pending[0] = (start, submit(start), retries + 1)
                continue
            source = getattr(matrix, "path", type(matrix).__name__)
            raise WorkersLost(f"{desc} over {source}: rows {start}-{stop} lost ({exc})") from exc
        pending.popleft()
        yield start, stop, result
        nxt = next(queue, None)
        if nxt is not None:
            pending.append((nxt, submit(nxt), 0))


def _result(client, future, no_workers_seconds: float) -> tuple[dict, dict]:
    """``future.result()``, waiting as long as the cluster has workers; :class:`WorkersLost` once it has had
    none for ``no_workers_seconds``."""
    alone_since = None
    while True:
        try:
            return future.result(timeout=2)
        except TimeoutError:
            if client.scheduler_info()["workers"]:
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - alone_since > no_workers_seconds:
                raise WorkersLost(f"no Dask worker for {no_workers_seconds:.0f} s") from None


def _block(matrix: Rows, fn, start: int, stop: int) -> tuple[dict, dict]:
    """One block's result, on a worker (the tasks' keys begin ``_block-``)."""
    return fn(matrix.read(start, stop), start)


@contextmanager
def dask_client(spec: str | int | None):
    """A Dask client for ``spec``.

    Parameters
    ----------
    spec
        ``None`` (no Dask: yields None); a number of local worker processes
        (a ``LocalCluster`` started and stopped here, one thread each); the
        address of a running scheduler (``tcp://host:port``); or
        ``slurm:JOBS``: a ``dask_jobqueue.SLURMCluster`` of ``JOBS`` SLURM
        jobs, started and stopped here, configured by Dask's own configuration
        (the ``jobqueue.slurm`` section of ``~/.config/dask/jobqueue.yaml`` or
        ``DASK_JOBQUEUE__SLURM__*`` variables: account, queue, cores, memory,
        walltime, interface). Needs ``pip install dask-jobqueue``.
    """
    if spec in (None, "", 0, "0"):
        yield None
        return
    from dask.distributed import Client, LocalCluster  # imported here: starting Python stays fast

    spec = str(spec)
    if spec.isdigit():
        with (
            _environ(ONE_BLAS_THREAD),
            LocalCluster(n_workers=int(spec), threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            yield client
    elif spec.startswith("slurm:"):
        with _slurm_cluster(spec) as cluster, Client(cluster) as client:
            client.wait_for_workers(1)  # the jobs may queue; passes start once one worker is there
            yield client
    else:
        with Client(spec) as client:
            yield client


def _slurm_cluster(spec: str):
    """The ``dask_jobqueue.SLURMCluster`` of ``slurm:JOBS``, scaled to ``JOBS`` jobs of one-BLAS-thread workers."""
    jobs = spec.removeprefix("slurm:")
    if not jobs.isdigit() or int(jobs) < 1:
        raise InputError("dask", f"{spec!r} is not slurm:JOBS", "Give a number of SLURM jobs, as in slurm:4.")
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise InputError(
            "dask",
            f"{spec!r} starts Dask workers as SLURM jobs with dask-jobqueue, which is not installed",
            "pip install dask-jobqueue, or give the address of a running scheduler (tcp://host:port).",
        ) from None
    import dask

    prologue = dask.config.get("jobqueue.slurm.job-script-prologue", None) or []
    cluster = SLURMCluster(job_script_prologue=[*prologue, *(f"export {k}={v}" for k, v in ONE_BLAS_THREAD.items())])
    cluster.scale(jobs=int(jobs))
    return cluster


@contextmanager
def _environ(values: dict[str, str]):
    """Set environment variables for worker processes started inside the block."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, val in old.items():
            if val is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = val
