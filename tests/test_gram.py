"""The sparse Gram kernel (rlae_sc.gram): the upper triangle of Y^T Y equals scipy's exact sparse product, in
float64 to rounding and in float32 to float32's rounding, the same bytes with one thread or two."""

import numpy as np
import pytest
import scipy.sparse as sp

from rlae_sc.gram import sparse_gram


def rows(n: int, m: int, density: float, seed: int) -> sp.csr_matrix:
    """CSR rows with rows of every length: empty ones, rows of fewer than four values, and full ones."""
    rng = np.random.default_rng(seed)
    Y = sp.random(n, m, density=density, format="csr", random_state=rng, dtype=np.float64)
    Y.data = rng.lognormal(size=Y.nnz)
    dense = Y.toarray()
    dense[:5] = 0  # empty rows
    dense[5:10, 3:] = 0  # at most three values
    dense[10] = rng.standard_normal(m)  # every column
    return sp.csr_matrix(dense)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-13), ("float32", 1e-5)])
def test_upper_triangle_of_the_exact_product(dtype, rtol):
    Y = rows(700, 60, 0.15, seed=1)
    want = np.triu((Y.T @ Y).toarray())
    got = sparse_gram(Y, dtype=dtype)
    assert got.dtype == np.float64 and np.all(np.tril(got, -1) == 0)
    assert np.max(np.abs(got - want)) <= rtol * np.max(np.abs(want))


def test_unsorted_indices_give_the_same_sums():
    Y = rows(300, 40, 0.3, seed=2)
    shuffled = Y.copy()
    for r in range(Y.shape[0]):  # reverse each row's stored order
        a, b = Y.indptr[r], Y.indptr[r + 1]
        shuffled.indices[a:b] = Y.indices[a:b][::-1]
        shuffled.data[a:b] = Y.data[a:b][::-1]
    shuffled.has_sorted_indices = False
    np.testing.assert_array_equal(sparse_gram(shuffled), sparse_gram(Y))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_same_bytes_with_one_thread_or_two(dtype):
    Y = rows(2_000, 80, 0.2, seed=3)
    one, two = sparse_gram(Y, dtype=dtype, threads=1), sparse_gram(Y, dtype=dtype, threads=2)
    assert one.tobytes() == two.tobytes()
