"""`rlae-sc run` end to end on small synthetic counts: the output contract, recomputed independently."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from tests.conftest import recompute, rlae_cli, trained_matrix

K = 10


@pytest.fixture(scope="module")
def run_dir(small_counts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rlae_cli(
        "run",
        str(small_counts_file),
        "--out",
        str(out),
        "--label-key",
        "cell_type",
        "--n-components",
        str(K),
        "--n-top-genes",
        "200",
        "--min-genes",
        "50",
    )
    return out


def test_every_output_is_written(run_dir):
    for name in [
        "preprocessed.h5ad",
        "model.npz",
        "directions.h5ad",
        "embedding.h5ad",
        "metrics.json",
        "report.html",
        "figures/umap.png",
        "figures/alignment.png",
        "figures/markers.png",
        "figures/qc.png",
        "markers.tsv",
        "cells.csv",
    ]:
        assert (run_dir / name).stat().st_size > 0, name
    assert not list(run_dir.glob("*.tmp*")), "temporary files left behind"


def test_embedding_follows_scanpy_conventions(run_dir, small_counts):
    emb = ad.read_h5ad(run_dir / "embedding.h5ad")
    pre = ad.read_h5ad(run_dir / "preprocessed.h5ad")
    assert list(emb.obs_names) == list(pre.obs_names)
    assert list(emb.var_names) == list(small_counts.var_names)  # all input genes
    assert emb.obsm["X_rlae"].shape == (emb.n_obs, K)
    assert emb.obsm["X_umap"].shape == (emb.n_obs, 2)
    assert emb.obs["leiden"].nunique() >= 2
    loadings = emb.varm["rlae_directions"]
    used = emb.var["rlae_used"].to_numpy()
    assert loadings.shape == (small_counts.n_vars, K)
    assert np.all(loadings[~used] == 0) and used.sum() == pre.n_vars
    for key in ["eigenvalues", "variance_ratio", "lambda", "params"]:
        assert key in emb.uns["rlae"]
    sc.pp.neighbors(emb, use_rep="X_rlae", transformer="sklearn")  # usable by scanpy as is


def test_metrics_hold_when_recomputed_from_the_outputs(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    got = recompute(run_dir, K)
    assert got["cos"].min() >= 0.999
    assert metrics["min_abs_cos_top10"] == pytest.approx(got["cos"].min(), abs=1e-6)
    assert got["eigenvalue_max_rel_err"] <= 1e-3
    assert got["subspace_distance"] <= 1e-3
    assert got["scores_check"] <= 1e-4  # obsm['X_rlae'] is X @ directions
    for key in [
        "n_cells",
        "n_genes",
        "k",
        "lambda",
        "fit_seconds",
        "subspace_distance",
        "eigenvalue_max_rel_err_top10",
        "transpose_distance",
        "ari",
        "nmi",
    ]:
        assert key in metrics, key
    assert metrics["ari"] == pytest.approx(got["ari"]) and metrics["ari"] > 0.5


def test_embedding_agrees_with_scanpy_pca(run_dir):
    pre = ad.read_h5ad(run_dir / "preprocessed.h5ad")
    pre.X = trained_matrix(pre)  # the stored log-normalised values, centred and scaled
    emb = ad.read_h5ad(run_dir / "embedding.h5ad")
    sc.pp.pca(pre, n_comps=K, svd_solver="arpack")
    ours, theirs = emb.obsm["X_rlae"], pre.obsm["X_pca"]
    corr = np.abs(np.sum(ours * theirs, axis=0)) / np.linalg.norm(ours, axis=0) / np.linalg.norm(theirs, axis=0)
    assert corr[:5].min() > 0.999


def test_embed_reproduces_the_training_embedding(run_dir, small_counts_file, tmp_path):
    out = tmp_path / "query.h5ad"
    rlae_cli("embed", str(small_counts_file), "--model", str(run_dir / "model.npz"), "--out", str(out))
    query = ad.read_h5ad(out)
    emb = ad.read_h5ad(run_dir / "embedding.h5ad")
    q = query[emb.obs_names].obsm["X_rlae"]
    assert np.abs(q - emb.obsm["X_rlae"]).max() / np.abs(emb.obsm["X_rlae"]).max() <= 1e-5
    assert query.n_obs == ad.read_h5ad(small_counts_file).n_obs  # no cell dropped
    assert query.obs["rlae_qc_pass"].sum() == emb.n_obs


def test_cli_errors_name_the_file_without_traceback(tmp_path):
    res = rlae_cli("preprocess", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "p.h5ad"), check=False)
    assert res.returncode == 2
    assert "missing.h5ad: file not found" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "p.h5ad").exists()


def test_unknown_label_key_is_named_before_any_work(small_counts_file, tmp_path):
    res = rlae_cli("run", str(small_counts_file), "--out", str(tmp_path / "o"), "--label-key", "celltype", check=False)
    assert res.returncode == 2 and "no label column 'celltype'" in res.stderr
    assert not (tmp_path / "o" / "preprocessed.h5ad").exists()


def test_a_stage_given_a_damaged_or_foreign_file_names_it(run_dir, small_counts_file, tmp_path):
    data = (run_dir / "preprocessed.h5ad").read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(data[: len(data) // 3])
    for given, problem in [
        (tmp_path / "cut.h5ad", "cut.h5ad: cannot be read as h5ad"),
        (small_counts_file, "was not written by `rlae-sc preprocess`"),
    ]:
        res = rlae_cli("train", str(given), "--out", str(tmp_path / "m.npz"), check=False)
        assert res.returncode == 2 and problem in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "m.npz").exists()


def test_the_cluster_stage_writes_a_zarr_store_that_the_report_and_map_read(run_dir, small_counts_file, tmp_path):
    """``--out embedding.zarr``: an anndata zarr store holding what embedding.h5ad holds (the embedding, X and the
    graphs copied in from the files on disk, compressed), with the same results; the report and map read it."""
    from anndata.io import read_elem

    out = tmp_path / "embedding.zarr"
    rlae_cli("cluster", str(run_dir / "directions.h5ad"), "--out", str(out), "--metrics", str(tmp_path / "m.json"))
    assert out.is_dir() and (tmp_path / "embedding.faiss").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name], "temporary files left behind"
    store, file = ad.read_zarr(out), ad.read_h5ad(run_dir / "embedding.h5ad")
    for key in ("X_rlae", "X_umap"):
        np.testing.assert_array_equal(store.obsm[key], file.obsm[key])
    for key in ("distances", "connectivities"):
        assert (store.obsp[key] != file.obsp[key]).nnz == 0
    assert file.X is not None and type(store.X) is type(file.X)
    np.testing.assert_array_equal(sp.csr_matrix(store.X).toarray(), sp.csr_matrix(file.X).toarray())
    assert store.obs["leiden"].equals(file.obs["leiden"])
    assert (
        json.loads((tmp_path / "m.json").read_text())["sha256"]
        == json.loads((run_dir / "metrics.json").read_text())["sha256"]
    )
    import zarr

    assert zarr.open_group(str(out), mode="r")["obsm/X_rlae"].compressors[0].codec_id == "blosc"
    assert read_elem(zarr.open_group(str(out), mode="r")["uns/rlae"])["metrics"]["n_clusters"] > 1
    rlae_cli("report", str(out), "--out-dir", str(tmp_path / "report"), "--dataset", "zarr")
    assert (tmp_path / "report" / "report.html").stat().st_size > 0
    rlae_cli(
        "map",
        str(small_counts_file),
        "--model",
        str(run_dir / "model.npz"),
        "--reference",
        str(out),
        "--out-dir",
        str(tmp_path / "mapped"),
        "--label-key",
        "cell_type",
    )
    assert ad.read_h5ad(tmp_path / "mapped" / "mapped.h5ad").n_obs > 0
    # written again over the store: replaced whole
    rlae_cli("cluster", str(run_dir / "directions.h5ad"), "--out", str(out), "--metrics", str(tmp_path / "m.json"))
    assert ad.read_zarr(out).obs["leiden"].equals(file.obs["leiden"])


def test_a_stage_streamed_by_the_next_refuses_a_zarr_output(run_dir, small_counts_file, tmp_path):
    res = rlae_cli("preprocess", str(small_counts_file), "--out", str(tmp_path / "p.zarr"), check=False)
    assert res.returncode == 2 and "p.zarr: the preprocess stage writes .h5ad only" in res.stderr
    res = rlae_cli(
        "directions",
        str(run_dir / "preprocessed.h5ad"),
        str(run_dir / "model.npz"),
        "--out",
        str(tmp_path / "d.zarr"),
        check=False,
    )
    assert res.returncode == 2 and "d.zarr: the directions stage writes .h5ad only" in res.stderr
    assert not list(tmp_path.iterdir())
