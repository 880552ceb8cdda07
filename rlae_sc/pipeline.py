"""The pipeline's stages on files: each reads what the stage before it wrote.

counts.h5ad -> preprocess -> preprocessed.h5ad -> train -> model.npz
-> directions -> directions.h5ad -> cluster -> embedding.h5ad + metrics.json
-> report -> report.html + figures/*.png

A stage imports the modules that need torch, umap-learn, faiss or matplotlib when it runs, not when this module
is imported: a process running one stage loads only its own stage's libraries.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from rlae_sc.atomic import atomic_path, names_store
from rlae_sc.blocks import lognorm_rows_block
from rlae_sc.dask_engine import dask_client
from rlae_sc.errors import InputError
from rlae_sc.io import (
    join_obs,
    open_stored,
    open_streaming,
    read,
    reading,
    write_anndata,
    write_csr_rows,
    write_json,
)
from rlae_sc.keys import EMBEDDING_KEY
from rlae_sc.labels import obs_column
from rlae_sc.params import ClusterParams, MappingParams, PassParams, PreprocessParams, ReadParams, TrainParams, split
from rlae_sc.preprocess import fit_recipe, preprocess, preprocessed_adata
from rlae_sc.recipe import Recipe
from rlae_sc.room import check_disk, csr_bytes
from rlae_sc.rows import Rows, h5ad_matrix
from rlae_sc.simulate import bundled

log = logging.getLogger("rlae_sc")

OUTPUTS = {
    "preprocessed": "preprocessed.h5ad",
    "model": "model.npz",
    "trace": "model.trace.tsv",
    "directions": "directions.h5ad",
    "embedding": "embedding.h5ad",
    "metrics": "metrics.json",
    "report": "report.html",
}


STAGE_MARK = {"preprocess": "rlae_recipe", "directions": "rlae_metrics", "cluster": "rlae"}  # uns key each writes


def _check_stage(path: str | Path, stage: str) -> Path:
    """``path``, after checking that it exists and was written by ``stage`` (its mark in ``uns``: damaged
    files and files of other origin are named errors)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found", f"Run `rlae-sc {stage}` first to create it.")
    with reading(path), open_stored(path) as f:
        marked = f"uns/{STAGE_MARK[stage]}" in f
    if not marked:
        raise InputError(
            path, f"was not written by `rlae-sc {stage}` (no uns['{STAGE_MARK[stage]}'])", f"Run `rlae-sc {stage}`."
        )
    return path


def _h5ad_output(out: str | Path, stage: str) -> None:
    """Refuse a zarr output for a stage whose file the next stage streams from HDF5 (preprocess, directions)."""
    if names_store(out):
        raise InputError(
            out,
            f"the {stage} stage writes .h5ad only (the next stage reads it block by block from HDF5)",
            "Name the output .h5ad; the cluster stage and `embed` can write a zarr store.",
        )


@contextmanager
def _backed_stage(path: str | Path, stage: str):
    """The ``.h5ad`` written by ``stage`` (checked by :func:`_check_stage`), backed: all but ``X`` in memory,
    ``X`` read block by block."""
    path = _check_stage(path, stage)
    with reading(path):
        adata = ad.read_h5ad(path, backed="r")
    try:
        yield adata
    finally:
        adata.file.close()


def _read_stage(path: str | Path, stage: str, *, skip: tuple[str, ...] = ()) -> ad.AnnData:
    """The ``.h5ad`` file or zarr store written by ``stage`` (checked by :func:`_check_stage`) in memory, without
    ``X`` and without the elements named in ``skip`` (paths in the file, e.g. ``obsp/distances``), which are never
    read."""
    from anndata.io import read_elem

    path = _check_stage(path, stage)
    parts = {}
    with reading(path), open_stored(path) as f:
        for key in ("obs", "var", "uns"):
            parts[key] = read_elem(f[key])
        for key in ("obsm", "varm", "obsp"):
            group = f.get(key, {})
            parts[key] = {name: read_elem(group[name]) for name in group if f"{key}/{name}" not in skip}
    return ad.AnnData(**parts)


