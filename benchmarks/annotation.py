"""Cell-type annotation (issue 23, item 6): rlae-sc's reference mapping against logistic regression on
log-normalised counts (the Open Problems baseline) and CellTypist 1.7.1 trained on the same reference.

    .venv/bin/python benchmarks/annotation.py                                  # every task (about 25 min, 2 cores)
    .venv/bin/python benchmarks/annotation.py --tasks soupx_halves soupx_loto  # some tasks; the others' results stay
    .venv/bin/python benchmarks/annotation.py --quick                          # harness check; writes benchmarks/data/

CellTypist 1.7.1 constructs ``LogisticRegression(multi_class='ovr')``, an argument scikit-learn removed in 1.8,
so with this venv's scikit-learn (1.9) ``celltypist.train`` raises a TypeError. CellTypist therefore runs in a
worker process of this script with a scikit-learn 1.7 put first on its path (``--celltypist-sklearn``,
default ``benchmarks/data/sklearn17``, git-ignored), made once with::

    .venv/bin/pip install --no-deps --target benchmarks/data/sklearn17 'scikit-learn>=1.7,<1.8'

Every other method runs in this process with the venv's own packages.

Tasks, each on real data in ``../shared/data`` (``RLAE_SHARED_DATA`` overrides):

- ``soupx_halves``: soupx_pbmc4k_2170, a seeded random half of the cells (``--seed``, numpy
  ``default_rng(seed).permutation``, the first 1,085) is the reference, the other half the query; labels
  ``obs['cell_type']`` (``?``: unlabelled, left out of training and scoring).
- ``soupx_loto`` and ``kang_loto``: leave one type out. For each labelled type T, the reference is the same
  reference half without T's cells and the query is the other half with every type. Reported per T: the
  unassigned share among T's query cells (``unassigned_novel``, bar >= 0.80), among the other labelled query
  cells (``unassigned_known``, bar <= 0.05), macro-F1 and accuracy (unassigned cells counted as wrong), and
  whether rlae-sc's macro-F1 is at least logistic regression's minus 0.01 (issue 23's bars).
- ``pbmc3_map``: garnett + soupx + kang on their 1,272 shared gene symbols with the coarse labels of the data
  README (built by ``integration_data.build_pbmc3``); train on two studies, map the third, each held out in turn.
  Held-out kang has DC and Mk cells, types the other two studies lack (``unassigned_novel``).

kang (1,287 pre-filtered genes) and pbmc3 (1,272) are run with ``min_genes=100`` as in ``integration.py``
(rlae-sc's default 200 is meant for a whole transcriptome); soupx with the library's defaults.

Methods, on the same reference and query files of each split:

- ``rlae_logistic``: ``rlae_sc.pipeline.run(reference, out, label_key=...)`` then ``rlae_sc.pipeline.map_file``
  with the library's defaults (``classifier='logistic'``, ``min_confidence`` 0.5, ``distance_quantile`` 0.99);
  seconds = run + map.
- ``rlae_knn``: the same run's model, ``map_file(..., classifier='knn')``; seconds = the same run + its map.
- ``logreg``: normalize_total to 1e4 and log1p (log-CP10k) of the labelled reference cells and the query cells,
  the reference's genes present in the query, ``sklearn.linear_model.LogisticRegression(C=1, max_iter=1000)``
  (its defaults otherwise: lbfgs, multinomial); no unassigned cells.
- ``celltypist``: ``celltypist.train`` on the labelled reference cells, log1p-normalised to 1e4, with its
  defaults (``feature_selection=False``, ``C=1``, lbfgs logistic regression one-vs-rest, ``max_iter`` its
  default; ``check_expression`` on), then ``celltypist.annotate(majority_voting=False, mode='prob match',
  p_thres=0.5)``. ``celltypist`` is its best match (the label of the largest probability, as
  ``mode='best match'`` gives); ``celltypist_p05`` its probability-match labels, where ``Unassigned`` (no label
  above 0.5) and a multi-label call (``A|B``, more than one above 0.5) are counted as unassigned. Seconds =
  train + annotate (inside the worker, without its imports and file reads).

Every method's labels are scored by the same function, ``rlae_sc.mapping.mapping_scores(truth, labels,
reference_labels=...)`` with the reference's labelled types: accuracy over the query cells whose type the
reference has, unassigned counted as wrong; macro-F1 over the reference labels present in the truth;
``unassigned_known`` / ``unassigned_novel``. Seconds are wall-clock on a shared machine; CPU seconds are
recorded next to them.

Writes ``annotation.json`` (the record, rewritten after every split, so an interrupted run keeps what it
measured; splits not measured are listed under ``unfinished``) and ``annotation.md`` (tables, from the JSON)
here, or with ``--quick`` into ``benchmarks/data/``. Scratch files go to ``benchmarks/data/annotation/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import record  # noqa: E402

NAME = "annotation"
PACKAGES = ("rlae-sc", "numpy", "scipy", "pandas", "anndata", "scanpy", "scikit-learn", "celltypist")
TASKS = ("soupx_halves", "soupx_loto", "kang_loto", "pbmc3_map")
METHODS = {
    "rlae_logistic": "rlae-sc (defaults: logistic)",
    "rlae_knn": "rlae-sc (knn)",
    "logreg": "logistic regression, log-CP10k",
    "celltypist": "CellTypist (best match)",
    "celltypist_p05": "CellTypist (prob match, p 0.5)",
}
UNASSIGNED = "unassigned"  # rlae_sc.mapping.UNASSIGNED; checked against the library at start
MIN_GENES_FEW = 100  # kang and pbmc3: about 1,300 pre-filtered genes (see integration.py)
BAR_NOVEL, BAR_KNOWN, BAR_F1_MARGIN = 0.80, 0.05, 0.01
DEFAULT_SKLEARN17 = HERE / "data" / "sklearn17"


# ------------------------------------------------------------------------------------------------ record


ENV_VARS = ("PYTHONPATH", "RLAE_LIBRARY_COMMIT", "RLAE_SHARED_DATA")  # set ones are written before the command


def run_header() -> dict:
    """The record's ``run`` block (``record.header``), its command prefixed with the variables of ``ENV_VARS``
    that are set."""
    run = record.header(PACKAGES)
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in ENV_VARS if os.environ.get(k)]
    if env:
        run["command"] = " ".join([*env, run["command"]])
    return run


def library_source() -> dict:
    """Where the ``rlae_sc`` this run imports comes from: this checkout (HEAD plus any uncommitted changes to
    ``rlae_sc/``) or a copy elsewhere (``RLAE_LIBRARY_COMMIT`` names its commit, e.g. a ``git archive HEAD``)."""
    import rlae_sc

    path = Path(rlae_sc.__file__).resolve().parent
    out = {"path": str(path)}
    if path == (ROOT / "rlae_sc").resolve():
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "rlae_sc"], cwd=ROOT, capture_output=True, text=True
        ).stdout.splitlines()
        out.update(source="this checkout", uncommitted_rlae_sc_files=[line[3:] for line in status])
    else:
        out.update(source="a copy outside this checkout", commit=os.environ.get("RLAE_LIBRARY_COMMIT"))
    return out


# ------------------------------------------------------------------------------------------------ splits


def shared_dir() -> Path:
    import integration_data

    return integration_data.SHARED


def labelled(values: pd.Series) -> np.ndarray:
    from rlae_sc.labels import labelled_mask

    return labelled_mask(values)


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted cell indices of the reference half (the first n // 2 of a seeded permutation) and the query half."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def tidy_labels(a, key: str):
    """``obs[key]`` as a categorical of the labels present (no unused categories: a left-out type must not
    linger as a class)."""
    values = a.obs[key].astype(object)
    a.obs[key] = pd.Categorical(values.where(values.notna(), None))
    a.obs[key] = a.obs[key].cat.remove_unused_categories()
    return a


def splits(task: str, seed: int, quick: bool):
    """Yield (split name, reference AnnData, query AnnData, label key, preprocess params, note)."""
    import anndata as ad

    if task in ("soupx_halves", "soupx_loto", "kang_loto"):
        file = "kang_se_12261.h5ad" if task == "kang_loto" else "soupx_pbmc4k_2170.h5ad"
        cells = ad.read_h5ad(shared_dir() / file)
        cells.var_names_make_unique()
        cells.obs["cell_type"] = cells.obs["cell_type"].astype(str)
        if quick:
            cells = cells[np.random.default_rng(1).choice(cells.n_obs, 1200, replace=False)].copy()
        ref_i, query_i = halves(cells.n_obs, seed)
        ref, query = cells[ref_i].copy(), cells[query_i].copy()
        pp = {"min_genes": MIN_GENES_FEW} if task == "kang_loto" else {}
        note = f"{file}: reference = a seeded half ({len(ref_i)} cells, seed {seed}), query = the other half"
        if task == "soupx_halves":
            yield "halves", tidy_labels(ref, "cell_type"), tidy_labels(query, "cell_type"), "cell_type", pp, note
            return
        counts = ref.obs["cell_type"][labelled(ref.obs["cell_type"])].value_counts()
        types = list(counts.index)  # most cells first
        if quick:
            types = types[:2]
        for t in types:
            keep = (ref.obs["cell_type"] != t).to_numpy()
            yield (
                t,
                tidy_labels(ref[keep].copy(), "cell_type"),
                tidy_labels(query.copy(), "cell_type"),
                "cell_type",
                pp,
                note + f"; reference without {t}",
            )
    elif task == "pbmc3_map":
        import integration_data

        pbmc3 = integration_data.build_pbmc3()
        if quick:
            pbmc3 = pbmc3[np.random.default_rng(1).choice(pbmc3.n_obs, 3000, replace=False)].copy()
        for held in integration_data.STUDIES:
            in_ref = (pbmc3.obs["study"] != held).to_numpy()
            ref, query = pbmc3[in_ref].copy(), pbmc3[~in_ref].copy()
            yield (
                held,
                tidy_labels(ref, "coarse"),
                tidy_labels(query, "coarse"),
                "coarse",
                {"min_genes": MIN_GENES_FEW, "batch_key": "study"},
                f"integration_data.build_pbmc3(): {pbmc3.shape[1]} shared genes, coarse labels; "
                f"reference = the two other studies (rlae-sc: batch_key study), query = {held} (a new batch)",
            )
    else:
        raise ValueError(task)


def write_h5ad(a, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    a.write_h5ad(tmp)
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------------------ methods


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_rlae(ref_path: Path, query_path: Path, work: Path, label_key: str, pp: dict, query_names) -> dict:
    """``pipeline.run`` on the reference, ``pipeline.map_file`` with the default (logistic) and the knn classifier;
    {method: (labels, record)}."""
    import anndata as ad

    from rlae_sc.pipeline import map_file, run

    out = work / "rlae_run"
    with Clock() as fit:
        run(ref_path, out, label_key=label_key, **({"preprocess_params": pp} if pp else {}))
    results = {}
    for key, params in (("rlae_logistic", {}), ("rlae_knn", {"classifier": "knn"})):
        map_dir = work / f"{key}_map"
        with Clock() as mapped:
            summary = map_file(
                out / "model.npz",
                out / "embedding.h5ad",
                query_path,
                map_dir,
                label_key=label_key,
                truth_key=label_key,
                **params,
            )
        q = ad.read_h5ad(map_dir / "mapped.h5ad", backed="r")
        labels = q.obs["rlae_label"].astype(object).reindex(query_names)
        q.file.close()
        missing = int(labels.isna().sum())
        results[key] = (
            labels.fillna(UNASSIGNED),
            {
                "train_s": fit.wall,
                "map_s": mapped.wall,
                "seconds": fit.wall + mapped.wall,
                "cpu_seconds": fit.cpu + mapped.cpu,
                "n_query_not_in_mapped": missing,  # counted as unassigned
                "library_summary": {
                    k: summary.get(k)
                    for k in (
                        "classifier",
                        "gene_overlap",
                        "signal_present",
                        "median_confidence",
                        "n_unassigned",
                        "n_beyond_reference",
                        "n_split_vote",
                        "n_flagged_by_qc",
                        "accuracy",
                        "macro_f1",
                    )
                },
            },
        )
    return results


def log_cp10k(a):
    import scanpy as sc

    a = a.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a


def run_logreg(ref, query, label_key: str) -> tuple[pd.Series, dict]:
    from sklearn.linear_model import LogisticRegression

    with Clock() as c:
        train = ref[labelled(ref.obs[label_key])]
        in_query = set(query.var_names)
        genes = [g for g in train.var_names if g in in_query]
        X_ref = log_cp10k(train[:, genes]).X
        y = train.obs[label_key].astype(str).to_numpy()
        clf = LogisticRegression(C=1.0, max_iter=1000)
        clf.fit(X_ref, y)
        pred = clf.predict(log_cp10k(query[:, genes]).X)
    return pd.Series(pred, index=query.obs_names), {
        "seconds": c.wall,
        "cpu_seconds": c.cpu,
        "n_train": int(train.n_obs),
        "n_genes": len(genes),
        "n_iter": int(np.max(clf.n_iter_)),
    }


def run_celltypist(ref_path: Path, query_path: Path, work: Path, label_key: str, sklearn_dir: Path) -> dict:
    """CellTypist in a worker process (scikit-learn 1.7 first on its path); {method: (labels, record)}."""
    result = work / "celltypist.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(sklearn_dir), os.environ.get("PYTHONPATH")]))}
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--celltypist-worker",
        str(ref_path),
        str(query_path),
        label_key,
        str(result),
    ]
    log = work / "celltypist.log"
    with open(log, "w") as out, Clock() as c:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"CellTypist worker failed (exit {rc}): {shlex.join(cmd)}\n{tail}")
    saved = json.loads(result.read_text())
    names = saved.pop("obs_names")
    best, matched = saved.pop("best_match"), saved.pop("prob_match")
    base = {**saved, "seconds": saved["train_s"] + saved["annotate_s"], "worker_wall_s": c.wall}
    thresholded = [UNASSIGNED if (p == "Unassigned" or "|" in p) else p for p in matched]
    return {
        "celltypist": (pd.Series(best, index=names), dict(base)),
        "celltypist_p05": (
            pd.Series(thresholded, index=names),
            {
                **base,
                "n_multi_label": int(sum("|" in p for p in matched)),
                "n_celltypist_unassigned": int(sum(p == "Unassigned" for p in matched)),
            },
        ),
    }


def celltypist_worker(ref_path: str, query_path: str, label_key: str, result: str) -> None:
    import anndata as ad
    import celltypist
    import scanpy as sc
    import sklearn

    ref, query = ad.read_h5ad(ref_path), ad.read_h5ad(query_path)
    with Clock() as t_train:
        train = log_cp10k(ref[labelled(ref.obs[label_key])])
        model = celltypist.train(train, labels=label_key, feature_selection=False)
    with Clock() as t_annotate:
        q = log_cp10k(query)
        out = celltypist.annotate(q, model=model, mode="prob match", p_thres=0.5, majority_voting=False)
        prob = out.probability_matrix.reindex(query.obs_names)
        best = prob.columns.to_numpy()[np.argmax(prob.to_numpy(), axis=1)]
        matched = out.predicted_labels["predicted_labels"].reindex(query.obs_names).astype(str)
    Path(result).write_text(
        json.dumps(
            {
                "obs_names": list(map(str, query.obs_names)),
                "best_match": list(map(str, best)),
                "prob_match": list(matched),
                "train_s": t_train.wall,
                "annotate_s": t_annotate.wall,
                "cpu_seconds": t_train.cpu + t_annotate.cpu,
                "n_train": int(train.n_obs),
                "n_model_features": int(len(model.features)),
                "solver": getattr(model.classifier, "solver", None),
                "max_iter": getattr(model.classifier, "max_iter", None),
                "worker_sklearn": sklearn.__version__,
                "worker_scanpy": sc.__version__,
                "worker_celltypist": celltypist.__version__,
            }
        )
    )


# ------------------------------------------------------------------------------------------------ scoring


def score(truth: pd.Series, labels: pd.Series, ref_labels: list[str]) -> dict:
    from rlae_sc.mapping import mapping_scores

    labels = labels.reindex(truth.index)
    return mapping_scores(truth, labels.fillna(UNASSIGNED), reference_labels=ref_labels)


def run_split(task, name, ref, query, label_key, pp, note, work, methods, sklearn_dir) -> dict:
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # no output of an earlier run is read back
    ref_path = write_h5ad(ref, work / "reference.h5ad")
    query_path = write_h5ad(query, work / "query.h5ad")
    ref_labels = sorted(set(ref.obs[label_key][labelled(ref.obs[label_key])].astype(str)))
    truth = query.obs[label_key]
    has = labelled(truth)
    counts = truth[has].astype(str).value_counts()
    entry = {
        "data": note,
        "label_key": label_key,
        "preprocess_params": pp,
        "n_reference": int(ref.n_obs),
        "n_reference_labelled": int(labelled(ref.obs[label_key]).sum()),
        "n_query": int(query.n_obs),
        "n_query_unlabelled": int((~has).sum()),
        "reference_labels": ref_labels,
        "query_label_counts": {str(k): int(v) for k, v in counts.items()},
        "query_labels_not_in_reference": sorted(set(counts.index) - set(ref_labels)),
        "methods": {},
    }
    found: dict = {}
    if {"rlae_logistic", "rlae_knn"} & set(methods):
        found.update(run_rlae(ref_path, query_path, work, label_key, pp, query.obs_names))
    if "logreg" in methods:
        found["logreg"] = run_logreg(ref, query, label_key)
    if {"celltypist", "celltypist_p05"} & set(methods):
        found.update(run_celltypist(ref_path, query_path, work, label_key, sklearn_dir))
    for key in METHODS:
        if key in methods and key in found:
            labels, rec = found[key]
            entry["methods"][key] = {"label": METHODS[key], **score(truth, labels, ref_labels), **rec}
            s = entry["methods"][key]
            print(
                f"[{task}/{name}] {METHODS[key]}: accuracy {s['accuracy']:.3f}, macro-F1 {s['macro_f1']:.3f}, "
                f"unassigned known {s['unassigned_known']:.3f}"
                + (f", novel {s['unassigned_novel']:.3f}" if "unassigned_novel" in s else "")
                + f", {s['seconds']:.1f} s",
                flush=True,
            )
    return entry


# ------------------------------------------------------------------------------------------------ tables


def _f(x, d=3) -> str:
    return "-" if x is None else f"{x:.{d}f}"


def _met(ok) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


TITLES = {
    "soupx_halves": "soupx: one half of the cells as reference, the other as query",
    "soupx_loto": "soupx: leave one type out",
    "kang_loto": "kang: leave one type out",
    "pbmc3_map": "Three PBMC studies: train on two, map the third (coarse labels)",
}


def bars(entry: dict, key: str) -> dict:
    """Issue 23's bars for method ``key`` on one split (None where they do not apply)."""
    m, lr = entry["methods"].get(key), entry["methods"].get("logreg")
    out = {"novel": None, "known": None, "f1": None}
    if m is None:
        return out
    if m.get("unassigned_novel") is not None:
        out["novel"] = m["unassigned_novel"] >= BAR_NOVEL
        out["known"] = m["unassigned_known"] <= BAR_KNOWN
    if lr is not None and m.get("macro_f1") is not None and lr.get("macro_f1") is not None:
        out["f1"] = m["macro_f1"] >= lr["macro_f1"] - BAR_F1_MARGIN
    return out


