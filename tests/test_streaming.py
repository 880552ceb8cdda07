"""Streaming passes over .h5ad files and the Dask back end give the in-memory results."""

from __future__ import annotations

from functools import partial

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
from distributed import get_task_stream

from rlae_sc import pipeline
from rlae_sc.dask_engine import dask_client
from rlae_sc.engine import run_pass
from rlae_sc.errors import InputError
from rlae_sc.lae import theory
from rlae_sc.model import load_model
from rlae_sc.preprocess import fit_recipe
from rlae_sc.products import scatter_block, scatter_matrix, scores_block
from rlae_sc.rows import H5adMatrix, InMemory, h5ad_matrix
from tests.conftest import blocks_per_worker, trained_matrix

PRE = {"min_genes": 50, "n_top_genes": 150, "clip": 3.0}  # HVG selection, QC and clipping all take part


@pytest.fixture(scope="module")
def counts_file(small_counts, tmp_path_factory):
    """small_counts with three cells that fail QC (few genes, mostly mito, empty)."""
    a = small_counts.copy()
    X = a.X.tolil()
    X[0, :] = 0
    X[0, :5] = 1
    mito = np.flatnonzero(a.var_names.str.startswith("MT-"))
    X[1, :] = 0
    X[1, mito] = 50
    X[1, :60] = 1
    X[2, :] = 0
    a.X = sp.csr_matrix(X)
    path = tmp_path_factory.mktemp("stream") / "counts.h5ad"
    a.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def both(counts_file, tmp_path_factory):
    """Preprocess, train and directions, in memory and streaming; returns the output folders."""
    out = {}
    for mode in ("memory", "streaming"):
        d = tmp_path_factory.mktemp(mode)
        pipeline.preprocess_file(counts_file, d / "pre.h5ad", streaming=mode == "streaming", **PRE)
        pipeline.train_file(d / "pre.h5ad", d / "model.npz", n_components=10)
        pipeline.directions_file(d / "pre.h5ad", d / "model.npz", d / "dir.h5ad")
        out[mode] = d
    return out


def test_streaming_preprocessing_equals_in_memory(both):
    mem, st = (ad.read_h5ad(both[m] / "pre.h5ad") for m in ("memory", "streaming"))
    assert list(mem.var_names) == list(st.var_names) and list(mem.obs_names) == list(st.obs_names)
    assert mem.uns["rlae_preprocess"]["n_cells_removed"] == 3
    np.testing.assert_array_equal(st.X.toarray(), mem.X.toarray())  # the same block functions on the same blocks
    assert st.raw is None and mem.raw is not None


def test_streaming_directions_and_embedding_equal_in_memory(both):
    a, b = (load_model(both[m] / "model.npz") for m in ("memory", "streaming"))
    np.testing.assert_array_equal(a.directions, b.directions)
    da, db = (ad.read_h5ad(both[m] / "dir.h5ad") for m in ("memory", "streaming"))
    np.testing.assert_array_equal(da.obsm["X_rlae"], db.obsm["X_rlae"])
    assert db.X is None and da.X is not None
    # and both agree with exact PCA of the matrix they trained on (scipy eigh, float64)
    X = trained_matrix(ad.read_h5ad(both["streaming"] / "pre.h5ad"))
    X -= X.mean(axis=0)
    e, U = scipy.linalg.eigh(X.T @ X)
    assert theory.alignment(b.directions, U[:, ::-1][:, :10]).min() > 0.9999


