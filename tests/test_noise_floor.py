"""The noise floor (Horn's parallel analysis) and k chosen from it, against exact linear algebra."""

import numpy as np
import pytest
import torch

from rlae_sc.noise_floor import PermutedRows, elbow, fit_above_floor, mp_edge, parallel_analysis, top_eigenvalue
from rlae_sc.params import TrainParams
from rlae_sc.rows import InMemory

CPU = TrainParams(device="cpu", trace_metrics=False)


def planted(n: int, m: int, rank: int, noise: float, seed: int) -> tuple[np.ndarray, float]:
    """Centred X (n x m): a rank-``rank`` signal (random orthonormal gene directions, signal sums of squares
    from 6 down to 1 times the noise edge) plus iid Gaussian noise of standard deviation ``noise``;
    and the Marchenko-Pastur edge of that noise."""
    rng = np.random.default_rng(seed)
    edge = mp_edge(n, m, variance=noise**2)
    U = np.linalg.qr(rng.normal(size=(m, rank)))[0]
    Z = rng.normal(size=(n, rank))
    Z = np.linalg.qr(Z - Z.mean(0))[0]
    X = (Z * np.sqrt(edge * np.linspace(6.0, 1.0, rank))) @ U.T + noise * rng.normal(size=(n, m))
    return X - X.mean(0), edge


@pytest.mark.parametrize("rank", [3, 8, 20])
@pytest.mark.parametrize("noise", [0.3, 1.0, 3.0])
def test_auto_k_recovers_planted_rank(rank, noise):
    X, edge = planted(800, 200, rank, noise, seed=rank)
    C = X.T @ X
    e = np.linalg.eigvalsh(C)[::-1]
    assert e[rank - 1] >= 1.5 * edge  # the setting: the signal clears the noise edge by 50% or more
    fit, floor, rounds = fit_above_floor(torch.from_numpy(C), X, params=CPU, chunk_size=200)
    assert fit.encoder.shape == (rank, 200)
    assert e[rank] < floor.value < e[rank - 1]
    # the model is the sum-loss optimum at lambda = floor: s_i = sqrt(1 - floor / e_i) on the top eigenvectors
    s = np.linalg.svd(fit.decoder, compute_uv=False)
    np.testing.assert_allclose(s, np.sqrt(1 - floor.value / e[:rank]), atol=1e-6)
    assert rounds["deflated"][0] == 0 and rounds["k"][-1] == rank  # the plain round first; the last counts k


def test_plain_analysis_is_shadowed_by_strong_signal_and_deflation_corrects_it():
    X, edge = planted(1000, 300, 20, 1.0, seed=20)
    C = X.T @ X
    plain = parallel_analysis(X, sum_squares=np.diag(C), chunk_size=1000, device="cpu")
    assert plain.value > 1.3 * edge  # the signal inflates every gene's variance, and with it the null
    _, floor, _ = fit_above_floor(torch.from_numpy(C), X, params=CPU, chunk_size=1000)
    assert abs(floor.value / edge - 1) < 0.05


def test_pure_noise_floor_is_the_marchenko_pastur_edge():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 200))
    X -= X.mean(0)
    floor = parallel_analysis(X, sum_squares=np.sum(X**2, axis=0), n_permutations=3, device="cpu")
    edge = mp_edge(1500, 200, variance=float(np.sum(X**2)) / (200 * 1499))
    assert abs(floor.value / edge - 1) < 0.03
    assert abs(floor.mp_edge / edge - 1) < 1e-12
    assert top_eigenvalue(X.T @ X) < 1.03 * edge


def test_permuted_block_is_a_permutation_of_each_centred_column():
    rng = np.random.default_rng(1)
    X = rng.poisson(2.0, size=(300, 20)).astype(np.float64)
    rows = PermutedRows(InMemory(X), seed=3)
    block = rows.read(100, 200)
    centred = X[100:200] - X[100:200].mean(0)
    for j in range(20):
        np.testing.assert_allclose(np.sort(block[:, j]), np.sort(centred[:, j]), atol=1e-12)
    assert not np.allclose(block, centred)
    np.testing.assert_array_equal(block, rows.read(100, 200))  # the same block whoever reads it


def test_within_block_permutation_matches_a_global_one_even_on_sorted_cells():
    """Cells sorted by type (blocks of 100 are nearly pure), permuted within blocks: the floor equals that of
    permutations of all cells at once (one block), within 3% of it; a plain within-block permutation, which
    keeps the types in the block means, is far off."""
    rng = np.random.default_rng(2)
    n, m, types = 2000, 150, 5
    labels = np.sort(rng.integers(0, types, size=n))
    centres = rng.normal(0, 1.0, size=(types, m))
    X = centres[labels] + rng.gamma(0.5, 2.0, size=(n, m))  # skewed noise, as counts are
    X -= X.mean(0)
    ss = np.sum(X**2, axis=0)
    blocks = parallel_analysis(X, sum_squares=ss, chunk_size=100, device="cpu")
    whole = parallel_analysis(X, sum_squares=ss, chunk_size=n, device="cpu")
    assert abs(np.mean(blocks.samples) / np.mean(whole.samples) - 1) < 0.03
    kept = np.zeros((m, m))  # within-block permutation without centring the blocks
    for start in range(0, n, 100):
        B = rng.permuted(X[start : start + 100], axis=0)
        kept += B.T @ B
    assert top_eigenvalue(kept) > 2 * np.mean(whole.samples)


def test_noise_floor_streams_from_a_file(tmp_path):
    import anndata as ad

    from rlae_sc.rows import h5ad_matrix

    X, _ = planted(600, 80, 3, 1.0, seed=4)
    ad.AnnData(X.astype(np.float32)).write_h5ad(tmp_path / "x.h5ad")
    ss = np.sum(X**2, axis=0)
    from_file = parallel_analysis(h5ad_matrix(tmp_path / "x.h5ad"), sum_squares=ss, chunk_size=128, device="cpu")
    in_memory = parallel_analysis(X.astype(np.float32), sum_squares=ss, chunk_size=128, device="cpu")
    np.testing.assert_allclose(from_file.samples, in_memory.samples, rtol=1e-6)


def test_elbow_finds_the_bend():
    e = np.concatenate([np.geomspace(100, 20, 6), np.geomspace(5, 4, 30)])
    assert elbow(e) in (6, 7)
