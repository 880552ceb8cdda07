"""Atlas inputs streamed through the pass engine: anndata zarr stores and TileDB-SOMA experiments, with obs
filters, give the directions of the same cells read from an .h5ad (top-10 |cos| >= 1 - 1e-9).

The stores are written by the libraries' own writers (``AnnData.write_zarr``, ``tiledbsoma.io.from_anndata``).
The SOMA tests skip when tiledbsoma (the ``atlas`` extra) is not installed.
"""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from rlae_sc import pipeline
from rlae_sc.atlas import RowSubset
from rlae_sc.errors import InputError
from rlae_sc.io import detect_format, open_streaming, read
from rlae_sc.model import load_model
from rlae_sc.simulate import synthetic_counts

pytestmark = [  # anndata's and zarr's notices about their next releases' defaults
    pytest.mark.filterwarnings("ignore:Writing zarr v2 data:UserWarning"),
    pytest.mark.filterwarnings("ignore:zarr v3 autosharding"),
    pytest.mark.filterwarnings("ignore:Consolidated metadata"),
]

PRE = {"min_genes": 50, "n_top_genes": 300}
K = 10
FILTER = "tissue == 'blood'"
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def counts():
    """1,500 cells x 600 genes with a tissue per cell: blood for two of every three cells, lung for the rest
    (so the filtered cells are not one consecutive range)."""
    a = synthetic_counts(n_cells=1500, n_genes=600, seed=3)
    a.obs["tissue"] = np.where(np.arange(a.n_obs) % 3 == 2, "lung", "blood")
    a.obs["n_counts"] = np.asarray(a.X.sum(axis=1)).ravel()
    a.uns = {}
    a.varm = {}
    return a


@pytest.fixture(scope="module")
def stores(counts, tmp_path_factory):
    """The same cells as .h5ad and as a compressed zarr store; the blood cells alone as .h5ad."""
    d = tmp_path_factory.mktemp("atlas")
    counts.write_h5ad(d / "counts.h5ad")
    counts.write_zarr(d / "counts.zarr")  # anndata's default compressor (Blosc lz4)
    counts[counts.obs["tissue"] == "blood"].copy().write_h5ad(d / "blood.h5ad")
    return d


@pytest.fixture(scope="module")
def soma_store(counts, stores):
    """The same cells as a TileDB-SOMA experiment (measurement RNA, X layer 'counts')."""
    tiledbsoma_io = pytest.importorskip("tiledbsoma.io")
    uri = str(stores / "counts.soma")
    tiledbsoma_io.from_anndata(uri, counts, measurement_name="RNA", X_layer_name="counts")
    return uri


def directions(path, out, **read_options):
    """Streaming preprocess, train (k = 10) and directions of ``path``: (genes, directions (genes x k), cells)."""
    out.mkdir(parents=True, exist_ok=True)
    pipeline.preprocess_file(path, out / "pre.h5ad", streaming=True, **PRE, **read_options)
    pipeline.train_file(out / "pre.h5ad", out / "model.npz", n_components=K)
    pipeline.directions_file(out / "pre.h5ad", out / "model.npz", out / "dir.h5ad")
    pre = ad.read_h5ad(out / "pre.h5ad", backed="r")
    genes, cells = list(pre.var_names), list(pre.obs_names)
    pre.file.close()
    return genes, load_model(out / "model.npz").directions[:, :K], cells


def assert_same_directions(a, b):
    genes_a, U, cells_a = a
    genes_b, V, cells_b = b
    assert genes_a == genes_b and cells_a == cells_b
    cos = np.abs(np.sum(U * V, axis=0)) / (np.linalg.norm(U, axis=0) * np.linalg.norm(V, axis=0))
    assert cos.min() >= 1 - TOLERANCE, cos


@pytest.fixture(scope="module")
def h5ad_runs(stores, tmp_path_factory):
    """The .h5ad runs the atlas inputs are compared with: all cells, and the blood cells alone."""
    d = tmp_path_factory.mktemp("h5ad_runs")
    return {
        "all": directions(stores / "counts.h5ad", d / "all"),
        "blood": directions(stores / "blood.h5ad", d / "blood"),
    }


# -- formats ------------------------------------------------------------------------------------------------------


def test_zarr_and_soma_are_detected(stores, tmp_path):
    assert detect_format(stores / "counts.zarr") == "zarr"
    assert detect_format(stores / "counts.h5ad") == "h5ad"
    assert detect_format("tiledb://census/experiment") == "soma"
    assert detect_format("s3://bucket/census/homo_sapiens") == "soma"
    (tmp_path / "tenx").mkdir()
    assert detect_format(tmp_path / "tenx") == "10x_mtx"


def test_soma_is_detected(soma_store):
    assert detect_format(soma_store) == "soma"