def test_passes_read_only_blocks(counts_file, small_counts, monkeypatch):
    seen = []
    read = H5adMatrix.read

    def spy(self, start, stop):
        seen.append(stop - start)
        return read(self, start, stop)

    monkeypatch.setattr(H5adMatrix, "read", spy)
    streamed, _ = fit_recipe(h5ad_matrix(str(counts_file)), small_counts.var_names, chunk_size=64, **PRE)
    assert seen and max(seen) <= 64 and sum(seen) % small_counts.n_obs == 0  # whole passes in blocks of 64
    X = sp.csr_matrix(ad.read_h5ad(counts_file).X)
    in_memory = fit_recipe(InMemory(X), small_counts.var_names, chunk_size=10_000, **PRE)[0]
    assert streamed.genes == in_memory.genes
    np.testing.assert_allclose(streamed.mean, in_memory.mean, rtol=1e-12)
    np.testing.assert_allclose(streamed.std, in_memory.std, rtol=1e-12)
    np.testing.assert_allclose(streamed.offset, in_memory.offset, rtol=1e-9, atol=1e-12)


def test_streaming_embed_equals_in_memory(both, counts_file):
    model = both["memory"] / "model.npz"
    a = pipeline.embed_file(model, counts_file, None)
    b = pipeline.embed_file(model, counts_file, None, streaming=True)
    np.testing.assert_array_equal(a.obsm["X_rlae"], b.obsm["X_rlae"])
    np.testing.assert_array_equal(a.obs["rlae_qc_pass"], b.obs["rlae_qc_pass"])
    assert not b.obs["rlae_qc_pass"].iloc[:3].any()


