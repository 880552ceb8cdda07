"""The matrix products of the passes over the preprocessed matrix: the centred scatter matrix and the scores.

The matrix may be in memory or in an ``.h5ad`` file read block by block,
serially or on Dask (through :func:`rlae_sc.engine.run_pass`); each block's
products run by numpy on the CPU and by torch on a CUDA device. Rows scaled by an affine map of
sparse values (:class:`rlae_sc.affine.AffineRows`, the recipe's centring and scaling without clipping) are
multiplied on the CPU as sparse blocks instead, the map applied outside the products.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from rlae_sc.affine import AffineBlock, AffineRows, affine_scatter, affine_scores, affine_sums
from rlae_sc.engine import run_pass
from rlae_sc.params import TrainParams
from rlae_sc.progress import progress
from rlae_sc.rows import InMemory, as_rows
from rlae_sc.settings import settings

IN_MEMORY_BLOCK = 1 << 17  # rows per product for an in-memory array of the product's dtype (131,072)
# the densest block (stored values / entries) whose scatter is computed from sparse products: the sparse Gram
# kernel (rlae_sc.gram) costs about nnz^2 / 2 per row against BLAS's m^2 / 2 for the densified row; measured on
# 2 cores, float32, 12,000 rows: at m = 1,287 it matched BLAS at about 24% (0.13 s against 0.21 s at 22%, 0.29 s
# against 0.20 s at 27%), and at m = 2,000 and 9% it took 0.19 s against 0.40 s; a denser block is scaled densely
# (AffineBlock.toarray) instead
SPARSE_DENSITY = 0.2
STAGING_ROWS = 1 << 14  # rows per block copied to a CUDA device (16,384; pinned host buffers of 128 MiB at m = 2,000)


def torch_device(device: str | torch.device = TrainParams.device) -> torch.device:
    """The torch device named by ``device``: ``"auto"`` is the session's, ``rl.settings.device``
    (:class:`~rlae_sc.settings.Settings`), whose own ``"auto"`` is CUDA when available, else the CPU."""
    if device == "auto":
        device = settings.device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def scatter_matrix(
    X,
    *,
    precision: str = "float64",
    chunk_size: int | None = None,
    client=None,
    checkpoint=None,
    device: str | torch.device = TrainParams.device,
) -> np.ndarray:
    """Centred scatter ``C = (X - 1 mu^T)^T (X - 1 mu^T)`` (m x m, float64 numpy on the host, sum over cells).

    One pass over the rows of ``X`` (n x m: an array, or rows to read such as
    :class:`~rlae_sc.rows.Rows` such as :class:`~rlae_sc.rows.InMemory`, :class:`~rlae_sc.rows.H5adMatrix` or
    :class:`rlae_sc.preprocess.ScaledRows`) in blocks; memory beyond ``C`` is one block. Each
    block's product ``block^T block`` and column sums are computed in
    ``precision`` (:func:`_block_products`) and accumulated in float64 (blocks of ``chunk_size`` rows, by default
    ``rl.settings.block_size``; of
    ``IN_MEMORY_BLOCK`` rows for an in-memory array already in ``precision``,
    whose blocks are views): ``"float64"`` is exact to
    rounding; ``"float32"`` is about twice as fast, with relative errors of
    about 1e-6 in the entries of ``C``. ``device`` (see :func:`torch_device`): where the products run
    and ``C`` accumulates; blocks are read on the host and copied there (through pinned memory on
    CUDA). Rows that have a sparse form (a ``sparse`` attribute, :class:`AffineRows`) are read as sparse
    blocks when the products run on the CPU; a block at most :data:`SPARSE_DENSITY` full is multiplied sparse
    in ``precision`` by :func:`~rlae_sc.affine.affine_sums` (its sums turned into ``C`` once by
    :func:`~rlae_sc.affine.affine_scatter`), a denser one densely as above. ``client``: run on
    Dask, the blocks' products on the workers' CPUs; ``checkpoint``:
    save progress there and resume from it (see :func:`rlae_sc.engine.run_pass`; each block's
    products then return to the host).
    """
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be float32 or float64, got {precision!r}")
    chunk_size = settings.block_size if chunk_size is None else chunk_size
    matrix = as_rows(X)
    if isinstance(matrix, InMemory) and isinstance(matrix.array, np.ndarray) and matrix.array.dtype == precision:
        chunk_size = max(chunk_size, IN_MEMORY_BLOCK)  # blocks are views here: fewer, larger products
    dev = torch.device("cpu") if client is not None else torch_device(device)
    matrix = _sparse_form(matrix, dev)
    if client is None and checkpoint is None and not isinstance(matrix, AffineRows):
        C, total, n = scatter_on_device(matrix, precision=precision, chunk_size=chunk_size, device=dev)
    else:
        fn = partial(scatter_block, precision=precision, device=str(dev))
        sums, _ = run_pass(matrix, fn, chunk_size=chunk_size, client=client, desc="scatter pass", checkpoint=checkpoint)
        C, total, n = sums.get("C"), sums["sum"], sums["n"]
        if "gram" in sums:  # blocks multiplied sparse (affine_sums), the others densely
            sparse_part = affine_scatter(sums["gram"], sums["cross"], matrix.shift)
            C = sparse_part if C is None else np.add(C, sparse_part, out=C)
    mu = total / n
    C -= n * np.outer(mu, mu)
    return C


def _sparse_form(matrix, device: torch.device):
    """``matrix.sparse`` (:class:`~rlae_sc.affine.AffineRows`) where the matrix has one and the products run on
    the CPU, else ``matrix``."""
    sparse = getattr(matrix, "sparse", None) if device.type == "cpu" else None
    return matrix if sparse is None else sparse


def _dense(block, dtype: str) -> np.ndarray:
    """A block (rows x m, dense, CSR or :class:`AffineBlock`) as a dense numpy array of ``dtype`` (a view when
    it already is one)."""
    return np.asarray(block.toarray() if hasattr(block, "toarray") else block, dtype=dtype)


def _block_products(B: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
    """``B^T B`` (m x m) and the column sums ``1^T B`` (m,) of a block ``B`` (rows x m), in float64.

    A numpy block (the CPU) by numpy: BLAS's symmetric rank-k update for ``B^T B`` (half the multiply-adds of a
    general product, and sums that do not depend on the number of threads) and numpy's pairwise column sums. A
    torch tensor by torch on its device in its precision (float64 tensors there).
    """
    if isinstance(B, np.ndarray):
        return (B.T @ B).astype(np.float64), B.sum(axis=0, dtype=np.float64)
    ones = torch.ones(B.shape[0], dtype=B.dtype, device=B.device)
    return (B.T @ B).double(), (ones @ B).double()


def scatter_block(block, start: int, *, precision: str, device: str = "cpu") -> tuple[dict, dict]:
    """One block's products for :func:`rlae_sc.engine.run_pass`: ``C``, the uncentred ``B^T B`` (m x m), ``sum``,
    the column sums (m,), both float64 numpy on the host, and ``n``, the block's rows; ``B`` (rows x m, dense
    or CSR) is multiplied in ``precision`` on ``device``. An :class:`AffineBlock` at most
    :data:`SPARSE_DENSITY` full gives :func:`~rlae_sc.affine.affine_sums`'s sums instead of ``C``, on as many
    threads as torch uses (``rl.settings.threads``; one on a Dask worker)."""
    if isinstance(block, AffineBlock) and block.density <= SPARSE_DENSITY:
        return affine_sums(block, precision=precision, threads=torch.get_num_threads()), {}
    B = _dense(block, precision)
    if device == "cpu":
        BtB, total = _block_products(B)
    else:
        BtB, total = (t.cpu().numpy() for t in _block_products(torch.from_numpy(B).to(device)))
    return {"C": BtB, "sum": total, "n": block.shape[0]}, {}


def scatter_on_device(
    matrix, *, precision: str, chunk_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray, int]:
    """Uncentred ``X^T X`` (m x m), column sums (m,) (float64, returned on the host) and n, accumulated on ``device``.

    Serial. On the CPU, numpy multiplies and sums (see :func:`_block_products`). On CUDA, blocks have at most
    ``STAGING_ROWS`` rows; each is copied into one of two pinned host buffers and from there to the device
    without waiting, so reading and copying the next block overlaps the device's copy and product of this one.
    """
    n, m = matrix.shape
    dtype = getattr(torch, precision)
    cuda = device.type == "cuda"
    C = torch.zeros(m, m, dtype=torch.float64, device=device) if cuda else np.zeros((m, m))
    total = torch.zeros(m, dtype=torch.float64, device=device) if cuda else np.zeros(m)
    if cuda:
        chunk_size = min(chunk_size, STAGING_ROWS)
    staging = [torch.empty(min(chunk_size, n), m, dtype=dtype, pin_memory=True) for _ in range(2)] if cuda else []
    copied: list = [None, None]  # the event after each staging buffer's last copy to the device
    with progress(total=n, desc="scatter pass") as bar:
        for i, start in enumerate(range(0, n, chunk_size)):
            B = _dense(matrix.read(start, min(n, start + chunk_size)), precision)
            if cuda:
                if copied[i % 2] is not None:
                    copied[i % 2].synchronize()
                buffer = staging[i % 2][: B.shape[0]]
                buffer.copy_(torch.from_numpy(B))
                B = buffer.to(device, non_blocking=True)
                copied[i % 2] = torch.cuda.Event()
                copied[i % 2].record()
            BtB, sums = _block_products(B)
            C += BtB
            total += sums
            bar.update(B.shape[0])
    return (C.cpu().numpy(), total.cpu().numpy(), n) if cuda else (C, total, n)


def scores(
    X,
    P: np.ndarray,
    *,
    residuals: bool = False,
    chunk_size: int | None = None,
    client=None,
    device: str = TrainParams.device,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``X P`` (n x k, float32 numpy on the host) for ``X`` (n x m; as in :func:`scatter_matrix`) and
    directions ``P`` (m x k), in blocks of ``chunk_size`` rows (``None``: ``rl.settings.block_size``); the
    products in float64 on ``device`` (see :func:`torch_device`; the workers' CPUs with a Dask ``client``).

    With ``residuals``, also each row's squared distance from the span of ``P`` (n,, float64, units of
    ``X`` squared), ``|x|^2 - |x P|^2`` for orthonormal ``P``, from the same pass: returns ``(scores,
    residual_sq)``.
    """
    dev = "cpu" if client is not None else str(torch_device(device))
    matrix = _sparse_form(as_rows(X), torch.device(dev))
    fn = partial(scores_block, P=np.asarray(P, dtype=np.float64), device=dev, residuals=residuals)
    n = matrix.shape[0]
    out = {"scores": np.empty((n, P.shape[1]), dtype=np.float32)}
    if residuals:
        out["residual_sq"] = np.empty(n)

    def keep(start: int, rows: dict) -> None:  # each block into its place: no concatenated copy of all rows
        for key, values in rows.items():
            out[key][start : start + len(values)] = values

    run_pass(matrix, fn, chunk_size=chunk_size, client=client, desc="embedding", consume=keep)
    return (out["scores"], out["residual_sq"]) if residuals else out["scores"]


def scores_block(block, start: int, *, P: np.ndarray, device: str, residuals: bool = False) -> tuple[dict, dict]:
    """One block's rows for :func:`rlae_sc.engine.run_pass`: ``scores``, ``B P`` (rows x k, float32), and with
    ``residuals`` ``residual_sq``, each row's squared distance from the span of ``P`` (rows,, float64); ``B``
    (rows x m) and ``P`` (m x k) are multiplied in float64 on ``device``; an :class:`AffineBlock` by
    :func:`affine_scores`."""
    if isinstance(block, AffineBlock):
        return {}, affine_scores(block, P, residuals=residuals)
    B = torch.from_numpy(_dense(block, "float64")).to(device)
    Z = B @ torch.from_numpy(P).to(device)
    rows = {"scores": Z.float().cpu().numpy()}
    if residuals:
        rows["residual_sq"] = (torch.sum(B * B, dim=1) - torch.sum(Z * Z, dim=1)).clamp_(min=0.0).cpu().numpy()
    return {}, rows
