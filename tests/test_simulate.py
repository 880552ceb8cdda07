"""The demo data's Poisson means: the counts of `synthetic_counts` scatter around `synthetic_rates` as Poisson
draws do, gene by gene and cell by cell."""

from __future__ import annotations

import numpy as np

from rlae_sc.simulate import synthetic_counts, synthetic_rates


def test_counts_are_poisson_draws_around_the_rates():
    kwargs = {"n_cells": 1500, "n_genes": 800, "seed": 3, "cell_seed": 4}
    counts = synthetic_counts(**kwargs).X.toarray().astype(np.float64)
    rate = synthetic_rates(**kwargs)
    assert rate.shape == counts.shape and np.all(rate > 0)
    for axis in (0, 1):  # per gene, then per cell: z = (sum of counts - sum of means) / sqrt(sum of means)
        z = (counts - rate).sum(axis=axis) / np.sqrt(rate.sum(axis=axis))
        # mean of z^2 is 1 for Poisson draws; its sd is sqrt(2 / number of sums) (<= 0.05 here): 4 sd either way
        assert abs(np.mean(z**2) - 1) < 4 * np.sqrt(2 / len(z)), (axis, np.mean(z**2))
    other = synthetic_rates(**{**kwargs, "cell_seed": 5})  # another batch of cells: other means
    z = (counts - other).sum(axis=1) / np.sqrt(other.sum(axis=1))
    assert np.mean(z**2) > 2
