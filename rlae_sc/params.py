"""The parameters of every stage, each defined once: its name, default, type and help text.

One frozen dataclass per stage: :class:`ReadParams`, :class:`LabelParams`, :class:`PreprocessParams`,
:class:`TrainParams`, :class:`PassParams`, :class:`ClusterParams`,
:class:`MappingParams` and :class:`FederationParams`. A field's default is
the library's default (functions take it from here: ``min_overlap: float =
MappingParams.min_overlap``, or accept the stage's fields as keyword arguments
and build the dataclass with :meth:`Stage.of`); its help text is the command
line's (:func:`add_options` generates the options) and the dataclass's
documentation. ``workflow/schemas/config.schema.yaml`` is generated from the
fields (:mod:`rlae_sc.schema`), and ``config/config.yaml`` repeats the defaults
for Snakemake users; ``tests/test_params.py`` checks that they agree. Nothing
here imports torch.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from rlae_sc.errors import InputError

# The training algorithms' names, defined here once (the learning code in rlae_sc.lae and rlae_sc.train imports
# them from here): the choices of TrainParams.solver.
SOLVER = "tied_exact"  # the default solver: rlae_sc.lae.solvers.fit_tied_exact
FEEDBACK_RULES = ("feedback_alignment", "kolen_pollack", "weight_mirror")  # rules without weight transport
RULES = ("gd", "adam", "rotation", "oja", "gha", "alternating", "tied_ridge", "gd_oja", *FEEDBACK_RULES)
SOLVERS = (SOLVER, *RULES)  # every value of TrainParams.solver


def param(
    default,
    help: str,
    *,
    choices: tuple | None = None,
    key: str | None = None,
    metavar: str | None = None,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
):
    """A stage's field: its ``default`` and ``help`` text, the values it may take (``choices``, or the bounds
    ``at_least``/``above``/``at_most``/``below`` of a number), and, when it differs from the field's name, its
    config key and command-line flag (``key``, e.g. ``lambda``)."""
    bounds = {"at_least": at_least, "above": above, "at_most": at_most, "below": below}
    return field(
        default=default,
        metadata={"help": help, "choices": choices, "key": key, "metavar": metavar, "bounds": bounds},
    )


WORDS = {"n_components": ("auto",), "resolution": ("auto",)}  # words a numeric field also takes


def check_value(f, value, kind, *, stage: str, source) -> None:
    """An :class:`~rlae_sc.errors.InputError` unless ``value`` is of the field's type ``kind`` and within its
    choices and bounds (``None`` passes where the field is optional)."""
    name = f.metadata["key"] or f.name
    choices = f.metadata["choices"]
    if choices is not None:
        if value not in choices:
            raise InputError(source, f"unknown {name} {value!r} ({stage})", f"Use one of {', '.join(choices)}.")
        return
    allowed = tuple(a for a in (typing.get_args(kind) or (kind,)) if a is not type(None))
    if value is None:
        if type(None) in typing.get_args(kind):
            return
        raise InputError(source, f"{name} cannot be none ({stage})", f"Give {name} a value.")
    if isinstance(value, str) and value in WORDS.get(f.name, ()):
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    fits = (
        isinstance(value, bool)
        if bool in allowed
        else (number and (float in allowed or (int in allowed and float(value).is_integer())))
        or (str in allowed and isinstance(value, str) and f.name not in WORDS)
    )
    if not fits:
        words = " or ".join(
            [*(a.__name__ for a in allowed if a is not str or f.name not in WORDS), *WORDS.get(f.name, ())]
        )
        raise InputError(source, f"{name} must be {words}, got {value!r} ({stage})", f"Give {name} as {words}.")
    if number:
        b = f.metadata["bounds"]
        for bound, ok, text in (
            (b["at_least"], lambda v, x: v >= x, "at least"),
            (b["above"], lambda v, x: v > x, "above"),
            (b["at_most"], lambda v, x: v <= x, "at most"),
            (b["below"], lambda v, x: v < x, "below"),
        ):
            if bound is not None and not ok(value, bound):
                raise InputError(
                    source,
                    f"{name} must be {text} {bound:g}, got {value!r} ({stage})",
                    f"Give {name} {text} {bound:g}.",
                )


class Stage:
    """What every stage's dataclass shares: building one from keyword arguments, checked."""

    stage: typing.ClassVar[str]  # the config section (and command-line option group) of the stage

    @classmethod
    def of(cls, values: Mapping | None = None, *, source: str = "parameters", **more):
        """The stage's parameters from ``values`` and ``more`` (field names; others take their defaults);
        an unknown name or a value outside a field's choices is an :class:`~rlae_sc.errors.InputError`."""
        given = {**(values or {}), **more}
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise InputError(
                source, f"unknown {cls.stage} parameter(s) {', '.join(unknown)}", f"Use {', '.join(names)}."
            )
        params = cls(**given)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            check_value(f, getattr(params, f.name), hints[f.name], stage=cls.stage, source=source)
        return params


