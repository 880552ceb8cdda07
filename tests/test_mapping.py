"""Embedding new cells and mapping them onto a reference: label transfer, gene matching, QC flags."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from rlae_sc.keys import DIRECTIONS_KEY, EMBEDDING_KEY, UNS_KEY
from rlae_sc.mapping import UNASSIGNED, assign, map_query, mapping_scores, signal_present, transfer_labels
from rlae_sc.pipeline import embed_file, map_file, run
from rlae_sc.simulate import synthetic_counts
from tests.conftest import rlae_cli, shared_file

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
    # types 1 and 3 lie 0.9 latent units apart (noise 0.35 per unit): both classifiers get about 0.9 of the cells
    # right, and unassigned cells (about 2%) count as wrong
    assert summary["accuracy"] >= 0.85 and summary["accuracy_assigned"] >= 0.88
    mapped = ad.read_h5ad(tmp_path / "mapped.h5ad")
    assert mapped.obsm[EMBEDDING_KEY].shape == (300, 10)
    assert mapped.obsm["X_umap"].shape == (300, 2)
    assert mapped.obs["rlae_label_confidence"].between(0, 1).all()
    written = json.loads((tmp_path / "mapping.json").read_text())
    assert written["n_query_cells"] == 300 and written["classifier"] == "logistic"
    assert {"macro_f1", "accuracy_assigned", "unassigned_fraction", "signal_present"} <= set(written)
    assert written["unassigned_known"] <= 0.05 and written["macro_f1"] >= 0.85
    assert set(mapped.obs["rlae_unassigned"].cat.categories) == {"assigned", "beyond_reference", "split_vote"}
    page = (tmp_path / "report.html").read_text()
    assert "macro-F1" in page and "unassigned" in page


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


def test_both_classifiers_transfer_the_types(reference, query_file):
    ref = ad.read_h5ad(reference / "embedding.h5ad")
    for classifier in ("knn", "logistic"):
        query = embed_file(reference / "model.npz", query_file, None)
        summary = map_query(ref, query, label_key="cell_type", truth_key="cell_type", classifier=classifier)
        assert summary["classifier"] == classifier
        assert summary["accuracy"] >= 0.85 and summary["macro_f1"] >= 0.85, summary
        best = query.obs["rlae_label_best"].astype(str)
        assigned = query.obs["rlae_label"].astype(str) != UNASSIGNED
        assert (query.obs["rlae_label"].astype(str)[assigned] == best[assigned]).all()


def test_unassigned_rules_and_scores_by_hand():
    predicted = pd.Series(pd.Categorical(["a", "a", "b", "b", "a"]))
    labels, reason = assign(
        predicted, np.array([0.9, 0.4, 0.8, 0.3, 0.95]), np.array([False, False, True, True, False]), min_confidence=0.5
    )
    assert list(labels.astype(str)) == ["a", UNASSIGNED, UNASSIGNED, UNASSIGNED, "a"]
    assert list(reason.astype(str)) == ["assigned", "split_vote", "beyond_reference", "beyond_reference", "assigned"]
    truth = pd.Series(["a", "a", "b", "c", "?"])  # c: a type the reference lacks; ?: unlabelled, left out
    scores = mapping_scores(truth, pd.Series(labels), reference_labels=["a", "b"])
    assert scores["n_scored"] == 3 and scores["accuracy"] == pytest.approx(1 / 3)  # b and the second a: unassigned
    assert scores["accuracy_assigned"] == 1.0
    assert scores["unassigned_known"] == pytest.approx(2 / 3) and scores["unassigned_novel"] == 1.0
    # F1(a): precision 1, recall 1/2 -> 2/3; F1(b): no true positive -> 0
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    wrong = mapping_scores(truth, pd.Series(["a", "a", "b", "a", "a"]), reference_labels=["a", "b"])
    assert wrong["macro_f1"] == pytest.approx((0.8 + 1.0) / 2)  # c called a: a false positive for a


def test_signal_present_weighs_the_loadings_by_eigenvalue(reference):
    ref = ad.read_h5ad(reference / "embedding.h5ad")
    used = ref.var_names[ref.var["rlae_used"].to_numpy()]
    assert signal_present(ref, ref.var_names) == 1.0
    P, e = ref.varm[DIRECTIONS_KEY][ref.var["rlae_used"].to_numpy()], ref.uns[UNS_KEY]["eigenvalues"]
    weight = pd.Series(np.square(P.astype(np.float64)) @ e, index=used).sort_values()
    heavy, light = weight.index[-20:], weight.index[:20]
    assert signal_present(ref, used.difference(heavy)) == pytest.approx(1 - weight[heavy].sum() / weight.sum())
    assert signal_present(ref, used.difference(heavy)) < signal_present(ref, used.difference(light)) < 1


LEFT_OUT = dict(n_genes=1500, n_types=6, rank=8, seed=7)  # type_3: 3.2 latent units from its nearest type


def test_left_out_type_is_unassigned(tmp_path):
    """A reference without one cell type, and a query with every type: the left-out type's cells are unassigned,
    the others are not (synthetic counts; type_3's centre is the farthest from the other types' centres)."""
    cells = synthetic_counts(n_cells=600, cell_seed=1, **LEFT_OUT)
    cells[cells.obs["cell_type"] != "type_3"].copy().write_h5ad(tmp_path / "ref.h5ad")
    query = synthetic_counts(n_cells=300, cell_seed=2, **LEFT_OUT)
    query.obs_names = [f"q{i}" for i in range(query.n_obs)]
    query.write_h5ad(tmp_path / "query.h5ad")
    out = tmp_path / "out"
    run(
        tmp_path / "ref.h5ad",
        out,
        label_key="cell_type",
        preprocess_params={"min_genes": 50, "n_top_genes": 500},
        train_params={"n_components": 10},
    )
    summary = map_file(
        out / "model.npz", out / "embedding.h5ad", tmp_path / "query.h5ad", tmp_path / "map",
        label_key="cell_type", truth_key="cell_type",
    )  # fmt: skip
    assert summary["n_novel"] == int((query.obs["cell_type"] == "type_3").sum())
    assert summary["unassigned_novel"] >= 0.8, summary
    assert summary["unassigned_known"] <= 0.05, summary


def test_soupx_without_monocytes_leaves_them_unassigned(tmp_path):
    """Issue 23's check: a reference on half of soupx without its monocytes (MNP), the other half mapped onto it:
    at least 80% of the monocytes are unassigned and at most 5% of the other labelled cells."""
    cells = ad.read_h5ad(shared_file("soupx_pbmc4k_2170.h5ad"))
    order = np.random.default_rng(0).permutation(cells.n_obs)
    half = cells.n_obs // 2
    ref, query = cells[np.sort(order[:half])], cells[np.sort(order[half:])]
    ref[ref.obs["cell_type"] != "MNP"].copy().write_h5ad(tmp_path / "ref.h5ad")
    query.copy().write_h5ad(tmp_path / "query.h5ad")
    out = tmp_path / "out"
    run(tmp_path / "ref.h5ad", out, label_key="cell_type")
    summary = map_file(
        out / "model.npz", out / "embedding.h5ad", tmp_path / "query.h5ad", tmp_path / "map",
        label_key="cell_type", truth_key="cell_type",
    )  # fmt: skip
    assert summary["n_novel"] == int((query.obs["cell_type"] == "MNP").sum())
    assert summary["unassigned_novel"] >= 0.8, summary
    assert summary["unassigned_known"] <= 0.05, summary
    assert summary["macro_f1"] >= 0.85 and summary["accuracy"] >= 0.85, summary


def test_composition_shift_recovers_a_new_batchs_offset():
    """A new batch holding two of five types, its scores offset by a known vector (as centring on its own mean
    does to a batch whose type shares differ from the reference's): the shift found is that offset, to the
    noise of the cells' mean."""
    from rlae_sc.mapping import composition_shift, logistic_classifier

    rng = np.random.default_rng(3)
    k, per_type = 6, 200
    centres = rng.normal(scale=6.0, size=(5, k))
    labels = np.repeat([f"t{i}" for i in range(5)], per_type)
    ref_x = centres[np.repeat(np.arange(5), per_type)] + rng.normal(size=(5 * per_type, k))
    reference = ad.AnnData(obs=pd.DataFrame({"cell_type": labels}, index=[f"r{i}" for i in range(len(labels))]))
    reference.obsm[EMBEDDING_KEY] = ref_x.astype(np.float32)
    offset = rng.normal(scale=3.0, size=k)
    types = np.repeat([1, 3], [300, 100])
    query_x = centres[types] + rng.normal(size=(len(types), k)) + offset
    classify = logistic_classifier(reference, label_key="cell_type")
    shift = composition_shift(reference, query_x, classify, label_key="cell_type", min_confidence=0.5)
    noise = 4 / np.sqrt(len(types))  # four standard errors of the mean of unit-variance noise
    np.testing.assert_allclose(shift, offset, atol=noise)
    assert (classify(query_x - shift)["predicted"].astype(str) == np.array(["t1", "t3"])[types // 3]).mean() > 0.99
