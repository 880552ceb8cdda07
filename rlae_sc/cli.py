"""``rlae-sc`` command line: one subcommand per stage, mapping one to one onto library functions.

Options left out take the library's defaults; options that accept ``none``
switch a step off (``--max-pct-mito none``, ``--clip none``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from rlae_sc import pipeline
from rlae_sc.chunks import WorkersLost
from rlae_sc.errors import InputError
from rlae_sc.federated import FederationError
from rlae_sc.federated import cli as federated_cli
from rlae_sc.lae.rules import RULES
from rlae_sc.report import write_index
from rlae_sc.simulate import BUNDLED

S = argparse.SUPPRESS


def _optional(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def _add_input(p: argparse.ArgumentParser, *, kind: bool = True) -> None:
    p.add_argument("--layer", default=None, help="read the matrix from this layer (.h5ad, .loom)")
    p.add_argument(
        "--orientation",
        default="cells_x_genes",
        choices=["cells_x_genes", "genes_x_cells"],
        help="rows of a .csv/.tsv input (cells_x_genes)",
    )
    p.add_argument(
        "--var-names",
        default="gene_symbols",
        choices=["gene_symbols", "gene_ids"],
        help="gene names of a 10x input (gene_symbols)",
    )
    if kind:
        p.add_argument(
            "--input-kind",
            default="counts",
            choices=["counts", "log_normalized"],
            help="raw counts (default) or already log-normalised values",
        )


READ = ["layer", "orientation", "var_names"]


def _add_passes(p: argparse.ArgumentParser, *, streaming: bool) -> None:
    g = p.add_argument_group("passes over cells")
    if streaming:
        g.add_argument(
            "--streaming",
            action="store_true",
            help="read the .h5ad input block by block, never whole (for data larger than memory)",
        )
    g.add_argument(
        "--dask",
        default=None,
        metavar="N|ADDRESS|slurm:JOBS",
        help="run the passes on Dask: N local worker processes, a scheduler address tcp://host:port, or slurm:JOBS "
        "(dask-jobqueue SLURM jobs, configured in Dask's jobqueue.slurm settings)",
    )


def _add_preprocess(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preprocess")
    g.add_argument("--min-genes", type=int, default=S, help="min genes detected per cell (200)")
    g.add_argument("--min-cells", type=int, default=S, help="min cells detecting a gene (3)")
    g.add_argument("--max-pct-mito", type=_optional(float), default=S, help="max %% mitochondrial counts, or none (20)")
    g.add_argument(
        "--target-sum", type=_optional(float), default=S, help="counts per cell after normalisation (median)"
    )
    g.add_argument("--n-top-genes", type=int, default=S, help="highly variable genes kept (2000)")
    g.add_argument("--hvg-flavor", default=S, choices=["seurat_v3", "seurat", "cell_ranger"], help="(seurat_v3)")
    g.add_argument("--clip", type=_optional(float), default=S, help="clip scaled values at +-CLIP, or none (none)")


def _add_train(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("train")
    g.add_argument("--n-components", type=int, default=S, help="latent units k (50)")
    g.add_argument("--solver", default=S, choices=["tied_exact", *RULES], help="(tied_exact)")
    g.add_argument("--lr", type=_optional(float), default=S, help="step size of a learning rule (0.5 / (e_1 + lambda))")
    g.add_argument("--batch-size", type=_optional(int), default=S, help="cells per mini-batch, or none (full batch)")
    g.add_argument("--trace-every", type=int, default=S, help="trace stride in iterations (10)")
    g.add_argument("--trace-metrics", type=_bool, default=S, help="trace metrics against exact PCA: true/false (true)")
    g.add_argument("--lambda-frac", type=float, default=S, help="lambda as a fraction of an e_k estimate (0.1)")
    g.add_argument(
        "--lambda",
        dest="lam",
        type=_optional(float),
        default=S,
        help="lambda in units of C = X^T X (sum over cells); overrides --lambda-frac",
    )
    g.add_argument("--oversample", type=int, default=S, help="extra latent units trained then dropped (40)")
    g.add_argument(
        "--scatter-precision",
        default=S,
        choices=["float32", "float64"],
        help="precision of the products in the pass that builds C (float32)",
    )
    g.add_argument("--max-iter", type=int, default=S, help="(1000)")
    g.add_argument("--tol", type=float, default=S, help="stop when the top-k read-out moves less than this (1e-8)")
    g.add_argument("--seed", type=int, default=S, help="(0)")
    g.add_argument("--device", default=S, help="torch device, or auto (auto)")


def _add_cluster(p: argparse.ArgumentParser, *, seed: bool = True) -> None:
    g = p.add_argument_group("cluster")
    g.add_argument("--n-neighbors", type=int, default=S, help="(15)")
    g.add_argument("--n-dims", type=_optional(int), default=S, help="components used for the kNN graph (all)")
    g.add_argument("--resolution", type=float, default=S, help="Leiden resolution (0.3)")
    g.add_argument(
        "--sketch-cells", type=int, default=S, help="Leiden and UMAP on a sample of this many cells when larger (50000)"
    )
    if seed:
        g.add_argument("--seed", type=int, default=S, help="(0)")


def _pick(args: argparse.Namespace, names: list[str]) -> dict:
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


PRE = ["min_genes", "min_cells", "max_pct_mito", "target_sum", "n_top_genes", "hvg_flavor", "clip"]
TRAIN = [
    "n_components",
    "solver",
    "lambda_frac",
    "lam",
    "oversample",
    "max_iter",
    "tol",
    "scatter_precision",
    "lr",
    "batch_size",
    "trace_every",
    "trace_metrics",
    "seed",
    "device",
]
CLUSTER = ["n_neighbors", "n_dims", "resolution", "sketch_cells", "seed"]
PASSES = ["streaming", "dask"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlae-sc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("preprocess", help="QC, normalise, log1p, HVG, scale; record the recipe")
    p.add_argument("counts", help=".h5ad of cells x genes")
    p.add_argument("--out", required=True, help="preprocessed.h5ad to write")
    p.add_argument("--label-key", default=None, help="obs column of known labels (checked to exist)")
    _add_input(p)
    _add_preprocess(p)
    _add_passes(p, streaming=True)

    p = sub.add_parser("train", help="train the sum-regularized linear autoencoder")
    p.add_argument("preprocessed")
    p.add_argument("--out", required=True, help="model file (.npz) to write")
    _add_train(p)
    _add_passes(p, streaming=False)

    p = sub.add_parser("directions", help="directions from the decoder, embedding, comparison with exact PCA")
    p.add_argument("preprocessed")
    p.add_argument("model")
    p.add_argument("--out", required=True, help="directions.h5ad to write")
    _add_passes(p, streaming=False)

    p = sub.add_parser("cluster", help="kNN graph, Leiden, UMAP, ARI/NMI")
    p.add_argument("directions")
    p.add_argument("--out", required=True, help="embedding.h5ad to write")
    p.add_argument("--metrics", required=True, help="metrics.json to write")
    p.add_argument("--label-key", default=None)
    _add_cluster(p)

    p = sub.add_parser("report", help="figures and an HTML page")
    p.add_argument("embedding")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--dataset", required=True, help="name shown on the page")
    p.add_argument("--label-key", default=None)

    p = sub.add_parser("index", help="results/index.html: a row per dataset, links to every page")
    p.add_argument("results", help="the results directory")
    p.add_argument("--out", default=None, help="page to write (RESULTS/index.html)")

    p = sub.add_parser("run", help="every stage on one input, without Snakemake")
    p.add_argument("counts")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--label-key", default=None)
    p.add_argument("--dataset", default=None, help="name shown in the report (file stem)")
    _add_input(p)
    _add_preprocess(p)
    _add_train(p)
    _add_cluster(p, seed=False)
    _add_passes(p, streaming=True)

    p = sub.add_parser("embed", help="embed new cells with a trained model")
    p.add_argument("counts")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help=".h5ad to write, with obsm['X_rlae']")
    _add_input(p, kind=False)
    p.add_argument("--min-overlap", type=float, default=0.5, help="minimum fraction of model genes present (0.5)")
    _add_passes(p, streaming=True)

    p = sub.add_parser("map", help="map query cells onto a reference: label transfer, reference UMAP")
    p.add_argument("counts", help="query .h5ad")
    p.add_argument("--model", required=True, help="the reference's model.npz")
    p.add_argument("--reference", required=True, help="the reference's embedding.h5ad")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--label-key", default=None, help="reference obs column to transfer (Leiden clusters)")
    p.add_argument("--truth-key", default=None, help="query obs column of known labels, for accuracy")
    _add_input(p, kind=False)
    p.add_argument("--n-neighbors", type=int, default=15)
    p.add_argument("--min-overlap", type=float, default=0.5)
    p.add_argument("--title", default=None)

    p = sub.add_parser("figures", help="reproduce the papers' figures (Kunin et al. 3-8, Bao et al.)")
    p.add_argument("--out-dir", required=True, help="writes figures.html, figures.json and figures/*.png")
    p.add_argument(
        "--cells",
        default=None,
        help="a preprocessed.h5ad for the single-cell figures (default: scanpy's pbmc68k_reduced)",
    )
    p.add_argument("--quick", action="store_true", help="shorter runs (for tests), not the published figures")

    p = sub.add_parser("demo-data", help="write a bundled demo dataset (no download)")
    p.add_argument("name", choices=BUNDLED)
    p.add_argument("--out", required=True)

    federated_cli.add_parsers(sub, add_preprocess=_add_preprocess, add_train=_add_train, add_cluster=_add_cluster)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()  # rlae-sc's progress lines only; other libraries' logs from WARNING up
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("rlae_sc")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
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
        federated_cli.dispatch(args, pick=_pick, pre=PRE, train=TRAIN, cluster=CLUSTER)
    elif c == "preprocess":
        pipeline.preprocess_file(
            args.counts,
            args.out,
            input_kind=args.input_kind,
            label_key=args.label_key,
            **_pick(args, READ),
            **_pick(args, PRE),
            **_pick(args, PASSES),
        )
    elif c == "train":
        pipeline.train_file(args.preprocessed, args.out, **_pick(args, TRAIN), **_pick(args, PASSES))
    elif c == "directions":
        pipeline.directions_file(args.preprocessed, args.model, args.out, **_pick(args, PASSES))
    elif c == "cluster":
        pipeline.cluster_file(args.directions, args.out, args.metrics, label_key=args.label_key, **_pick(args, CLUSTER))
    elif c == "report":
        pipeline.report_file(args.embedding, args.out_dir, dataset=args.dataset, label_key=args.label_key)
    elif c == "index":
        print(f"wrote {write_index(args.results, out=args.out)}")
    elif c == "run":
        metrics = pipeline.run(
            args.counts,
            args.out,
            input_kind=args.input_kind,
            **_pick(args, READ),
            label_key=args.label_key,
            dataset=args.dataset,
            preprocess_params=_pick(args, PRE),
            train_params=_pick(args, TRAIN),
            cluster_params=_pick(args, CLUSTER),
            **_pick(args, PASSES),
        )
        print(f"wrote {Path(args.out) / 'report.html'}; metrics: {Path(args.out) / 'metrics.json'}")
        for key in ("n_cells", "n_genes", "k", "min_abs_cos_top10", "subspace_distance", "ari", "nmi"):
            if key in metrics:
                print(f"  {key}: {metrics[key]}")
    elif c == "embed":
        pipeline.embed_file(
            args.model, args.counts, args.out, min_overlap=args.min_overlap, **_pick(args, READ), **_pick(args, PASSES)
        )
    elif c == "map":
        summary = pipeline.map_file(
            args.model,
            args.reference,
            args.counts,
            args.out_dir,
            label_key=args.label_key,
            truth_key=args.truth_key,
            n_neighbors=args.n_neighbors,
            **_pick(args, READ),
            min_overlap=args.min_overlap,
            title=args.title,
        )
        print(
            f"wrote {Path(args.out_dir) / 'report.html'}; median confidence {summary['median_confidence']:.3f}"
            + (f", accuracy {summary['accuracy']:.3f}" if "accuracy" in summary else "")
        )
    elif c == "figures":
        from rlae_sc.figures import make_figures

        make_figures(args.out_dir, cells=args.cells, quick=args.quick)
        print(f"wrote {Path(args.out_dir) / 'figures.html'}")
    elif c == "demo-data":
        pipeline.demo_data_file(args.name, args.out)


if __name__ == "__main__":
    sys.exit(main())
