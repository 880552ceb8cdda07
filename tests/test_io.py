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


# -- a table of cell metadata (--obs) ----------------------------------------------------------------------------


def test_the_barcode_column_is_found_by_its_name_or_taken_first(tmp_path):
    import pandas as pd

    from rlae_sc.io import join_obs

    obs = pd.DataFrame(index=["a", "b", "c"])
    (tmp_path / "named.csv").write_text("cell_type,Cell ID,n\nB,b,2\nT,a,1\nNK,c,3\n")
    joined = join_obs(obs, tmp_path / "named.csv", source="x")
    assert list(joined.columns) == ["cell_type", "n"] and list(joined["cell_type"]) == ["T", "B", "NK"]
    (tmp_path / "first.tsv").write_text("id\tcell_type\nc\tNK\na\tT\nb\tB\n")
    assert list(join_obs(obs, tmp_path / "first.tsv", source="x")["cell_type"]) == ["T", "B", "NK"]
    (tmp_path / "r.tsv").write_text("cell_type\tn\na\tT\t1\nb\tB\t2\nc\tNK\t3\n")  # R's write.table: no name above
    assert list(join_obs(obs, tmp_path / "r.tsv", source="x")["n"]) == [1, 2, 3]
    numeric = pd.DataFrame(index=["1", "2"])  # barcodes that look like numbers are matched as text
    (tmp_path / "numeric.csv").write_text("cell,group\n2,y\n1,x\n")
    assert list(join_obs(numeric, tmp_path / "numeric.csv", source="x")["group"]) == ["x", "y"]


def test_a_table_column_replaces_the_inputs_with_a_warning(tmp_path):
    import pandas as pd

    path = write(
        tmp_path, np.ones((3, 2), dtype=np.float32), obs=pd.DataFrame({"cell_type": list("xyz")}, index=list("abc"))
    )
    (tmp_path / "meta.csv").write_text("barcode,cell_type,donor\na,T,d1\nb,B,d1\nc,NK,d2\n")
    with pytest.warns(UserWarning, match="columns cell_type replace those of"):
        adata = read(path, obs=tmp_path / "meta.csv")
    assert list(adata.obs["cell_type"]) == ["T", "B", "NK"] and list(adata.obs["donor"]) == ["d1", "d1", "d2"]
    from rlae_sc.params import ReadParams

    assert ReadParams.of(obs=tmp_path / "meta.csv").obs == str(tmp_path / "meta.csv")  # a Path, as the pipeline takes


def test_bad_metadata_tables_are_named(tmp_path):
    path = write(tmp_path, np.ones((3, 2), dtype=np.float32))  # cells '0', '1', '2'
    with pytest.raises(InputError, match="metadata table not found"):
        read(path, obs=tmp_path / "nope.tsv")
    (tmp_path / "dup.csv").write_text("barcode,t\n0,a\n1,b\n1,c\n2,d\n")
    with pytest.raises(InputError, match="barcode '1' has 2 rows"):
        read(path, obs=tmp_path / "dup.csv")
    (tmp_path / "bare.csv").write_text("barcode\n0\n1\n2\n")
    with pytest.raises(InputError, match="has no columns besides the barcodes"):
        read(path, obs=tmp_path / "bare.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="cannot be read as a table of cell metadata"):
        read(path, obs=tmp_path / "empty.csv")
