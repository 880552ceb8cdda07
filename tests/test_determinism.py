"""Same input, config and seed: identical outputs. Shuffled cells: the same directions up to rounding."""

from __future__ import annotations

import anndata as ad
import numpy as np

from rlae_sc import fit, preprocess


def _fit(counts):
    pre, _ = preprocess(counts, min_genes=50, n_top_genes=150)
    return pre, fit(pre, n_components=8, seed=3)


def test_same_seed_gives_bit_identical_results(small_counts):
    pre_a, a = _fit(small_counts)
    pre_b, b = _fit(small_counts)
    np.testing.assert_array_equal(pre_a.X, pre_b.X)
    np.testing.assert_array_equal(a.decoder, b.decoder)
    np.testing.assert_array_equal(a.scores(pre_a.X), b.scores(pre_b.X))
    assert a.lam == b.lam


def test_cell_order_changes_results_only_by_rounding(small_counts):
    order = np.random.default_rng(0).permutation(small_counts.n_obs)
    shuffled = ad.AnnData(X=small_counts.X[order], obs=small_counts.obs.iloc[order], var=small_counts.var)
    pre_a, a = _fit(small_counts)
    pre_b, b = _fit(shuffled)
    assert list(pre_a.var_names) == list(pre_b.var_names)
    # the scatter pass multiplies in float32 (accumulating in float64): rounding is ~1e-7 relative
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-6)
    np.testing.assert_allclose(a.directions, b.directions, atol=1e-5)  # same orientation rule on both
    np.testing.assert_allclose(b.scores(pre_b.X), a.scores(pre_a.X)[order], atol=1e-4)


def test_runs_and_thread_counts_give_the_same_bytes(tmp_path):
    """Counts to UMAP twice with two threads and once with one (OpenMP, BLAS, numba): the same four fingerprints,
    each the hash of what the run wrote (issue 27)."""
    import json

    from rlae_sc.fingerprints import result_fingerprints
    from rlae_sc.simulate import synthetic_counts
    from tests.conftest import rlae_cli, thread_vars

    synthetic_counts(n_cells=1500, n_genes=600, n_types=5, rank=6, seed=2).write_h5ad(tmp_path / "counts.h5ad")
    prints = []
    for run, threads in enumerate((2, 2, 1)):
        out = tmp_path / f"run{run}"
        rlae_cli("run", tmp_path / "counts.h5ad", "--out", out, "--n-top-genes", 300, "--n-components", 10,
                 env=thread_vars(threads))  # fmt: skip
        prints.append(json.loads((out / "metrics.json").read_text())["sha256"])
        cells = ad.read_h5ad(out / "embedding.h5ad")
        assert prints[-1] == result_fingerprints(cells)
    assert set(prints[0]) == {"embedding", "graph", "leiden", "umap"}
    assert prints[0] == prints[1] == prints[2]
