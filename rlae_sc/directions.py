"""Principal directions from the decoder, checked against exact PCA of the same matrix."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from rlae_sc.errors import InputError
from rlae_sc.keys import DIRECTIONS_KEY, EMBEDDING_KEY, UNS_KEY
from rlae_sc.lae import certificate, theory
from rlae_sc.model import RLAEModel
from rlae_sc.params import TrainParams
from rlae_sc.preprocess import trained_rows
from rlae_sc.stability import direction_stability, not_identifiable

NOISE_FLOOR_KEYS = ("noise_floor", "noise_floor_spread", "mp_edge")  # with n_components auto (rlae_sc.noise_floor)
QC_COUNTS = (
    "n_cells_in",
    "n_genes_in",
    "n_cells_all_zero",
    "n_cells_removed",
    "n_genes_all_zero",
    "n_genes_below_min_cells",
)


def compare_with_pca(model: RLAEModel, *, source: str = "model") -> tuple[dict, dict]:
    """Check the model's directions against the ``C`` it was trained on, from ``model.reference`` (computed by
    :func:`rlae_sc.train.fit_scatter`: no pass over the cells): always by the residual certificate
    (:mod:`rlae_sc.lae.certificate`), and against exact PCA (``scipy.linalg.eigh``) when the fit ran it
    (``exact_check`` or ``trace_metrics``).

    ``C`` is the scatter matrix of the training pass, its products in ``scatter_precision`` (train's
    parameter; float32 products are summed in float64, about 1e-6 relative in the entries of ``C``; choose
    float64 for a float64 ``C``).

    Returns ``(metrics, reference)``. ``metrics`` holds the numbers defined in docs/theory.rst: always
    ``certificate_max_residual`` (max ``r_i / e_i``), ``certificate_min_cos_top10`` (a lower bound on the
    top-10 ``|cos|`` with exact PCA), ``certificate_max_eigenvalue_error_top10`` (a bound on the top-10
    relative eigenvalue error; NaN where a direction is not certified), ``certificate_seconds`` and
    ``transpose_distance``; with the eigh also ``exact_pca_seconds``, ``min_abs_cos_top10``,
    ``subspace_distance``, ``eigenvalue_max_rel_err_top10``, ``singular_value_error`` and more.
    ``reference`` holds ``kind`` (``"eigh"`` or ``"certificate"``), ``eigenvalues`` (k,; exact PCA's, or the
    model's as the certificate bounds them), per-component
    ``alignment`` (k,; ``|cos|`` with exact PCA, or its certified lower bound), ``eigengaps`` (k,;
    ``e_i / e_(i+1)``, the last against ``e_(k+1)`` or its certified upper bound). The seconds are those
    spent in training.
    """
    k = model.n_components
    ref = model.reference
    if "residuals" not in ref:
        raise InputError(
            source, "holds no certificate of its directions (written by an older rlae-sc)", "Train it again."
        )
    top = min(10, k)
    cert = certificate.bounds(
        model.eigenvalues, ref["residuals"], float(ref["residual_norm"]), float(ref["next_eigenvalue_bound"])
    )
    metrics = {
        "certificate_max_residual": float(cert["relative_residuals"].max()),
        "certificate_min_cos_top10": float(cert["cos_lower"][:top].min()),
        "certificate_max_eigenvalue_error_top10": float(cert["eigenvalue_error"][:top].max()),
        "certificate_seconds": model.params.get("certificate_seconds", float("nan")),
        "transpose_distance": theory.transpose_distance(model.encoder, model.decoder),
    }
    if "eigenvalues" not in ref:
        e = model.eigenvalues
        reference = {
            "kind": "certificate",
            "eigenvalues": e,
            "alignment": cert["cos_lower"],
            "eigengaps": theory.eigengaps(np.append(e, float(ref["next_eigenvalue_bound"]))),
        }
        return {**metrics, "lambda_over_e_k": float(model.lam / e[-1])}, reference
    e, U = ref["eigenvalues"], ref["directions"]
    gaps = theory.eigengaps(e) if len(e) > k else np.append(theory.eigengaps(e), np.nan)
    e, U = e[:k], U[:, :k]
    align = theory.alignment(model.directions, U)
    rel = np.abs(model.eigenvalues - e) / e
    metrics.update(
        exact_pca_seconds=model.params.get("exact_reference_seconds", float("nan")),
        min_abs_cos_top10=float(align[:top].min()),
        min_abs_cos=float(align.min()),
        subspace_distance=theory.subspace_distance(model.directions, U),
        eigenvalue_max_rel_err_top10=float(rel[:top].max()),
        eigenvalue_max_rel_err=float(rel.max()),
        singular_value_error=theory.singular_value_error(model.singular_values, e, model.lam),
        lambda_over_e_k=float(model.lam / e[-1]),
    )
    reference = {"kind": "eigh", "eigenvalues": e, "alignment": align, "eigengaps": gaps[:k]}
    return metrics, reference


def directions_adata(
    model: RLAEModel, pre: ad.AnnData, *, client=None, device: str = TrainParams.device
) -> tuple[ad.AnnData, dict]:
    """Embedding and directions in scanpy's slots, plus the metrics of :func:`compare_with_pca`.

    ``pre`` may be backed (its matrix is then read block by block, on Dask
    when ``client`` is given). The result has every cell of ``pre`` and every
    input gene: ``X`` holds the log-normalised values (``pre.raw``; no ``X``
    when ``pre`` has no raw, as after streaming preprocessing), ``obsm['X_rlae']`` the scores (n x k),
    ``varm['rlae_directions']`` the directions (all input genes x k, zero rows
    for genes not used), ``var['rlae_used']`` marks used genes, and
    ``uns['rlae']`` the eigenvalues, variance ratios, lambda, parameters,
    the comparison with exact PCA, the recipe's ``batch_key`` ("" for none) and each direction's ``stability``
    (:func:`rlae_sc.stability.direction_stability`; the metrics list the
    components below :data:`rlae_sc.stability.IDENTIFIABLE` as
    ``not_identifiable``). ``device``: where the passes' products run (``"auto"``: ``rl.settings.device``,
    itself CUDA when available unless set; see :func:`rlae_sc.products.torch_device`).
    """
    matrix = trained_rows(pre)
    metrics, reference = compare_with_pca(model)
    if pre.raw is not None:
        X, genes = pre.raw.X, pre.raw.var_names
        X = X.to_memory() if hasattr(X, "to_memory") else X  # backed raw
    else:
        X, genes = None, pd.Index(model.recipe.input_genes)
    out = ad.AnnData(X=X, obs=pre.obs.copy(), var=pd.DataFrame(index=genes))
    rows = genes.get_indexer(model.recipe.genes)
    loadings = np.zeros((out.n_vars, model.n_components), dtype=np.float32)
    loadings[rows] = model.directions
    out.var["rlae_used"] = np.zeros(out.n_vars, dtype=bool)
    out.var.iloc[rows, out.var.columns.get_loc("rlae_used")] = True
    out.varm[DIRECTIONS_KEY] = loadings
    out.obsm[EMBEDDING_KEY], residual_sq = model.scores(matrix, residuals=True, client=client, device=device)
    stable = direction_stability(model, out.obsm[EMBEDDING_KEY], residual_sq)
    out.uns[UNS_KEY] = {
        **summary(model, reference, stable),
        "batch_key": model.recipe.batch_key or "",
        "raw_values": "counts" if model.recipe.pearson else "log_normalized",  # what X holds (all genes)
    }
    qc = pre.uns.get("rlae_preprocess", {})
    metrics = {
        **{key: int(qc[key]) for key in QC_COUNTS if key in qc},
        "n_cells": int(pre.n_obs),
        "n_genes": int(pre.n_vars),
        "k": model.n_components,
        "lambda": model.lam,
        "lambda_rule": model.params["lambda_rule"],
        **{key: model.params[key] for key in NOISE_FLOOR_KEYS if key in model.params},
        "fit_seconds": model.params["fit_seconds"],
        "n_iter": model.params["n_iter"],
        "converged": model.params["converged"],
        "not_identifiable": not_identifiable(stable),
        **metrics,
    }
    recipe = model.recipe
    metrics.update(
        qc=recipe.qc,
        qc_min_genes=recipe.min_genes,
        qc_min_counts=recipe.min_counts,
        qc_max_pct_mito=recipe.max_pct_mito,
    )
    if model.recipe.batches:
        recipe = model.recipe
        metrics.update(
            batch_key=recipe.batch_key, n_batches=len(recipe.batches), batch_centering=recipe.batch_centering
        )
    return out, metrics


def summary(model: RLAEModel, reference: dict, stability: np.ndarray) -> dict:
    """What ``uns['rlae']`` holds: the model's ``eigenvalues``, ``variance`` and ``variance_ratio`` (k,),
    ``singular_values`` (k,), ``lambda``, training ``params`` and ``trace``, each direction's ``stability`` (k,;
    expected ``|cos|`` under resampling of cells, :mod:`rlae_sc.stability`), and ``reference_pca``: the check's
    ``kind`` (``"eigh"`` or ``"certificate"``), ``eigenvalues``, ``variance_ratio``, per-component ``alignment``
    and ``eigengaps`` (k,) from ``reference`` (the second value of :func:`compare_with_pca`: exact PCA's, or the
    certificate's bounds)."""
    return {
        "eigenvalues": model.eigenvalues,
        "variance": model.explained_variance,
        "variance_ratio": model.variance_ratio,
        "singular_values": model.singular_values,
        "lambda": model.lam,
        "stability": np.asarray(stability, dtype=np.float64),
        "params": dict(model.params),
        "reference_pca": {
            "kind": reference["kind"],
            "eigenvalues": reference["eigenvalues"],
            "variance_ratio": reference["eigenvalues"] / model.total_scatter,
            "alignment": reference["alignment"],
            "eigengaps": reference["eigengaps"],
        },
        "trace": {key: np.asarray(val) for key, val in model.trace.items()},
    }
