"""The compiled sums over CSR blocks against numpy's and scipy's own operations on copies of the block."""

import numpy as np
import pytest
import scipy.sparse as sp

from rlae_sc.csr_sums import grouped_sums, row_totals


def block(seed=0, shape=(300, 40), density=0.2, dtype=np.float32):
    """Counts with empty rows and columns, in CSR."""
    rng = np.random.default_rng(seed)
    X = sp.random(*shape, density=density, format="csr", random_state=rng, dtype=np.float64)
    X.data = np.ceil(X.data * 50)
    X = X.astype(dtype)
    X.data[X.indptr[5] : X.indptr[6]] = 0  # an empty row
    X.eliminate_zeros()
    return X


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_grouped_sums_are_bincounts_of_the_selected_clipped_values(dtype):
    X = block(dtype=dtype)
    rng = np.random.default_rng(1)
    codes = rng.integers(-1, 3, X.shape[0])  # -1: left out
    columns = rng.permutation(X.shape[1])[:25]
    clip = rng.uniform(1, 40, (3, 25))
    total, squares = grouped_sums(X, codes, 3, columns=columns, clip=clip)
    # numpy on copies: the selected columns, the clipped values, then np.bincount by (group, column)
    S = X[:, columns]
    row = np.repeat(codes, np.diff(S.indptr))
    use = row >= 0
    values = np.minimum(S.data.astype(np.float64), clip[row, S.indices])[use]
    where = row[use] * 25 + S.indices[use]
    np.testing.assert_array_equal(total, np.bincount(where, weights=values, minlength=75).reshape(3, 25))
    np.testing.assert_array_equal(squares, np.bincount(where, weights=values**2, minlength=75).reshape(3, 25))


def test_grouped_sums_without_selection_or_clipping_are_the_group_sums():
    X = block(seed=2, dtype=np.float64)
    X.data = X.data / 7  # not integers: the order of the additions shows in the bits
    codes = np.where(np.arange(X.shape[0]) % 4 == 0, -1, np.arange(X.shape[0]) % 2)
    total, squares = grouped_sums(X, codes, 2)
    for g in (0, 1):
        rows = X[codes == g]
        np.testing.assert_array_equal(total[g], np.bincount(rows.indices, weights=rows.data, minlength=X.shape[1]))
        np.testing.assert_allclose(squares[g], np.asarray(rows.multiply(rows).sum(axis=0)).ravel(), rtol=1e-12)
    # a single clip value per gene applies to every group; NaN stays NaN as with np.minimum
    X.data[0] = np.nan
    total, _ = grouped_sums(X, np.zeros(X.shape[0]), 1, clip=np.full(X.shape[1], 1.0))
    assert np.isnan(total[0, X.indices[0]]) and np.nanmax(total) <= X.shape[0]


def test_row_totals_are_scipys_row_sums():
    X = block(seed=3)
    mask = np.zeros(X.shape[1], dtype=bool)
    mask[[0, 7, 39]] = True
    total, masked = row_totals(X, mask)
    np.testing.assert_array_equal(total, np.asarray(X.sum(axis=1, dtype=np.float64)).ravel())
    np.testing.assert_array_equal(masked, np.asarray(X[:, mask].sum(axis=1, dtype=np.float64)).ravel())
    assert total[5] == 0 and masked.max() > 0
