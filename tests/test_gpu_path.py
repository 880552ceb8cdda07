"""The torch path of the passes and the solver, run on the CPU: it gives exact linear algebra's results, and the
solver's random start comes from a CPU generator (so CUDA gives the CPU's lambda and directions)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from rlae_sc.lae import solvers
from rlae_sc.lae.theory import alignment, decoder_directions
from rlae_sc.products import STAGING_ROWS, scatter_matrix, scatter_on_device, scores, torch_device
from rlae_sc.rows import InMemory

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cells(n: int = 900, m: int = 40, seed: int = 0) -> np.ndarray:
    """Low rank plus noise, not centred (n x m, float64)."""
    rng = np.random.default_rng(seed)
    signal = (rng.standard_normal((n, 8)) * (np.arange(1, 9) ** -0.7)) @ rng.standard_normal((8, m))
    return signal + 0.3 * rng.standard_normal((n, m)) + 1.0


@dataclass(frozen=True)
class Recorded(InMemory):
    """Rows of an array in memory (as :class:`InMemory`), noting each block read as ``(start, stop)``."""

    blocks: list = field(default_factory=list)

    def read(self, start: int, stop: int):
        self.blocks.append((start, stop))
        return super().read(start, stop)


# Rows for the CUDA staging buffers: two whole blocks of STAGING_ROWS and a third of 900 rows, which is copied
# into the first buffer again (after waiting for that buffer's last copy), into only its first 900 rows.
N_STAGED = 2 * STAGING_ROWS + 900
STAGED_BLOCKS = [(0, STAGING_ROWS), (STAGING_ROWS, 2 * STAGING_ROWS), (2 * STAGING_ROWS, N_STAGED)]


def test_torch_device_auto_is_cpu_without_cuda():
    assert torch_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert torch_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("precision, rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_scatter_on_the_torch_path_equals_the_centred_product(precision, rtol):
    X = cells()
    Xc = X - X.mean(axis=0)
    exact = Xc.T @ Xc
    for source in (X.astype(precision), InMemory(sp.csr_matrix(X))):  # views and CSR blocks
        C = scatter_matrix(source, precision=precision, chunk_size=128, device="cpu")
        np.testing.assert_allclose(C, exact, rtol=rtol, atol=rtol * np.abs(exact).max())


def test_device_accumulation_sums_blocks_in_float64():
    X = cells(n=500).astype(np.float32)
    C, total, n = scatter_on_device(InMemory(X), precision="float32", chunk_size=64, device=torch.device("cpu"))
    blocks = [X[i : i + 64] for i in range(0, 500, 64)]
    expected = sum((B.T @ B).astype(np.float64) for B in blocks)  # float32 products per block, float64 sums
    assert n == 500 and C.dtype == np.float64 and total.dtype == np.float64
    np.testing.assert_allclose(C, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(total, X.astype(np.float64).sum(axis=0), rtol=1e-5)


def test_scores_on_the_torch_path_equal_x_p():
    X = cells()
    P = np.linalg.qr(np.random.default_rng(1).standard_normal((X.shape[1], 5)))[0]
    S = scores(X, P, chunk_size=100, device="cpu")
    assert S.shape == (X.shape[0], 5) and S.dtype == np.float32
    np.testing.assert_allclose(S, X @ P, rtol=1e-6, atol=1e-5)


def test_random_start_does_not_depend_on_global_random_state():
    """The start comes from the seed alone (a numpy generator on the host), whatever torch's and numpy's
    global random states, so that lambda and the directions do not depend on them or on the device."""
    X = cells()
    C = torch.from_numpy(scatter_matrix(X, device="cpu"))
    torch.manual_seed(123)
    np.random.seed(1)
    a = solvers.fit_tied_exact(C, 5, oversample=10)
    torch.manual_seed(456)
    np.random.seed(2)
    b = solvers.fit_tied_exact(C, 5, oversample=10)
    c = solvers.fit_tied_exact(C, 5, oversample=10, seed=1)
    assert a.lam == b.lam and a.lam != c.lam  # lambda is estimated from the start's warm-up: the seed matters
    np.testing.assert_array_equal(a.decoder, b.decoder)


def test_solver_gives_exact_directions():
    X = cells(m=60)
    Cn = scatter_matrix(X, device="cpu")
    fit = solvers.fit_tied_exact(torch.from_numpy(Cn), 10, oversample=20)
    U = np.linalg.eigh(Cn)[1][:, ::-1]
    P = decoder_directions(fit.decoder, fit.lam)[0]
    assert fit.converged
    assert alignment(P, U[:, :10]).min() >= 1 - 1e-9


def test_blocks_of_staging_size_sum_to_the_exact_scatter_on_the_cpu():
    """The CPU side of the CUDA test below: the rows it gives, read in blocks of STAGING_ROWS (the CUDA block
    size), are the three blocks that reach the staging buffers' reuse, and their sums are exact."""
    X = cells(n=N_STAGED, m=12)
    rows = Recorded(X)
    C, total, n = scatter_on_device(rows, precision="float64", chunk_size=STAGING_ROWS, device=torch.device("cpu"))
    assert rows.blocks == STAGED_BLOCKS and n == N_STAGED
    np.testing.assert_allclose(C, X.T @ X, rtol=1e-12)
    np.testing.assert_allclose(total, X.sum(axis=0), rtol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_staging_buffers_reused_give_the_exact_scatter():
    """Blocks through the two pinned staging buffers, each buffer used again: the third block of STAGING_ROWS-sized
    blocks (in-memory rows in ``precision``, the default path), and the 8 blocks of 128 CSR rows of 900."""
    X = cells(n=N_STAGED, m=60)
    Xc = X - X.mean(axis=0)
    exact = Xc.T @ Xc
    # float32 products over 16,384 rows: about 2e-6 of the largest entry from exact on the CPU; rows left over in a
    # reused buffer, or a buffer overwritten before its copy, would change C by far more
    for precision, tol in [("float64", 1e-12), ("float32", 1e-4)]:
        rows = Recorded(X.astype(precision))
        C = scatter_matrix(rows, precision=precision, device="cuda")
        assert rows.blocks == STAGED_BLOCKS, "the rows did not reach the reuse of a staging buffer"
        np.testing.assert_allclose(C, exact, rtol=tol, atol=tol * np.abs(exact).max())
    small = cells(m=60)  # buffers of 128 rows, each used four times, the last block 4 rows
    rows = Recorded(sp.csr_matrix(small))
    C = scatter_matrix(rows, chunk_size=128, device="cuda")
    assert len(rows.blocks) == 8 and rows.blocks[-1] == (896, 900)
    small_c = small - small.mean(axis=0)
    np.testing.assert_allclose(C, small_c.T @ small_c, rtol=1e-12, atol=1e-12 * np.abs(small_c.T @ small_c).max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_scatter_lambda_and_directions():
    X = cells(m=60).astype(np.float32)
    C = torch.from_numpy(scatter_matrix(X, precision="float32", device="cpu"))
    C_cuda = scatter_matrix(X, precision="float32", device="cuda")  # float32 products: equal to their rounding
    np.testing.assert_allclose(C_cuda, C.numpy(), rtol=1e-5, atol=1e-5 * C.abs().max().item())
    cpu, gpu = solvers.fit_tied_exact(C, 10), solvers.fit_tied_exact(C.cuda(), 10)  # the solver on the same C
    assert gpu.lam == pytest.approx(cpu.lam, rel=1e-9)
    P_cpu, P_gpu = (decoder_directions(f.decoder, f.lam)[0] for f in (cpu, gpu))
    assert alignment(P_cpu, P_gpu).min() >= 1 - 1e-9
