"""The replayable preprocessing recipe: every parameter and fitted statistic needed to preprocess any cells.

:func:`rlae_sc.preprocess.fit_recipe` fits a :class:`Recipe` on a reference;
:meth:`Recipe.transform` (and, block by block, :meth:`Recipe.normalize_rows`
and :meth:`Recipe.scale_rows`) replays it on any cells without refitting.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rlae_sc.batches import batch_codes
from rlae_sc.csr_sums import row_totals
from rlae_sc.errors import InputError
from rlae_sc.labels import obs_column
from rlae_sc.params import MappingParams, PreprocessParams, ReadParams
from rlae_sc.residuals import THETA, pearson_residuals

MITO_PREFIXES = ("MT-", "mt-")

SCALED = "scaled"  # X holds the trained matrix
LOG_NORMALIZED = "log_normalized"  # X holds log-normalised values of the genes used; the recipe scales them
COUNTS = "counts"  # X holds counts of the genes used; the recipe computes their Pearson residuals and centres them


@dataclass
class Recipe:
    """Every parameter and fitted statistic needed to replay preprocessing.

    Attributes
    ----------
    input_kind
        See :class:`rlae_sc.params.ReadParams`.
    qc, n_mads, min_genes, min_cells, max_pct_mito, target_sum, normalization, n_top_genes, hvg_flavor, clip
        The parameters as applied (see :class:`rlae_sc.params.PreprocessParams`): with ``qc`` ``mad``,
        ``min_genes``, ``min_counts`` (a cell's total must be above it; 0 otherwise) and ``max_pct_mito``
        are the thresholds found in the data (:func:`rlae_sc.decisions.mad_thresholds`);
        ``target_sum`` is the median of the reference's totals when not given
        (a cell's total is taken over all its genes; not used by Pearson
        residuals), ``hvg_flavor`` is ``seurat`` for log-normalised input given
        ``seurat_v3`` and ``pearson_residuals`` with that normalisation, and
        ``max_pct_mito`` is ``None`` when no gene is mitochondrial.
    input_genes
        Gene names of the reference input, in order.
    genes
        Genes used, in input order (length m).
    mean, std
        Per-gene mean and standard deviation (ddof=1) of log-normalised values
        over reference cells (m,); ``std`` is 1 where a gene is constant, and
        for Pearson residuals (centred, not scaled: ``mean`` is their mean).
    gene_sums, theta, residual_clip
        Pearson residuals only: each gene's count total over the reference
        cells (m,), the overdispersion and the clipping bound
        (``sqrt(n reference cells)``); a cell's total is taken over the genes
        used (see :mod:`rlae_sc.residuals`).
    offset
        Per-gene mean subtracted after clipping (m,), zeros without clipping.
    batch_key, batch_centering, batch_scale, keep_key
        The batch parameters as applied (see :class:`rlae_sc.params.PreprocessParams`).
    batches
        The batches' names (B,), sorted; empty without ``batch_key``.
    batch_centre
        Each batch's centre (B x m), in log-normalised units: subtracted from its cells instead of ``mean``
        (see :mod:`rlae_sc.batches`); ``std`` is then the standard deviation about the centres, pooled.
    batch_std
        Each batch's own standard deviation about its centre (B x m), used instead of ``std`` with
        ``batch_scale``; empty otherwise.
    stats
        Counts from fitting: cells and genes in, removed by each filter, kept.
    """

    input_kind: str = ReadParams.input_kind
    qc: str = PreprocessParams.qc
    n_mads: float = PreprocessParams.n_mads
    min_genes: int = PreprocessParams.min_genes
    min_counts: float = 0.0
    min_cells: int = PreprocessParams.min_cells
    max_pct_mito: float | None = PreprocessParams.max_pct_mito
    target_sum: float | None = PreprocessParams.target_sum
    normalization: str = PreprocessParams.normalization
    n_top_genes: int = PreprocessParams.n_top_genes
    hvg_flavor: str = PreprocessParams.hvg_flavor
    clip: float | None = PreprocessParams.clip
    input_genes: list[str] = field(default_factory=list)
    genes: list[str] = field(default_factory=list)
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gene_sums: np.ndarray = field(default_factory=lambda: np.zeros(0))
    theta: float = THETA
    residual_clip: float | None = None
    batch_key: str | None = PreprocessParams.batch_key
    batch_centering: str = PreprocessParams.batch_centering
    batch_scale: bool = PreprocessParams.batch_scale
    keep_key: str | None = PreprocessParams.keep_key
    batches: list[str] = field(default_factory=list)
    batch_centre: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    batch_std: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    stats: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        batches = f", batch_key={self.batch_key!r} ({len(self.batches)} batches)" if self.batches else ""
        return (
            f"Recipe({self.normalization}, {len(self.genes)} of {len(self.input_genes)} genes, "
            f"hvg_flavor={self.hvg_flavor!r}, cells kept={self.stats.get('n_cells_kept', '?')}{batches})"
        )

    @property
    def pearson(self) -> bool:
        """Whether the recipe computes Pearson residuals of counts (else log-normalised values)."""
        return self.normalization == "pearson_residuals"

    @property
    def stored(self) -> str:
        """What a preprocessed file's sparse ``X`` holds for the genes used: :data:`LOG_NORMALIZED` values,
        or :data:`COUNTS` for Pearson residuals (computed from them block by block)."""
        return COUNTS if self.pearson else LOG_NORMALIZED

    # -- replay -----------------------------------------------------------------

    def qc_metrics(self, adata: ad.AnnData) -> pd.DataFrame:
        """Per-cell ``n_genes``, ``total_counts`` and ``pct_mito`` (NaN when no mito genes are named)."""
        n_genes, total, pct = cell_qc(sp.csr_matrix(adata.X), mito_mask(adata.var_names))
        return pd.DataFrame({"n_genes": n_genes, "total_counts": total, "pct_mito": pct}, index=adata.obs_names)

    def qc_pass(self, adata: ad.AnnData) -> np.ndarray:
        """Boolean mask (n_cells,) of cells that pass the recipe's cell filters."""
        qc = self.qc_metrics(adata)
        return self.keep(qc["n_genes"].to_numpy(), qc["total_counts"].to_numpy(), qc["pct_mito"].to_numpy())

    def keep(self, n_genes: np.ndarray, total: np.ndarray, pct_mito: np.ndarray) -> np.ndarray:
        """Boolean mask of the cells that pass QC, from their genes detected, total counts and % mitochondrial
        counts (each cells,)."""
        keep = (n_genes >= max(self.min_genes, 1)) & (total > max(self.min_counts, 0))
        if self.max_pct_mito is not None and not np.isnan(pct_mito).all():
            keep &= pct_mito <= self.max_pct_mito
        return keep

    def normalize(self, adata: ad.AnnData) -> sp.csr_matrix:
        """Log-normalised values of all of ``adata``'s genes (CSR, float32, cells x genes); the counts
        themselves for Pearson residuals (which :meth:`transform` computes over the genes used)."""
        return self.normalize_rows(sp.csr_matrix(adata.X))

    def normalize_rows(self, X: sp.csr_matrix, genes: np.ndarray | None = None) -> sp.csr_matrix:
        """``log1p(target_sum * x / cell total)`` (CSR, float32, cells x genes; totals over all genes), or ``X``
        for log-normalised input and for Pearson residuals. With ``genes`` (column numbers of ``X``), only those
        columns, in that order: the totals are still taken over all genes, and only the kept values are
        transformed."""
        X = sp.csr_matrix(X)
        if self.input_kind == "log_normalized" or self.pearson:
            X = sp.csr_matrix(X, dtype=np.float32)
            return X if genes is None else X[:, genes]
        total = row_totals(X, np.zeros(X.shape[1], dtype=bool))[0]
        total[total == 0] = 1.0
        X = sp.csr_matrix(X if genes is None else X[:, genes], dtype=np.float64, copy=True)
        X.data *= np.repeat(self.target_sum / total, np.diff(X.indptr))
        np.log1p(X.data, out=X.data)
        return X.astype(np.float32)

    def transform(
        self,
        adata: ad.AnnData,
        *,
        batch: np.ndarray | None = None,
        min_overlap: float = MappingParams.min_overlap,
        source: str = "query",
    ) -> np.ndarray:
        """Replay the recipe on ``adata`` (any cells, any gene order) -> float32 (n_cells x m).

        Genes are matched by name; genes of the recipe missing from ``adata``
        count as zero expression (a warning gives the overlap). Fewer than
        ``min_overlap`` of the recipe's genes present is an :class:`InputError`.
        No cell is dropped: use :meth:`qc_pass` to flag cells QC would remove.
        ``batch``: each cell's batch (n_cells,), an index into :attr:`batches`, for a recipe with batches.
        """
        idx = self.gene_index(adata.var_names, min_overlap=min_overlap, source=source)
        return self.scale_rows(self.normalize(adata), idx, batch=batch)

    def gene_index(
        self, var_names, *, min_overlap: float = MappingParams.min_overlap, source: str = "query"
    ) -> np.ndarray:
        """Column of each recipe gene in ``var_names`` (-1: missing), checked against ``min_overlap``."""
        idx = pd.Index(var_names).get_indexer(self.genes)
        present = idx >= 0
        overlap = float(present.mean())
        if overlap < min_overlap:
            raise InputError(
                source,
                f"only {int(present.sum())} of the model's {len(self.genes)} genes ({overlap:.0%}) are present, "
                f"below the minimum overlap of {min_overlap:.0%}",
                "Check that genes are named the same way as in the reference (symbols vs Ensembl ids), "
                "or lower min_overlap if you accept the loss.",
            )
        if overlap < 1:
            warnings.warn(
                f"{source}: {len(self.genes) - int(present.sum())} of the model's {len(self.genes)} genes are missing "
                f"(overlap {overlap:.1%}); they are treated as zero expression",
                stacklevel=3,
            )
        return idx

    def scale_rows(
        self,
        L: sp.csr_matrix,
        idx: np.ndarray,
        *,
        batch: np.ndarray | None = None,
        dtype=np.float32,
        compute=np.float64,
    ) -> np.ndarray:
        """Centre, scale and clip log-normalised values ``L`` (or, for Pearson residuals, compute the
        residuals of counts ``L`` in float64, cell totals over the recipe's genes, and centre them);
        ``idx[j]`` is the column of recipe gene j in ``L`` (-1: missing, taken as zero). With batches,
        ``batch`` (n_cells,) gives each row's batch (an index into :attr:`batches`), whose centre (and, with
        ``batch_scale``, standard deviation) is used. Computed in ``compute`` precision, in place (memory:
        one dense copy, two for residuals and for batches); returns ``dtype`` (n_cells x m)."""
        present = idx >= 0
        if present.all() and np.array_equal(idx, np.arange(L.shape[1])):
            Z = L.toarray().astype(compute, copy=False)  # the columns are the recipe's genes, in order
        else:
            Z = np.zeros((L.shape[0], len(self.genes)), dtype=compute)
            Z[:, present] = L[:, idx[present]].toarray()
        if self.pearson:
            Z = self.residuals(Z).astype(compute, copy=False)
        if self.batches:
            if batch is None:
                raise ValueError("this recipe centres each batch on its own centre: give each cell's batch")
            Z -= self.batch_centre[batch].astype(compute, copy=False)
            Z /= (self.batch_std[batch] if self.batch_scale else self.std).astype(compute, copy=False)
        else:
            Z -= self.mean.astype(compute, copy=False)
            Z /= self.std.astype(compute, copy=False)
        if self.clip is not None:
            np.clip(Z, -self.clip, self.clip, out=Z)
        Z -= self.offset.astype(compute, copy=False)
        return Z.astype(dtype, copy=False)

    def affine(self) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`scale_rows` as an affine map of log-normalised values, ``z = l * scale[g] - shift[g]`` for a
        cell of group ``g`` (its batch; 0 without batches): ``scale`` and ``shift`` (groups x m, float64; shift
        in scaled units, the offset included). ``None`` where the map is not affine: with clipping or Pearson
        residuals."""
        if self.clip is not None or self.pearson:
            return None
        if self.batches:
            scale = 1.0 / (self.batch_std if self.batch_scale else np.broadcast_to(self.std, self.batch_centre.shape))
            centre = self.batch_centre
        else:
            scale, centre = 1.0 / self.std[None, :], self.mean[None, :]
        scale = np.asarray(scale, dtype=np.float64)
        return scale, centre * scale + np.asarray(self.offset, dtype=np.float64)

    def residuals(self, counts) -> np.ndarray:
        """Pearson residuals (float64, n_cells x m) of ``counts`` of the recipe's genes (n_cells x m),
        uncentred: scanpy's ``normalize_pearson_residuals`` of the genes used."""
        return pearson_residuals(counts, gene_sums=self.gene_sums, theta=self.theta, clip=self.residual_clip)

    # -- serialisation ------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-ready dict; arrays become lists of floats (exact round trip)."""
        d = asdict(self)
        for key in ARRAYS:
            d[key] = np.asarray(d[key], dtype=np.float64).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        for key in ARRAYS:
            if key in d:  # a recipe written before the batch fields keeps their defaults
                d[key] = np.asarray(d[key], dtype=np.float64)
        return cls(**d)

    def batch_of(self, obs: pd.DataFrame, *, source: str = "input") -> np.ndarray | None:
        """Each cell's batch (cells,), an index into :attr:`batches`, from ``obs[batch_key]``; ``None`` for a
        recipe without batches. A batch the recipe does not know is an :class:`InputError` (embed such cells
        as a new batch: :meth:`rlae_sc.RLAEModel.embed`)."""
        if not self.batches:
            return None
        values = obs_column(obs, self.batch_key, what="batch", source=source)
        codes, _ = batch_codes(values, categories=self.batches, key=self.batch_key, source=source)
        if (codes < 0).any():
            unknown = sorted(set(values.astype(str)[codes < 0]))
            raise InputError(
                source,
                f"batch(es) {', '.join(unknown[:5])} of column {self.batch_key!r} are not among the recipe's "
                f"{len(self.batches)} batches",
                "Embed new batches with the model (rlae-sc embed / rl.tl.embed), which centres each on its own.",
            )
        return codes

    def with_batches(self, names: list[str], centres: np.ndarray, stds: np.ndarray | None = None) -> Recipe:
        """A copy that also knows batches ``names`` with their ``centres`` (and, with ``batch_scale``, their
        standard deviations ``stds``), each (len(names) x m)."""
        out = Recipe.from_dict(self.to_dict())
        out.batches = [*self.batches, *names]
        out.batch_centre = np.vstack([self.batch_centre, centres])
        if self.batch_scale:
            out.batch_std = np.vstack([self.batch_std, stds])
        return out


ARRAYS = ("mean", "std", "offset", "gene_sums", "batch_centre", "batch_std")  # the recipe's arrays (lists in JSON)


def mito_mask(var_names: pd.Index) -> np.ndarray:
    """True for mitochondrial genes: names starting with ``MT-`` or ``mt-``."""
    return np.asarray(pd.Index(var_names).astype(str).str.startswith(MITO_PREFIXES), dtype=bool)


def cell_qc(X: sp.csr_matrix, mito: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n_genes, total_counts, pct_mito)`` per cell of ``X`` (cells x genes); pct_mito is NaN without mito genes."""
    X = sp.csr_matrix(X)
    total, in_mito = row_totals(X, mito)
    pct = 100 * in_mito / np.where(total > 0, total, 1.0) if mito.any() else np.full(len(total), np.nan)
    return np.diff(X.indptr), total, pct
