"""The scanpy-style API: rl.pp.recipe, rl.tl.rlae, rl.tl.embed, rl.get.model, rl.pl.*, and no global state."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anndata as ad
import matplotlib as mpl
import numpy as np
import pytest
import scanpy as sc
from matplotlib.figure import Figure

import rlae_sc as rl
from rlae_sc import report
from rlae_sc.errors import InputError
from rlae_sc.simulate import synthetic_counts

from .conftest import shared_file

RECIPE = {"n_top_genes": 200, "min_genes": 50}
K = 8


def exact_directions(X: np.ndarray, k: int) -> np.ndarray:
    """Top-k principal directions (genes x k) of ``X`` (cells x genes), by numpy's SVD of the centred matrix."""
    X = np.asarray(X, dtype=np.float64)
    return np.linalg.svd(X - X.mean(axis=0), full_matrices=False)[2][:k].T


def abs_cos(P: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Per-column |cos| between directions P and U (genes x k each)."""
    P = P / np.linalg.norm(P, axis=0)
    return np.abs(np.sum(P * U, axis=0))


@pytest.fixture(scope="module")
def counts():
    return synthetic_counts(n_cells=400, n_genes=300, n_types=4, rank=5, seed=3)


@pytest.fixture(scope="module")
def trained(counts):
    adata = rl.pp.recipe(counts, copy=True, **RECIPE)
    rl.tl.rlae(adata, n_comps=K)
    return adata


def test_import_changes_no_global_state():
    code = (
        "import json, sys, matplotlib\n"
        "backend = matplotlib.get_backend(); rc = dict(matplotlib.rcParams)\n"
        "import rlae_sc, rlae_sc.pl\n"
        "changed = [k for k, v in matplotlib.rcParams.items() if repr(rc[k]) != repr(v)]\n"
        "print(json.dumps({'before': backend, 'after': matplotlib.get_backend(), 'changed': changed}))\n"
    )
    # svg is not the Agg backend that a module might switch to: a switch would show
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["after"] == result["before"] == "svg"
    assert result["changed"] == []


def test_recipe_in_place_equals_copy_and_stores_its_recipe(counts):
    inplace = counts.copy()
    assert rl.pp.recipe(inplace, **RECIPE) is None
    copied = rl.pp.recipe(counts, copy=True, **RECIPE)
    assert counts.shape == (400, 300) and "rlae_recipe" not in counts.uns  # the input is left alone
    pre, recipe = rl.preprocess(counts, **RECIPE)
    for adata in (inplace, copied):
        assert list(adata.obs_names) == list(pre.obs_names) and list(adata.var_names) == recipe.genes
        np.testing.assert_array_equal(adata.X, pre.X)
        np.testing.assert_array_equal(adata.raw.X.toarray(), pre.raw.X.toarray())
        assert json.loads(adata.uns["rlae_recipe"]) == recipe.to_dict()
        assert adata.obs["cell_type"].equals(counts.obs["cell_type"][adata.obs_names])  # the input's obs are kept
        np.testing.assert_array_equal(adata.obs["total_counts"], pre.obs["total_counts"])
        np.testing.assert_array_equal(adata.var["std"], recipe.std)
        # the other slots are subset with the cells and genes kept
        rows = counts.var_names.get_indexer(adata.var_names)
        np.testing.assert_array_equal(adata.varm["true_loadings"], counts.varm["true_loadings"][rows])


def test_rlae_matches_exact_pca_and_fills_scanpys_slots(trained):
    X = np.asarray(trained.X, dtype=np.float64)
    U = exact_directions(X, K)
    P = trained.varm["rlae_directions"]
    assert P.shape == (trained.n_vars, K)
    assert abs_cos(P, U).min() >= 1 - 1e-6
    np.testing.assert_allclose(trained.obsm["X_rlae"], X @ P, rtol=1e-4, atol=1e-4 * np.abs(X @ P).max())
    u = trained.uns["rlae"]
    e = np.linalg.eigvalsh(X.T @ X)[::-1][:K]
    np.testing.assert_allclose(u["eigenvalues"], e, rtol=1e-5)
    np.testing.assert_allclose(u["variance_ratio"], e / np.trace(X.T @ X), rtol=1e-5)
    np.testing.assert_allclose(u["variance"], e / (trained.n_obs - 1), rtol=1e-5)
    assert u["metrics"]["min_abs_cos_top10"] >= 1 - 1e-6 and u["lambda"] > 0
    assert u["params"]["n_components"] == K and u["params"]["solver"] == "tied_exact"


def test_rlae_key_added_copy_and_parameters(trained):
    other = rl.tl.rlae(trained, n_comps=4, key_added="rlae4", lambda_frac=0.2, copy=True)
    assert "rlae4" not in trained.uns  # copy: the input is left alone
    assert other.obsm["rlae4"].shape == (trained.n_obs, 4) and other.varm["rlae4"].shape == (trained.n_vars, 4)
    assert other.uns["rlae4"]["params"]["lambda_frac"] == 0.2
    np.testing.assert_array_equal(other.obsm["X_rlae"], trained.obsm["X_rlae"])  # the default keys untouched
    assert abs_cos(other.varm["rlae4"], trained.varm["rlae_directions"][:, :4]).min() >= 1 - 1e-6


def test_rlae_needs_a_recipe(counts):
    with pytest.raises(InputError, match="rl.pp.recipe"):
        rl.tl.rlae(counts.copy(), n_comps=K)


def test_model_round_trips_through_h5ad_and_embeds_new_cells(trained, tmp_path):
    path = tmp_path / "trained.h5ad"
    trained.write_h5ad(path)
    model = rl.get.model(ad.read_h5ad(path))
    np.testing.assert_array_equal(model.directions.astype(np.float32), trained.varm["rlae_directions"])
    model.save(tmp_path / "model.npz")
    model = rl.read_model(tmp_path / "model.npz")
    batch = synthetic_counts(n_cells=150, n_genes=300, n_types=4, rank=5, seed=3, cell_seed=4)
    embedded = rl.tl.embed(batch, model, copy=True)
    assert "X_rlae" not in batch.obsm
    # the recipe replayed by hand: normalise, log1p, centre and scale the recipe's genes, project
    recipe = model.recipe
    counts = batch.X.toarray().astype(np.float64)
    L = np.log1p(counts * recipe.target_sum / counts.sum(axis=1, keepdims=True))
    Z = (L[:, batch.var_names.get_indexer(recipe.genes)] - recipe.mean) / recipe.std
    np.testing.assert_allclose(embedded.obsm["X_rlae"], Z @ model.directions, rtol=1e-4, atol=1e-4)
    assert rl.tl.embed(batch, model) is None and batch.obsm["X_rlae"].shape == (150, K)


def test_getting_loading_and_embedding_a_model_import_no_torch(trained, tmp_path):
    """The model is apart from its training: rl.get.model, rl.read_model, rl.tl.embed, the embed stage and the
    mapping module run in a fresh process without torch ever being imported."""
    trained.write_h5ad(tmp_path / "trained.h5ad")
    rl.get.model(trained).save(tmp_path / "model.npz")
    synthetic_counts(n_cells=150, n_genes=300, n_types=4, rank=5, seed=3, cell_seed=4).write_h5ad(tmp_path / "new.h5ad")
    code = (
        "import sys\n"
        "import anndata as ad\n"
        "import rlae_sc as rl\n"
        "from rlae_sc import mapping, pipeline\n"
        "model = rl.get.model(ad.read_h5ad('trained.h5ad'))\n"
        "cells = ad.read_h5ad('new.h5ad')\n"
        "rl.tl.embed(cells, model)\n"
        "rl.tl.embed(cells, rl.read_model('model.npz'))\n"
        "pipeline.embed_file('model.npz', 'new.h5ad', 'embedded.h5ad')\n"
        "print(cells.obsm['X_rlae'].shape, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == f"(150, {K}) False"


def test_plots_draw_into_the_given_axes_and_keep_rcparams(trained):
    rc = dict(mpl.rcParams)
    fig = Figure()
    for name in rl.pl.__all__:
        ax = fig.add_subplot()
        assert getattr(rl.pl, name)(trained, ax=ax) is ax
        assert ax.has_data()
    assert rl.pl.training(trained, metric="loss", ax=fig.add_subplot()).get_yscale() == "linear"
    assert [k for k, v in mpl.rcParams.items() if repr(rc[k]) != repr(v)] == []
    with pytest.raises(KeyError, match="rl|rlae_sc.tl.rlae"):
        rl.pl.variance_ratio(trained, key="missing")


def test_report_figures_are_drawn_off_screen(trained):
    import matplotlib.pyplot as plt

    adata = trained.copy()
    adata.obsm["X_umap"] = adata.obsm["X_rlae"][:, :2]  # any 2-D layout does for drawing
    adata.obs["leiden"] = adata.obs["cell_type"].cat.codes.astype(str)
    open_before = plt.get_fignums()
    for name, (draw, _) in report.FIGURES.items():
        fig = draw(adata, "cell_type")
        assert isinstance(fig, Figure) and fig.canvas.manager is None, name  # not a pyplot figure
        assert any(ax.has_data() for ax in fig.axes), name
    assert plt.get_fignums() == open_before


@pytest.mark.slow
def test_garnett_recipe_then_rlae_then_scanpy():
    a = ad.read_h5ad(shared_file("garnett_pbmc800.h5ad"))
    rl.pp.recipe(a)
    rl.tl.rlae(a, n_comps=30)
    sc.pp.neighbors(a, use_rep="X_rlae")
    sc.tl.umap(a)
    assert a.obsm["X_umap"].shape == (a.n_obs, 2) and "connectivities" in a.obsp
    X = np.asarray(a.X, dtype=np.float64)
    X = X - X.mean(axis=0)
    _, U = np.linalg.eigh(X.T @ X)
    U = U[:, ::-1][:, :10]
    assert abs_cos(a.varm["rlae_directions"][:, :10], U).min() >= 0.9999


def test_version_and_short_reprs(small_counts):
    import rlae_sc as rl
    from tests.conftest import rlae_cli

    assert rl.__version__ != "unknown"
    assert rlae_cli("--version").stdout.strip() == f"rlae-sc {rl.__version__}"
    adata = small_counts.copy()
    rl.pp.recipe(adata, min_genes=50, n_top_genes=200)
    rl.tl.rlae(adata, n_comps=5)
    model = rl.get.model(adata)
    assert repr(model).startswith("RLAEModel(k=5, genes=200, cells=") and len(repr(model)) < 200
    assert repr(model.recipe).startswith("Recipe(log1p, 200 of 400 genes") and len(repr(model.recipe)) < 200
