"""Embedding new cells and mapping them onto a reference: label transfer, gene matching, QC flags."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from rlae_sc.keys import EMBEDDING_KEY
from rlae_sc.mapping import transfer_labels
from rlae_sc.pipeline import map_file, run
from rlae_sc.simulate import synthetic_counts
from tests.conftest import rlae_cli

STRUCTURE = dict(n_genes=400, n_types=4, rank=5, seed=7)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    wd = tmp_path_factory.mktemp("ref")
    synthetic_counts(n_cells=600, cell_seed=1, **STRUCTURE).write_h5ad(wd / "ref.h5ad")
    run(
        wd / "ref.h5ad",
        wd / "out",
        label_key="cell_type",
        preprocess_params={"min_genes": 50, "n_top_genes": 200},
        train_params={"n_components": 10},
    )
    return wd / "out"


@pytest.fixture(scope="module")
def query_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("query") / "query.h5ad"
    q = synthetic_counts(n_cells=300, cell_seed=2, **STRUCTURE)
    q.obs_names = [f"q{i}" for i in range(q.n_obs)]
    q.write_h5ad(path)
    return path


def test_second_batch_gets_its_types_back(reference, query_file, tmp_path):
    summary = map_file(
        reference / "model.npz",
        reference / "embedding.h5ad",
        query_file,
        tmp_path,
        label_key="cell_type",
        truth_key="cell_type",
    )
    assert summary["accuracy"] >= 0.9
    mapped = ad.read_h5ad(tmp_path / "mapped.h5ad")
    assert mapped.obsm[EMBEDDING_KEY].shape == (300, 10)
    assert mapped.obsm["X_umap"].shape == (300, 2)
    assert mapped.obs["rlae_label_confidence"].between(0, 1).all()
    assert json.loads((tmp_path / "mapping.json").read_text())["n_query_cells"] == 300
    assert (tmp_path / "report.html").stat().st_size > 0


def test_transfer_matches_a_plain_majority_vote_when_neighbours_agree(reference):
    ref = ad.read_h5ad(reference / "embedding.h5ad")
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=15).fit(ref.obsm[EMBEDDING_KEY], ref.obs["cell_type"].astype(str))
    ours = transfer_labels(ref, ref, label_key="cell_type")
    plain = knn.predict(ref.obsm[EMBEDDING_KEY])
    sure = ours["confidence"].to_numpy() > 0.9
    assert sure.mean() > 0.5
    assert (ours["predicted"].astype(str).to_numpy()[sure] == plain[sure]).all()


def test_missing_reference_labels_are_never_transferred(reference):
    ref = ad.read_h5ad(reference / "embedding.h5ad")
    ref.obs["with_unknown"] = ref.obs["cell_type"].astype(str).where(ref.obs["cell_type"] != "type_1", "?")
    out = transfer_labels(ref, ref, label_key="with_unknown")
    assert "?" not in set(out["predicted"].astype(str))


def test_query_missing_genes_warns_then_fails_with_numbers(reference, query_file, tmp_path):
    q = ad.read_h5ad(query_file)
    model_genes = json.loads(ad.read_h5ad(reference / "preprocessed.h5ad").uns["rlae_recipe"])["genes"]
    rng = np.random.default_rng(0)
    for frac, ok in [(0.3, True), (0.9, False)]:
        drop = set(rng.choice(model_genes, size=int(frac * len(model_genes)), replace=False))
        path = tmp_path / f"q{frac}.h5ad"
        q[:, [g for g in q.var_names if g not in drop]].copy().write_h5ad(path)
        res = rlae_cli(
            "embed",
            str(path),
            "--model",
            str(reference / "model.npz"),
            "--out",
            str(tmp_path / f"e{frac}.h5ad"),
            check=False,
        )
        if ok:
            assert res.returncode == 0, res.stderr
            assert "overlap 70.0%" in res.stderr
        else:
            assert res.returncode == 2
            assert "only 20 of the model's 200 genes (10%)" in res.stderr and "Traceback" not in res.stderr


def test_cells_failing_qc_are_embedded_and_flagged(reference, query_file, tmp_path):
    q = ad.read_h5ad(query_file)
    X = q.X.tolil()
    X[0, :] = 0
    q.X = X.tocsr()
    path = tmp_path / "q.h5ad"
    q.write_h5ad(path)
    summary = map_file(
        reference / "model.npz", reference / "embedding.h5ad", path, tmp_path / "m", label_key="cell_type"
    )
    mapped = ad.read_h5ad(tmp_path / "m" / "mapped.h5ad")
    assert mapped.n_obs == q.n_obs
    assert not mapped.obs["rlae_qc_pass"].iloc[0] and summary["n_flagged_by_qc"] >= 1
    assert isinstance(mapped.obs["rlae_label"].dtype, pd.CategoricalDtype)
