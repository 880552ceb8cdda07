"""Reading and validating inputs: each defect ends in an error naming the file, the problem and the fix."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from rlae_sc.atomic import atomic_path
from rlae_sc.errors import InputError
from rlae_sc.io import read, write_json


def write(tmp_path, X, name="x.h5ad", **kw):
    path = tmp_path / name
    ad.AnnData(X=X, **kw).write_h5ad(path)
    return path


def test_reads_counts_as_csr_float32(small_counts_file, small_counts):
    adata = read(small_counts_file)
    assert sp.issparse(adata.X) and adata.X.dtype == np.float32
    assert (adata.X != small_counts.X).nnz == 0


@pytest.mark.parametrize(
    "value, problem",
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-1.0, "negative values"), (0.5, "non-integer values")],
)
def test_bad_values_are_named_with_their_first_position(tmp_path, value, problem):
    X = np.ones((5, 4), dtype=np.float32)
    X[2, 3] = value
    path = write(tmp_path, X)
    with pytest.raises(InputError, match=problem) as err:
        read(path)
    assert str(path) in str(err.value)
    assert "cell '2', gene '3'" in str(err.value)


def test_non_integer_counts_suggest_log_normalized(tmp_path):
    path = write(tmp_path, np.full((3, 3), 0.7, dtype=np.float32))
    with pytest.raises(InputError, match="input_kind: log_normalized"):
        read(path)
    assert read(path, input_kind="log_normalized").n_obs == 3


def test_counts_a_hair_off_whole_numbers_are_accepted(tmp_path):
    X = np.array([[1 + 1e-7, 2.0], [3.0, 4 - 1e-7]], dtype=np.float64)
    assert read(write(tmp_path, X)).shape == (2, 2)


def test_empty_missing_truncated_and_wrong_layer(tmp_path):
    with pytest.raises(InputError, match="empty"):
        read(write(tmp_path, np.zeros((0, 3), dtype=np.float32)))
    with pytest.raises(InputError, match="file not found"):
        read(tmp_path / "nope.h5ad")
    good = write(tmp_path, np.ones((4, 4), dtype=np.float32), name="good.h5ad")
    truncated = tmp_path / "truncated.h5ad"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(InputError, match="truncated"):
        read(truncated)
    with pytest.raises(InputError, match="no layer 'counts'"):
        read(good, layer="counts")
    sheet = tmp_path / "x.xlsx"
    sheet.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="unrecognised file type"):
        read(sheet)


def test_duplicate_gene_names_are_made_unique_with_a_warning(tmp_path):
    import pandas as pd

    path = write(tmp_path, np.ones((2, 3), dtype=np.float32), var=pd.DataFrame(index=["A", "A", "B"]))
    with pytest.warns(UserWarning, match="1 duplicate gene names"):
        adata = read(path)
    assert adata.var_names.is_unique


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    write_json({"a": np.float64(1.5)}, target)
    assert target.read_text().strip() == '{\n  "a": 1.5\n}'
