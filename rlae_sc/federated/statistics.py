"""What a site computes in each round of a federated fit: sums over its own cells, encoded as integers.

Every statistic is a sum over cells, so the sites' vectors add up to the
pooled statistic. A round's request (from :mod:`rlae_sc.federated.plan`)
names the round, carries the recipe fitted so far and a ``spec``: the name,
length and fixed-point bits of every array the site returns. Values are
encoded as ``round(x * 2**bits)`` in 64-bit integers (exact for the integer
statistics, ``bits = 0``); the bits are chosen from public bounds so that no
sum can overflow (:func:`fraction_bits`). Adding the encoded vectors modulo
``2**64`` and decoding gives the pooled sums, to ``2**-bits`` per site.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from rlae_sc.blocks import clipped_block, kept_rows, lognorm_block, offset_block, qc_block
from rlae_sc.decisions import new_recipe
from rlae_sc.engine import run_pass
from rlae_sc.errors import InputError
from rlae_sc.federated import FederationError
from rlae_sc.io import open_streaming
from rlae_sc.products import scatter_block
from rlae_sc.recipe import Recipe, mito_mask
from rlae_sc.rows import H5adMatrix

COARSE_WIDTH = 1024  # counts per bin of the first histogram of cell totals (for the median, target_sum)
COARSE_BINS = 4096  # the last bin also holds every total above COARSE_WIDTH * COARSE_BINS


@dataclass
class Site:
    """One site's cells: an ``.h5ad`` of counts read block by block, and its QC once computed.

    Attributes
    ----------
    path
        The site's counts file (cells x genes).
    matrix
        Its rows (``X`` or a layer), read block by block.
    obs
        Its cell annotations (cells,).
    genes
        Its gene names (genes,), made unique.
    layer
        The layer holding counts (``None``: ``X``).
    """

    path: Path
    matrix: H5adMatrix
    obs: pd.DataFrame
    genes: pd.Index
    layer: str | None = None
    qc: pd.DataFrame | None = field(default=None, repr=False)
    gene_sums: dict | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The site's name: its file stem."""
        return self.path.stem


def open_site(path: str | Path, *, layer: str | None = None) -> Site:
    """Open a site's counts ``.h5ad`` (counts in ``X`` or ``layer``) without loading the matrix."""
    matrix, obs, genes = open_streaming(path, layer)
    return Site(path=Path(path), matrix=matrix, obs=obs, genes=genes, layer=layer)


def fraction_bits(bound: float) -> int:
    """Fixed-point bits for a sum bounded by ``bound`` in absolute value (every site's part and the total):
    the largest ``b <= 62`` with ``2 * bound * 2**b < 2**62``, so encoded values and their sum fit in int64."""
    return int(max(0, min(62, 61 - np.ceil(np.log2(max(float(bound), 1.0))))))