def test_zarr_is_read_whole_as_the_h5ad(stores):
    a, b = read(stores / "counts.h5ad"), read(stores / "counts.zarr")
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    blood = read(stores / "counts.zarr", obs_filter=FILTER)
    assert (blood.obs["tissue"] == "blood").all() and blood.n_obs == int((a.obs["tissue"] == "blood").sum())


def test_soma_is_read_whole_as_the_h5ad(stores, soma_store):
    a, b = read(stores / "counts.h5ad"), read(soma_store)
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    assert (a.X != b.X).nnz == 0
    assert list(b.obs["tissue"]) == list(a.obs["tissue"])
    blood = read(soma_store, obs_filter=FILTER)
    assert list(blood.obs_names) == list(a.obs_names[a.obs["tissue"] == "blood"])


def test_zarr_rows_are_read_in_blocks(stores, counts):
    matrix, obs, genes = open_streaming(stores / "counts.zarr", None)
    assert matrix.shape == counts.shape and list(genes) == list(counts.var_names)
    block = matrix.read(700, 900)
    assert (block != counts.X[700:900]).nnz == 0
    sub, obs_b, _ = open_streaming(stores / "counts.zarr", None, obs_filter=FILTER)
    rows = np.flatnonzero(counts.obs["tissue"] == "blood")
    assert sub.shape == (len(rows), counts.n_vars) and list(obs_b.index) == list(counts.obs_names[rows])
    assert (sub.read(10, 400) != counts.X[rows[10:400]]).nnz == 0


def test_a_sparse_selection_is_read_in_windows(stores, counts):
    """Rows selected far apart are read a window at a time, never the whole span between them."""
    from rlae_sc.atlas import zarr_matrix

    seen = []

    class Spy:
        path, shape = "spy", counts.shape

        def read(self, start, stop):
            seen.append(stop - start)
            return zarr_matrix(stores / "counts.zarr").read(start, stop)

    rows = np.array([3, 4, 90, 500, 501, 1200, 1499])
    block = RowSubset(Spy(), rows, span=100).read(0, len(rows))
    assert (block != counts.X[rows]).nnz == 0 and max(seen) <= 100 and len(seen) == 4


def test_dense_zarr_rows_are_streamed(counts, tmp_path):
    dense = counts.copy()
    dense.X = dense.X.toarray()
    dense.write_zarr(tmp_path / "dense.zarr")
    matrix, _, _ = open_streaming(tmp_path / "dense.zarr", None)
    np.testing.assert_array_equal(matrix.read(5, 50), counts.X[5:50].toarray())
    rows = np.flatnonzero(counts.obs["tissue"] == "blood")
    sub = RowSubset(matrix, rows, span=64)  # several windows per block
    np.testing.assert_array_equal(sub.read(7, 600), counts.X[rows[7:600]].toarray())


# -- directions: the judged criterion --------------------------------------------------------------------------------


def test_zarr_gives_the_h5ad_directions(stores, h5ad_runs, tmp_path):
    assert_same_directions(directions(stores / "counts.zarr", tmp_path), h5ad_runs["all"])


def test_zarr_with_an_obs_filter_gives_the_filtered_h5ad_directions(stores, h5ad_runs, tmp_path):
    assert_same_directions(directions(stores / "counts.zarr", tmp_path, obs_filter=FILTER), h5ad_runs["blood"])


def test_h5ad_with_an_obs_filter_gives_the_filtered_h5ad_directions(stores, h5ad_runs, tmp_path):
    assert_same_directions(directions(stores / "counts.h5ad", tmp_path, obs_filter=FILTER), h5ad_runs["blood"])


def test_soma_gives_the_h5ad_directions(soma_store, h5ad_runs, tmp_path):
    assert_same_directions(directions(soma_store, tmp_path, measurement="RNA"), h5ad_runs["all"])


def test_soma_with_an_obs_filter_gives_the_filtered_h5ad_directions(soma_store, h5ad_runs, tmp_path):
    run = directions(soma_store, tmp_path, measurement="RNA", layer="counts", obs_filter=FILTER)
    assert_same_directions(run, h5ad_runs["blood"])


# -- bad input: the file, the problem and the fix ------------------------------------------------------------------


def test_soma_errors_name_the_problem_and_the_fix(soma_store):
    with pytest.raises(InputError, match="no measurement 'ATAC' .*measurements: RNA.*--measurement"):
        open_streaming(soma_store, None, measurement="ATAC")
    with pytest.raises(InputError, match="no X layer 'raw' .*layers: counts.*--layer"):
        open_streaming(soma_store, "raw")
    with pytest.raises(InputError, match="selects none of the 1,500 cells"):
        open_streaming(soma_store, None, obs_filter="tissue == 'liver'")
    with pytest.raises(InputError, match="cannot be applied.*comparison of obs columns.*tissue"):
        open_streaming(soma_store, None, obs_filter="tissue === blood'")
    with pytest.raises(InputError, match="cannot be applied"):
        open_streaming(soma_store, None, obs_filter="organ == 'blood'")
    for exc in (pytest.raises(InputError, match=r"counts\.soma: obs_filter"),):
        with exc:
            read(soma_store, obs_filter="tissue == 'liver'")


