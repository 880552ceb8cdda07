"""CPU against GPU: the library's public fit, :func:`rlae_sc.fit` (what ``rl.tl.rlae`` and ``rlae-sc train`` call),
at 100k and 1M cells x 2,000 genes, on each device.

Full run, on a machine with CUDA (the package installed, ``pip install -e .``; about 5 minutes on an H200 host
with 16 cores, most of it the CPU side at 1M)::

    python benchmarks/gpu.py                                  # writes benchmarks/gpu.json and gpu.md
    python benchmarks/gpu.py --name gpu_h100                  # another GPU's record beside it

Smoke check without a GPU (about a minute on 2 busy cores; never over the committed records)::

    .venv/bin/python benchmarks/gpu.py --sizes 20000 --devices cpu --out-dir /tmp/gpu_smoke

For each size a seeded float32 matrix (n x 2,000: low rank 200 with a decaying spectrum, plus noise) is made in
host memory and wrapped, without a copy, in an AnnData as a preprocessed (scaled) one. On each device the fit
``rlae_sc.fit(pre, n_components=50, trace_metrics=False, device=DEVICE)`` is called once on the first 40,000
rows (warm-up: torch's first use, CUDA context, kernels), then timed ``--repeats`` times on the whole matrix
(median; CUDA synchronised). The call covers everything the library does in a fit: the pass that builds ``C``
from host memory, the solver, the decoder's SVD and the exact-PCA check (``scipy.linalg.eigh`` of ``C`` on the
host), which is also reported apart from the library's own timing (``params['exact_reference_seconds']``), so
that the fit without the check is the call less it. The checks: top-10 |cos| of the directions against that
eigh's eigenvectors, and between the CPU and GPU runs; lambda on both (their ``C`` differ by float32 rounding).
Host-to-device copy rates of 1 GiB (pageable and pinned) are measured on CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.append(str(ROOT))  # the package from this checkout when it is not installed

import record  # noqa: E402

from rlae_sc.products import scatter_matrix  # noqa: E402, F401 - gpu_solver_profile.py takes it from here

GENES = 2000
RANK = 200  # rank of the signal; its singular values decay as (i + 1)^-0.7
K = 50
TOP = 10
WARMUP_ROWS = 40_000
PACKAGES = ("rlae-sc", "torch", "numpy", "scipy", "anndata")
SIDES = {"cpu": "cpu", "cuda": "gpu"}  # torch device type -> the record's key


def make_matrix(n: int, *, seed: int = 0) -> np.ndarray:
    """Seeded float32 cells x genes matrix (n x GENES, host memory): low rank with a decaying spectrum plus noise.

    Drawn with torch on CUDA when there is one (fast), else on the CPU; all devices of one run use the same
    matrix.
    """
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=dev).manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(GENES, RANK, device=dev, generator=gen))[0]
    strength = 4.0 * (torch.arange(RANK, device=dev) + 1.0) ** -0.7
    X = np.empty((n, GENES), dtype=np.float32)
    for start in range(0, n, 1 << 17):
        rows = min(n, start + (1 << 17)) - start
        Z = torch.randn(rows, RANK, device=dev, generator=gen) * strength
        block = Z @ basis.T + 0.3 * torch.randn(rows, GENES, device=dev, generator=gen) + 1.0
        X[start : start + rows] = block.cpu().numpy()
    return X


def preprocessed(X: np.ndarray):
    """``X`` as a preprocessed AnnData that :func:`rlae_sc.fit` takes: scaled ``X`` (no copy), a recipe for
    its genes (the defaults otherwise: the fit reads nothing else from it)."""
    import anndata as ad

    from rlae_sc import Recipe
    from rlae_sc.recipe import SCALED

    genes = [f"g{j}" for j in range(X.shape[1])]
    recipe = Recipe(genes=genes, mean=np.zeros(len(genes)), std=np.ones(len(genes)))
    return ad.AnnData(X=X, uns={"rlae_recipe": json.dumps(recipe.to_dict()), "rlae_preprocess": {"X": SCALED}})


def sync(dev: torch.device) -> None:
    """Wait for ``dev``'s queued work (CUDA), so that wall times are honest."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def fit(pre, dev: torch.device):
    """The library's public fit on ``dev``, and its wall time (s)."""
    import rlae_sc

    sync(dev)
    t0 = time.perf_counter()
    model = rlae_sc.fit(pre, n_components=K, trace_metrics=False, device=str(dev))
    sync(dev)
    return model, time.perf_counter() - t0


def min_abs_cos(P: np.ndarray, U: np.ndarray) -> float:
    """Smallest ``|cos|`` between matching columns of ``P`` and ``U`` (the first ``TOP``)."""
    P, U = P[:, :TOP], U[:, :TOP]
    return float(np.min(np.abs(np.sum(P * U, axis=0)) / (np.linalg.norm(P, axis=0) * np.linalg.norm(U, axis=0))))


def run_device(X: np.ndarray, dev: torch.device, repeats: int) -> dict:
    """Warm-up, then ``repeats`` timed fits on ``dev``."""
    fit(preprocessed(X[: min(len(X), WARMUP_ROWS)]), dev)
    pre = preprocessed(X)
    walls, checks, models = [], [], []
    for _ in range(repeats):
        model, wall = fit(pre, dev)
        walls.append(wall)
        checks.append(model.params.get("exact_reference_seconds"))
        models.append(model)
    model = models[-1]
    p = model.params
    check = float(np.median(checks)) if None not in checks else None
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)",
        "fit_s": float(np.median(walls)),
        "fit_s_all": walls,
        "check_s": check,
        "fit_without_check_s": None if check is None else float(np.median(np.subtract(walls, checks))),
        "library_fit_seconds": p.get("fit_seconds"),
        "library_solver_seconds": p.get("solver_seconds"),
        "n_iter": p.get("n_iter"),
        "lam": model.lam,
        "min_abs_cos_top10_vs_eigh": min_abs_cos(model.directions, model.reference["directions"]),
        "directions": model.directions[:, :TOP],
    }


