"""How many components: auto k (noise floor by parallel analysis) against k = 50 on the shared labelled sets.

For each labelled dataset in ../shared/data (skipped when absent): the default recipe in memory, then
``fit(n_components="auto")`` and ``fit(n_components=50)``; the 15-nearest-neighbour label agreement (share of
each labelled cell's 15 nearest cells, Euclidean in the embedding, that carry its label; mean over cells) of
each embedding; the noise floor beside the Marchenko-Pastur edge and the elbow rule's k on the exact spectrum.
Writes benchmarks/components.json; benchmarks/components.md holds the numbers.

    .venv/bin/python benchmarks/components.py
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.linalg
from sklearn.neighbors import NearestNeighbors

from rlae_sc.model import fit
from rlae_sc.noise_floor import elbow
from rlae_sc.preprocess import preprocess, trained_rows

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {  # file -> (label column, unlabelled values, preprocess overrides)
    "garnett_pbmc800.h5ad": ("cell_type", (), {}),
    "kang_se_12261.h5ad": ("cell_type", (), {"max_pct_mito": None}),
    "soupx_pbmc4k_2170.h5ad": ("cell_type", ("?",), {}),
    "descend_zeisel_1464x1000.h5ad": ("cell_type", (), {}),
    "worm_neuron_4186.h5ad": ("cell_type", (), {"min_genes": 50}),
}


def label_agreement(Z: np.ndarray, labels: np.ndarray, k: int = 15) -> float:
    """Mean share of each cell's ``k`` nearest other cells (Euclidean in ``Z``) that carry its label."""
    idx = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z, return_distance=False)[:, 1:]
    return float(np.mean(labels[idx] == labels[:, None]))


def main() -> None:
    rows = []
    for name, (key, unlabelled, pp) in SETS.items():
        path = DATA / name
        if not path.exists():
            print(f"skip {name}: not found")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pre, _ = preprocess(ad.read_h5ad(path), **pp)
        labels = pre.obs[key].astype(str).to_numpy()
        X = np.asarray(trained_rows(pre).read(0, pre.n_obs), dtype=np.float64)
        X -= X.mean(0)
        keep = ~np.isin(labels, unlabelled)
        row = {"dataset": name.removesuffix(".h5ad"), "n_cells": pre.n_obs, "n_genes": pre.n_vars}
        for k in ("auto", 50):
            t0 = time.perf_counter()
            model = fit(pre, n_components=k, trace_metrics=False, device="cpu")
            seconds = time.perf_counter() - t0
            Z = X @ model.directions
            row[f"k_{k}"] = model.n_components
            row[f"agreement_{k}"] = label_agreement(Z[keep], labels[keep])
            row[f"fit_seconds_{k}"] = seconds
            if k == "auto":
                rounds = model.params["noise_floor_rounds"]
                row |= {
                    "k_plain": rounds[0]["k"],
                    "noise_floor": model.lam,
                    "noise_floor_plain": rounds[0]["noise_floor"],
                    "noise_floor_spread": model.params["noise_floor_spread"],
                    "mp_edge": model.params["mp_edge"],
                }
        m = X.shape[1]
        e = scipy.linalg.eigh(X.T @ X, subset_by_index=[m - 100, m - 1], eigvals_only=True)[::-1]
        row["k_mp"] = int(np.sum(e > row["mp_edge"]))
        row["k_elbow"] = elbow(e)
        rows.append(row)
        print(json.dumps(row))
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
