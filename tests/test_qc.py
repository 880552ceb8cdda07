"""Cell QC from the data's own distribution (qc: mad) against numpy, and on sparse real data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from rlae_sc.errors import InputError
from rlae_sc.federated.plan import new_plan
from rlae_sc.preprocess import preprocess
from rlae_sc.recipe import cell_qc, mito_mask
from rlae_sc.simulate import synthetic_counts
from tests.conftest import shared_file


def _mad_low(values: np.ndarray, n: float) -> float:
    x = np.log1p(values)
    return float(np.expm1(np.median(x) - n * np.median(np.abs(x - np.median(x)))))


def test_mad_thresholds_are_the_data_outliers():
    counts = synthetic_counts(n_cells=800, n_genes=600, seed=3)
    X = counts.X.toarray()
    X[:40, 60:] = 0  # 40 damaged cells: a tenth of the genes, few counts
    counts.X = sp.csr_matrix(X)
    n_genes, total, pct = cell_qc(counts.X.tocsr(), mito_mask(counts.var_names))
    pre, recipe = preprocess(counts, scale=False, qc="mad", n_mads=3.0, n_top_genes=200)
    assert recipe.min_genes == max(int(np.ceil(_mad_low(n_genes, 3.0))), 1)
    assert recipe.min_counts == pytest.approx(_mad_low(total, 3.0))
    centre = np.median(pct)
    assert recipe.max_pct_mito == pytest.approx(min(20.0, centre + 3.0 * np.median(np.abs(pct - centre))))
    kept = (n_genes >= recipe.min_genes) & (total > recipe.min_counts) & (pct <= recipe.max_pct_mito)
    assert list(pre.obs_names) == list(counts.obs_names[kept])
    assert not kept[:40].any() and kept[40:].mean() > 0.95  # the damaged cells go, the others stay


@pytest.mark.slow
def test_mad_keeps_a_sparse_technologys_cells():
    """worm neurons (sci-RNA-seq, median ~150 genes per cell): fixed min_genes 200 keeps a third, mad nearly all."""
    worm = ad.read_h5ad(shared_file("worm_neuron_4186.h5ad"))
    fixed, _ = preprocess(worm, scale=False, n_top_genes=500)
    adaptive, recipe = preprocess(worm, scale=False, qc="mad", n_top_genes=500)
    assert fixed.n_obs < 0.4 * worm.n_obs
    assert adaptive.n_obs > 0.95 * worm.n_obs and recipe.min_genes < 50


def test_a_federation_refuses_mad_qc():
    with pytest.raises(InputError, match="qc mad"):
        new_plan({"qc": "mad"}, {})
