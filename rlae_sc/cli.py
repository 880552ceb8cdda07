"""``rlae-sc`` command line: one subcommand per stage, mapping one to one onto library functions.

The stages' options are generated from :mod:`rlae_sc.params`. Options left out take the library's
defaults; options that accept ``none`` switch a step off (``--max-pct-mito none``, ``--clip none``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from rlae_sc import __version__
from rlae_sc.dask_engine import WorkersLost
from rlae_sc.errors import InputError
from rlae_sc.federated import FederationError
from rlae_sc.federated import cli as federated_cli
from rlae_sc.params import (
    ClusterParams,
    LabelParams,
    MappingParams,
    PassParams,
    PreprocessParams,
    ReadParams,
    TrainParams,
    add_options,
    given,
    per_stage,
)
from rlae_sc.settings import settings
from rlae_sc.simulate import BUNDLED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlae-sc", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"rlae-sc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("preprocess", help="QC, normalise, log1p, HVG, scale; record the recipe")
    p.add_argument("counts", help=".h5ad of cells x genes")
    p.add_argument("--out", required=True, help="preprocessed.h5ad to write")
    add_options(p, LabelParams, exclude=("truth_key",))
    for cls in (ReadParams, PreprocessParams, PassParams):
        add_options(p, cls)

    p = sub.add_parser("train", help="train the sum-regularized linear autoencoder")
    p.add_argument("preprocessed", help="preprocessed.h5ad written by `rlae-sc preprocess`")
    p.add_argument("--out", required=True, help="model file (.npz) to write")
    add_options(p, TrainParams)
    add_options(p, PassParams, exclude=("streaming",))

    p = sub.add_parser("directions", help="directions from the decoder, embedding, comparison with exact PCA")
    p.add_argument("preprocessed", help="preprocessed.h5ad written by `rlae-sc preprocess`")
    p.add_argument("model", help="model.npz written by `rlae-sc train` on it")
    p.add_argument("--out", required=True, help="directions.h5ad to write")
    add_options(p, PassParams, exclude=("streaming",))

    p = sub.add_parser("cluster", help="kNN graph, Leiden, UMAP, ARI/NMI")
    p.add_argument("directions", help="directions.h5ad written by `rlae-sc directions`")
    p.add_argument("--out", required=True, help="embedding.h5ad to write (a name ending in .zarr: a zarr store)")
    p.add_argument("--metrics", required=True, help="metrics.json to write")
    add_options(p, LabelParams, exclude=("truth_key",))
    add_options(p, ClusterParams)

    p = sub.add_parser("report", help="figures and an HTML page")
    p.add_argument("embedding", help="embedding.h5ad (or .zarr) written by `rlae-sc cluster`")
    p.add_argument("--out-dir", required=True, help="folder for report.html, figures/ and cells.csv")
    p.add_argument("--dataset", required=True, help="name shown on the page")
    add_options(p, LabelParams, exclude=("truth_key",))

    p = sub.add_parser("index", help="results/index.html: a row per dataset, links to every page")
    p.add_argument("results", help="the results directory")
    p.add_argument("--out", default=None, help="page to write (RESULTS/index.html)")

    p = sub.add_parser("run", help="every stage on one input, without Snakemake")
    p.add_argument("counts", help="cells x genes: .h5ad, a 10x folder or .h5, .loom, or a .csv/.tsv table")
    p.add_argument("--out", required=True, help="output directory")
    add_options(p, LabelParams, exclude=("truth_key",))
    p.add_argument("--dataset", default=None, help="name shown in the report (file stem)")
    for cls in (ReadParams, PreprocessParams, TrainParams, PassParams):
        add_options(p, cls)
    add_options(p, ClusterParams, exclude=("seed",))  # --seed is the training seed

    p = sub.add_parser("embed", help="embed new cells with a trained model")
    p.add_argument("counts", help="the cells to embed: raw counts in any input format")
    p.add_argument("--model", required=True, help="model.npz of a trained reference")
    p.add_argument("--out", required=True, help=".h5ad (or .zarr store) to write, with obsm['X_rlae']")
    add_options(p, ReadParams, exclude=("input_kind",))  # the model's
    add_options(p, MappingParams, exclude=("n_neighbors", "classifier", "min_confidence", "distance_quantile"))
    add_options(p, PassParams)

    p = sub.add_parser("map", help="map query cells onto a reference: label transfer, reference UMAP")
    p.add_argument("counts", help="query .h5ad")
    p.add_argument("--model", required=True, help="the reference's model.npz")
    p.add_argument("--reference", required=True, help="the reference's embedding.h5ad (or .zarr)")
    p.add_argument("--out-dir", required=True, help="folder for mapped.h5ad, mapping.json and report.html")
    add_options(p, LabelParams)
    p.add_argument("--title", default=None, help="the page's title (default: query onto reference)")
    add_options(p, ReadParams, exclude=("input_kind",))  # the model's
    add_options(p, MappingParams)

    p = sub.add_parser("figures", help="reproduce the papers' figures (Kunin et al. 3-8, Bao et al.)")
    p.add_argument("--out-dir", required=True, help="writes figures.html, figures.json and figures/*.png")
    p.add_argument(
        "--cells",
        default=None,
        help="a preprocessed.h5ad for the single-cell figures (default: scanpy's pbmc68k_reduced)",
    )
    p.add_argument("--quick", action="store_true", help="shorter runs (for tests), not the published figures")

    p = sub.add_parser("demo-data", help="write a bundled demo dataset (no download)")
    p.add_argument("name", choices=BUNDLED, help="which demo dataset")
    p.add_argument("--out", required=True, help=".h5ad to write")

    federated_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()  # rlae-sc's progress lines only; other libraries' logs from WARNING up
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("rlae_sc")
    log.addHandler(handler)
    settings.verbosity = logging.INFO
    log.propagate = False
    warnings.simplefilter("default", UserWarning)
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"rlae-sc: warning: {message}\n"
    try:
        _dispatch(args)
    except (InputError, FederationError, WorkersLost) as exc:
        print(f"rlae-sc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _dispatch(args: argparse.Namespace) -> None:
    c = args.command
    if c in federated_cli.COMMANDS:
        federated_cli.dispatch(args)
        return
    from rlae_sc import pipeline  # here, not above: `rlae-sc --help` and option errors need none of the stages

    if c == "preprocess":
        params = given(args, LabelParams, ReadParams, PreprocessParams, PassParams)
        pipeline.preprocess_file(args.counts, args.out, **params)
    elif c == "train":
        pipeline.train_file(args.preprocessed, args.out, **given(args, TrainParams, PassParams))
    elif c == "directions":
        pipeline.directions_file(args.preprocessed, args.model, args.out, **given(args, PassParams))
    elif c == "cluster":
        pipeline.cluster_file(args.directions, args.out, args.metrics, **given(args, LabelParams, ClusterParams))
    elif c == "report":
        pipeline.report_file(args.embedding, args.out_dir, dataset=args.dataset, **given(args, LabelParams))
    elif c == "index":
        from rlae_sc.report import write_index

        print(f"wrote {write_index(args.results, out=args.out)}")
    elif c == "run":
        metrics = pipeline.run(
            args.counts,
            args.out,
            dataset=args.dataset,
            **per_stage(args, PreprocessParams, TrainParams, ClusterParams),
            **given(args, LabelParams, ReadParams, PassParams),
        )
        print(f"wrote {Path(args.out) / 'report.html'}; metrics: {Path(args.out) / 'metrics.json'}")
        for key in ("n_cells", "n_genes", "k", "certificate_min_cos_top10", "min_abs_cos_top10", "ari", "nmi"):
            if key in metrics:
                print(f"  {key}: {metrics[key]}")
    elif c == "embed":
        pipeline.embed_file(args.model, args.counts, args.out, **given(args, ReadParams, MappingParams, PassParams))
    elif c == "map":
        summary = pipeline.map_file(
            args.model,
            args.reference,
            args.counts,
            args.out_dir,
            title=args.title,
            **given(args, LabelParams, ReadParams, MappingParams),
        )
        print(
            f"wrote {Path(args.out_dir) / 'report.html'}; median confidence {summary['median_confidence']:.3f}"
            + (f", accuracy {summary['accuracy']:.3f}" if "accuracy" in summary else "")
        )
    elif c == "figures":
        from rlae_sc.papers import make_figures

        make_figures(args.out_dir, cells=args.cells, quick=args.quick)
        print(f"wrote {Path(args.out_dir) / 'figures.html'}")
    elif c == "demo-data":
        pipeline.demo_data_file(args.name, args.out)


if __name__ == "__main__":
    sys.exit(main())