def stage(name: str, summary: str):
    """Make a :class:`Stage` frozen dataclass for the config section ``name``; its docstring is ``summary``
    followed by every field's help text and default (numpydoc ``Attributes``)."""

    def make(cls):
        cls = dataclass(frozen=True)(cls)
        cls.stage = name
        lines = [summary, "", "Attributes", "----------"]
        for f in fields(cls):
            lines += [f.name, f"    {f.metadata['help']}. Default: ``{f.default!r}``."]
            if f.metadata["key"]:
                lines[-1] += f" Config key and option: ``{f.metadata['key']}``."
        cls.__doc__ = "\n".join(lines) + "\n"
        return cls

    return make


@stage("read", "How an input file is read (:func:`rlae_sc.io.read`); per dataset or query in the config.")
class ReadParams(Stage):
    layer: str | None = param(
        None,
        "read the matrix from this layer instead of X (.h5ad, zarr, .loom); for a TileDB-SOMA experiment, the X "
        "layer of the measurement (none: the first of raw, counts and data that exists)",
    )
    measurement: str = param(
        "RNA", "the measurement of a TileDB-SOMA experiment whose genes are read (the Census's and from_anndata's: RNA)"
    )
    obs_filter: str | None = param(
        None,
        "keep only the cells whose obs values pass this condition, e.g. \"tissue == 'blood' and n_genes > 200\" "
        "(a TileDB-SOMA value_filter, applied as the experiment is read; for other formats evaluated on the "
        "file's own obs, before obs is joined); none: every cell",
        metavar="EXPR",
    )
    input_kind: str = param(
        "counts",
        "raw counts, or values already log-normalised (normalisation and log1p are then skipped)",
        choices=("counts", "log_normalized"),
    )
    orientation: str = param(
        "auto",
        "what the rows of a .csv/.tsv table, a .loom's matrix or a 10x matrix.mtx are; auto: decided from the "
        "names (gene symbols, Ensembl ids and MT- genes against cell barcodes) and the shape, and an error that "
        "asks for this option when they do not tell (.loom and 10x: their format's genes x cells unless the "
        "names say otherwise); a value the names clearly contradict is an error",
        choices=("auto", "cells_x_genes", "genes_x_cells"),
    )
    var_names: str = param(
        "gene_symbols",
        "the gene names of a 10x or .loom input (the other kept in var)",
        choices=("gene_symbols", "gene_ids"),
    )
    obs: str | None = param(
        None,
        "a .csv/.tsv table of cell metadata (optionally .gz), one row per cell, joined on the cell barcode (a "
        "column named barcode or cell, else the first): its columns join obs, so label_key and batch_key can "
        "name them; every cell of the input must have a row (others are ignored with a warning)",
        metavar="FILE",
    )

    def __post_init__(self) -> None:
        import os

        if isinstance(self.obs, os.PathLike):  # a Path from Python, kept as the text the config and CLI give
            object.__setattr__(self, "obs", os.fspath(self.obs))


@stage("labels", "Known labels in ``obs`` (:mod:`rlae_sc.labels`); per dataset, query or federation in the config.")
class LabelParams(Stage):
    label_key: str | None = param(
        None,
        "obs column of known labels: ARI/NMI, label agreement, the labelled UMAP and the cluster x label table "
        "(checked to exist before any work; cells labelled ?, unknown or NaN are left out); for map, the "
        "reference's column whose labels are transferred (none: its Leiden clusters)",
        metavar="COLUMN",
    )
    truth_key: str | None = param(
        None,
        "for map, the query's obs column of known labels, against which the transferred labels are scored "
        "(accuracy); none: not scored",
        metavar="COLUMN",
    )


