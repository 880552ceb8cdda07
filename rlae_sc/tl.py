"""Tools, as scanpy's ``tl``: train the autoencoder on a preprocessed AnnData, embed new cells with a model."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import anndata as ad
import numpy as np

from rlae_sc.directions import compare_with_pca, summary
from rlae_sc.errors import InputError
from rlae_sc.keys import DIRECTIONS_KEY, EMBEDDING_KEY, UNS_KEY
from rlae_sc.model import RLAEModel
from rlae_sc.params import PreprocessParams, TrainParams
from rlae_sc.preprocess import trained_rows
from rlae_sc.stability import direction_stability


def rlae(
    adata: ad.AnnData,
    *,
    n_comps: int | str = TrainParams.n_components,
    solver: str = TrainParams.solver,
    lr: float | None = TrainParams.lr,
    batch_size: int | None = TrainParams.batch_size,
    trace_every: int = TrainParams.trace_every,
    trace_metrics: bool = TrainParams.trace_metrics,
    exact_check: bool = TrainParams.exact_check,
    lambda_frac: float = TrainParams.lambda_frac,
    lam: float | None = TrainParams.lam,
    n_permutations: int = TrainParams.n_permutations,
    noise_quantile: float = TrainParams.noise_quantile,
    oversample: int = TrainParams.oversample,
    scatter_precision: str = TrainParams.scatter_precision,
    max_iter: int = TrainParams.max_iter,
    tol: float = TrainParams.tol,
    seed: int = TrainParams.seed,
    device: str = TrainParams.device,
    batch_key: str | None = PreprocessParams.batch_key,
    key_added: str | None = None,
    client=None,
    checkpoint: str | Path | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Principal directions and embedding from the sum-regularized linear autoencoder, as ``scanpy.pp.pca``.

    Trains on ``adata`` as left by :func:`rlae_sc.pp.recipe` (:func:`rlae_sc.fit`), embeds its cells,
    and checks the directions against exact PCA of the same matrix (:func:`rlae_sc.directions.compare_with_pca`).

    Parameters
    ----------
    adata
        Preprocessed by :func:`rlae_sc.pp.recipe`: n cells x m genes, the recipe in ``uns['rlae_recipe']``.
    n_comps
        Latent units k, the principal directions found (``n_components`` of
        :class:`~rlae_sc.params.TrainParams`, named as scanpy's ``pp.pca`` names it); ``"auto"``: lambda at
        the noise floor of the data (parallel analysis) and k the units that survive it.
    solver, lr, batch_size, trace_every, trace_metrics, exact_check, lambda_frac, lam, n_permutations, noise_quantile
        Training parameters: fields of :class:`~rlae_sc.params.TrainParams`, whose defaults and documentation
        these are (``lam``: lambda in the units of ``C = X^T X``).
    oversample, scatter_precision, max_iter, tol, seed, device
        More fields of :class:`~rlae_sc.params.TrainParams`; ``device`` also runs the embedding and the PCA
        check.
    batch_key
        The ``obs`` column of each cell's batch. Batches are centred by the recipe
        (:func:`rlae_sc.pp.recipe` with ``batch_key``), so this only checks that the recipe was fitted with
        the same key (``None``: whatever the recipe holds); the directions are then those of the within-batch
        scatter.
    key_added
        Where to store the results. ``None``: ``obsm['X_rlae']``, ``varm['rlae_directions']`` and
        ``uns['rlae']``; otherwise ``obsm[key_added]``, ``varm[key_added]`` and ``uns[key_added]``
        (as scanpy's ``key_added`` of ``pp.pca``).
    client, checkpoint
        Of :func:`rlae_sc.fit`: a ``dask.distributed.Client`` (which also runs the embedding) and a file to
        checkpoint training to.
    copy
        Return an annotated copy and leave ``adata`` as it is.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``, else ``None``. Sets:

        ``obsm['X_rlae']``
            The embedding: PCA scores ``X P`` (n x k, float32).
        ``varm['rlae_directions']``
            The principal directions P (m x k, float32): the decoder's left singular vectors.
        ``uns['rlae']``
            ``eigenvalues``, ``variance`` (eigenvalues / (n - 1)), ``variance_ratio``, ``singular_values``
            and ``lambda`` (units of ``C = X^T X``, a sum over cells); ``stability``, each direction's expected
            ``|cos|`` under resampling of cells (:func:`rlae_sc.stability.direction_stability`); ``metrics`` and
            ``reference_pca``, the checks against exact PCA (``min_abs_cos_top10``, ``subspace_distance``, per-component
            ``alignment``, ...); ``params``, the call's and the training's parameters; ``trace``, the training
            history; and the model itself (``encoder``, ``decoder``, ``total_scatter``, ``n_cells``), read back
            by :func:`rlae_sc.get.model`.
    """
    from rlae_sc.train import fit  # torch, here only: rl.tl.embed and rl.get.model need numpy alone

    adata = adata.copy() if copy else adata
    if "rlae_recipe" not in adata.uns:
        raise InputError(
            "adata", "has no uns['rlae_recipe']: it was not preprocessed by rlae-sc", "Run rl.pp.recipe(adata) first."
        )
    recipe = json.loads(adata.uns["rlae_recipe"])
    if batch_key is not None and batch_key != recipe.get("batch_key"):
        raise InputError(
            "adata",
            f"its recipe was fitted with batch_key {recipe.get('batch_key')!r}, not {batch_key!r}",
            f"Preprocess with rl.pp.recipe(adata, batch_key={batch_key!r}) first: the recipe centres the batches.",
        )
    genes = recipe["genes"]
    if list(adata.var_names) != genes:
        raise InputError(
            "adata",
            f"its {adata.n_vars} genes are not the {len(genes)} genes of its recipe, in order",
            "Train on the AnnData as rl.pp.recipe left it, without subsetting genes.",
        )
    p = TrainParams.of(
        n_components=n_comps,
        solver=solver,
        lr=lr,
        batch_size=batch_size,
        trace_every=trace_every,
        trace_metrics=trace_metrics,
        exact_check=exact_check,
        lambda_frac=lambda_frac,
        lam=lam,
        n_permutations=n_permutations,
        noise_quantile=noise_quantile,
        oversample=oversample,
        scatter_precision=scatter_precision,
        max_iter=max_iter,
        tol=tol,
        seed=seed,
        device=device,
        source="adata",
    )
    model = fit(adata, client=client, checkpoint=checkpoint, source="adata", **asdict(p))
    matrix = trained_rows(adata)
    metrics, reference = compare_with_pca(model)
    obsm_key, varm_key, uns_key = (
        (EMBEDDING_KEY, DIRECTIONS_KEY, UNS_KEY) if key_added is None else (key_added, key_added, key_added)
    )
    adata.obsm[obsm_key], residual_sq = model.scores(matrix, residuals=True, client=client, device=device)
    stable = direction_stability(model, adata.obsm[obsm_key], residual_sq)
    adata.varm[varm_key] = model.directions.astype(np.float32)
    called = {f.name: getattr(p, f.name) for f in fields(p) if getattr(p, f.name) not in (None, f.default)}
    called |= {"checkpoint": checkpoint} if checkpoint is not None else {}
    adata.uns[uns_key] = {
        **summary(model, reference, stable),
        "metrics": metrics,
        "params": {**model.params, **called, "n_components": model.n_components},
        "encoder": model.encoder,
        "decoder": model.decoder,
        "total_scatter": model.total_scatter,
        "n_cells": model.n_cells,
    }
    return adata if copy else None


