"""Preprocessing as a replayable recipe: QC, normalisation (log1p or Pearson residuals), HVG selection, scaling.

:func:`preprocess` fits a :class:`Recipe` on a reference and returns the
matrix the autoencoder trains on; :meth:`Recipe.transform` replays the same
steps on any cells (new experiments included) without refitting anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rlae_sc.affine import AffineRows
from rlae_sc.batches import (
    FIRST_PASS_DIMS,
    align_centres,
    batch_codes,
    centred_scale,
    clusters_within_batches,
    label_pairs,
    match_and_align,
)
from rlae_sc.blocks import (
    cell_qc_block,
    clipped_block,
    first_pass_block,
    lognorm_block,
    offset_block,
    qc_block,
    residual_block,
)
from rlae_sc.decisions import check_qc, gene_candidates, mad_thresholds, new_recipe, set_genes, set_scale, set_stats
from rlae_sc.engine import run_pass
from rlae_sc.errors import InputError
from rlae_sc.hvg import scanpy_hvg, seurat_v3_clip, seurat_v3_select
from rlae_sc.labels import labelled_mask, obs_column
from rlae_sc.params import PreprocessParams, ReadParams
from rlae_sc.recipe import COUNTS, LOG_NORMALIZED, SCALED, Recipe
from rlae_sc.residuals import default_clip, residual_variance, select_genes
from rlae_sc.rows import InMemory, Rows, matrix_of


def fit_recipe(
    matrix: Rows,
    var_names: pd.Index,
    *,
    obs: pd.DataFrame | None = None,
    input_kind: str = ReadParams.input_kind,
    source: str = "input",
    validate: bool = False,
    chunk_size: int | None = None,
    client=None,
    steps: PreprocessParams | None = None,
    **params,
) -> tuple[Recipe, pd.DataFrame]:
    """Fit a :class:`Recipe` with passes over the rows of ``matrix`` (cells x genes), never holding it whole.

    ``params`` are the preprocessing parameters, fields of :class:`rlae_sc.params.PreprocessParams`
    (``min_genes``, ``n_top_genes``, ``clip``, ``batch_key``, ...); those not given take their defaults;
    or ``steps``, those parameters as the dataclass itself.
    ``obs`` (cells,) holds the columns ``batch_key`` and ``keep_key`` name.

    Pass 1: per-cell QC and, over cells passing QC, per-gene detection, sums
    and sums of squares (per batch with ``batch_key``). Pass 2 (``seurat_v3`` selection): per-gene sums of
    counts clipped as in Seurat v3, per batch (the same statistics as scanpy's
    ``highly_variable_genes(flavor="seurat_v3", batch_key=...)``; :mod:`rlae_sc.hvg`); with Pearson residuals,
    the sums of squares of the candidate genes' residuals instead (cell
    totals over the candidates, as scanpy's ``flavor="pearson_residuals"``
    after its gene filter). Pass 3: mean and standard deviation of the
    selected genes' log-normalised values (the mean of their residuals, cell
    totals over the selected genes); with ``batch_key``, per batch, and the batches' centres
    (:func:`fit_batch_centres`, more passes for ``anchors``). Pass 4 (``clip``):
    the mean of the clipped scaled values. ``validate`` checks each block's
    values (NaN, negatives, non-integer counts) in pass 1. Blocks have ``chunk_size`` rows (``None``:
    ``rl.settings.block_size``), on Dask with ``client``. The ``seurat`` and
    ``cell_ranger`` flavors call scanpy and need ``matrix`` in memory.
    Every pass runs a kernel of :mod:`rlae_sc.blocks` and returns sums over cells, and every decision taken
    from them is a function of its own (:mod:`rlae_sc.decisions`, :func:`rlae_sc.hvg.seurat_v3_clip`,
    :func:`rlae_sc.hvg.seurat_v3_select`), which the federated sites and coordinator (:mod:`rlae_sc.federated`)
    run on their own cells and call on sums over sites.
    Returns the recipe and the QC table of all cells (``n_genes``,
    ``total_counts``, ``pct_mito``, ``qc_pass``).
    """
    recipe, mito = new_recipe(var_names, input_kind=input_kind, source=source, steps=steps, **params)
    passes = {"chunk_size": chunk_size, "client": client}
    batch = None
    if recipe.batch_key is not None:
        values = obs_column(obs if obs is not None else pd.DataFrame(), recipe.batch_key, what="batch", source=source)
        batch, recipe.batches = batch_codes(values, key=recipe.batch_key, source=source)
    n_batches = len(recipe.batches) or 1
    genes = pd.Index(recipe.input_genes)
    check = {"source": str(source), "input_kind": input_kind, "genes": genes} if validate else None
    if recipe.qc == "mad":
        cells = run_pass(matrix, partial(cell_qc_block, mito=mito), desc="QC metrics", **passes)[1]
        mad_thresholds(recipe, cells["n_genes"], cells["total_counts"], cells["pct_mito"])
    block = partial(qc_block, recipe=recipe, mito=mito, check=check, batch=batch, n_batches=n_batches)
    gene, cells = run_pass(matrix, block, desc="QC", **passes)
    keep = cells["qc_pass"]
    qc = pd.DataFrame(cells)
    n = int(keep.sum())
    check_qc(recipe, len(keep), n, float(np.median(qc["n_genes"])), source=source)
    n_b = np.bincount(batch[keep], minlength=n_batches) if batch is not None else np.array([n])
    candidates = gene_candidates(recipe, gene["n_cells"], source=source)
    if recipe.target_sum is None and input_kind == "counts" and not recipe.pearson:
        recipe.target_sum = float(np.median(qc["total_counts"].to_numpy()[keep]))
    if recipe.pearson:
        recipe.residual_clip = default_clip(n)
    if candidates.sum() <= recipe.n_top_genes:
        hvg = candidates
    elif recipe.pearson:
        cand = np.flatnonzero(candidates)
        block = partial(residual_block, keep=keep, cand=cand, gene_sums=gene["sum"][cand], recipe=recipe)
        sums, _ = run_pass(matrix, block, desc="HVG", **passes)
        hvg = np.zeros(len(candidates), dtype=bool)
        hvg[cand[select_genes(residual_variance(sums, n), recipe.n_top_genes)]] = True
    elif recipe.hvg_flavor == "seurat_v3":
        if batch is None:
            fits = [seurat_v3_clip(gene, candidates, n)]
            clip_val = fits[0]["clip_val"]
        else:
            by_batch = [{"sum": gene["batch_sum"][b], "sumsq": gene["batch_sumsq"][b]} for b in range(n_batches)]
            fits = [seurat_v3_clip(by_batch[b], candidates, int(n_b[b])) for b in range(n_batches)]
            clip_val = np.stack([fit["clip_val"] for fit in fits])
        block = partial(clipped_block, keep=keep, cand=fits[0]["cand"], clip_val=clip_val, batch=batch)
        clipped, _ = run_pass(matrix, block, desc="HVG", **passes)
        per_batch = [clipped] if batch is None else [{k: v[b] for k, v in clipped.items()} for b in range(n_batches)]
        hvg = seurat_v3_select(fits, per_batch, list(n_b), len(candidates), recipe.n_top_genes)
    elif isinstance(matrix, InMemory):
        X = sp.csr_matrix(matrix.array)[keep]
        in_batch = None if batch is None else batch[keep]
        hvg = scanpy_hvg(
            recipe.normalize_rows(X),
            candidates,
            flavor=recipe.hvg_flavor,
            n_top_genes=recipe.n_top_genes,
            batch=in_batch,
        )
    else:
        raise InputError(
            source,
            f"hvg_flavor {recipe.hvg_flavor!r} needs the matrix in memory",
            "Use hvg_flavor: seurat_v3 with counts input for streaming, or turn streaming off.",
        )
    idx = set_genes(recipe, hvg)
    if recipe.pearson:
        recipe.gene_sums = gene["sum"][idx]
        block = partial(residual_block, keep=keep, cand=idx, gene_sums=recipe.gene_sums, recipe=recipe)
    else:
        block = partial(lognorm_block, recipe=recipe, keep=keep, idx=idx, codes=batch, n_codes=n_batches)
    sums, _ = run_pass(matrix, block, desc="gene means", **passes)
    set_scale(recipe, sums, n)
    if batch is not None:
        fit_batch_centres(recipe, matrix, sums, n_b, keep=keep, idx=idx, batch=batch, obs=obs, source=source, **passes)
    if recipe.clip is not None:
        block = partial(offset_block, recipe=recipe, keep=keep, idx=idx, batch=batch)
        sums, _ = run_pass(matrix, block, desc="clip", **passes)
        recipe.offset = sums["sum"] / n
    counts = {"n_cells_in": len(keep), "n_cells_all_zero": (qc["total_counts"] == 0).sum(), "n_cells_kept": n}
    set_stats(recipe, counts, gene, candidates)
    return recipe, qc


def preprocess(
    adata: ad.AnnData,
    *,
    input_kind: str = ReadParams.input_kind,
    source: str = "input",
    scale: bool = True,
    steps: PreprocessParams | None = None,
    **params,
) -> tuple[ad.AnnData, Recipe]:
    """Fit a :class:`Recipe` on ``adata`` (cells x genes, in memory; see :func:`fit_recipe`) and apply it.

    ``params`` are the preprocessing parameters, fields of :class:`rlae_sc.params.PreprocessParams`, or
    ``steps`` the dataclass itself.

    ``scale``: store the trained matrix itself in ``X`` (dense); ``False``
    stores the log-normalised values of the genes used (CSR, about a fifth of
    the size), or their counts for Pearson residuals, from which
    :func:`trained_rows` scales each block of rows on the fly, as the
    preprocessed file does.

    Returns
    -------
    pre
        Cells kept by QC x genes used: ``X`` is the centred, scaled float32
        matrix the autoencoder trains on (``scale``) or the log-normalised
        values (counts) it is computed from (``uns['rlae_preprocess']['X']``
        says which); ``raw`` holds the log-normalised values of all input
        genes (their counts for Pearson residuals); ``obs`` the
        QC metrics; ``var`` the per-gene ``mean`` and ``std``;
        ``uns['rlae_preprocess']`` the counts.
    recipe
        The fitted recipe (see :meth:`Recipe.to_dict`).
    """
    X = sp.csr_matrix(adata.X)
    recipe, qc = fit_recipe(
        InMemory(X), adata.var_names, obs=adata.obs, input_kind=input_kind, source=source, steps=steps, **params
    )
    pre, keep = preprocessed_adata(recipe, adata.obs, qc, stored=SCALED if scale else recipe.stored)
    L = recipe.normalize_rows(X[keep])
    idx = recipe.gene_index(recipe.input_genes)
    pre.X = recipe.scale_rows(L, idx, batch=recipe.batch_of(pre.obs, source=source)) if scale else L[:, idx]
    pre.raw = ad.AnnData(X=L, obs=pre.obs[[]], var=pd.DataFrame(index=adata.var_names))
    return pre, recipe


def preprocessed_adata(
    recipe: Recipe, obs: pd.DataFrame, qc: pd.DataFrame, *, stored: str
) -> tuple[ad.AnnData, np.ndarray]:
    """The cells passing QC x genes used, without a matrix, and the mask of those cells.

    ``obs`` is the input's (all cells) and ``qc`` the table of :func:`fit_recipe`;
    the result's ``obs`` holds both for the kept cells, ``var`` the per-gene
    ``mean`` and ``std``, ``uns['rlae_recipe']`` the recipe as JSON (replayed by
    the stages after and by :meth:`Recipe.from_dict`), ``uns['rlae_preprocess']``
    the recipe's counts and, under ``"X"``, what ``X`` will hold: ``stored``
    (:data:`SCALED`, :data:`LOG_NORMALIZED` or :data:`COUNTS`).
    """
    keep = qc["qc_pass"].to_numpy()
    qc = qc.drop(columns="qc_pass").set_axis(obs.index)
    pre = ad.AnnData(
        obs=pd.concat([obs[keep], qc[keep]], axis=1),
        var=pd.DataFrame({"mean": recipe.mean, "std": recipe.std}, index=pd.Index(recipe.genes)),
        uns={"rlae_preprocess": {**recipe.stats, "X": stored}, "rlae_recipe": json.dumps(recipe.to_dict())},
    )
    return pre, keep


def fit_batch_centres(
    recipe: Recipe,
    matrix,
    sums: dict,
    n_b: np.ndarray,
    *,
    keep: np.ndarray,
    idx: np.ndarray,
    batch: np.ndarray,
    obs: pd.DataFrame,
    source: str = "input",
    **passes,
) -> None:
    """Set the recipe's batch centres and its standard deviations about them (:mod:`rlae_sc.batches`).

    ``sums`` are pass 3's, with per-batch sums and sums of squares of the genes used (``group_sum``,
    ``group_sumsq``: B x m) over the ``n_b`` (B,) QC-passing cells of each batch; ``batch`` (input cells,)
    each cell's batch; ``keep`` the QC mask and ``idx`` the genes' input columns. ``mean`` centring takes
    each batch's mean; ``anchors`` matches clusters between batches, the ``keep_key`` groups (one more
    pass), or first-pass clusters (three more passes: the scatter of the mean-centred matrix, the scores on
    its top :data:`~rlae_sc.batches.FIRST_PASS_DIMS` directions, the clusters' sums).
    """
    batch_mean = sums["group_sum"] / np.maximum(n_b, 1)[:, None]
    centres = batch_mean
    if recipe.batch_centering == "anchors" and len(n_b) > 1:
        kept = {"keep": keep, "idx": idx, "recipe": recipe}
        if recipe.keep_key is not None:
            groups = obs_column(obs, recipe.keep_key, what="keep", source=source)
            has = labelled_mask(groups)
            names = sorted(set(groups[has].astype(str)))
            group = np.where(has, pd.Index(names).get_indexer(groups.astype(str)), -1)
            n_groups = len(names)
            cluster = np.where(group >= 0, batch * n_groups + group, -1)
            means, sizes = _cluster_means(matrix, cluster, len(n_b) * n_groups, **kept, **passes)
            cluster_batch = np.arange(len(sizes)) // n_groups
            pairs = label_pairs(cluster_batch, np.arange(len(sizes)) % n_groups, sizes)
            centres = align_centres(means, sizes, cluster_batch, pairs, batch_mean, n_b)
        else:
            recipe.batch_centre = batch_mean  # the first pass: each batch on its own mean
            recipe.std, recipe.batch_std = centred_scale(sums["group_sum"], sums["group_sumsq"], n_b, batch_mean)
            block = partial(first_pass_block, batch=batch, P=None, **kept)
            C = run_pass(matrix, block, desc="first pass", **passes)[0]["C"]
            d = min(FIRST_PASS_DIMS, C.shape[0] - 1)
            P = np.linalg.eigh(C)[1][:, ::-1][:, :d]
            block = partial(first_pass_block, batch=batch, P=P, **kept)
            scores = run_pass(matrix, block, desc="first-pass scores", **passes)[1]["scores"]
            found, cluster_batch = clusters_within_batches(scores, batch[keep], len(n_b))
            cluster = np.full(len(keep), -1)
            cluster[keep] = found
            means, sizes = _cluster_means(matrix, cluster, len(cluster_batch), **kept, **passes)
            std = recipe.std
            centres, _ = match_and_align(means, sizes, cluster_batch, batch_mean, n_b, project=lambda V: (V / std) @ P)
    recipe.batch_centre = centres
    recipe.std, own = centred_scale(sums["group_sum"], sums["group_sumsq"], n_b, centres)
    recipe.batch_std = own if recipe.batch_scale else np.zeros((0, 0))


def _cluster_means(matrix, cluster: np.ndarray, n_clusters: int, **kept) -> tuple[np.ndarray, np.ndarray]:
    """Each cluster's mean log-normalised values of the genes used (clusters x m) and its cells (clusters,),
    from one pass; ``cluster`` (input cells,) numbers the clusters (-1: in none)."""
    passes = {key: kept.pop(key) for key in ("chunk_size", "client") if key in kept}
    block = partial(lognorm_block, codes=cluster, n_codes=n_clusters, **kept)
    sums = run_pass(matrix, block, desc="cluster means", **passes)[0]
    sizes = np.bincount(cluster[kept["keep"] & (cluster >= 0)], minlength=n_clusters)
    return sums["group_sum"] / np.maximum(sizes, 1)[:, None], sizes


@dataclass(frozen=True)
class ScaledRows(Rows):
    """Rows of the trained matrix (float32, cells x genes used), scaled block by block by ``recipe``
    (centring, scaling, clipping) from ``rows`` of log-normalised values of the recipe's genes (or their
    Pearson residuals, computed in float64, from rows of counts),
    computed in float32 (about six times faster than in float64 at 2,000 genes; the values differ from
    float64's rounded to float32 by about 1e-7 relative).

    :class:`~rlae_sc.rows.Rows` (picklable, for Dask); memory is one dense block. ``batch`` (rows,): each row's
    batch, for a recipe with batches (:meth:`Recipe.batch_of`).
    """

    rows: Rows
    recipe: Recipe
    batch: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        block = sp.csr_matrix(self.rows.read(start, stop))
        batch = None if self.batch is None else self.batch[start:stop]
        return self.recipe.scale_rows(block, np.arange(self.shape[1]), batch=batch, compute=np.float32)

    def fingerprint(self) -> str:
        return f"scaled {self.rows.fingerprint()}"

    @property
    def sparse(self) -> AffineRows | None:
        """The same rows as sparse blocks and the recipe's affine map (:class:`~rlae_sc.affine.AffineRows`), for
        the passes' sparse products; ``None`` where scaling is not affine (clipping, Pearson residuals)."""
        terms = self.recipe.affine()
        return None if terms is None else AffineRows(self.rows, *terms, self.batch)


def trained_rows(pre: ad.AnnData) -> Rows:
    """The rows of the matrix the autoencoder trains on, for passes over a preprocessed AnnData (in memory
    or backed): ``X`` itself, or ``X`` scaled on the fly when it holds log-normalised values or counts."""
    rows = matrix_of(pre)
    if pre.uns["rlae_preprocess"].get("X") in (LOG_NORMALIZED, COUNTS):
        recipe = Recipe.from_dict(json.loads(pre.uns["rlae_recipe"]))
        return ScaledRows(rows, recipe, recipe.batch_of(pre.obs, source="preprocessed input"))
    return rows