@stage("preprocess", "Quality control, normalisation and gene selection (:func:`rlae_sc.preprocess.fit_recipe`).")
class PreprocessParams(Stage):
    qc: str = param(
        "fixed",
        "cell QC thresholds: fixed, min_genes and max_pct_mito as given; mad, from the data's own distribution: "
        "cells below the median minus n_mads median absolute deviations of log genes or log counts, or above the "
        "median plus n_mads of the mitochondrial share, are outliers (max_pct_mito still caps the share; the "
        "thresholds found are recorded in the recipe and the report)",
        choices=("fixed", "mad"),
    )
    n_mads: float = param(
        5.0, "with qc mad: how many median absolute deviations from the median make an outlier", above=0
    )
    min_genes: int = param(200, "fewest genes a cell must detect to pass QC", at_least=0)
    min_cells: int = param(3, "fewest QC-passing cells that must detect a gene for it to be kept", at_least=0)
    max_pct_mito: float | None = param(
        20.0,
        "largest % of a cell's counts in mitochondrial genes (named MT-/mt-); none: no filter",
        at_least=0,
        at_most=100,
    )
    target_sum: float | None = param(
        None, "counts per cell after normalisation; none: the median of the QC-passing cells' totals", above=0
    )
    normalization: str = param(
        "log1p",
        "log1p: counts scaled to target_sum per cell, log1p, each gene centred and scaled to unit variance; "
        "pearson_residuals: analytic Pearson residuals of counts (Lause, Berens and Kobak 2021, as "
        "scanpy.experimental), genes selected by residual variance (hvg_flavor is not used), each gene centred",
        choices=("log1p", "pearson_residuals"),
    )
    n_top_genes: int = param(
        2000, "highly variable genes kept (all QC-passing genes when there are no more)", at_least=2
    )
    hvg_flavor: str = param(
        "seurat_v3",
        "highly variable gene selection, as scanpy's (seurat_v3 becomes seurat on log-normalised input)",
        choices=("seurat_v3", "seurat", "cell_ranger"),
    )
    clip: float | None = param(
        None, "clip scaled values at +-clip, the columns re-centred after; none: no clipping", above=0
    )
    batch_key: str | None = param(
        None,
        "obs column naming each cell's batch (sample, donor, study, chemistry): genes are selected across batches "
        "and each batch is centred on its own centre, so that shifts between batches leave the trained matrix; "
        "none: one batch",
    )
    batch_centering: str = param(
        "anchors",
        "how each batch's centre is estimated with batch_key: mean, the batch's own mean (removes real biology "
        "when cell-type shares differ between batches); anchors, the mean corrected by clusters matched between "
        "batches (mutual nearest clusters of a first pass, or the groups of keep_key), so that unequal shares "
        "are kept",
        choices=("anchors", "mean"),
    )
    batch_scale: bool = param(False, "with batch_key, scale each batch's genes by that batch's own standard deviation")
    keep_key: str | None = param(
        None,
        "with batch_centering anchors: obs column of known groups (cell types) whose cells are matched between "
        "batches, instead of a first-pass clustering (cells without a label are not matched)",
    )


@stage("train", "Training of the sum-regularized linear autoencoder (:func:`rlae_sc.train.fit`).")
class TrainParams(Stage):
    n_components: int | str = param(
        50,
        "latent units k: the principal directions found; auto: lambda at the noise floor (parallel analysis) "
        "and k the units that survive it",
        at_least=1,
    )
    solver: str = param(
        SOLVER,
        f"{SOLVER} (tied exact updates with oversampling and a Rayleigh-Ritz read-out, "
        "rlae_sc.lae.solvers.fit_tied_exact) or a learning rule of rlae_sc.lae.rules, run for max_iter steps "
        "on the sum loss",
        choices=SOLVERS,
    )
    lr: float | None = param(
        None,
        "step size of a learning rule; none: 0.5 / (e_1 + lambda), 0.2 / (e_1 + lambda) for gd_oja and "
        "the feedback rules, 0.01 for adam",
        above=0,
    )
    batch_size: int | None = param(
        None, "cells per mini-batch, for the learning rules that allow it; none: full batch on C", at_least=1
    )
    trace_every: int = param(10, "iterations between rows of the training trace (and the solver's checks)", at_least=1)
    trace_metrics: bool = param(
        True,
        "trace the metrics of the theory page (docs/theory.rst) against exact PCA (not counted in the fit time; "
        "the rules always do); runs the full eigh of C that exact_check runs, and reports its checks too",
    )
    exact_check: bool = param(
        False,
        "also run the full eigh of C and check the directions against exact PCA (smallest cosine, subspace distance, "
        "eigenvalue error); without it (and without trace_metrics) the residual certificate alone bounds them",
    )
    lambda_frac: float = param(
        0.1,
        "lambda as this fraction of an estimate of the smallest eigenvalue the trained units see "
        f"(e_(k+oversample) for {SOLVER}, the exact e_k for the rules)",
        above=0,
        below=1,
    )
    lam: float | None = param(
        None, "lambda in the units of C = X^T X (a sum over cells); overrides lambda_frac", key="lambda", above=0
    )
    n_permutations: int = param(5, "permutations of the cells behind the noise floor (n_components auto)", at_least=1)
    noise_quantile: float = param(
        0.95,
        "the noise floor is this quantile of a normal law fitted to the permutations' top eigenvalues",
        above=0,
        below=1,
    )
    oversample: int = param(40, f"extra latent units {SOLVER} trains and drops (faster convergence)", at_least=0)
    scatter_precision: str = param(
        "float32",
        "precision of the products in the pass that builds C (accumulated in float64)",
        choices=("float32", "float64"),
    )
    max_iter: int = param(1000, f"most iterations of {SOLVER}; the steps of a learning rule", at_least=1)
    tol: float = param(
        1e-8, f"{SOLVER} stops when the top-k read-out moves less than this (subspace distance)", above=0
    )
    seed: int = param(0, "seed of the random start and of the mini-batches")
    device: str = param(
        "auto", "torch device for the pass that builds C and for training; auto picks CUDA when available"
    )