def h2d_bandwidth(X: np.ndarray, dev: torch.device) -> dict:
    """Host-to-device copy rates (GB/s) of 1 GiB of ``X``'s rows, from pageable and from pinned memory."""
    rows = min(len(X), (1 << 30) // (4 * X.shape[1]))
    block = torch.from_numpy(X[:rows])
    pinned = block.pin_memory()
    rates = {}
    for name, src in (("pageable", block), ("pinned", pinned)):
        src.to(dev)
        sync(dev)
        t0 = time.perf_counter()
        src.to(dev)
        sync(dev)
        rates[f"h2d_{name}_GBps"] = block.numel() * 4 / (time.perf_counter() - t0) / 1e9
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--devices",
        nargs="+",
        default=None,
        choices=list(SIDES),
        help="torch devices (default: cpu, and cuda when there is one)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--name", default="gpu", help="basename of the .json/.md written to --out-dir")
    args = parser.parse_args()
    devices = [torch.device(d) for d in (args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])])]
    run = record.header(PACKAGES)
    run["cuda"] = torch.version.cuda
    results = []
    for n in args.sizes:
        t0 = time.perf_counter()
        X = make_matrix(n)
        print(f"{n} x {GENES}: matrix made in {time.perf_counter() - t0:.1f} s", flush=True)
        row: dict = {"n_cells": n, "n_genes": GENES, "k": K}
        for dev in devices:
            side = row[SIDES[dev.type]] = run_device(X, dev, args.repeats)
            if dev.type == "cuda":
                side.update(h2d_bandwidth(X, dev))
            print(f"  {dev}: {_brief(side)}", flush=True)
        if "cpu" in row and "gpu" in row:
            cpu, gpu = row["cpu"], row["gpu"]
            row["min_abs_cos_top10_cpu_vs_gpu"] = min_abs_cos(cpu["directions"], gpu["directions"])
            row["lambda_rel_diff_cpu_vs_gpu"] = abs(gpu["lam"] - cpu["lam"]) / cpu["lam"]
        for side in SIDES.values():
            row.get(side, {}).pop("directions", None)
        results.append(row)
        del X
    record.finish(run)
    result = record.clean({"benchmark": "gpu", "issue": 25, "run": run, "repeats": args.repeats, "results": results})
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (args.out_dir / f"{args.name}.md").write_text(table)
    print(table)


def _brief(r: dict) -> str:
    check = "-" if r["check_s"] is None else f"{r['check_s']:.3f}"
    return (
        f"fit {r['fit_s']:.3f} s (of which the exact-PCA check {check} s), {r['n_iter']} it, "
        f"top-10 |cos| vs eigh 1 - {1 - r['min_abs_cos_top10_vs_eigh']:.1e}"
    )


def markdown(result: dict) -> str:
    """The table of a record: a column for the CPU and one for the GPU."""
    run, results = result["run"], result["results"]
    lines = [
        "# CPU against GPU: the library's fit, `rlae_sc.fit` (k = 50)",
        "",
        "Written by `benchmarks/gpu.py` from its JSON record.",
        "",
        *record.markdown_header(run),
        "",
        f"Float32 cells in host memory (low rank {RANK} with a decaying spectrum plus noise, seeded), given to "
        "`rlae_sc.fit(pre, trace_metrics=False, device=...)` as a scaled preprocessed AnnData. fit: the call's wall "
        f"time, median of {result['repeats']} after a warm-up on {WARMUP_ROWS:,} rows: the pass that builds C from "
        "host memory, the solver, the decoder's SVD and the exact-PCA check (scipy eigh of C on the host), whose "
        "time the library reports and which is also given apart. 1 - x written as 1 - d.",
        "",
        "| cells x genes | | CPU | GPU |",
        "|---|---|---|---|",
    ]

    def line(r: dict, label: str, fn) -> None:
        cells = []
        for side in ("cpu", "gpu", None):
            try:
                cells.append(fn(r if side is None else r[side]))
            except (KeyError, TypeError):
                cells.append("")
        if any(cells):
            size = f"{r['n_cells']:,} x {r['n_genes']:,}"
            cpu, gpu, both = cells
            lines.append(f"| {size} | {label} | {cpu or ('' if both else '-')} | {gpu or both or 'no GPU'} |")

    for r in results:
        line(r, "device", lambda s: s["device"])
        line(r, "fit: the whole call (s)", lambda s: f"{s['fit_s']:.3f}")
        line(r, "of which the exact-PCA check (s)", lambda s: f"{s['check_s']:.3f}")
        line(r, "fit without the check (s)", lambda s: f"{s['fit_without_check_s']:.3f}")
        line(r, "solver iterations", lambda s: f"{s['n_iter']}")
        line(r, "lambda", lambda s: f"{s['lam']:.10g}")
        line(r, "top-10 min \\|cos\\| vs eigh, 1 - d: d", lambda s: f"{1 - s['min_abs_cos_top10_vs_eigh']:.1e}")
        line(r, "top-10 min \\|cos\\| CPU vs GPU, 1 - d: d", lambda s: f"{1 - s['min_abs_cos_top10_cpu_vs_gpu']:.1e}")
        line(r, "lambda relative difference CPU vs GPU", lambda s: f"{s['lambda_rel_diff_cpu_vs_gpu']:.1e}")
        line(
            r,
            "host-to-device copy, pageable / pinned (GB/s)",
            lambda s: f"{s['h2d_pageable_GBps']:.1f} / {s['h2d_pinned_GBps']:.1f}",
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
