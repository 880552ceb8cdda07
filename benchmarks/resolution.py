"""Leiden's resolution chosen from the data (``cluster: resolution: auto``) against scanpy's default pipeline.

For each labelled dataset in ``../shared/data`` this runs

- scanpy's standard pipeline: ``normalize_total``, ``log1p``, 2,000 highly variable genes (seurat flavour),
  ``scale(max_value=10)``, ``pca`` (50 components), ``neighbors`` (15) and Leiden at scanpy's default
  resolution, 1.0 (igraph flavour, two iterations);
- rlae-sc: ``rl.pp.recipe``, ``rl.tl.rlae(n_comps=50)`` and :func:`rlae_sc.cluster.cluster` with
  ``resolution="auto"`` (the most stable partition under subsampling, :mod:`rlae_sc.leiden`), and at the former
  fixed default 0.3 on the same graph;

and records each one's adjusted Rand index against the labels, its number of clusters, and the fraction of each
cell's 15 nearest neighbours that share its label (which no resolution changes), with the stability curve the
resolution was chosen from. Accuracy only; the times are not the point and are not recorded.

    .venv/bin/python benchmarks/resolution.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402

import rlae_sc as rl  # noqa: E402
from rlae_sc.cluster import cluster, label_agreement  # noqa: E402
from rlae_sc.labels import labelled_mask  # noqa: E402
from rlae_sc.leiden import leiden  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
DATASETS = {  # file -> label column
    "garnett_pbmc800.h5ad": "cell_type",
    "soupx_pbmc4k_2170.h5ad": "cell_type",
    "kang_se_12261.h5ad": "cell_type",
    "worm_neuron_4186.h5ad": "cell_type",
    "descend_zeisel_1464x1000.h5ad": "cell_type",
}
FORMER_DEFAULT = 0.3  # the fixed resolution rlae-sc used before ``auto``


def ari(adata: ad.AnnData, key: str, labels: str) -> float:
    """Adjusted Rand index of ``obs[key]`` against ``obs[labels]`` over the labelled cells."""
    has = labelled_mask(adata.obs[labels])
    return float(adjusted_rand_score(adata.obs[labels][has].astype(str), adata.obs[key][has].astype(str)))


def scanpy_default(counts: ad.AnnData, labels: str) -> dict:
    """scanpy's standard pipeline at its default resolution; ARI, clusters and 15-NN label agreement."""
    a = counts.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=2000)
    a = a[:, a.var["highly_variable"]].copy()
    sc.pp.scale(a, max_value=10)
    sc.tl.pca(a, n_comps=50)
    sc.pp.neighbors(a, n_neighbors=15)
    leiden(a, resolution=1.0, seed=0)
    return {
        "resolution": 1.0,
        "n_clusters": int(a.obs["leiden"].nunique()),
        "ari": ari(a, "leiden", labels),
        "label_agreement_15nn": label_agreement(a.obsp["distances"], a.obs[labels]),
    }


def rlae_auto(counts: ad.AnnData, labels: str) -> tuple[dict, dict, dict]:
    """rlae-sc with ``resolution='auto'`` and at :data:`FORMER_DEFAULT` on the same graph; and the curve."""
    a = counts.copy()
    rl.pp.recipe(a)
    rl.tl.rlae(a, n_comps=50)
    numbers = cluster(a, label_key=labels, resolution="auto")
    auto = {
        "resolution": numbers["resolution"],
        "n_clusters": numbers["n_clusters"],
        "ari": numbers["ari"],
        "label_agreement_15nn": numbers["label_agreement"],
    }
    curve = {k: np.asarray(v).tolist() for k, v in a.uns["rlae_cluster"]["resolution_curve"].items()}
    leiden(a, resolution=FORMER_DEFAULT, seed=0, key_added="fixed")
    fixed = {"resolution": FORMER_DEFAULT, "n_clusters": int(a.obs["fixed"].nunique()), "ari": ari(a, "fixed", labels)}
    return auto, fixed, curve


def main() -> None:
    if not DATA.is_dir():
        sys.exit(f"{DATA} is missing: this benchmark needs the shared real datasets")
    run = record.header(["rlae-sc", "scanpy", "leidenalg", "igraph", "scikit-learn"])
    results = {}
    for file, labels in DATASETS.items():
        counts = ad.read_h5ad(DATA / file)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scanpy = scanpy_default(counts, labels)
            auto, fixed, curve = rlae_auto(counts, labels)
        name = file.removesuffix(".h5ad")
        results[name] = {"cells": counts.n_obs, "scanpy_default": scanpy, "rlae_auto": auto,
                         "rlae_fixed": fixed, "curve": curve}  # fmt: skip
        print(
            f"{name}: scanpy ARI {scanpy['ari']:.3f} ({scanpy['n_clusters']} clusters), rlae-sc auto "
            f"{auto['ari']:.3f} at {auto['resolution']} ({auto['n_clusters']}), 0.3: {fixed['ari']:.3f}"
        )
    record.finish(run)
    wins = sum(r["rlae_auto"]["ari"] >= r["scanpy_default"]["ari"] for r in results.values())
    out = {"benchmark": "resolution", "run": run, "datasets": results, "auto_at_least_scanpy": wins}
    (HERE / "resolution.json").write_text(json.dumps(record.clean(out), indent=1) + "\n")
    lines = [
        "# Leiden's resolution: chosen from the data, against scanpy's default pipeline",
        "",
        "Written by `benchmarks/resolution.py` (see its docstring for what each column runs).",
        "",
        *record.markdown_header(run),
        "",
        "| dataset | cells | scanpy ARI (res 1.0, clusters) | rlae-sc auto ARI (res, clusters) | rlae-sc res 0.3 ARI "
        "| 15-NN label agreement scanpy / rlae-sc |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        s, a, f = r["scanpy_default"], r["rlae_auto"], r["rlae_fixed"]
        lines.append(
            f"| {name} | {r['cells']:,} | {s['ari']:.3f} ({s['n_clusters']}) | {a['ari']:.3f} ({a['resolution']:g}, "
            f"{a['n_clusters']}) | {f['ari']:.3f} | {s['label_agreement_15nn']:.3f} / {a['label_agreement_15nn']:.3f} |"
        )
    lines += [
        "",
        f"rlae-sc's chosen resolution gives an ARI at least scanpy's default on {wins} of {len(results)} sets.",
        "",
        "Stability curves (mean pairwise ARI of Leiden runs on 80% subsamples):",
        "",
    ]
    for name, r in results.items():
        c = r["curve"]
        pairs = ", ".join(f"{x:g}: {y:.3f}" for x, y in zip(c["resolution"], c["stability"], strict=True))
        lines.append(f"- {name}: {pairs}")
    (HERE / "resolution.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
