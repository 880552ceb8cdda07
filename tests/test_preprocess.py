"""The recipe against scanpy's own functions, and its exact replay on new cells."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

from rlae_sc.errors import InputError
from rlae_sc.preprocess import preprocess
from rlae_sc.recipe import Recipe
from tests.conftest import scanpy_seurat_v3


@pytest.fixture(scope="module")
def fitted(small_counts):
    return preprocess(small_counts, n_top_genes=200, min_genes=50)


def test_matches_scanpy_normalize_log1p_hvg_scale(small_counts, fitted):
    pre, recipe = fitted
    ref = scanpy_seurat_v3(small_counts[pre.obs_names], 200)
    assert list(pre.var_names) == [g for g in ref.var_names if ref.var.loc[g, "highly_variable"]]
    sc.pp.normalize_total(ref, target_sum=recipe.target_sum)
    sc.pp.log1p(ref)
    ref = ref[:, pre.var_names].copy()
    sc.pp.scale(ref)
    np.testing.assert_allclose(pre.X, ref.X, atol=2e-5)
    assert recipe.target_sum == pytest.approx(np.median(np.asarray(small_counts[pre.obs_names].X.sum(axis=1))))


def test_trained_matrix_is_centred(fitted):
    pre, _ = fitted
    assert np.abs(pre.X.astype(np.float64).mean(axis=0)).max() < 1e-5


def test_replay_on_shuffled_genes_reproduces_the_matrix(small_counts, fitted):
    pre, recipe = fitted
    cells = small_counts[pre.obs_names]
    order = np.random.default_rng(0).permutation(cells.n_vars)
    shuffled = cells[:, order].copy()
    np.testing.assert_array_equal(recipe.transform(shuffled), pre.X)


def test_recipe_round_trips_through_json_exactly(fitted):
    _, recipe = fitted
    again = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again.genes == recipe.genes
    np.testing.assert_array_equal(again.mean, recipe.mean)
    np.testing.assert_array_equal(again.std, recipe.std)


def test_missing_genes_warn_with_overlap_and_too_few_fail(small_counts, fitted):
    _, recipe = fitted
    keep = [g for g in small_counts.var_names if g not in set(recipe.genes[:60])]  # drop 30% of model genes
    with pytest.warns(UserWarning, match="overlap 70.0%"):
        Z = recipe.transform(small_counts[:, keep])
    assert Z.shape == (small_counts.n_obs, len(recipe.genes))
    keep = [g for g in small_counts.var_names if g not in set(recipe.genes[:180])]  # 90% missing
    with pytest.raises(InputError, match=r"only 20 of the model's 200 genes \(10%\)"):
        recipe.transform(small_counts[:, keep])


def test_qc_removes_cells_and_counts_them(small_counts):
    counts = small_counts.copy()
    X = counts.X.tolil()
    X[0, :] = 0  # an all-zero cell
    mito = np.flatnonzero(counts.var_names.str.startswith("MT-"))
    X[1, mito] = 10_000  # a cell made of mitochondrial reads
    counts.X = X.tocsr()
    pre, recipe = preprocess(counts, min_genes=1, n_top_genes=100)
    assert counts.obs_names[0] not in pre.obs_names
    assert counts.obs_names[1] not in pre.obs_names
    assert recipe.stats["n_cells_all_zero"] == 1
    assert recipe.stats["n_cells_removed"] == 2
    assert recipe.stats["mito_filter_applied"]
    assert not recipe.qc_pass(counts)[:2].any()


def test_log_normalized_input_skips_normalisation(small_counts):
    logged = small_counts.copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    logged = ad.AnnData(X=logged.X, obs=logged.obs, var=logged.var)
    pre, recipe = preprocess(logged, input_kind="log_normalized", min_genes=10, n_top_genes=100)
    assert recipe.hvg_flavor == "seurat"
    assert recipe.target_sum is None
    raw = logged[pre.obs_names, pre.var_names].X.toarray().astype(np.float64)
    expected = (raw - raw.mean(0)) / raw.std(0, ddof=1)
    np.testing.assert_allclose(pre.X, expected, atol=1e-5)  # float32 output of a float64 computation


def test_clip_keeps_matrix_centred(small_counts):
    pre, recipe = preprocess(small_counts, min_genes=50, n_top_genes=100, clip=1.0)
    X = pre.X.astype(np.float64)
    assert X.max() <= 1.0 - recipe.offset.min() + 1e-6
    assert np.abs(X.mean(axis=0)).max() < 1e-5


def test_no_cells_passing_qc_is_named(small_counts):
    with pytest.raises(InputError, match="no cells pass QC"):
        preprocess(small_counts, min_genes=100_000)


def test_qc_that_drops_most_cells_warns_with_the_median(small_counts):
    median = float(np.median(np.diff(small_counts.X.tocsr().indptr)))
    cut = int(np.percentile(np.diff(small_counts.X.tocsr().indptr), 80))
    with pytest.warns(UserWarning, match=f"median of {median:g} genes against min_genes={cut}"):
        preprocess(small_counts, min_genes=cut, n_top_genes=100)
