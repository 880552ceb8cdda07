"""Benchmark: what the sketch costs the UMAP, against a UMAP of every cell.

    python benchmarks/umap_sketch.py EMBEDDING.h5ad [--sample 5000]

``EMBEDDING.h5ad`` is an ``embedding.h5ad`` of more than ``sketch_cells`` cells (its ``X_umap`` is the
sketch's layout with the other cells placed among their nearest sketch cells). This computes scanpy's UMAP
of every cell on the same kNN graph (``obsp``), times both, and scores each layout by kNN preservation: for
``--sample`` random cells, the fraction of their 15 nearest neighbours in ``X_rlae`` (exact) that are among
their 15 nearest neighbours in the 2-D layout; and by the same fraction for the sketch's own cells and the
placed cells apart. Writes umap_sketch.md and umap_sketch.json here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from atlas import neighbours_of  # noqa: E402
from bench import machine  # noqa: E402

SAMPLE_SEED = 12345


def preservation(X: np.ndarray, Y: np.ndarray, sample: np.ndarray, k: int = 15) -> np.ndarray:
    """Per sampled cell, the fraction of its k nearest neighbours in ``X`` among its k nearest in ``Y``."""
    a, b = neighbours_of(X, sample, k), neighbours_of(Y, sample, k)
    return np.array([len(np.intersect1d(r, s)) / k for r, s in zip(a, b, strict=True)])


def main() -> None:
    import anndata as ad
    import scanpy as sc

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("embedding", type=Path)
    parser.add_argument("--sample", type=int, default=5000)
    args = parser.parse_args()
    backed = ad.read_h5ad(args.embedding, backed="r")
    a = ad.AnnData(obs=backed.obs[["rlae_sketch"]].copy(), obsm={"X_rlae": np.asarray(backed.obsm["X_rlae"])})
    a.obsp["connectivities"], a.obsp["distances"] = backed.obsp["connectivities"], backed.obsp["distances"]
    a.uns["neighbors"] = dict(backed.uns["neighbors"])
    sketch_layout = np.asarray(backed.obsm["X_umap"])
    seconds = backed.uns["rlae"]["metrics"]
    t0 = time.perf_counter()
    sc.tl.umap(a, random_state=0)
    full_seconds = time.perf_counter() - t0
    # not seed 0: the sketch itself is the seeded draw default_rng(0).choice(n, sketch_cells), whose first cells
    # a draw of the same seed would repeat, so every sampled cell would be a sketch cell
    sample = np.random.default_rng(SAMPLE_SEED).choice(a.n_obs, args.sample, replace=False)
    in_sketch = np.asarray(a.obs["rlae_sketch"], dtype=bool)[sample]
    full = preservation(a.obsm["X_rlae"], a.obsm["X_umap"], sample)
    sketched = preservation(a.obsm["X_rlae"], sketch_layout, sample)
    result = {
        "n_cells": a.n_obs,
        "n_sketch": int(a.obs["rlae_sketch"].sum()),
        "full_umap_seconds": full_seconds,
        "sketch_leiden_umap_seconds": float(seconds["leiden_umap_seconds"]),
        "sketch_extension_seconds": float(seconds["sketch_extension_seconds"]),
        "preservation_full": float(full.mean()),
        "preservation_sketch": float(sketched.mean()),
        "preservation_sketch_cells": float(sketched[in_sketch].mean()),
        "preservation_placed_cells": float(sketched[~in_sketch].mean()),
    }
    (HERE / "umap_sketch.json").write_text(json.dumps({"machine": machine(), "date": str(date.today()), **result}))
    lines = [
        f"# UMAP of a sketch against UMAP of every cell ({date.today()}, {machine()})",
        "",
        f"`{args.embedding}`: {a.n_obs:,} cells, sketch of {result['n_sketch']:,}. kNN preservation: the fraction",
        f"of a cell's 15 nearest neighbours in X_rlae among its 15 nearest in the layout ({args.sample:,} cells).",
        "",
        "| layout | seconds | kNN preservation |",
        "|---|---|---|",
        f"| scanpy UMAP of every cell (same graph) | {full_seconds:.1f} (UMAP only) "
        f"| {result['preservation_full']:.3f} |",
        f"| sketch UMAP + placement (rlae-sc) | {result['sketch_leiden_umap_seconds']:.1f} (Leiden + UMAP) + "
        f"{result['sketch_extension_seconds']:.1f} (placement) | {result['preservation_sketch']:.3f} "
        f"(sketch cells {result['preservation_sketch_cells']:.3f}, placed {result['preservation_placed_cells']:.3f}) |",
    ]
    (HERE / "umap_sketch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