def embed(adata: ad.AnnData, model: RLAEModel, *, copy: bool = False, **params) -> ad.AnnData | None:
    """Embed new cells with a trained model, without refitting anything (as ``scanpy.tl.ingest`` maps
    onto a reference).

    The model's recipe is replayed on ``adata``'s counts (genes matched by name) and the cells are projected
    on its principal directions (:meth:`rlae_sc.RLAEModel.embed`).

    Parameters
    ----------
    adata
        New cells x genes, raw counts in ``X`` (the model's input kind), any genes in any order.
    model
        From :func:`rlae_sc.get.model` or :func:`rlae_sc.read_model`.
    copy
        Return an annotated copy and leave ``adata`` as it is.
    **params
        Other keyword arguments of :meth:`rlae_sc.RLAEModel.embed` (``min_overlap``, ``matrix``,
        ``client``).

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``, else ``None``. Sets ``obsm['X_rlae']`` (cells x k, float32),
        ``obs['rlae_qc_pass']`` (False for cells the model's QC would have removed; they are embedded all the
        same) and ``uns['rlae_embed']``.
    """
    adata = adata.copy() if copy else adata
    model.embed(adata, source="adata", **params)
    return adata if copy else None


__all__ = ["embed", "rlae"]


def __dir__() -> list[str]:
    return sorted(__all__)  # the namespace's public functions only, as a notebook's completion shows them
