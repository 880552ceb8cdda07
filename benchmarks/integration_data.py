"""The count matrices of the integration benchmark (``integration.py``), built from ``../shared/data``.

- ``pbmc3``: garnett_pbmc800, soupx_pbmc4k_2170 and kang_se_12261 concatenated on the genes they share by
  symbol (garnett's and soupx's names made unique first; kang's Ensembl ids mapped to symbols with
  ``kang_se_gene_symbols.tsv``): 15,231 cells x 1,272 genes, raw counts (CSR float32).
  ``obs['study']`` (garnett, soupx, kang), ``obs['donor']`` (kang's sample_id, otherwise the study),
  ``obs['cell_type']`` (the study's own label) and ``obs['coarse']`` (the shared vocabulary of the data
  README; soupx's ``?`` stays unlabelled, NaN). Cell names are prefixed with the study (``kang:AAAC...``):
  a few barcodes occur in two studies.
- ``kang_donors``: kang_se_12261 as it is (Ensembl ids), ``obs['batch']`` its sample_id (8 donors).
- ``confounded``: ``rlae_sc.simulate.batch_confounded(seed=0)`` and the same cells without the planted
  batch shifts (``batch_effect=False``), the batch-free truth.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("RLAE_SHARED_DATA", HERE.parent.parent / "shared" / "data"))

STUDIES = {
    "garnett": "garnett_pbmc800.h5ad",
    "soupx": "soupx_pbmc4k_2170.h5ad",
    "kang": "kang_se_12261.h5ad",
}
# The data README's table: each study's label -> the coarse label they share. Labels not listed here are an
# error, except those in UNLABELLED (left NaN).
COARSE = {
    "garnett": {"B cells": "B", "CD4 T cells": "CD4 T", "CD8 T cells": "CD8 T"},
    "soupx": {"B": "B", "T_CD4": "CD4 T", "T_CD8": "CD8 T", "NK": "NK", "MNP": "Monocyte"},
    "kang": {
        "B cells": "B",
        "CD4 T cells": "CD4 T",
        "CD8 T cells": "CD8 T",
        "NK cells": "NK",
        "CD14+ Monocytes": "Monocyte",
        "FCGR3A+ Monocytes": "Monocyte",
        "Dendritic cells": "DC",
        "Megakaryocytes": "Mk",
    },
}
UNLABELLED = {"soupx": {"?"}}
PBMC3_SHAPE = (15_231, 1_272)


def _read(study: str) -> ad.AnnData:
    path = SHARED / STUDIES[study]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the integration benchmark needs ../shared/data (see its README)")
    return ad.read_h5ad(path)


def kang_symbols() -> pd.Series:
    """kang_se's Ensembl id -> gene symbol, from the shared tsv."""
    table = pd.read_csv(SHARED / "kang_se_gene_symbols.tsv", sep="\t", dtype=str)
    return table.set_index("gene_id")["gene_symbol"]


def coarse_labels(study: str, labels: pd.Series) -> pd.Series:
    """The coarse label of each cell of ``study`` (NaN for the study's unlabelled cells); an unexpected label
    raises."""
    labels = labels.astype(str)
    unknown = set(labels) - set(COARSE[study]) - UNLABELLED.get(study, set())
    if unknown:
        raise ValueError(f"{study}: labels without a coarse label: {sorted(unknown)}")
    return labels.map(COARSE[study])  # unlabelled -> NaN


def build_pbmc3() -> ad.AnnData:
    """The three studies on their shared genes (see the module docstring)."""
    parts = {study: _read(study) for study in STUDIES}
    parts["garnett"].var_names_make_unique()
    parts["soupx"].var_names_make_unique()
    kang = parts["kang"]
    symbols = kang_symbols().reindex(kang.var_names)
    if symbols.isna().any() or symbols.duplicated().any():
        raise ValueError("kang_se_gene_symbols.tsv does not map kang's genes one to one")
    kang.var_names = pd.Index(symbols.to_numpy())
    others = set(parts["garnett"].var_names) & set(parts["soupx"].var_names)
    genes = [g for g in kang.var_names if g in others]  # kang's gene order
    pieces = []
    for study, a in parts.items():
        obs = pd.DataFrame(
            {
                "study": study,
                "donor": a.obs["sample_id"].astype(str).to_numpy() if study == "kang" else study,
                "cell_type": a.obs["cell_type"].astype(str).to_numpy(),
                "coarse": coarse_labels(study, a.obs["cell_type"]).to_numpy(),
            },
            index=[f"{study}:{name}" for name in a.obs_names],
        )
        X = sp.csr_matrix(a[:, genes].X, dtype=np.float32)
        pieces.append(ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes)))
    merged = ad.concat(pieces, join="outer", merge="same")
    merged.X = sp.csr_matrix(merged.X, dtype=np.float32)
    for key in ("study", "donor", "cell_type"):
        merged.obs[key] = pd.Categorical(merged.obs[key].astype(str))
    merged.obs["coarse"] = pd.Categorical(merged.obs["coarse"])  # NaN stays missing
    assert merged.shape == PBMC3_SHAPE, f"pbmc3 is {merged.shape}, expected {PBMC3_SHAPE}"
    assert merged.obs_names.is_unique
    return merged


def build_kang_donors() -> ad.AnnData:
    """kang_se_12261 with ``obs['batch']``, its donor (sample_id)."""
    a = _read("kang")
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    a.obs["batch"] = pd.Categorical(a.obs["sample_id"].astype(str))
    a.obs["cell_type"] = pd.Categorical(a.obs["cell_type"].astype(str))
    return a


def build_confounded() -> tuple[ad.AnnData, ad.AnnData]:
    """``batch_confounded(seed=0)`` and the same cells without batch effects (the batch-free truth)."""
    from rlae_sc.simulate import batch_confounded

    data = batch_confounded(seed=0)
    truth = batch_confounded(seed=0, batch_effect=False)
    if not (data.obs_names.equals(truth.obs_names) and data.var_names.equals(truth.var_names)):
        raise ValueError("batch_confounded(batch_effect=False) does not return the same cells and genes")
    if not (data.obs["cell_type"].astype(str) == truth.obs["cell_type"].astype(str)).all():
        raise ValueError("batch_confounded(batch_effect=False) has different cell types")
    for a in (data, truth):
        a.X = sp.csr_matrix(a.X, dtype=np.float32)
        for key in ("batch", "cell_type"):
            a.obs[key] = pd.Categorical(a.obs[key].astype(str))
    return data, truth


def write(adata: ad.AnnData, path: Path) -> Path:
    """Write ``adata`` to ``path`` through a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    adata.write_h5ad(tmp)
    tmp.replace(path)
    return path


if __name__ == "__main__":
    a = build_pbmc3()
    print(a)
    print(pd.crosstab(a.obs["coarse"].astype(str), a.obs["study"]))