def test_dask_with_two_workers_gives_the_same_directions(both, counts_file, tmp_path, monkeypatch):
    pre = both["streaming"] / "pre.h5ad"
    with dask_client(2) as client:
        workers = set(client.scheduler_info()["workers"])
        assert len(workers) == 2
        with get_task_stream(client) as stream:
            C_dask = scatter_matrix(H5adMatrix(str(pre)), chunk_size=100, client=client)
    on_workers = blocks_per_worker(stream.data)  # the pass's blocks, each computed once, by these workers
    assert sum(on_workers.values()) == -(-H5adMatrix(str(pre)).shape[0] // 100) and set(on_workers) <= workers
    C = scatter_matrix(ad.read_h5ad(pre).X)
    np.testing.assert_allclose(C_dask, C, rtol=1e-9, atol=1e-9 * np.abs(C).max())
    read_here = record_reads(monkeypatch)  # in this process: the workers of dask=2 are processes of their own
    pipeline.preprocess_file(counts_file, tmp_path / "pre.h5ad", streaming=True, dask=2, **PRE)
    on_dask, serial = (trained_matrix(ad.read_h5ad(path)) for path in (tmp_path / "pre.h5ad", pre))
    np.testing.assert_allclose(on_dask, serial, atol=1e-5)
    pipeline.train_file(tmp_path / "pre.h5ad", tmp_path / "model.npz", n_components=10, dask=2)
    assert read_here == [], "blocks of a dask=2 pass were read here, not on the workers"
    a, b = load_model(both["streaming"] / "model.npz"), load_model(tmp_path / "model.npz")
    assert theory.alignment(a.directions, b.directions).min() >= 0.9999


def test_streaming_input_errors(tmp_path, small_counts, counts_file):
    csv = tmp_path / "counts.csv"
    csv.write_text("cell,g1\nc1,1\n")
    with pytest.raises(InputError, match="streaming reads .h5ad files, anndata zarr stores and TileDB-SOMA"):
        pipeline.preprocess_file(csv, tmp_path / "out.h5ad", streaming=True)
    X = small_counts.X.tolil()
    X[345, 7] = np.nan
    ad.AnnData(X=sp.csr_matrix(X), var=small_counts.var).write_h5ad(tmp_path / "nan.h5ad")
    with pytest.raises(InputError, match=r"NaN or infinite values \(first at cell 345, gene 'Gene00007'\)"):
        pipeline.preprocess_file(tmp_path / "nan.h5ad", tmp_path / "out.h5ad", streaming=True, **PRE)
    data = counts_file.read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.h5ad"):
        pipeline.preprocess_file(tmp_path / "cut.h5ad", tmp_path / "out.h5ad", streaming=True, **PRE)
    with pytest.raises(InputError, match="has no matrix at 'layers/spliced'"):
        pipeline.preprocess_file(counts_file, tmp_path / "out.h5ad", streaming=True, layer="spliced", **PRE)
    with pytest.raises(InputError, match="needs the matrix in memory"):
        pipeline.preprocess_file(counts_file, tmp_path / "out.h5ad", streaming=True, **{**PRE, "hvg_flavor": "seurat"})
    assert not (tmp_path / "out.h5ad").exists()


def test_streaming_file_is_an_ordinary_h5ad(both):
    with h5py.File(both["streaming"] / "pre.h5ad", "r") as f:
        assert f["X"].attrs["encoding-type"] == "csr_matrix" and f["X/data"].dtype == np.float32
    pre = ad.read_h5ad(both["streaming"] / "pre.h5ad")
    assert sp.issparse(pre.X) and pre.X.shape == (pre.n_obs, pre.n_vars) and "rlae_recipe" in pre.uns


READ = H5adMatrix.read  # unpatched, for the spies below


def interrupt_after(monkeypatch, n_blocks: int) -> list[int]:
    """Make ``H5adMatrix.read`` raise KeyboardInterrupt, as a signal would, once ``n_blocks`` blocks have been
    read; returns the list of the first rows read so far."""
    calls = []

    def interrupted(self, start, stop):
        if len(calls) == n_blocks:
            raise KeyboardInterrupt
        calls.append(start)
        return READ(self, start, stop)

    monkeypatch.setattr(H5adMatrix, "read", interrupted)
    return calls


def record_reads(monkeypatch) -> list[int]:
    """Record the first row of every block ``H5adMatrix.read`` reads from now on (replacing any spy before)."""
    calls = []
    monkeypatch.setattr(H5adMatrix, "read", lambda self, a, b: calls.append(a) or READ(self, a, b))
    return calls


@pytest.mark.parametrize("kind", ["sums", "rows"])
def test_an_interrupted_pass_resumes_from_its_checkpoint(both, tmp_path, monkeypatch, kind):
    """Stopped after four of its twelve blocks, a pass resumes with the fifth and gives the uninterrupted result:
    the sums of the scatter pass, or the rows of the scores pass (kept in the checkpoint since the start)."""
    pre = str(both["streaming"] / "pre.h5ad")
    n = H5adMatrix(pre).shape[0]
    if kind == "sums":
        fn = partial(scatter_block, precision="float64")
    else:
        P = np.random.default_rng(0).standard_normal((H5adMatrix(pre).shape[1], 3))
        fn = partial(scores_block, P=P, device="cpu", residuals=True)
    whole = run_pass(H5adMatrix(pre), fn, chunk_size=50)
    assert whole[0 if kind == "sums" else 1], "the pass gave nothing to compare"
    ckpt = tmp_path / "pass.checkpoint"
    first = interrupt_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        run_pass(H5adMatrix(pre), fn, chunk_size=50, checkpoint=ckpt, checkpoint_seconds=0)
    assert first == [0, 50, 100, 150]
    interrupted = ckpt.read_bytes()  # the checkpoint after four blocks, for the other pass below
    resumed_from = record_reads(monkeypatch)
    again = run_pass(H5adMatrix(pre), fn, chunk_size=50, checkpoint=ckpt, checkpoint_seconds=0)
    assert resumed_from == list(range(200, n, 50))  # the blocks not yet done, each once
    for got, expected in zip(again, whole, strict=True):  # sums, then rows
        assert sorted(got) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    # the checkpoint after four blocks of 50 is not resumed by another pass (here: blocks of 70), which starts over
    ckpt.write_bytes(interrupted)
    reads = record_reads(monkeypatch)
    other = run_pass(H5adMatrix(pre), fn, chunk_size=70, checkpoint=ckpt)
    assert reads == list(range(0, n, 70))
    for got, expected in zip(other, whole, strict=True):
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, atol=1e-9 * np.abs(expected[key]).max())


def test_train_file_removes_its_checkpoints(both, tmp_path):
    pipeline.train_file(both["streaming"] / "pre.h5ad", tmp_path / "model.npz", n_components=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "model.trace.tsv"]