def preprocess_file(counts: str | Path, out: str | Path, *, label_key: str | None = None, **params) -> dict:
    """Read a counts file (any format of :func:`rlae_sc.io.read`), preprocess it
    (see :func:`rlae_sc.preprocess.preprocess`), write ``out``.

    ``params`` are fields of :class:`~rlae_sc.params.ReadParams` (how ``counts``
    is read), :class:`~rlae_sc.params.PassParams` and
    :class:`~rlae_sc.params.PreprocessParams`; those not given take their
    defaults. ``label_key``, when given, must name a column of the input's
    ``obs`` (checked here, before any work). The recipe is stored as JSON in
    ``uns['rlae_recipe']``; returns the QC counts.

    With ``streaming``, ``counts`` must be an ``.h5ad`` (counts in ``X`` or
    ``layer``, CSR or dense) and is never loaded whole: the recipe is fitted by
    passes over blocks of cells (:func:`rlae_sc.preprocess.fit_recipe`, values
    validated block by block) and the preprocessed matrix is written block by
    block; ``out`` then has no ``raw``. ``dask`` (a number of local worker
    processes or a scheduler address) runs the passes on Dask.
    """
    _h5ad_output(out, "preprocess")
    options, passes, steps = split(params, ReadParams, PassParams, PreprocessParams, source=str(counts))
    if passes.streaming:
        recipe = _preprocess_streaming(counts, out, options, label_key, passes.dask, steps)
    else:
        adata = read(counts, **asdict(options))
        _check_obs_keys(adata.obs, label_key, steps, counts)
        pre, recipe = preprocess(adata, input_kind=options.input_kind, source=str(counts), scale=False, steps=steps)
        _record_input(pre, counts, options.layer, options.input_kind)
        write_anndata(pre, out)
    log.info("preprocess %s: %s -> %s", counts, ", ".join(f"{k} {v}" for k, v in recipe.stats.items()), out)
    return recipe.stats


def _record_input(pre: ad.AnnData, counts, layer: str | None, input_kind: str) -> None:
    """Store the input's provenance in ``pre.uns['rlae_input']``."""
    pre.uns["rlae_input"] = {"path": str(counts), "layer": layer or "", "input_kind": input_kind}


def _check_obs_keys(obs: pd.DataFrame, label_key: str | None, steps: PreprocessParams, source) -> None:
    """Every ``obs`` column the run will read exists, before any work: the labels, the batches, the groups."""
    for key, what in ((label_key, "label"), (steps.batch_key, "batch"), (steps.keep_key, "keep")):
        if key is not None:
            obs_column(obs, key, what=what, source=source)


def _atlas_options(options: ReadParams) -> dict:
    """The reader options that select the cells and genes of a streamed zarr store or SOMA experiment."""
    return {"measurement": options.measurement, "obs_filter": options.obs_filter, "var_names": options.var_names}


def _preprocess_streaming(
    counts, out, options: ReadParams, label_key: str | None, dask, steps: PreprocessParams
) -> Recipe:
    matrix, obs, genes = open_streaming(counts, options.layer, **_atlas_options(options))
    if options.obs is not None:
        obs = join_obs(obs, options.obs, source=counts)
    _check_obs_keys(obs, label_key, steps, counts)
    with dask_client(dask) as client, reading(counts):
        recipe, qc = fit_recipe(
            matrix,
            genes,
            obs=obs,
            input_kind=options.input_kind,
            source=str(counts),
            validate=True,
            client=client,
            steps=steps,
        )
        write_preprocessed(matrix, obs, recipe, qc, out, counts=counts, layer=options.layer, client=client)
    return recipe


