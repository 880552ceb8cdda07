"""Passes over the rows of a matrix in blocks: in memory or from an ``.h5ad`` file, serially or on Dask.

Every pass of the pipeline over cells (preprocessing statistics, the scatter
matrix ``C = X^T X``, the embedding, writing the preprocessed matrix) is a
function ``fn(block, start) -> (sums, rows)`` run by :func:`run_pass`:
``sums`` (a dict of arrays) are added over blocks, ``rows`` (a dict of
per-row arrays) are concatenated in row order. Blocks are the same and are
added in row order on every back end, so a Dask run differs from a serial
one only by the rounding of each block's products (workers run one BLAS
thread each). Memory beyond the results is one block (or, on Dask, two
blocks per worker in flight).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from rlae_sc import checkpoint as checkpoint_file
from rlae_sc.errors import InputError
from rlae_sc.progress import progress

log = logging.getLogger("rlae_sc")

CHUNK_SIZE = 16384  # rows per block: 128 MiB of a dense float32 block at 2,000 genes
BLOCK_RETRIES = 3  # times a Dask pass resubmits a block the scheduler gave up on (KilledWorker)

Block = np.ndarray | sp.csr_matrix
PassFn = Callable[[Block, int], tuple[dict, dict]]


@dataclass(frozen=True)
class InMemory:
    """Rows of an array or CSR matrix held in memory (serial passes only)."""

    array: object

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape

    def read(self, start: int, stop: int) -> Block:
        return self.array[start:stop]

    def fingerprint(self) -> str:
        raise ValueError("passes over a matrix in memory cannot be checkpointed: give an H5adMatrix")


@dataclass(frozen=True)
class H5adMatrix:
    """Rows of the matrix stored at ``key`` (``"X"`` or ``"layers/<name>"``) in an ``.h5ad`` file.

    Only the requested rows are read (dense datasets and CSR groups); the
    object is small and picklable, so Dask workers open the file themselves.
    """

    path: str
    key: str = "X"

    @property
    def shape(self) -> tuple[int, int]:
        with h5py.File(self.path, "r") as f:
            elem = f[self.key]
            return tuple(int(v) for v in (elem.shape if isinstance(elem, h5py.Dataset) else elem.attrs["shape"]))

    def fingerprint(self) -> str:
        """Path, key, size and modification time: a checkpoint of a pass over another file is not resumed."""
        st = os.stat(self.path)
        return f"{os.path.abspath(self.path)}:{self.key}:{st.st_size}:{st.st_mtime_ns}"

    def read(self, start: int, stop: int) -> Block:
        with h5py.File(self.path, "r") as f:
            elem = f[self.key]
            if isinstance(elem, h5py.Dataset):
                return elem[start:stop]
            if elem.attrs.get("encoding-type") != "csr_matrix":
                raise InputError(
                    self.path,
                    f"{self.key} is stored as {elem.attrs.get('encoding-type')}, and only CSR or dense rows can be "
                    "streamed",
                    "Rewrite the file with cells as CSR rows (adata.X = scipy.sparse.csr_matrix(adata.X)).",
                )
            lo, hi = (int(v) for v in elem["indptr"][[start, stop]])
            indptr = elem["indptr"][start : stop + 1] - lo
            n_genes = int(elem.attrs["shape"][1])
            return sp.csr_matrix((elem["data"][lo:hi], elem["indices"][lo:hi], indptr), shape=(stop - start, n_genes))


def h5ad_matrix(path: str, layer: str | None = None) -> H5adMatrix:
    """The matrix of an ``.h5ad`` file (``X``, or ``layer``), checked to exist, for streaming passes."""
    key = "X" if layer is None else f"layers/{layer}"
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise InputError(path, f"has no matrix at {key!r}", "Store the counts in X or name an existing layer.")
    except OSError as exc:
        raise InputError(path, f"cannot be opened as HDF5 ({exc})", "Re-export the .h5ad file.") from None
    return H5adMatrix(str(path), key)


def matrix_of(adata) -> InMemory | H5adMatrix:
    """The rows of ``adata.X``: read from its file when ``adata`` is backed, else from memory."""
    if adata.isbacked:
        return H5adMatrix(str(adata.filename), "X")
    return InMemory(adata.X)


def run_pass(
    matrix: InMemory | H5adMatrix,
    fn: PassFn,
    *,
    chunk_size: int = CHUNK_SIZE,
    client=None,
    desc: str = "pass",
    consume: Callable[[int, dict], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = 30.0,
    no_workers_seconds: float = 300.0,
) -> tuple[dict, dict]:
    """Run ``fn`` over row blocks of ``matrix``; returns ``(sums, rows)``.

    Parameters
    ----------
    matrix
        Rows to visit (:class:`InMemory` or :class:`H5adMatrix`).
    fn
        ``fn(block, start) -> (sums, rows)`` for the block of rows
        ``start:start + len(block)``; a module-level function or a
        :func:`functools.partial` of one when ``client`` is given.
    chunk_size
        Rows per block.
    client
        A ``dask.distributed.Client``: blocks are computed on its workers
        (at most two per worker in flight) and combined here in row order.
        A block whose worker dies is computed again on another: by the
        scheduler itself, and, when the scheduler gives up on it
        (``KilledWorker``, after its ``allowed-failures``), resubmitted here,
        up to :data:`BLOCK_RETRIES` times. ``None``: serially in this process.
    consume
        When given, each block's ``rows`` are handed to ``consume(start, rows)``
        in row order instead of being kept (for outputs larger than memory).
    checkpoint, checkpoint_seconds
        A file (``.npz``) where the sums and rows so far are saved, atomically,
        every ``checkpoint_seconds``; a pass started again with the same
        file, matrix (path, size, modification time), block size and
        function resumes after the last saved block and gives the same
        result as an uninterrupted one. Not with ``consume``; the caller
        removes the file once the result is safe.
    no_workers_seconds
        On Dask: how long to wait while the cluster has no worker at all;
        then the pass saves its checkpoint and stops with :class:`WorkersLost`,
        so that running it again (with new workers) resumes there.
    """
    n = matrix.shape[0]
    starts = list(range(0, n, chunk_size))
    totals: dict = {}
    kept: list[dict] = []
    saved_at = time.monotonic()
    if checkpoint is not None:
        if consume is not None:
            raise ValueError("a pass that hands its rows to consume cannot be checkpointed")
        signature = f"{matrix.fingerprint()}|{chunk_size}|{_describe(fn)}"
        state = checkpoint_file.load(checkpoint, signature)
        if state is not None:
            done = int(state.pop("next_block"))
            starts = starts[done:]
            totals = {key[5:]: val for key, val in state.items() if key.startswith("sums/")}
            kept = [{key[5:]: val for key, val in state.items() if key.startswith("rows/")}]

    def save(next_block: int) -> None:
        nonlocal saved_at
        so_far = _concat(kept)
        kept[:] = [so_far]
        arrays = {
            "next_block": np.array(next_block),
            **{f"sums/{key}": np.asarray(val) for key, val in totals.items()},
            **{f"rows/{key}": val for key, val in so_far.items()},
        }
        checkpoint_file.save(checkpoint, signature, arrays)
        saved_at = time.monotonic()

    def take(start: int, result: tuple[dict, dict]) -> None:
        sums, rows = result
        for key, val in sums.items():
            if key in totals:
                totals[key] += val  # in place for arrays
            else:
                totals[key] = np.array(val)  # a copy: the pass owns its totals
        if consume is not None:
            consume(start, rows)
        elif rows:
            kept.append(rows)
        if checkpoint is not None and time.monotonic() - saved_at >= checkpoint_seconds:
            save(start // chunk_size + 1)

    with progress(total=n, initial=n - sum(min(chunk_size, n - s) for s in starts), desc=desc) as bar:
        if client is None:
            for start in starts:
                stop = min(start + chunk_size, n)
                take(start, fn(matrix.read(start, stop), start))
                bar.update(stop - start)
        else:
            if isinstance(matrix, InMemory):
                raise ValueError("Dask passes read their blocks from a file: give an H5adMatrix")
            from distributed import KilledWorker

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
                    if checkpoint is not None:
                        save(start // chunk_size)
                    resume = f"; run it again to resume from {checkpoint}" if checkpoint is not None else ""
                    raise WorkersLost(f"{desc} over {matrix.path}: rows {start}-{stop} lost ({exc}){resume}") from exc
                pending.popleft()
                take(start, result)
                bar.update(stop - start)
                nxt = next(queue, None)
                if nxt is not None:
                    pending.append((nxt, submit(nxt), 0))
    return totals, _concat(kept)


class WorkersLost(RuntimeError):
    """A Dask pass stopped because its workers were lost (its checkpoint, if any, is saved)."""


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


def _concat(kept: list[dict]) -> dict:
    """Per-row results of successive blocks, concatenated key by key."""
    kept = [r for r in kept if r]
    return {key: np.concatenate([r[key] for r in kept]) for key in (kept[0] if kept else {})}


def _describe(fn: PassFn) -> str:
    """A pass function's name and scalar parameters (array parameters are covered by the caller's file name)."""
    func, kw = getattr(fn, "func", fn), getattr(fn, "keywords", {})
    scalars = {key: val for key, val in sorted(kw.items()) if isinstance(val, str | int | float | bool)}
    return f"{func.__module__}.{func.__qualname__}{scalars}"


def _block(matrix: H5adMatrix, fn: PassFn, start: int, stop: int) -> tuple[dict, dict]:
    return fn(matrix.read(start, stop), start)


ONE_BLAS_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


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
