"""How far a site's ARI can be from the pooled run's ARI on its cells: the federated per-site bar of issue 13
set against the pooled run's own variation.

Runs pooled ``rlae-sc run`` on a labelled counts file (kang_se_12261 from ``../shared/data`` by default, one
site per ``sample_id``), then, for each site's cells, the ARI against the labels of:

1. the pooled run's Leiden clusters (the reference of the bar);
2. Leiden on the same pooled graph with other seeds (what the reference itself moves by);
3. each site's own clustering, as a federated site computes it, recomputed here: :func:`rlae_sc.cluster.cluster`
   on the site's cells of the pooled embedding (a federated site's embedding equals it to 1e-12: README,
   "Federated fit"; the federated test's own sites are not read).

Writes ``federated_ari.md`` and ``federated_ari.json`` here; the pooled run goes to ``benchmarks/data/``.

    .venv/bin/python benchmarks/federated_ari.py [--counts FILE] [--site-key sample_id] [--seeds 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
from sklearn.metrics import adjusted_rand_score

from rlae_sc.cluster import cluster
from rlae_sc.keys import EMBEDDING_KEY
from rlae_sc.labels import labelled_mask
from rlae_sc.leiden import leiden

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared" / "data"
BAR = 0.01  # issue 13: each site's ARI within 0.01 of the pooled run's ARI on its cells


def site_aris(clusters: np.ndarray, truth: np.ndarray, *, sites: np.ndarray, names: list[str]) -> list[float]:
    """ARI between ``clusters`` and ``truth`` (labelled cells) on each site's cells, in the order of ``names``."""
    return [float(adjusted_rand_score(truth[sites == s], clusters[sites == s])) for s in names]


def main() -> None:
    """Run (or reuse) the pooled run, score its sites three ways, write the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", type=Path, default=SHARED / "kang_se_12261.h5ad")
    ap.add_argument("--label-key", default="cell_type")
    ap.add_argument("--site-key", default="sample_id")
    ap.add_argument("--seeds", type=int, default=10, help="other Leiden seeds on the pooled graph")
    args = ap.parse_args()
    if not args.counts.exists():
        sys.exit(f"{args.counts}: not found; give --counts (a labelled counts .h5ad)")
    out = HERE / "data" / f"federated_ari_{args.counts.stem}"
    if (out / "embedding.h5ad").exists():
        print(f"reusing the pooled run in {out} (delete it to run again)")
    else:
        run = [sys.executable, "-m", "rlae_sc", "run", str(args.counts), "--out", str(out)]
        subprocess.run([*run, "--label-key", args.label_key], check=True)
    full = ad.read_h5ad(out / "embedding.h5ad")
    params = full.uns["rlae_cluster"]
    if params["sketch_cells"]:
        sys.exit(f"{out}: Leiden ran on a sketch of the cells; re-seeding the whole graph would not repeat it")
    has = labelled_mask(full.obs[args.label_key])  # the graph keeps every cell; ARI is scored on labelled ones
    obs = full.obs[has]
    truth = obs[args.label_key].astype(str).to_numpy()
    sites = obs[args.site_key].astype(str).to_numpy()
    names = sorted(set(sites))
    pooled = site_aris(obs["leiden"].astype(str).to_numpy(), truth, sites=sites, names=names)

    reseeded = []
    for seed in range(params["seed"] + 1, params["seed"] + 1 + args.seeds):
        leiden(full, resolution=params["resolution"], seed=seed, key_added="reseeded")
        clusters = full.obs["reseeded"].astype(str).to_numpy()[has]
        aris = site_aris(clusters, truth, sites=sites, names=names)
        reseeded.append({"seed": seed, "n_clusters": int(len(set(clusters))), "site_ari": aris})

    local = []
    all_sites = full.obs[args.site_key].astype(str).to_numpy()
    for s in names:
        cells = all_sites == s
        site = ad.AnnData(obs=full.obs[cells].copy(), obsm={EMBEDDING_KEY: full.obsm[EMBEDDING_KEY][cells]})
        got = cluster(
            site, n_neighbors=params["n_neighbors"], n_dims=params["n_dims"], resolution=params["resolution"],
            label_key=args.label_key, seed=params["seed"],
        )  # fmt: skip
        local.append({"site": s, "n_cells": int(cells.sum()), "n_clusters": got["n_clusters"], "ari": got["ari"]})

    result = {
        "counts": str(args.counts),
        "cluster_params": {key: params[key] for key in ("n_neighbors", "n_dims", "resolution", "seed")},
        "sites": names,
        "pooled_site_ari": pooled,
        "pooled_n_clusters": int(full.obs["leiden"].nunique()),
        "reseeded": reseeded,
        "site_local": local,
    }
    (HERE / "federated_ari.json").write_text(json.dumps(result, indent=1))
    write_table(result)


def write_table(r: dict) -> None:
    """Print and write ``federated_ari.md``: per site, pooled ARI and the differences from it."""
    pooled = np.array(r["pooled_site_ari"])
    seed_diff = np.array([x["site_ari"] for x in r["reseeded"]]) - pooled  # seeds x sites
    local_diff = np.array([x["ari"] for x in r["site_local"]]) - pooled
    lines = [
        f"Per-site ARI against `{Path(r['counts']).stem}` labels; pooled `rlae-sc run` "
        f"(resolution {r['cluster_params']['resolution']}, {r['pooled_n_clusters']} clusters, seed "
        f"{r['cluster_params']['seed']}) is the reference.",
        "",
        "| site | cells | pooled ARI | other seeds: min diff | max diff | site-local Leiden: clusters | diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for j, s in enumerate(r["sites"]):
        loc = r["site_local"][j]
        lines.append(
            f"| {s} | {loc['n_cells']} | {pooled[j]:.3f} | {seed_diff[:, j].min():+.3f} | {seed_diff[:, j].max():+.3f} "
            f"| {loc['n_clusters']} | {local_diff[j]:+.3f} |"
        )
    within = int(np.sum(np.abs(seed_diff).max(axis=1) <= BAR))
    lines += [
        "",
        f"Leiden on the pooled graph itself, {len(r['reseeded'])} other seeds: {within} keep every site within "
        f"{BAR} of the reference (largest |diff| per seed: "
        + ", ".join(f"{v:.3f}" for v in np.abs(seed_diff).max(axis=1))
        + f"). Site-local Leiden: {int(np.sum(np.abs(local_diff) <= BAR))} of {len(pooled)} sites within {BAR}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "federated_ari.md").write_text(text)


if __name__ == "__main__":
    main()
