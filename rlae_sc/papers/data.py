"""The papers' data: Kunin et al.'s synthetic 20 x 20 matrix, and a preprocessed single-cell matrix."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import scipy.stats

from rlae_sc.preprocess import preprocess, trained_rows
from rlae_sc.simulate import bundled


def paper_matrix(seed: int = 0) -> np.ndarray:
    """Kunin et al.'s data: 20 x 20 with singular values 20, 19, ..., 1 and random orthogonal singular vectors."""
    U = scipy.stats.ortho_group.rvs(20, random_state=seed)
    V = scipy.stats.ortho_group.rvs(20, random_state=seed + 1)
    return U @ np.diag(np.arange(20, 0, -1.0)) @ V.T


def cells_matrix(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """A preprocessed single-cell matrix (n x m, centred), its labels, and its name.

    Without ``path``: scanpy's bundled ``pbmc68k_reduced`` through :func:`rlae_sc.preprocess`
    (log-normalised input, labels ``bulk_labels``). With ``path``: a ``preprocessed.h5ad``
    written by ``rlae-sc preprocess`` (labels from its first categorical obs column, if any).
    """
    if path is None:
        pre, _ = preprocess(bundled("pbmc68k_reduced"), input_kind="log_normalized", min_genes=50)
        return pre.X.astype(np.float64), pre.obs["bulk_labels"].astype(str).to_numpy(), "pbmc68k_reduced"
    pre = ad.read_h5ad(path)
    cats = [c for c in pre.obs.columns if str(pre.obs[c].dtype) == "category"]
    labels = pre.obs[cats[0]].astype(str).to_numpy() if cats else np.full(pre.n_obs, "cells")
    return trained_rows(pre).read(0, pre.n_obs).astype(np.float64), labels, Path(path).parent.name