def write_preprocessed(
    matrix: Rows,
    obs: pd.DataFrame,
    recipe: Recipe,
    qc: pd.DataFrame,
    out: str | Path,
    *,
    counts: str | Path,
    layer: str | None = None,
    client=None,
) -> None:
    """Write ``preprocessed.h5ad`` for the cells of ``matrix`` (counts, cells x input genes) with a fitted ``recipe``.

    ``obs`` is the input's (all cells) and ``qc`` the QC table of those cells
    (:func:`rlae_sc.preprocess.fit_recipe`: ``n_genes``, ``total_counts``,
    ``pct_mito``, ``qc_pass``). ``X`` (cells passing QC x genes used) holds the
    log-normalised values (the counts, for Pearson residuals) as CSR rows (float32), written block by block in one
    pass (on Dask when ``client`` is given), never whole; the stages after it
    scale them with the recipe (:func:`rlae_sc.preprocess.trained_rows`).
    ``counts`` and ``layer`` are recorded as the input's provenance. The disk must hold the matrix
    (``recipe.stats['n_values']`` values; :func:`rlae_sc.room.check_disk`) before the pass starts.
    """
    pre, keep = preprocessed_adata(recipe, obs, qc, stored=recipe.stored)
    check_disk(out, csr_bytes(pre.n_obs, recipe.stats["n_values"]), what=f"the {pre.n_obs:,} x {pre.n_vars:,} matrix")
    _record_input(pre, counts, layer, recipe.input_kind)
    fn = partial(lognorm_rows_block, recipe=recipe, keep=keep, idx=recipe.gene_index(recipe.input_genes))
    write_csr_rows(pre, out, matrix, fn, client=client)


def train_file(
    preprocessed: str | Path, out: str | Path, *, dask: str | int | None = PassParams.dask, **params
) -> dict:
    """Train on ``preprocessed.h5ad`` (see :func:`rlae_sc.train.fit`; ``params`` are fields of
    :class:`~rlae_sc.params.TrainParams`) and write the model file ``out``.

    The matrix is read from the file block by block (on Dask when ``dask`` is
    a number of local workers or a scheduler address), never loaded whole,
    except by the mini-batch rules.
    The training trace is also written beside it as a tab-separated table,
    ``<out without .npz>.trace.tsv`` (one row per stride). The pass that
    builds ``C`` checkpoints to ``<out>.checkpoint.scatter`` and a learning
    rule to ``<out>.checkpoint``; when interrupted, training resumes from them
    on the next call; they are removed once the model is written.
    """
    from rlae_sc.train import fit, scatter_checkpoint_path

    checkpoint = Path(f"{out}.checkpoint")  # a learning rule interrupted here resumes from it on the next run
    with _backed_stage(preprocessed, "preprocess") as pre, dask_client(dask) as client:
        model = fit(pre, source=str(preprocessed), checkpoint=checkpoint, client=client, **params)
    with atomic_path(trace_path(out)) as tmp:
        pd.DataFrame(model.trace).to_csv(tmp, sep="\t", index=False)
    model.save(out)
    checkpoint.unlink(missing_ok=True)
    scatter_checkpoint_path(checkpoint).unlink(missing_ok=True)
    p = model.params
    log.info(
        "train %s: %s, k %d, lambda %.6g (%s), %d iterations, converged %s, %.2f s -> %s",
        preprocessed,
        p["solver"],
        model.n_components,
        model.lam,
        p["lambda_rule"],
        p["n_iter"],
        p["converged"],
        p["fit_seconds"],
        out,
    )
    return model.params


