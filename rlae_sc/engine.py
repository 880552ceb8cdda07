"""The pass engine: a function run over the rows of a matrix in blocks, serially or on Dask, with checkpoints.

Every pass of the pipeline over cells (preprocessing statistics, the scatter
matrix ``C = X^T X``, the embedding, writing the preprocessed matrix) is a
function ``fn(block, start) -> (sums, rows)`` run by :func:`run_pass` over
:class:`~rlae_sc.rows.Rows`: ``sums`` (a dict of arrays) are added over blocks,
``rows`` (a dict of per-row arrays) are concatenated in row order. An executor
computes the blocks and hands back their results in row order (:func:`serial`
in this process, :func:`rlae_sc.dask_engine.on_dask` on Dask workers);
:func:`run_pass` adds them up (:class:`Totals`) and saves its progress
(:class:`rlae_sc.checkpoint.PassCheckpoint`). Blocks are the same and are added
in row order on every back end, so a Dask run differs from a serial one only by
the rounding of each block's products (workers run one BLAS thread each).
Memory beyond the results is one block (or, on Dask, two blocks per worker in
flight).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from rlae_sc.checkpoint import PassCheckpoint
from rlae_sc.dask_engine import WorkersLost, on_dask
from rlae_sc.progress import progress
from rlae_sc.rows import Block, Rows
from rlae_sc.settings import settings

PassFn = Callable[[Block, int], tuple[dict, dict]]


def run_pass(
    matrix: Rows,
    fn: PassFn,
    *,
    chunk_size: int | None = None,
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
        Rows to visit (:class:`~rlae_sc.rows.Rows`).
    fn
        ``fn(block, start) -> (sums, rows)`` for the block of rows
        ``start:start + len(block)``; a module-level function or a
        :func:`functools.partial` of one when ``client`` is given.
    chunk_size
        Rows per block; ``None``: ``rl.settings.block_size`` (:class:`~rlae_sc.settings.Settings`).
    client
        A ``dask.distributed.Client``: blocks are computed on its workers
        (:func:`~rlae_sc.dask_engine.on_dask`: at most two per worker in
        flight; a block whose worker dies is computed again) and combined
        here in row order. ``None``: serially in this process (:func:`serial`).
    consume
        When given, each block's ``rows`` are handed to ``consume(start, rows)``
        in row order instead of being kept (for outputs larger than memory).
    checkpoint, checkpoint_seconds
        A file (``.npz``) where the sums and rows so far are saved, atomically,
        every ``checkpoint_seconds`` (:class:`~rlae_sc.checkpoint.PassCheckpoint`);
        a pass started again with the same file, matrix (path, size,
        modification time), block size and function resumes after the last
        saved block and gives the same result as an uninterrupted one. Not
        with ``consume``; the caller removes the file once the result is safe.
    no_workers_seconds
        On Dask: how long to wait while the cluster has no worker at all;
        then the pass saves its checkpoint and stops with
        :class:`~rlae_sc.dask_engine.WorkersLost`, so that running it again
        (with new workers) resumes there.
    """
    chunk_size = settings.block_size if chunk_size is None else chunk_size
    n = matrix.shape[0]
    totals, next_block, saved = Totals(consume), 0, None
    if checkpoint is not None:
        if consume is not None:
            raise ValueError("a pass that hands its rows to consume cannot be checkpointed")
        saved = PassCheckpoint(checkpoint, f"{matrix.fingerprint()}|{chunk_size}|{_describe(fn)}", checkpoint_seconds)
        state = saved.load()
        if state is not None:
            next_block, sums, rows = state
            totals = Totals(sums=sums, rows=rows)
    starts = list(range(next_block * chunk_size, n, chunk_size))
    if client is None:
        blocks = serial(matrix, fn, starts, chunk_size)
    else:
        blocks = on_dask(client, matrix, fn, starts, chunk_size, desc=desc, no_workers_seconds=no_workers_seconds)
    with progress(total=n, initial=min(n, next_block * chunk_size), desc=desc) as bar:
        try:
            for start, stop, result in blocks:
                totals.add(start, result)
                next_block += 1
                if saved is not None and saved.due():
                    saved.save(next_block, totals.sums, totals.rows())
                bar.update(stop - start)
        except WorkersLost as exc:
            if saved is None:
                raise
            saved.save(next_block, totals.sums, totals.rows())
            raise WorkersLost(f"{exc}; run it again to resume from {checkpoint}") from exc.__cause__
    return totals.sums, totals.rows()


def serial(matrix: Rows, fn: PassFn, starts: list[int], chunk_size: int) -> Iterator[tuple[int, int, tuple]]:
    """The serial executor: ``(start, stop, fn(block, start))`` for the blocks that begin at ``starts``, computed
    one after another in this process."""
    n = matrix.shape[0]
    for start in starts:
        stop = min(start + chunk_size, n)
        yield start, stop, fn(matrix.read(start, stop), start)


class Totals:
    """What a pass has gathered from its blocks so far: ``sums``, added over blocks, and the per-row results,
    kept in row order (or handed to ``consume``); ``sums`` and ``rows`` of a resumed pass start from its
    checkpoint."""

    def __init__(self, consume: Callable[[int, dict], None] | None = None, *, sums=None, rows=None):
        self.consume = consume
        self.sums: dict = {} if sums is None else sums
        self.kept: list[dict] = [] if rows is None else [rows]

    def add(self, start: int, result: tuple[dict, dict]) -> None:
        """Add the result ``(sums, rows)`` of the block that begins at row ``start``."""
        sums, rows = result
        for key, val in sums.items():
            if key in self.sums:
                self.sums[key] += val  # in place for arrays
            else:
                self.sums[key] = np.array(val)  # a copy: the pass owns its totals
        if self.consume is not None:
            self.consume(start, rows)
        elif rows:
            self.kept.append(rows)

    def rows(self) -> dict:
        """The per-row results so far, concatenated key by key (and kept so)."""
        kept = [r for r in self.kept if r]
        so_far = {key: np.concatenate([r[key] for r in kept]) for key in (kept[0] if kept else {})}
        self.kept = [so_far]
        return so_far


def _describe(fn: PassFn) -> str:
    """A pass function's name and scalar parameters (array parameters are covered by the caller's file name)."""
    func, kw = getattr(fn, "func", fn), getattr(fn, "keywords", {})
    scalars = {key: val for key, val in sorted(kw.items()) if isinstance(val, str | int | float | bool)}
    return f"{func.__module__}.{func.__qualname__}{scalars}"