def encode(values: dict[str, np.ndarray], spec: list, *, source: str) -> np.ndarray:
    """Concatenate ``values`` in the order of ``spec`` (``[name, length, bits]`` each) as uint64 fixed point.

    Raises :class:`FederationError` when a value exceeds the bound its bits
    were chosen for (the plan's bounds are wrong for this site's data).
    """
    parts = []
    for name, length, bits in spec:
        x = np.asarray(values[name], dtype=np.float64).ravel()
        if x.shape != (length,):
            raise FederationError(f"{source}: statistic {name!r} has {x.size} values, the plan expects {length}")
        scaled = x * 2.0**bits
        if not np.isfinite(scaled).all() or np.abs(scaled).max(initial=0) >= 2.0**62:
            raise FederationError(
                f"{source}: statistic {name!r} exceeds its bound ({np.abs(x).max():.6g} at {bits} fraction bits). "
                "Check that the site holds raw counts (no NaN or huge values)"
            )
        parts.append(np.rint(scaled).astype(np.int64).view(np.uint64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def decode(vector: np.ndarray, spec: list) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode` for a (summed) uint64 vector -> float64 arrays by name."""
    out, start = {}, 0
    signed = np.asarray(vector, dtype=np.uint64).view(np.int64)
    for name, length, bits in spec:
        out[name] = signed[start : start + length].astype(np.float64) / 2.0**bits
        start += length
    if start != len(signed):
        raise FederationError(f"a summed vector has {len(signed)} values, the plan expects {start}")
    return out


def site_recipe(site: Site, request: dict) -> Recipe:
    """The recipe a request carries; in the first round (QC parameters only) built from the site's genes.

    Raises :class:`FederationError` when the site's genes differ from the plan's.
    """
    if request.get("recipe") is None:
        return new_recipe(site.genes, source=str(site.path), **request["params"])[0]
    recipe = Recipe.from_dict(request["recipe"])
    if list(site.genes) != recipe.input_genes:
        raise FederationError(
            f"{site.path}: its {len(site.genes)} genes differ from the federation's {len(recipe.input_genes)} "
            "(names or order). Give every site the same genes in the same order"
        )
    return recipe


def site_qc(site: Site, recipe: Recipe) -> pd.DataFrame:
    """The QC table of the site's cells (``n_genes``, ``total_counts``, ``pct_mito``, ``qc_pass``; cells,) under
    ``recipe``'s thresholds, computed once with the per-gene sums of the first round (values validated)."""
    if site.qc is None:
        check = {"source": str(site.path), "input_kind": recipe.input_kind, "genes": site.genes}
        fn = partial(qc_block, recipe=recipe, mito=mito_mask(site.genes), check=check)
        gene, cells = run_pass(site.matrix, fn, desc=f"{site.name} QC")
        site.qc, site.gene_sums = pd.DataFrame(cells), gene
    return site.qc


def _totals(site: Site) -> np.ndarray:
    """Total counts of the site's QC-passing cells, rounded to integers (counts are integers)."""
    qc = site.qc
    return np.rint(qc["total_counts"].to_numpy()[qc["qc_pass"].to_numpy()]).astype(np.int64)


def site_statistics(site: Site, request: dict) -> dict[str, np.ndarray]:
    """The sums over the site's cells that ``request`` asks for, by name (float64 arrays).

    Rounds: ``qc`` (cell QC, here only; per-gene detection, sums and sums of
    squares of counts; counts of cells; a coarse histogram of totals),
    ``hvg`` (sums and sums of squares of clipped counts of the candidate genes;
    a fine histogram of totals), ``scale`` (sums and sums of squares of the
    used genes' log-normalised values), ``offset`` (sums of clipped scaled
    values) and ``scatter`` (the upper triangle of ``Z^T Z``, column sums and
    the cell count of the scaled matrix ``Z``, cells x genes used).
    """
    recipe = site_recipe(site, request)
    source = str(site.path)
    name = request["round"]
    keep = site_qc(site, recipe)["qc_pass"].to_numpy()
    if name == "qc":
        totals = _totals(site)
        counts = [len(keep), int((site.qc["total_counts"] == 0).sum()), int(keep.sum())]
        return {
            "counts": np.asarray(counts, dtype=np.float64),
            **site.gene_sums,
            "totals_coarse": np.bincount(np.minimum(totals // COARSE_WIDTH, COARSE_BINS - 1), minlength=COARSE_BINS),
        }
    if name == "hvg":
        out = {}
        if request.get("fine") is not None:
            lo, width = request["fine"]
            t = _totals(site) - lo
            out["totals_fine"] = np.bincount(t[(t >= 0) & (t < width)], minlength=width)
        if request.get("cand") is not None:
            fn = partial(
                clipped_block,
                keep=keep,
                cand=np.asarray(request["cand"], dtype=np.int64),
                clip_val=np.asarray(request["clip_val"], dtype=np.float64),
            )
            sums, _ = run_pass(site.matrix, fn, desc=f"{site.name} HVG")
            out["clipped_sum"], out["clipped_sumsq"] = sums["sum"], sums["sumsq"]
        return out
    idx = recipe.gene_index(recipe.input_genes, source=source)
    if name == "scale":
        return run_pass(site.matrix, partial(lognorm_block, recipe=recipe, keep=keep, idx=idx), desc=site.name)[0]
    if name == "offset":
        return run_pass(site.matrix, partial(offset_block, recipe=recipe, keep=keep, idx=idx), desc=site.name)[0]
    if name == "scatter":
        fn = partial(_scatter_rows_block, recipe=recipe, keep=keep, idx=idx, precision=request["precision"])
        sums, _ = run_pass(site.matrix, fn, desc=f"{site.name} scatter")
        return {"C": sums["C"][np.triu_indices(len(idx))], "colsum": sums["sum"], "n": np.asarray([sums["n"]])}
    raise FederationError(f"{source}: unknown round {name!r} in the plan; use the same rlae-sc version everywhere")


def _scatter_rows_block(block, start: int, *, recipe: Recipe, keep: np.ndarray, idx: np.ndarray, precision: str):
    """``Z^T Z``, column sums and rows of the preprocessed block ``Z`` (cells passing QC x genes used)."""
    Z = recipe.scale_rows(recipe.normalize_rows(kept_rows(block, start, keep)), idx)
    return scatter_block(Z, start, precision=precision)


def check_site_size(site: Site, recipe: Recipe, *, allow_small_site: bool) -> None:
    """Refuse to release ``Z^T Z`` of a site with fewer QC-passing cells than genes used: it reveals the span
    of the site's cells. ``allow_small_site`` overrides (for secure aggregation, where no one sees it alone)."""
    n = int(site_qc(site, recipe)["qc_pass"].sum())
    m = len(recipe.genes)
    if n < m and not allow_small_site:
        raise InputError(
            site.path,
            f"has {n} cells passing QC, fewer than the {m} genes used: its scatter matrix would reveal the "
            "span of its cells",
            "Use secure aggregation (rlae-sc federate --secure), merge it with another site, or pass "
            "--allow-small-site if its data may be disclosed this way",
        )
