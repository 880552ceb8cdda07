"""The trained model: recipe + autoencoder weights + principal directions; AnnData in, AnnData out.

:class:`RLAEModel` embeds new cells from raw counts and saves to / loads from the portable model file
(:mod:`rlae_sc.model_file`). Holding, loading, saving and embedding need numpy only: torch is imported by
training (:mod:`rlae_sc.train`, which makes the model) and by :meth:`RLAEModel.scores` alone.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rlae_sc.batches import batch_codes, centred_scale
from rlae_sc.csr_sums import grouped_sums
from rlae_sc.engine import run_pass
from rlae_sc.errors import InputError
from rlae_sc.keys import EMBEDDING_KEY
from rlae_sc.lae.theory import decoder_directions
from rlae_sc.model_file import load as load_file
from rlae_sc.model_file import save as save_file
from rlae_sc.params import MappingParams, TrainParams
from rlae_sc.recipe import Recipe, cell_qc, mito_mask
from rlae_sc.rows import InMemory, Rows


@dataclass
class RLAEModel:
    """A trained sum-regularized linear autoencoder with its preprocessing recipe.

    Attributes
    ----------
    recipe
        Replays preprocessing on new cells.
    encoder, decoder
        ``W1`` (k x m) and ``W2`` (m x k), float64.
    lam
        Lambda in the units of ``C = X^T X`` (a sum over the ``n_cells`` training cells).
    directions
        Left singular vectors of the decoder (m x k): the principal directions.
    singular_values
        Decoder singular values ``s_i`` (k,).
    eigenvalues
        ``e_i = lam / (1 - s_i^2)`` (k,), sums of squares over cells.
    total_scatter
        ``tr(C)``; ``variance_ratio = eigenvalues / total_scatter``.
    n_cells
        Training cells; explained variance is ``eigenvalues / (n_cells - 1)``.
    params
        Training parameters, the lambda rule, convergence and timing.
    trace
        Training history (see :class:`rlae_sc.lae.solvers.LAEFit`).
    reference
        The check of the directions against the ``C`` the model was trained on, computed by
        :func:`rlae_sc.train.fit_scatter` and read by :func:`rlae_sc.directions.compare_with_pca`: always the
        residual certificate (:func:`rlae_sc.lae.certificate.certify`: ``residuals`` (k,), ``residual_norm``,
        ``next_eigenvalue_bound``, units of ``C``); with the full eigh (``exact_check`` or ``trace_metrics``)
        also exact PCA's ``eigenvalues`` (k + 1,) and ``directions`` (m x (k + 1)). Empty for a model rebuilt
        without it.
    """

    recipe: Recipe
    encoder: np.ndarray
    decoder: np.ndarray
    lam: float
    total_scatter: float
    n_cells: int
    params: dict = field(default_factory=dict)
    trace: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directions, self.singular_values, self.eigenvalues = decoder_directions(self.decoder, self.lam)

    def __repr__(self) -> str:
        batches = f", batches={len(self.recipe.batches)}" if self.recipe.batches else ""
        return (
            f"RLAEModel(k={self.n_components}, genes={len(self.recipe.genes)}, cells={self.n_cells}, "
            f"lambda={self.lam:.4g}, solver={self.params.get('solver', '?')!r}{batches})"
        )

    @property
    def n_components(self) -> int:
        return self.decoder.shape[1]

    @property
    def variance_ratio(self) -> np.ndarray:
        return self.eigenvalues / self.total_scatter

    @property
    def explained_variance(self) -> np.ndarray:
        return self.eigenvalues / (self.n_cells - 1)

    def scores(
        self, X, *, residuals: bool = False, client=None, device: str = TrainParams.device
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """PCA scores ``X P`` (n x k, float32) of a preprocessed matrix X (n x m), the products on ``device``;
        with ``residuals`` also each cell's squared distance from the directions' span (n,) (see
        :func:`rlae_sc.products.scores`)."""
        from rlae_sc.products import scores  # torch, here only: loading and embedding need numpy alone

        return scores(X, self.directions, residuals=residuals, client=client, device=device)

    def embed(
        self,
        adata: ad.AnnData,
        *,
        min_overlap: float = MappingParams.min_overlap,
        source: str = "query",
        matrix: Rows | None = None,
        client=None,
    ) -> ad.AnnData:
        """Embed cells from raw counts (or the recipe's input kind) into the model's coordinates.

        Fills ``obsm['X_rlae']`` (n x k) and ``obs['rlae_qc_pass']`` (False for
        cells the reference QC would have removed; they are embedded all the
        same) in place, records the call in ``uns['rlae_embed']``, and returns
        ``adata``. See :meth:`Recipe.transform` for gene matching. The counts
        are read in blocks of cells from ``matrix`` when given (e.g. an
        :class:`~rlae_sc.rows.H5adMatrix` of a file too large for memory;
        ``adata`` then only carries ``obs`` and ``var``), else from ``adata.X``;
        on Dask when ``client`` is given.

        A model trained with a ``batch_key`` centres each cell on its batch's centre: cells of a batch the
        model knows (``obs[batch_key]``) on that batch's, the cells of each other batch on their own mean
        (over those of them that pass QC), found in one more pass, as the recipe's ``mean`` centring does;
        without the column, all cells are one new batch, ``query``. ``uns['rlae_embed']['new_batches']``
        names them.
        """
        idx = self.recipe.gene_index(adata.var_names, min_overlap=min_overlap, source=source)
        matrix = matrix if matrix is not None else InMemory(sp.csr_matrix(adata.X))
        mito = mito_mask(adata.var_names)
        recipe, batch, new = _query_batches(self.recipe, adata.obs, matrix, idx, mito, client=client, source=source)
        fn = partial(_embed_block, recipe=recipe, idx=idx, mito=mito, P=self.directions, batch=batch)
        rows = run_pass(matrix, fn, client=client, desc="embedding")[1]
        adata.obsm[EMBEDDING_KEY] = rows["scores"]
        adata.obs["rlae_qc_pass"] = rows["qc_pass"]
        adata.uns["rlae_embed"] = {
            "n_components": self.n_components,
            "gene_overlap": float((idx >= 0).mean()),
            "min_overlap": min_overlap,
            "new_batches": new,
        }
        return adata

    # -- file -------------------------------------------------------------------

    def save(self, path: str | Path) -> str:
        """Write the portable model file; returns its checksum."""
        manifest = {
            "recipe": self.recipe.to_dict(),
            "lambda": self.lam,
            "total_scatter": self.total_scatter,
            "n_cells": self.n_cells,
            "n_components": self.n_components,
            "params": self.params,
            "versions": software_versions(),
        }
        arrays = {
            "encoder": self.encoder,
            "decoder": self.decoder,
            "directions": self.directions,
            "eigenvalues": self.eigenvalues,
            **{f"trace/{key}": np.asarray(val, dtype=np.float64) for key, val in self.trace.items()},
            **{f"reference/{key}": np.asarray(val, dtype=np.float64) for key, val in self.reference.items()},
        }
        return save_file(path, manifest, arrays)


def load_model(path: str | Path) -> RLAEModel:
    """Load a model file written by :meth:`RLAEModel.save` (verified checksum, no unpickling)."""
    manifest, arrays = load_file(path)
    model = RLAEModel(
        recipe=Recipe.from_dict(manifest["recipe"]),
        encoder=arrays["encoder"],
        decoder=arrays["decoder"],
        lam=manifest["lambda"],
        total_scatter=manifest["total_scatter"],
        n_cells=manifest["n_cells"],
        params=manifest["params"],
        trace={key.split("/", 1)[1]: arrays[key].tolist() for key in arrays if key.startswith("trace/")},
        reference={key.split("/", 1)[1]: arrays[key] for key in arrays if key.startswith("reference/")},
    )
    if not np.allclose(model.directions, arrays["directions"], atol=1e-10):
        raise InputError(path, "stored directions disagree with the decoder's SVD", "Retrain the model.")
    return model


def _query_batches(
    recipe: Recipe, obs: pd.DataFrame, matrix, idx: np.ndarray, mito: np.ndarray, *, client=None, source="query"
) -> tuple[Recipe, np.ndarray | None, list[str]]:
    """The recipe that embeds query cells, each cell's batch in it (cells,; ``None`` without batches), and
    the names of the batches new to the model (see :meth:`RLAEModel.embed`)."""
    if not recipe.batches:
        return recipe, None, []
    key = recipe.batch_key
    values = obs[key] if key in obs else pd.Series("query", index=obs.index)
    codes, names = batch_codes(values, key=key, source=source)
    known = pd.Index(recipe.batches).get_indexer(names)
    new = [name for name, k in zip(names, known, strict=True) if k < 0]
    fresh = np.cumsum(known < 0) - 1  # each new batch's place among the new ones
    in_model = np.where(known >= 0, known, len(recipe.batches) + fresh)
    if new:
        group = np.where(known < 0, fresh, -1)[codes]
        fn = partial(_new_batch_block, recipe=recipe, idx=idx, mito=mito, group=group, n_new=len(new))
        sums = run_pass(matrix, fn, client=client, desc="new batches")[0]
        if (sums["n"] == 0).any():
            empty = [name for name, n in zip(new, sums["n"], strict=True) if n == 0]
            raise InputError(
                source, f"no cell of batch(es) {', '.join(empty)} passes the model's QC", "Check those cells' counts."
            )
        centres = sums["sum"] / sums["n"][:, None]
        recipe = recipe.with_batches(new, centres, centred_scale(sums["sum"], sums["sumsq"], sums["n"], centres)[1])
    return recipe, in_model[codes], new


def _new_batch_block(block, start: int, *, recipe: Recipe, idx: np.ndarray, mito, group: np.ndarray, n_new: int):
    """Sums and sums of squares (new batches x m) of the log-normalised values of the recipe's genes (missing
    genes: zero) over the QC-passing cells of each new batch (``group``: all cells,; -1: a known batch)."""
    X = sp.csr_matrix(block)
    codes = np.where(recipe.keep(*cell_qc(X, mito)), group[start : start + X.shape[0]], -1)
    present = idx >= 0
    L = recipe.normalize_rows(X, idx[present])
    L = sp.csr_matrix((L.data, np.flatnonzero(present)[L.indices], L.indptr), shape=(L.shape[0], len(idx)))
    total, squares = grouped_sums(L, codes, n_new)
    return {"sum": total, "sumsq": squares, "n": np.bincount(codes[codes >= 0], minlength=n_new)}, {}


def _embed_block(block, start: int, *, recipe: Recipe, idx: np.ndarray, mito: np.ndarray, P: np.ndarray, batch=None):
    """Scores (float32) and QC flags of a block of cells x input genes (``batch``: all cells' batches)."""
    X = sp.csr_matrix(block)
    codes = None if batch is None else batch[start : start + X.shape[0]]
    Z = recipe.scale_rows(recipe.normalize_rows(X), idx, batch=codes, dtype=np.float64)
    return {}, {
        "scores": (Z @ P).astype(np.float32),
        "qc_pass": recipe.keep(*cell_qc(X, mito)),
    }


def software_versions() -> dict[str, str]:
    """Versions of Python, rlae-sc and the libraries that shape results."""
    out = {"python": platform.python_version()}
    for pkg in ("rlae-sc", "torch", "numpy", "scipy", "scanpy", "anndata"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # not installed as a distribution (e.g. running from a source tree)
            out[pkg] = "unknown"
    return out