def test_zarr_and_h5ad_filter_errors(stores):
    for name in ("counts.zarr", "counts.h5ad"):
        with pytest.raises(InputError, match=f"{name}: obs_filter .* selects none of the 1,500 cells"):
            open_streaming(stores / name, None, obs_filter="tissue == 'liver'")
        with pytest.raises(InputError, match=f"{name}: obs_filter .* cannot be applied.*--obs-filter"):
            open_streaming(stores / name, None, obs_filter="tissue === blood'")
    with pytest.raises(InputError, match="no matrix at 'layers/spliced'"):
        open_streaming(stores / "counts.zarr", "spliced")


def test_bad_values_in_a_zarr_store_are_named(counts, tmp_path):
    a = counts[:300].copy()
    X = a.X.tolil()
    X[17, 4] = np.nan
    a.X = X.tocsr()
    a.write_zarr(tmp_path / "nan.zarr")
    with pytest.raises(InputError, match=r"nan\.zarr: 1 NaN or infinite values \(first at cell") as caught:
        pipeline.preprocess_file(tmp_path / "nan.zarr", tmp_path / "pre.h5ad", streaming=True, **PRE)
    assert "h5ad" not in str(caught.value)


def test_missing_tiledbsoma_says_how_to_install_it(soma_store, monkeypatch):
    monkeypatch.setitem(sys.modules, "tiledbsoma", None)  # import tiledbsoma now raises ImportError
    with pytest.raises(InputError, match=r"needs tiledbsoma.*pip install 'rlae-sc\[atlas\]'"):
        open_streaming(soma_store, None)


# -- the command line, zarr format 3, Dask workers -----------------------------------------------------------------


def test_command_line_streams_a_filtered_zarr_store(stores, tmp_path, capsys):
    from rlae_sc.cli import main

    out = tmp_path / "pre.h5ad"
    argv = ["preprocess", str(stores / "counts.zarr"), "--out", str(out), "--streaming", "--min-genes", "50"]
    assert main([*argv, "--n-top-genes", "300", "--obs-filter", FILTER]) == 0
    pre = ad.read_h5ad(out, backed="r")
    assert set(pre.obs["tissue"]) == {"blood"} and pre.uns["rlae_input"]["path"] == str(stores / "counts.zarr")
    pre.file.close()
    assert main([*argv, "--obs-filter", "tissue = 'blood'"]) == 2
    assert "counts.zarr: obs_filter" in capsys.readouterr().err


def test_zarr_format_3_store_is_streamed(counts, tmp_path):
    with ad.settings.override(zarr_write_format=3):
        counts.write_zarr(tmp_path / "v3.zarr")
    assert detect_format(tmp_path / "v3.zarr") == "zarr"
    matrix, obs, genes = open_streaming(tmp_path / "v3.zarr", None)
    assert (matrix.read(100, 1400) != counts.X[100:1400]).nnz == 0 and list(obs.index) == list(counts.obs_names)


def test_row_sources_travel_to_dask_workers(stores, soma_store):
    """Dask ships a pass's row source to its workers by pickling it; each block opens the store itself."""
    import pickle

    for path in (stores / "counts.zarr", soma_store):
        matrix, _, _ = open_streaming(path, None, obs_filter=FILTER)
        again = pickle.loads(pickle.dumps(matrix))
        assert (again.read(3, 300) != matrix.read(3, 300)).nnz == 0
        assert again.fingerprint() == matrix.fingerprint()


def test_soma_genes_are_named_as_in_the_census(counts, tmp_path):
    """Census-style var columns: symbols in feature_name (the default names), Ensembl ids in feature_id."""
    tiledbsoma_io = pytest.importorskip("tiledbsoma.io")
    a = counts[:40].copy()
    ids = [f"ENSG{i:011d}" for i in range(a.n_vars)]
    a.var = pd.DataFrame({"feature_name": list(a.var_names), "feature_id": ids}, index=ids)
    uri = str(tmp_path / "census.soma")
    tiledbsoma_io.from_anndata(uri, a, measurement_name="RNA", X_layer_name="raw")
    _, obs, symbols = open_streaming(uri, None)
    assert list(symbols) == list(counts.var_names) and list(obs.index) == list(counts.obs_names[:40])
    _, _, genes = open_streaming(uri, None, var_names="gene_ids")
    assert list(genes) == ids
