"""Trusted federation without a network: sites exchange files of statistics with a trusted coordinator.

Each round, every site runs ``rlae-sc summarize`` (:func:`summarize`) and
sends its statistics file; the coordinator runs ``rlae-sc combine``
(:func:`combine`) on all of them, which writes the next ``plan.json`` for
the sites, or, after the last round, ``model.npz``. The rounds and the
decisions are those of the networked run (:class:`~rlae_sc.federated.plan.Plan`);
the files hold the site's plain sums, so the coordinator sees each site's
statistics: a site with fewer cells than genes used refuses to write its
scatter matrix unless allowed (:func:`~rlae_sc.federated.statistics.check_site_size`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rlae_sc import model_file
from rlae_sc.errors import InputError
from rlae_sc.federated.coordinator import write_summary
from rlae_sc.federated.plan import Plan, new_plan
from rlae_sc.federated.statistics import check_site_size, open_site, site_statistics
from rlae_sc.recipe import Recipe

log = logging.getLogger("rlae_sc")

KIND = "rlae-sc-site-statistics"
PLAN_NAME = "plan.json"


def summarize(
    counts: str | Path,
    out: str | Path,
    *,
    plan: str | Path | None = None,
    layer: str | None = None,
    allow_small_site: bool = False,
    preprocess_params: dict | None = None,
) -> dict:
    """Write the statistics file of a site's cells for the current round; returns its manifest.

    Without ``plan``, the first round (QC and gene statistics) with
    ``preprocess_params`` (every site must use the same); with ``plan`` (the
    ``plan.json`` written by :func:`combine`), the round it names.
    """
    site = open_site(counts, layer=layer)
    current = Plan.load(plan) if plan is not None else new_plan(preprocess_params or {}, {})
    request = current.request()
    if request["round"] == "scatter":
        check_site_size(site, Recipe.from_dict(request["recipe"]), allow_small_site=allow_small_site)
    stats = site_statistics(site, request)
    manifest = {
        "kind": KIND,
        "site": site.name,
        "run": request["run"] if plan is not None else None,
        "round": request["round"],
        "index": request["index"],
        "params": current.params,
        "genes": list(site.genes) if request["round"] == "qc" else None,
    }
    model_file.save(out, manifest, {key: np.asarray(val, dtype=np.float64) for key, val in stats.items()})
    log.info("summarize %s: round %s -> %s", counts, request["round"], out)
    return manifest


def combine(files: list[str | Path], out: str | Path, *, train_params: dict | None = None) -> Path:
    """Sum the sites' statistics files of one round and take the round's decisions.

    The first round's files start a plan (``train_params`` are fixed then);
    later rounds continue ``out/plan.json``. Writes ``out/plan.json`` for the
    next round and returns its path, or, after the last round, trains and
    writes ``out/model.npz`` and ``out/federation.json`` and returns the model's path.
    """
    out = Path(out)
    loaded = [model_file.load(f) for f in files]
    for f, (manifest, _) in zip(files, loaded, strict=True):
        if manifest.get("kind") != KIND:
            raise InputError(f, "is not a site statistics file", "Give the files written by `rlae-sc summarize`.")
    first = loaded[0][0]
    names = [m["site"] for m, _ in loaded]
    if len(set(names)) != len(names):
        raise InputError(out, f"two statistics files come from the same site ({names})", "Give one file per site.")
    if first["round"] == "qc":
        plan = new_plan(first["params"], train_params or {})
        plan.sites = sorted(names)
        for f, (manifest, _) in zip(files, loaded, strict=True):
            same = [manifest[key] == first[key] for key in ("round", "params", "genes")]
            if not all(same):
                raise InputError(
                    f,
                    "differs from the first file in round, parameters or genes",
                    "Run `rlae-sc summarize` with the same parameters on sites with the same genes.",
                )
    else:
        plan = Plan.load(out / PLAN_NAME)
        for f, (manifest, _) in zip(files, loaded, strict=True):
            if manifest["run"] != plan.run or manifest["index"] != plan.index:
                raise InputError(
                    f,
                    f"answers round {manifest['round']} of another plan, not round {plan.round} of {out / PLAN_NAME}",
                    f"Run `rlae-sc summarize SITE --plan {out / PLAN_NAME}` again at that site.",
                )
        if sorted(names) != plan.sites:
            raise InputError(out, f"files come from sites {sorted(names)}, the plan's are {plan.sites}", "Give all.")
    total = {key: sum(arrays[key] for _, arrays in loaded) for key in loaded[0][1]}
    C = plan.advance(total, genes=first["genes"])
    if C is None:
        plan.save(out / PLAN_NAME)
        log.info("combine: round done; next round %s: rlae-sc summarize SITE --plan %s", plan.round, out / PLAN_NAME)
        return out / PLAN_NAME
    model = plan.train_model(C)
    model.save(out / "model.npz")
    write_summary(out, plan, model, [], secure=False, seconds=model.params["fit_seconds"])
    plan.save(out / PLAN_NAME)
    log.info("combine: model trained on %d cells of %d sites -> %s", model.n_cells, len(names), out / "model.npz")
    return out / "model.npz"