def trace_path(model_path: str | Path) -> Path:
    """The trace table written beside a model file: ``model.npz`` -> ``model.trace.tsv``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name.removesuffix(".npz") + ".trace.tsv")


def directions_file(
    preprocessed: str | Path, model_path: str | Path, out: str | Path, *, dask: str | int | None = PassParams.dask
) -> dict:
    """Directions, embedding and exact-PCA comparison -> ``directions.h5ad`` (metrics in ``uns['rlae_metrics']``).

    The preprocessed matrix is read block by block (on Dask when ``dask`` is given), as in :func:`train_file`.
    """
    from rlae_sc.directions import directions_adata
    from rlae_sc.model import load_model

    _h5ad_output(out, "directions")
    model = load_model(model_path)
    with _backed_stage(preprocessed, "preprocess") as pre, dask_client(dask) as client:
        out_adata, metrics = directions_adata(model, pre, client=client)
    out_adata.uns["rlae_metrics"] = metrics
    write_anndata(out_adata, out)
    log.info(
        "directions: certified min |cos| top 10 >= %.12f, eigenvalue error top 10 <= %.3g%s -> %s",
        metrics["certificate_min_cos_top10"],
        metrics["certificate_max_eigenvalue_error_top10"],
        f"; exact PCA: min |cos| top 10 {metrics['min_abs_cos_top10']:.12f}" if "min_abs_cos_top10" in metrics else "",
        out,
    )
    return metrics


def cluster_file(
    directions: str | Path,
    out: str | Path,
    metrics_out: str | Path,
    *,
    label_key: str | None = None,
    marker_list: str | None = ClusterParams.marker_list,
    sample_key: str | None = ClusterParams.sample_key,
    **params,
) -> dict:
    """Cluster ``directions.h5ad`` (see :func:`rlae_sc.cluster.cluster`) -> ``embedding.h5ad`` (an anndata zarr
    store when ``out`` ends in ``.zarr``: :func:`rlae_sc.io.write_anndata`) + ``metrics.json``,
    the neighbour index of its cells beside ``out`` (:func:`index_path`; its SHA-256 in ``uns['rlae_cluster']``)
    and, when the file holds the cells' values of all genes (``X``: not after streaming), each cluster's marker
    genes (:func:`rlae_sc.markers.markers`): the first 100 per cluster in ``markers.tsv`` beside ``out``
    (:func:`markers_path`), the report's summary in ``uns['rlae_markers']``. With ``sample_key``, the markers
    are also tested between samples (:func:`rlae_sc.pseudobulk.pseudobulk_markers`) into ``pseudobulk.tsv``
    beside ``out`` (:func:`pseudobulk_path`) and ``uns['rlae_pseudobulk']``.

    Without Harmony, the embedding is read block by block and the neighbour graph is built before ``obs``,
    ``var`` and ``uns`` are read, so the stage never holds the embedding, the neighbour index and ``obs`` at
    once; the embedding and ``X`` (log-normalised values, when the input was preprocessed in memory; read block
    by block for the markers) are copied into ``out`` on disk.
    """
    from rlae_sc.cluster import cluster
    from rlae_sc.graph_file import CSRGroup, close_graph

    _check_stage(directions, "directions")
    harmony = params.get("harmony", ClusterParams.harmony)
    spill = Path(f"{out}.graph.h5")  # the graphs, set aside while the rest is done (rlae_sc.graph_file)
    graph = None
    try:
        with reading(directions), h5py.File(directions, "r") as f:
            has_x = "X" in f
            columns = pd.DataFrame(columns=list(f["obs"].attrs["column-order"]))
            for key, what in ((label_key, "label"), (sample_key, "sample")):
                if key is not None:  # named before any work
                    obs_column(columns, key, what=what, source=directions)
            if sample_key is not None and not has_x:
                raise InputError(directions, "holds no counts (X) for pseudobulk tests", "Leave sample_key unset.")
            embedding = None if harmony else f["obsm"][EMBEDDING_KEY]
            if embedding is not None:  # the embedding stays on disk, and the graph is built before obs is read
                t0 = time.perf_counter()
                graph = _graph_first(embedding, index_path(out), spill, source=directions, **params)
                graph_seconds = time.perf_counter() - t0
            adata = _read_stage(directions, "directions", skip=() if harmony else (f"obsm/{EMBEDDING_KEY}",))
            batch_key = adata.uns["rlae"].get("batch_key") or None
            result = cluster(
                adata,
                label_key=label_key,
                batch_key=batch_key,
                index_out=index_path(out),
                source=str(directions),
                embedding=embedding,
                graph=graph,
                **params,
            )
            if graph is not None:
                result["neighbors_seconds"] = graph_seconds
        if has_x:
            table = _write_markers(adata, directions, markers_path(out), marker_list=marker_list)
            if sample_key is not None:
                _write_pseudobulk(adata, directions, table, pseudobulk_path(out), sample_key=sample_key)
        metrics = {**adata.uns.pop("rlae_metrics"), **result}
        adata.uns["rlae"]["metrics"] = metrics
        graphs = ("obsp/distances", "obsp/connectivities")
        write_anndata(adata, out, copies=[(directions, ("X", f"obsm/{EMBEDDING_KEY}")), (spill, graphs)])
    finally:
        if graph is not None and isinstance(graph[0], CSRGroup):  # set aside in spill: its file is open
            close_graph(graph)
        spill.unlink(missing_ok=True)
    write_json(metrics, metrics_out)
    numbers = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, int | float))
    log.info("cluster: %s -> %s, %s", numbers, out, metrics_out)
    return metrics


def _graph_first(embedding, index_out: Path, spill: Path, *, source, **params) -> tuple:
    """The neighbour graph of ``embedding`` (cells x k, an h5py dataset) for :func:`cluster_file`, with the
    stage's parameters (those not given take :class:`~rlae_sc.params.ClusterParams`' defaults): in memory, or
    above ``sketch_cells`` cells written to ``spill`` and read from there (:func:`rlae_sc.graph_file.spill_graph`)."""
    from rlae_sc.cluster import check_room, graph_sizes, neighbour_graph
    from rlae_sc.embedding_rows import EmbeddingRows
    from rlae_sc.graph_file import spill_graph

    n_neighbors, n_dims = graph_sizes(
        embedding.shape,
        n_neighbors=params.get("n_neighbors", ClusterParams.n_neighbors),
        n_dims=params.get("n_dims", ClusterParams.n_dims),
    )
    check_room(len(embedding), n_neighbors=n_neighbors, n_dims=n_dims, source=source)
    rows = EmbeddingRows(embedding, n_dims)
    graph = neighbour_graph(
        rows, n_neighbors=n_neighbors, seed=params.get("seed", ClusterParams.seed), index_out=index_out
    )
    if len(embedding) <= params.get("sketch_cells", ClusterParams.sketch_cells):
        return graph  # Leiden and UMAP run on it
    return spill_graph(graph, spill)


def _write_markers(
    adata: ad.AnnData, directions: str | Path, out: Path, *, marker_list: str | None = None
) -> pd.DataFrame:
    """Each Leiden cluster's markers from the values in ``directions``' ``X`` -> ``out`` (tsv) and
    ``adata.uns['rlae_markers']``; returns the whole table (every gene of every cluster)."""
    from rlae_sc.markers import marker_summary, markers, write_markers

    values = adata.uns["rlae"].get("raw_values", "log_normalized")
    matrix = h5ad_matrix(str(directions), None)
    table = markers(adata, groupby="leiden", n_genes=None, values=values, matrix=matrix, source=str(directions))
    write_markers(table.groupby("cluster", sort=False, observed=True).head(100), out)
    adata.uns["rlae_markers"] = marker_summary(table)
    if marker_list is not None:
        from rlae_sc.annotate import cluster_names, read_marker_list

        names = cluster_names(
            table,
            read_marker_list(marker_list),
            genes_alias=adata.var["gene_symbols"] if "gene_symbols" in adata.var else None,
            sizes=adata.obs["leiden"].value_counts(),
            source=str(directions),
        )
        by_cluster = dict(zip(names["cluster"], names["name"]))
        adata.obs["rlae_cluster_name"] = pd.Categorical(adata.obs["leiden"].astype(str).map(by_cluster))
        adata.uns["rlae_cluster_names"] = names
    return table


def _write_pseudobulk(adata: ad.AnnData, directions: str | Path, markers: pd.DataFrame, out: Path, *, sample_key: str):
    """Each Leiden cluster's markers tested between the ``sample_key`` samples -> ``out`` (tsv) and
    ``adata.uns['rlae_pseudobulk']`` (each tested cluster's first genes, and why others were not tested)."""
    from rlae_sc.pseudobulk import pseudobulk_markers

    counts = adata.uns["rlae"].get("raw_values", "log_normalized") == "counts"
    with reading(directions):
        table, skipped = pseudobulk_markers(
            h5ad_matrix(str(directions), None), adata.obs, markers, genes=adata.var_names, groupby="leiden",
            sample_key=sample_key, totals=None if counts else adata.obs["total_counts"].to_numpy(dtype=np.float64),
        )  # fmt: skip
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    top = {
        str(c): list(group.loc[group["padj"] < 0.05, "gene"].head(10))
        for c, group in table.groupby("cluster", sort=False, observed=True)
    }
    adata.uns["rlae_pseudobulk"] = {"sample_key": sample_key, "top": top, "skipped": skipped}


def pseudobulk_path(embedding: str | Path) -> Path:
    """The pseudobulk marker table written beside ``embedding.h5ad``: ``pseudobulk.tsv``."""
    return Path(embedding).with_name("pseudobulk.tsv")


def markers_path(embedding: str | Path) -> Path:
    """The marker table written beside ``embedding.h5ad``: ``markers.tsv``."""
    return Path(embedding).with_name("markers.tsv")


def index_path(embedding: str | Path) -> Path:
    """The neighbour index written beside ``embedding.h5ad`` (or ``embedding.zarr``): ``embedding.faiss``."""
    return Path(embedding).with_suffix(".faiss")


def report_file(embedding: str | Path, out_dir: str | Path, *, dataset: str, label_key: str | None = None) -> Path:
    """Figures and ``report.html`` from ``embedding.h5ad`` into ``out_dir`` (``X``, the embedding and the graphs
    are not read)."""
    from rlae_sc.report import write_report

    adata = _read_stage(embedding, "cluster", skip=(f"obsm/{EMBEDDING_KEY}", "obsp/distances", "obsp/connectivities"))
    return write_report(adata, adata.uns["rlae"]["metrics"], out_dir, dataset=dataset, label_key=label_key)


def run(
    counts: str | Path,
    out_dir: str | Path,
    *,
    label_key: str | None = None,
    preprocess_params: dict | None = None,
    train_params: dict | None = None,
    cluster_params: dict | None = None,
    dataset: str | None = None,
    **params,
) -> dict:
    """Every stage in order, outputs under ``out_dir`` with the names in ``OUTPUTS``; returns the metrics.

    ``params`` are fields of :class:`~rlae_sc.params.ReadParams` and :class:`~rlae_sc.params.PassParams`,
    as in :func:`preprocess_file`; ``dask`` also runs the passes of :func:`train_file` and
    :func:`directions_file` on Dask. The ``*_params`` are those of each stage's function; every one is checked
    before any work. When a stage stops on bad input or parameters (:class:`~rlae_sc.errors.InputError`), the
    outputs this call wrote are removed, so that none is left from a run that did not finish.
    """
    source = str(counts)
    _, passes = split(params, ReadParams, PassParams, source=source)
    PreprocessParams.of(preprocess_params, source=source)
    TrainParams.of(train_params, source=source)
    marker_list = ClusterParams.of(cluster_params, source=source).marker_list
    if marker_list is not None:  # a malformed list is named before any work
        from rlae_sc.annotate import read_marker_list

        read_marker_list(marker_list)
    out = Path(out_dir)
    files = {key: out / name for key, name in OUTPUTS.items()}
    files["index"] = index_path(files["embedding"])
    files["markers"] = markers_path(files["embedding"])
    files["pseudobulk"] = pseudobulk_path(files["embedding"])
    before = {path for path in files.values() if path.exists()}
    try:
        preprocess_file(counts, files["preprocessed"], label_key=label_key, **params, **(preprocess_params or {}))
        train_file(files["preprocessed"], files["model"], dask=passes.dask, **(train_params or {}))
        directions_file(files["preprocessed"], files["model"], files["directions"], dask=passes.dask)
        metrics = cluster_file(
            files["directions"], files["embedding"], files["metrics"], label_key=label_key, **(cluster_params or {})
        )
        report_file(files["embedding"], out, dataset=dataset or Path(counts).stem, label_key=label_key)
    except InputError:
        for path in set(files.values()) - before:
            path.unlink(missing_ok=True)
        raise
    return metrics


def embed_file(model_path: str | Path, counts: str | Path, out: str | Path | None, **params) -> ad.AnnData:
    """Embed the cells of ``counts`` (any format of :func:`rlae_sc.io.read`) with a trained model and, unless
    ``out`` is None, write them, with ``obsm['X_rlae']``, to ``out`` (``.h5ad``, or an anndata zarr store when it
    ends in ``.zarr``).

    ``params`` are fields of :class:`~rlae_sc.params.ReadParams` (but ``input_kind``, which is the
    model's), :class:`~rlae_sc.params.PassParams` and :class:`~rlae_sc.params.MappingParams` (its
    ``min_overlap``). With ``streaming``, ``counts`` must
    be an ``.h5ad``; its matrix is read block by block (on Dask when ``dask``
    is given) and ``out`` holds ``obs``, ``var``, ``obsm['X_rlae']`` and ``uns``
    but no matrix.
    """
    from rlae_sc.model import load_model

    model = load_model(model_path)
    if "input_kind" in params:
        raise InputError(counts, "input_kind is the model's, not an option here", "Leave input_kind unset.")
    options, passes, mapping = split(
        {**params, "input_kind": model.recipe.input_kind}, ReadParams, PassParams, MappingParams, source=str(counts)
    )
    if passes.streaming:
        matrix, obs, genes = open_streaming(counts, options.layer, **_atlas_options(options))
        if options.obs is not None:
            obs = join_obs(obs, options.obs, source=counts)
        adata = ad.AnnData(obs=obs, var=pd.DataFrame(index=genes))
        with dask_client(passes.dask) as client, reading(counts):
            model.embed(adata, min_overlap=mapping.min_overlap, source=str(counts), matrix=matrix, client=client)
    else:
        adata = read(counts, **asdict(options))
        model.embed(adata, min_overlap=mapping.min_overlap, source=str(counts))
    adata.uns["rlae_embed"]["model"] = str(model_path)
    if out is not None:
        write_anndata(adata, out)
    return adata


def demo_data_file(name: str, out: str | Path) -> None:
    """Write a bundled demo dataset (:func:`rlae_sc.simulate.bundled`) to ``out``."""
    write_anndata(bundled(name), out)


def map_file(
    model_path: str | Path,
    reference: str | Path,
    counts: str | Path,
    out_dir: str | Path,
    *,
    label_key: str | None = None,
    truth_key: str | None = None,
    title: str | None = None,
    **params,
) -> dict:
    """Embed ``counts`` with the reference's model, transfer labels, place cells in the reference UMAP.

    ``reference`` is the reference dataset's ``embedding.h5ad`` (same model).
    ``params`` are fields of :class:`~rlae_sc.params.ReadParams` (but ``input_kind``, the model's) and
    :class:`~rlae_sc.params.MappingParams`.
    Writes ``mapped.h5ad`` (query cells: ``obsm['X_rlae']``, ``obsm['X_umap']``,
    ``obs['rlae_label']``, ``obs['rlae_label_confidence']``, ``obs['rlae_qc_pass']``),
    ``mapping.json`` and ``report.html`` with figures into ``out_dir``; returns the summary.
    """
    from rlae_sc.mapping import map_query
    from rlae_sc.neighbors import load_index
    from rlae_sc.report import write_mapping_report

    out_dir = Path(out_dir)
    ref = _read_stage(reference, "cluster", skip=("obsp/distances", "obsp/connectivities"))
    mapping = split(params, ReadParams, MappingParams, source=str(counts))[1]
    query = embed_file(model_path, counts, None, **params)  # written once below, with the mapping
    index = load_index(index_path(reference), sha256=ref.uns["rlae_cluster"]["index_sha256"])
    summary = map_query(
        ref,
        query,
        label_key=label_key,
        n_neighbors=mapping.n_neighbors,
        classifier=mapping.classifier,
        min_confidence=mapping.min_confidence,
        distance_quantile=mapping.distance_quantile,
        truth_key=truth_key,
        index=index,
        source=str(reference),
    )
    summary["gene_overlap"] = query.uns["rlae_embed"]["gene_overlap"]
    summary["n_flagged_by_qc"] = int((~query.obs["rlae_qc_pass"]).sum())
    write_anndata(query, out_dir / "mapped.h5ad")
    write_json(summary, out_dir / "mapping.json")
    write_mapping_report(
        ref,
        query,
        summary,
        out_dir,
        truth_key=truth_key,
        title=title or f"rlae-sc mapping: {Path(counts).stem} onto {Path(reference).parent.name}",
    )
    return summary