@stage("passes", "How the stages go over the cells (preprocess, train, directions, embed).")
class PassParams(Stage):
    streaming: bool = param(
        False,
        "read the input .h5ad, zarr store or TileDB-SOMA experiment block by block, never whole (data larger than "
        "memory)",
    )
    dask: str | int | None = param(
        None,
        "run the passes on Dask: N local worker processes, a scheduler address tcp://host:port, or slurm:JOBS "
        "(dask-jobqueue SLURM jobs, configured in Dask's jobqueue.slurm settings)",
        metavar="N|ADDRESS|slurm:JOBS",
    )


@stage("cluster", "Neighbours, Leiden and UMAP on the embedding (:func:`rlae_sc.cluster.cluster`).")
class ClusterParams(Stage):
    n_neighbors: int = param(15, "neighbours per cell in the kNN graph", at_least=2)
    n_dims: int | None = param(None, "components used for the kNN graph; none: all k", at_least=2)
    resolution: float | str = param(
        "auto",
        "Leiden resolution; auto: the most stable partition under subsampling, on a grid from 0.1 to 1 "
        "(rlae_sc.leiden)",
        above=0,
    )
    sketch_cells: int = param(
        50_000,
        "above this many cells, Leiden and UMAP run on a seeded sample of this size, the rest follow",
        at_least=100,
    )
    seed: int = param(0, "seed of the neighbour index, Leiden, UMAP and the sketch")
    harmony: bool = param(
        False,
        "run Harmony (harmonypy) on the embedding with the recipe's batch_key, store it as obsm['X_rlae_harmony'] "
        "and build the graph, Leiden and UMAP on it",
    )
    marker_list: str | None = param(
        None,
        "YAML of cell type -> marker genes (optionally genes: and negative: lists); each Leiden cluster gets the "
        "best-scoring type's name, or unassigned when no type scores clearly best (rlae_sc.annotate); pbmc: the "
        "bundled list of human blood cell types; none: clusters are not named",
        metavar="YAML|pbmc",
    )
    sample_key: str | None = param(
        None,
        "obs column of each cell's sample (donor, animal, well): each cluster's markers are also tested between "
        "samples (counts summed per sample, DESeq2 by pydeseq2) into pseudobulk.tsv; none: cell-level tests only",
        metavar="COLUMN",
    )


@stage("mapping", "Embedding query cells with a reference's model and mapping them onto it.")
class MappingParams(Stage):
    n_neighbors: int = param(15, "reference neighbours per query cell (label transfer and UMAP position)", at_least=1)
    min_overlap: float = param(
        0.5, "fewest of the model's genes, as a fraction, that the cells must have", above=0, at_most=1
    )
    classifier: str = param(
        "logistic",
        "how labels are transferred: logistic, a logistic regression on the reference's embedding (as CellTypist "
        "on genes); knn, a kernel-weighted vote of the n_neighbors nearest reference cells",
        choices=("logistic", "knn"),
    )
    min_confidence: float = param(
        0.5,
        "query cells whose label holds less than this share of the vote (knn) or probability are unassigned",
        at_least=0,
        at_most=1,
    )
    distance_quantile: float | None = param(
        0.99,
        "query cells farther from their nearest reference cells than this quantile of the reference cells' own "
        "distances (per label, on stability-weighted components) are unassigned; none: no distance check",
        above=0,
        below=1,
    )


@stage("federation", "A federated fit's connections (:mod:`rlae_sc.federated`).")
class FederationParams(Stage):
    timeout: float = param(600.0, "seconds to wait for any one message", above=0)


