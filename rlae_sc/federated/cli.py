"""The command-line subcommands of a federated fit: ``federate`` (all on this machine), ``coordinator`` and
``site`` (a deployment), ``summarize``, ``combine`` and ``site-outputs`` (trusted file mode)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlae_sc.params import (
    ClusterParams,
    FederationParams,
    LabelParams,
    PreprocessParams,
    ReadParams,
    TrainParams,
    add_options,
    given,
    per_stage,
)

COMMANDS = ("federate", "coordinator", "site", "summarize", "combine", "site-outputs")


def add_parsers(sub) -> None:
    """Add the federation's subcommands to ``sub`` (:mod:`rlae_sc.cli`'s subparsers); their stages' options
    come from :mod:`rlae_sc.params`."""
    layer = {"exclude": ("input_kind", "orientation", "var_names", "obs")}  # the sites' counts are .h5ad
    p = sub.add_parser("federate", help="federated fit on several sites' files, each site in its own process")
    p.add_argument("sites", nargs="+", help="one .h5ad of counts per site (its stem names the site)")
    p.add_argument("--out", required=True, help="output folder: model.npz, federation.json, sites/<site>/")
    add_options(p, LabelParams, exclude=("truth_key",))
    p.add_argument("--secure", action="store_true", help="secure aggregation: the coordinator sees only sums")
    p.add_argument("--allow-small-site", action="store_true", help=_SMALL + " (without --secure)")
    add_options(p, ReadParams, **layer)
    add_options(p, FederationParams)
    add_options(p, PreprocessParams)
    add_options(p, TrainParams)
    add_options(p, ClusterParams, exclude=("seed",))  # --seed is the training seed

    p = sub.add_parser("coordinator", help="coordinate a federated fit: wait for the sites, train on their sums")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to accept the sites on")
    p.add_argument("--sites", type=int, required=True, help="number of sites to wait for")
    p.add_argument("--out", required=True, help="folder for model.npz and federation.json")
    p.add_argument("--port-file", default=None, help="write the port listened on here (for --listen HOST:0)")
    p.add_argument("--capture", default=None, help="keep a copy of every vector received in this folder (audit)")
    _add_connection(p)
    add_options(p, PreprocessParams)
    add_options(p, TrainParams)

    p = sub.add_parser("site", help="take part in a federated fit with this site's cells")
    p.add_argument("counts", help="the site's .h5ad of counts")
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT", help="the coordinator's address")
    p.add_argument("--out", required=True, help="folder for the site's outputs")
    add_options(p, LabelParams, exclude=("truth_key",))
    p.add_argument("--allow-small-site", action="store_true", help=_SMALL)
    add_options(p, ReadParams, **layer)
    _add_connection(p)
    add_options(p, ClusterParams)

    p = sub.add_parser("summarize", help="trusted file mode: write a site's statistics for the current round")
    p.add_argument("counts", help="the site's .h5ad of counts")
    p.add_argument("--out", required=True, help="statistics file to write (.npz)")
    p.add_argument("--plan", default=None, help="plan.json from `rlae-sc combine` (none: the first round)")
    p.add_argument("--allow-small-site", action="store_true", help=_SMALL)
    add_options(p, ReadParams, **layer)
    add_options(p, PreprocessParams)

    p = sub.add_parser("combine", help="trusted file mode: sum the sites' statistics, write the next plan or model")
    p.add_argument("files", nargs="+", help="one statistics file per site, all of the same round")
    p.add_argument("--out", required=True, help="folder of plan.json, then model.npz")
    add_options(p, TrainParams)

    p = sub.add_parser("site-outputs", help="a site's embedding, clusters and report with a federation's model")
    p.add_argument("counts", help="the site's .h5ad of counts")
    p.add_argument("--model", required=True, help="the federation's model.npz")
    p.add_argument("--out", required=True, help="folder for the site's outputs")
    add_options(p, LabelParams, exclude=("truth_key",))
    add_options(p, ReadParams, **layer)
    add_options(p, ClusterParams)


_SMALL = "send the scatter matrix although the site has fewer cells than genes used (it reveals their span)"


def _add_connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--secure", action="store_true", help="secure aggregation (every party must use it)")
    p.add_argument("--tls-ca", default=None, help="the federation's CA certificate (PEM)")
    p.add_argument("--tls-cert", default=None, help="this party's certificate (PEM), signed by the CA")
    p.add_argument("--tls-key", default=None, help="this party's private key (PEM)")
    add_options(p, FederationParams)


def dispatch(args: argparse.Namespace) -> None:
    """Run a federation subcommand."""
    from rlae_sc.federated import coordinator, local, plan, site, statistics, trusted
    from rlae_sc.federated.protocol import TLSFiles

    c = args.command
    tls = None
    if getattr(args, "tls_ca", None) or getattr(args, "tls_cert", None):
        tls = TLSFiles(ca=Path(args.tls_ca), cert=Path(args.tls_cert), key=Path(args.tls_key))
    if c == "federate":
        model = local.federate(
            args.sites,
            args.out,
            **given(args, LabelParams, ReadParams),
            secure=args.secure,
            allow_small_site=args.allow_small_site,
            **per_stage(args, PreprocessParams, TrainParams, ClusterParams),
            **given(args, FederationParams),
        )
        print(f"wrote {model}; sites' outputs in {Path(args.out) / 'sites'}")
    elif c == "coordinator":
        coordinator.serve(
            plan.new_plan(given(args, PreprocessParams), given(args, TrainParams)),
            listen=args.listen,
            n_sites=args.sites,
            out=args.out,
            secure=args.secure,
            tls=tls,
            **given(args, FederationParams),
            port_file=args.port_file,
            capture=args.capture,
        )
    elif c == "site":
        site.run_site(
            args.counts,
            coordinator=args.coordinator,
            out=args.out,
            **given(args, LabelParams, ReadParams),
            secure=args.secure,
            tls=tls,
            **given(args, FederationParams),
            allow_small_site=args.allow_small_site,
            cluster_params=given(args, ClusterParams),
        )
    elif c == "summarize":
        trusted.summarize(
            args.counts,
            args.out,
            plan=args.plan,
            **given(args, ReadParams),
            allow_small_site=args.allow_small_site,
            preprocess_params=given(args, PreprocessParams),
        )
    elif c == "combine":
        print(f"wrote {trusted.combine(args.files, args.out, train_params=given(args, TrainParams))}")
    elif c == "site-outputs":
        s = statistics.open_site(args.counts, **given(args, ReadParams))
        labels = given(args, LabelParams)
        site.site_outputs(s, args.model, args.out, **labels, cluster_params=given(args, ClusterParams))
