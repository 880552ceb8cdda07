"""The demo data's known structure: its log-rates are a baseline plus a rank-``rank`` term in the span of the
recorded loadings, and its counts scatter around those rates as Poisson draws do."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from rlae_sc.simulate import synthetic_counts, synthetic_rates

KWARGS = {"n_cells": 1500, "n_genes": 800, "rank": 5, "seed": 3, "cell_seed": 4}


@pytest.fixture(scope="module")
def drawn():
    adata = synthetic_counts(**KWARGS)
    return adata, synthetic_rates(adata)


def test_log_rates_are_rank_r_in_the_span_of_the_true_loadings(drawn):
    adata, rate = drawn
    L = np.log(rate)
    L -= L.mean(axis=0)  # the cells' library sizes and the genes' baselines are row and column offsets
    L -= L.mean(axis=1, keepdims=True)
    s, Vt = scipy.linalg.svd(L, full_matrices=False)[1:]
    r = KWARGS["rank"]
    assert s[r] < 1e-10 * s[0] < s[r - 1]
    loadings = adata.varm["true_loadings"] - adata.varm["true_loadings"].mean(axis=0)  # genes centred as L is
    angles = scipy.linalg.subspace_angles(Vt[:r].T, loadings)
    assert np.max(angles) < 1e-8


def test_counts_are_poisson_draws_around_the_rates(drawn):
    adata, rate = drawn
    counts = adata.X.toarray().astype(np.float64)
    for axis in (0, 1):  # per gene, then per cell: z = (sum of counts - sum of means) / sqrt(sum of means)
        z = (counts - rate).sum(axis=axis) / np.sqrt(rate.sum(axis=axis))
        # mean of z^2 is 1 for Poisson draws; its sd is sqrt(2 / number of sums) (<= 0.05 here): 4 sd either way
        assert abs(np.mean(z**2) - 1) < 4 * np.sqrt(2 / len(z)), (axis, np.mean(z**2))
    other = synthetic_rates(synthetic_counts(**{**KWARGS, "cell_seed": 5}))  # another batch of cells
    z = (counts - other).sum(axis=1) / np.sqrt(other.sum(axis=1))
    assert np.mean(z**2) > 2


def test_a_subset_is_refused(drawn):
    adata, _ = drawn
    with pytest.raises(ValueError, match="synthetic_counts returned"):
        synthetic_rates(adata[:100])