STAGES = {cls.stage: cls for cls in (PreprocessParams, TrainParams, PassParams, ClusterParams, MappingParams)}
"""The config's sections of parameters, by name (the reader options and the federation's live in each
dataset's, query's or federation's entry)."""


# -- the command line ------------------------------------------------------------------------------


def flag(f) -> str:
    """The command-line flag of a field: ``--`` and its key or name, ``_`` as ``-``."""
    return "--" + (f.metadata["key"] or f.name).replace("_", "-")


def add_options(parser: argparse.ArgumentParser, cls: type[Stage], *, exclude: tuple[str, ...] = ()) -> None:
    """Add an option per field of ``cls`` (less ``exclude``) to ``parser``, in an option group named for the
    stage. An option left out is absent from the parsed namespace (the library's default applies); options of
    optional values accept ``none``; a field that is off by default (``False``) is a switch, another
    boolean takes ``true`` or ``false``."""
    group = parser.add_argument_group(cls.stage)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in exclude:
            continue
        text = f"{f.metadata['help']} (default: {_text(f.default)})".replace("%", "%%")
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if hints[f.name] is bool and f.default is False:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = _parser(hints[f.name])
            kwargs["choices"] = f.metadata["choices"]
            kwargs["metavar"] = f.metadata["metavar"] or (f.metadata["key"] and f.metadata["key"].upper())
        group.add_argument(flag(f), **kwargs)


def switches() -> frozenset[str]:
    """The config keys whose command-line option is a switch (a boolean that is off by default): the option alone
    means true, and false is said by leaving it out (``--harmony``, ``--batch-scale``)."""
    return frozenset(
        f.metadata["key"] or f.name
        for cls in STAGES.values()
        for f in fields(cls)
        if typing.get_type_hints(cls)[f.name] is bool and f.default is False
    )


def given(args: argparse.Namespace, *classes: type[Stage]) -> dict:
    """The fields of ``classes`` given on the command line (present in ``args``), by name."""
    return {f.name: getattr(args, f.name) for cls in classes for f in fields(cls) if hasattr(args, f.name)}


def per_stage(args: argparse.Namespace, *classes: type[Stage]) -> dict:
    """``{"<stage>_params": given(args, cls)}`` for each of ``classes``: the per-stage parameters of
    :func:`rlae_sc.pipeline.run` and :func:`rlae_sc.federated.local.federate`."""
    return {f"{cls.stage}_params": given(args, cls) for cls in classes}


def as_flags(values: Mapping | None, cls: type[Stage]) -> list[str]:
    """Command-line words that give ``values`` (fields of ``cls``, by name) to a subcommand: the inverse of
    :func:`add_options`."""
    by_name, hints = {f.name: f for f in fields(cls)}, typing.get_type_hints(cls)
    words = []
    for name, value in (values or {}).items():
        f = by_name[name]
        if hints[name] is bool and f.default is False:
            words += [flag(f)] if value else []
        else:
            words += [flag(f), _text(value)]
    return words


def config_flags(values: Mapping | None, cls: type[Stage]) -> list[str]:
    """:func:`as_flags` of a config section or entry: ``values`` by config key (``lambda``, not ``lam``; keys
    of other classes are not given), as the Snakemake rules pass the config to the subcommands."""
    names = {f.metadata["key"] or f.name: f.name for f in fields(cls)}
    return as_flags({names[key]: value for key, value in (values or {}).items() if key in names}, cls)


def _text(value) -> str:
    """A value as the command line writes it: ``none``, ``true``/``false``, or ``str``."""
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _parser(kind):
    """The function that reads a command-line word as ``kind`` (``X | None``: also ``none``)."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if args:  # a union: optional values, read as their first type
        base = _parser(args[0])

        def optional(text: str):
            if text.lower() == "none":
                return None
            if str in args[1:] and not text.lstrip("-").isdigit():
                return text  # a word where a number may also be given (n_components auto)
            return base(text)

        optional.__name__ = base.__name__
        return optional
    if kind is bool:
        return _bool
    return kind


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def split(values: Mapping, *classes: type[Stage], source: str = "parameters") -> tuple:
    """``values`` (fields of ``classes``, by name) as one dataclass of each class, in order (a name that
    several classes share goes to each); a name that is no class's field is an :class:`~rlae_sc.errors.InputError`."""
    names = {f.name for cls in classes for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(source, f"unknown parameter(s) {', '.join(unknown)}", f"Use {', '.join(sorted(names))}.")
    return tuple(
        cls.of({f.name: values[f.name] for f in fields(cls) if f.name in values}, source=source) for cls in classes
    )
