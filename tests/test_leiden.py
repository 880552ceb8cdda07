"""Leiden's resolution chosen from the data (rlae_sc.leiden)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from rlae_sc.cluster import cluster
from rlae_sc.keys import EMBEDDING_KEY
from rlae_sc.leiden import RESOLUTIONS, TIE, choose_resolution, stability_curve


def test_choose_takes_the_largest_of_the_most_stable():
    curve = pd.DataFrame({"resolution": RESOLUTIONS, "stability": np.linspace(0.5, 0.9, len(RESOLUTIONS))})
    assert choose_resolution(curve) == RESOLUTIONS[-1]  # stability rising: the top of the grid
    stability = np.full(len(RESOLUTIONS), 0.7)
    stability[2] = 0.95
    stability[4] = 0.95 - TIE / 2  # within the tie of the best, and finer: chosen
    stability[5] = 0.95 - 2 * TIE  # just outside it
    curve = pd.DataFrame({"resolution": RESOLUTIONS, "stability": stability})
    assert choose_resolution(curve) == RESOLUTIONS[4]


def blobs(sizes, *, dims=10, spread=8.0, seed=0):
    """Gaussian blobs (cells x dims) whose centres lie ``spread`` standard deviations apart, and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(len(sizes), dims))
    X = np.vstack([c + rng.normal(size=(n, dims)) for c, n in zip(centres, sizes, strict=True)])
    return X.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def test_auto_resolution_finds_separated_groups_and_records_its_curve():
    """Five well-separated groups of unequal sizes: the chosen resolution's clusters are the groups, the curve
    behind it is stored, and the chosen row is the most stable within the tie."""
    X, truth = blobs([400, 250, 150, 100, 60])
    adata = ad.AnnData(obs=pd.DataFrame({"group": truth.astype(str)}, index=[f"c{i}" for i in range(len(X))]))
    adata.obsm[EMBEDDING_KEY] = X
    result = cluster(adata, resolution="auto", label_key="group")
    params = adata.uns["rlae_cluster"]
    curve = pd.DataFrame(params["resolution_curve"])
    assert list(curve["resolution"]) == list(RESOLUTIONS)
    assert params["resolution_chosen"] and params["resolution"] == result["resolution"] == choose_resolution(curve)
    assert curve["stability"].between(-1, 1).all() and (curve["stability_min"] <= curve["stability"]).all()
    assert adjusted_rand_score(truth, adata.obs["leiden"]) == pytest.approx(1.0)


def test_stability_is_one_for_a_graph_of_disconnected_cliques():
    """Cliques with no edge between them: every subsample and seed gives the cliques, at every resolution."""
    import scipy.sparse as sp

    blocks = [np.ones((n, n)) - np.eye(n) for n in (30, 40, 50)]
    curve = stability_curve(sp.csr_matrix(sp.block_diag(blocks)), seed=3)
    assert np.allclose(curve["stability"], 1.0) and (curve["n_clusters"] == 3).all()


def test_a_set_resolution_is_used_as_given():
    X, truth = blobs([200, 200])
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(len(X))]))
    adata.obsm[EMBEDDING_KEY] = X
    result = cluster(adata, resolution=0.7)
    assert result["resolution"] == 0.7 and adata.uns["rlae_cluster"]["resolution"] == 0.7
    assert "resolution_curve" not in adata.uns["rlae_cluster"] and not adata.uns["rlae_cluster"]["resolution_chosen"]