def write_markdown(doc: dict, path: Path) -> None:
    run, lib = doc["run"], doc["library"]
    lines = [
        "# Cell-type annotation: rlae-sc mapping, logistic regression and CellTypist",
        "",
        "Written by `benchmarks/annotation.py` from `annotation.json`; the method and scoring details are in the "
        "script's docstring.",
        "",
        "The header below is the latest run's; each task names the run that measured it.",
        "",
        *record.markdown_header(run),
        f"- rlae_sc imported from {lib['path']} ({lib['source']}"
        + (f", commit {lib['commit']}" if lib.get("commit") else "")
        + (
            f"; uncommitted changes to {', '.join(lib['uncommitted_rlae_sc_files'])}"
            if lib.get("uncommitted_rlae_sc_files")
            else ""
        )
        + ")",
        f"- CellTypist {doc.get('celltypist_worker', {}).get('celltypist', '?')} runs in a worker process with "
        f"scikit-learn {doc.get('celltypist_worker', {}).get('sklearn', '?')} (1.7.1 calls "
        "`LogisticRegression(multi_class='ovr')`, which scikit-learn 1.8 removed); every other method uses "
        f"scikit-learn {run['packages'].get('scikit-learn')}.",
        "",
        "Every method is scored by `rlae_sc.mapping.mapping_scores`: accuracy over the query cells whose type the "
        "reference has, unassigned cells counted as wrong; macro-F1 over the reference's labels present in the "
        "query; unassigned known = share of unassigned cells among those cells; unassigned novel = the same among "
        "labelled query cells whose type the reference lacks. Logistic regression and CellTypist's best match "
        "never leave a cell unassigned. Seconds: wall clock of training plus mapping on a 2-core machine shared "
        "with other work (CPU seconds in the JSON). Issue 23's bars: unassigned novel >= 0.80, unassigned known "
        "<= 0.05 (leave one type out), macro-F1 >= logistic regression's - 0.01 (every split).",
        "",
    ]
    if doc.get("unfinished"):
        lines += ["**Not measured in this run** (the run stopped first): " + ", ".join(doc["unfinished"]), ""]
    for task in TASKS:
        t = doc["tasks"].get(task)
        if not t:
            continue
        lines += [f"## {TITLES[task]}", ""]
        if t.get("run"):
            lib = t.get("library") or {}
            lines += [
                f"Measured {t['run']['started']} at commit {t['run']['git']['commit'][:12]}, rlae_sc from "
                f"{lib.get('source', '?')}" + (f" ({lib['commit'][:12]})" if lib.get("commit") else "") + ".",
                "",
            ]
        split_items = list(t["splits"].items())
        if split_items:
            lines += [f"Data: {split_items[0][1]['data'].split(';')[0]}.", ""]
        if task in ("soupx_halves", "pbmc3_map"):
            for name, e in split_items:
                lines.append(
                    f"- {'query ' + name + ': ' if task == 'pbmc3_map' else ''}{e['n_reference']} reference cells "
                    f"({e['n_reference_labelled']} labelled: {', '.join(e['reference_labels'])}), {e['n_query']} "
                    f"query cells ({e['n_query_unlabelled']} unlabelled"
                    + (
                        "; types the reference lacks: "
                        + ", ".join(f"{k} {e['query_label_counts'][k]}" for k in e["query_labels_not_in_reference"])
                        if e["query_labels_not_in_reference"]
                        else ""
                    )
                    + ")"
                )
            lines += [
                "",
                ("| query | " if task == "pbmc3_map" else "| ")
                + "method | accuracy | macro-F1 | unassigned known | unassigned novel | F1 bar | seconds |",
                ("|---" if task == "pbmc3_map" else "") + "|---|---|---|---|---|---|---|",
            ]
            for name, e in split_items:
                for key, m in e["methods"].items():
                    b = bars(e, key)
                    lines.append(
                        (f"| {name} " if task == "pbmc3_map" else "")
                        + f"| {m['label']} | {_f(m['accuracy'])} | {_f(m['macro_f1'])} | {_f(m['unassigned_known'])} "
                        f"| {_f(m.get('unassigned_novel'))} | {_met(b['f1']) if key != 'logreg' else '(baseline)'} "
                        f"| {_f(m['seconds'], 1)} |"
                    )
            lines += ["", "F1 bar: macro-F1 >= logistic regression's - 0.01 on the same split.", ""]
        else:
            lines += [
                "Per left-out type T: the reference half without T, the query half with every type. "
                "Unassigned T = unassigned share of T's query cells (bar >= 0.80); unassigned other = among the other "
                "labelled query cells (bar <= 0.05); F1 bar: macro-F1 >= logistic regression's - 0.01.",
                "",
                "| left out (query cells) | method | unassigned T | unassigned other | macro-F1 | accuracy "
                "| T bar | other bar | F1 bar | seconds |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for name, e in split_items:
                n_t = e["query_label_counts"].get(name, 0)
                for key, m in e["methods"].items():
                    b = bars(e, key)
                    lines.append(
                        f"| {name} ({n_t}) | {m['label']} | {_f(m.get('unassigned_novel'))} "
                        f"| {_f(m['unassigned_known'])} | {_f(m['macro_f1'])} | {_f(m['accuracy'])} "
                        f"| {_met(b['novel'])} | {_met(b['known'])} "
                        f"| {_met(b['f1']) if key != 'logreg' else '(baseline)'} | {_f(m['seconds'], 1)} |"
                    )
            lines += ["", "Bars met over the left-out types of this task:", ""]
            for key in METHODS:
                rows = [bars(e, key) for _, e in split_items if key in e["methods"]]
                if not rows or key == "logreg":
                    continue

                def count(field, rows=rows):
                    vals = [r[field] for r in rows if r[field] is not None]
                    return f"{sum(vals)} of {len(vals)}" if vals else "-"

                lines.append(
                    f"- {METHODS[key]}: unassigned T >= 0.80 for {count('novel')}; unassigned other <= 0.05 for "
                    f"{count('known')}; macro-F1 >= logistic regression's - 0.01 for {count('f1')}."
                )
            lines.append("")
    path.write_text("\n".join(lines).rstrip() + "\n")


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--seed", type=int, default=0, help="seed of the reference/query halves")
    p.add_argument("--quick", action="store_true", help="subsampled cells, two left-out types; output to data/")
    p.add_argument(
        "--celltypist-sklearn",
        type=Path,
        default=DEFAULT_SKLEARN17,
        help="a folder with scikit-learn 1.7, put first on the CellTypist worker's path",
    )
    p.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the existing .json and stop")
    p.add_argument(
        "--celltypist-worker", nargs=4, metavar=("REF", "QUERY", "LABEL_KEY", "RESULT"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.celltypist_worker:
        celltypist_worker(*args.celltypist_worker)
        return
    out_dir = HERE / "data" if args.quick else HERE
    json_path, md_path = out_dir / f"{NAME}.json", out_dir / f"{NAME}.md"
    if args.markdown_only:
        write_markdown(json.loads(json_path.read_text()), md_path)
        print(f"wrote {md_path}")
        return

    import rlae_sc.mapping
    import rlae_sc.params

    if rlae_sc.mapping.UNASSIGNED != UNASSIGNED:
        sys.exit(f"rlae_sc.mapping.UNASSIGNED is {rlae_sc.mapping.UNASSIGNED!r}, this script expects {UNASSIGNED!r}")
    wants_ct = {"celltypist", "celltypist_p05"} & set(args.methods)
    if wants_ct and not (args.celltypist_sklearn / "sklearn").is_dir():
        sys.exit(
            f"{args.celltypist_sklearn} has no scikit-learn; make it with\n  .venv/bin/pip install --no-deps "
            f"--target {args.celltypist_sklearn} 'scikit-learn>=1.7,<1.8'\nor leave out --methods celltypist*"
        )
    work_root = HERE / "data" / NAME / ("quick" if args.quick else "full")
    doc = {"benchmark": NAME, "tasks": {}}
    if json_path.exists() and set(args.tasks) != set(TASKS):
        old = json.loads(json_path.read_text())
        for entry in old.get("tasks", {}).values():  # each kept task keeps the run that measured it
            entry.setdefault("run", old.get("run"))
            entry.setdefault("library", old.get("library"))
        doc["tasks"] = old.get("tasks", {})
    doc["run"] = run_header()
    doc["library"] = library_source()
    doc["settings"] = {
        "seed": args.seed,
        "quick": args.quick,
        "methods": {k: METHODS[k] for k in args.methods},
        "rlae_sc_mapping_defaults": {
            k: getattr(rlae_sc.params.MappingParams, k)
            for k in ("classifier", "n_neighbors", "min_confidence", "distance_quantile", "min_overlap")
        },
        "logreg": "normalize_total 1e4 + log1p; LogisticRegression(C=1.0, max_iter=1000), other options default",
        "celltypist": "train(feature_selection=False, other options default) on log1p(CP10k) of the labelled "
        "reference; annotate(mode='prob match', p_thres=0.5, majority_voting=False)",
        "bars": {
            "unassigned_novel_at_least": BAR_NOVEL,
            "unassigned_known_at_most": BAR_KNOWN,
            "macro_f1_at_least_logreg_minus": BAR_F1_MARGIN,
        },
    }
    if wants_ct:
        doc["celltypist_worker"] = {"sklearn_path": str(args.celltypist_sklearn)}
    pending = list(args.tasks)
    for task in args.tasks:
        doc["tasks"][task] = {"splits": {}, "run": doc["run"], "library": doc["library"]}
    doc["unfinished"] = [f"{t} (all splits)" for t in pending]

    def save():
        record.finish(doc["run"])
        json_path.write_text(json.dumps(record.clean(doc), indent=1) + "\n")
        write_markdown(record.clean(doc), md_path)

    save()
    t0 = time.perf_counter()
    for task in args.tasks:
        for name, ref, query, label_key, pp, note in splits(task, args.seed, args.quick):
            print(f"[{task}/{name}] reference {ref.n_obs} cells, query {query.n_obs} cells", flush=True)
            entry = run_split(
                task,
                name,
                ref,
                query,
                label_key,
                pp,
                note,
                work_root / task / name,
                args.methods,
                args.celltypist_sklearn,
            )
            doc["tasks"][task]["splits"][name] = entry
            if wants_ct and "celltypist" in entry["methods"]:
                m = entry["methods"]["celltypist"]
                doc["celltypist_worker"].update(sklearn=m["worker_sklearn"], celltypist=m["worker_celltypist"])
            doc["unfinished"] = [f"{t} (all splits)" for t in pending if t != task] + (
                [f"{task} (after {name})"] if task in pending else []
            )
            save()
            print(f"  elapsed {time.perf_counter() - t0:.0f} s", flush=True)
        pending.remove(task)
        doc["unfinished"] = [f"{t} (all splits)" for t in pending]
        save()
    doc["total_seconds"] = time.perf_counter() - t0
    save()
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
