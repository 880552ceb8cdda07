"""CPU against GPU: the scatter pass, the tied exact solver and exact eigh, at 100k and 1M cells x 2,000 genes.

For each size a seeded float32 matrix (n x m: low rank with a decaying spectrum plus noise) is made in host
memory. On each device (the CPU, and CUDA when there is one) the fit runs as :func:`rlae_sc.model.fit` runs it
with ``trace_metrics=False``: the scatter pass from host memory (:func:`rlae_sc.passes.scatter_matrix`, float32
products, float64 accumulation on the device), ``C`` to the device, then
:func:`rlae_sc.lae.solvers.fit_tied_exact` (k = 50). The reference is ``torch.linalg.eigh`` of the same ``C``
on the same device. Each device is warmed up first on the matrix's first rows; the solver and eigh are timed
three times (median); the scatter pass once. The checks: top-10 |cos| between the directions (left singular
vectors of the decoder) and eigh's eigenvectors on the same device, and between the CPU and GPU runs, and
lambda on both (the two runs' C differ by float32 rounding; the GPU solver is also run on the CPU's C).

Needs only torch and numpy (and the rlae_sc modules those use): on a machine without the package's AnnData
stack, the subpackages are loaded without ``rlae_sc/__init__.py``, which imports it.

Run: ``python benchmarks/gpu.py [--sizes 100000 1000000] [--out-dir benchmarks]``; writes ``gpu.md`` and
``gpu.json`` there.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
try:
    import rlae_sc  # noqa: F401
except ImportError:  # e.g. no anndata/scanpy: a bare package, so that rlae_sc.passes and rlae_sc.lae import alone
    package = types.ModuleType("rlae_sc")
    package.__path__ = [str(ROOT / "rlae_sc")]
    sys.modules["rlae_sc"] = package

from rlae_sc.lae.solvers import fit_tied_exact  # noqa: E402
from rlae_sc.lae.theory import alignment, decoder_directions  # noqa: E402
from rlae_sc.passes import scatter_matrix  # noqa: E402

GENES = 2000
RANK = 200  # rank of the signal; its singular values decay as (i + 1)^-0.7
K = 50
TOP = 10
REPEATS = 3


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


def sync(dev: torch.device) -> None:
    """Wait for ``dev``'s queued work (CUDA), so that wall times are honest."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def median_seconds(fn, dev: torch.device) -> tuple[float, object]:
    """Median wall time (s) of ``REPEATS`` calls of ``fn()`` on ``dev``, and the last result."""
    times, out = [], None
    for _ in range(REPEATS):
        sync(dev)
        t0 = time.perf_counter()
        out = fn()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def run_device(X: np.ndarray, dev: torch.device) -> dict:
    """Warm-up, then the timed fit on ``dev``: scatter pass, solver, total, and eigh of the same ``C``."""
    warm = scatter_matrix(X[: min(len(X), 40_000)], precision="float32", device=dev)
    fit_tied_exact(torch.from_numpy(warm).to(dev), K)
    torch.linalg.eigh(torch.from_numpy(warm).to(dev))
    sync(dev)
    t0 = time.perf_counter()
    C_np = scatter_matrix(X, precision="float32", device=dev)
    t1 = time.perf_counter()
    C = torch.from_numpy(C_np).to(dev)
    fit = fit_tied_exact(C, K)
    sync(dev)
    total = time.perf_counter() - t0
    solver_s, fit = median_seconds(lambda: fit_tied_exact(C, K), dev)
    eigh_s, (e, U) = median_seconds(lambda: torch.linalg.eigh(C), dev)
    U_top = U.flip(1)[:, :TOP].cpu().numpy()
    P = decoder_directions(fit.decoder, fit.lam)[0]
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)",
        "scatter_s": t1 - t0,
        "solver_s": solver_s,
        "eigh_s": eigh_s,
        "fit_s": total,
        "n_iter": fit.n_iter,
        "lam": fit.lam,
        "min_abs_cos_top10_vs_eigh": float(alignment(P[:, :TOP], U_top).min()),
        "directions": P[:, :TOP],
        "C": C_np,
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    gpu = torch.device("cuda") if torch.cuda.is_available() else None
    results = []
    for n in args.sizes:
        t0 = time.perf_counter()
        X = make_matrix(n)
        print(f"{n} x {GENES}: matrix made in {time.perf_counter() - t0:.1f} s", flush=True)
        row: dict = {"n_cells": n, "n_genes": GENES, "k": K, "cpu": run_device(X, torch.device("cpu"))}
        print(f"  cpu: {_brief(row['cpu'])}", flush=True)
        if gpu is not None:
            row["gpu"] = run_device(X, gpu)
            row["gpu"].update(h2d_bandwidth(X, gpu))
            print(f"  gpu: {_brief(row['gpu'])}", flush=True)
            row["min_abs_cos_top10_cpu_vs_gpu"] = float(
                alignment(row["cpu"]["directions"], row["gpu"]["directions"]).min()
            )
            row["lambda_rel_diff_cpu_vs_gpu"] = abs(row["gpu"]["lam"] - row["cpu"]["lam"]) / row["cpu"]["lam"]
            same_C = fit_tied_exact(torch.from_numpy(row["cpu"]["C"]).to(gpu), K)  # the solver alone
            row["lambda_rel_diff_same_C"] = abs(same_C.lam - row["cpu"]["lam"]) / row["cpu"]["lam"]
            row["min_abs_cos_top10_same_C"] = float(
                alignment(row["cpu"]["directions"], decoder_directions(same_C.decoder, same_C.lam)[0][:, :TOP]).min()
            )
        for side in ("cpu", "gpu"):
            for key in ("directions", "C"):
                row.get(side, {}).pop(key, None)
        results.append(row)
        del X
    meta = {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "gpu.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    table = markdown(results, meta)
    (args.out_dir / "gpu.md").write_text(table)
    print(table)


def _brief(r: dict) -> str:
    return (
        f"scatter {r['scatter_s']:.3f} s, solver {r['solver_s']:.4f} s ({r['n_iter']} it), eigh {r['eigh_s']:.4f} s,"
        f" fit {r['fit_s']:.3f} s, top-10 |cos| vs eigh 1 - {1 - r['min_abs_cos_top10_vs_eigh']:.1e}"
    )


def markdown(results: list[dict], meta: dict) -> str:
    """The table of ``results`` (seconds; GPU columns say "no GPU" without one)."""
    lines = [
        "# CPU against GPU: scatter pass, tied exact solver (k = 50) and exact eigh",
        "",
        f"torch {meta['torch']}, numpy {meta['numpy']}, Python {meta['python']}. Float32 cells in host memory "
        f"(low rank {RANK} with decaying spectrum plus noise, seeded); `fit` = scatter pass from host memory "
        "+ C to the device + solver; solver and eigh: median of 3 after a warm-up; 1 - x written as 1 - d.",
        "",
        "| cells x genes | step | CPU | GPU |",
        "|---|---|---|---|",
    ]
    for r in results:
        cpu, gpu = r["cpu"], r.get("gpu")
        size = f"{r['n_cells']:,} x {r['n_genes']:,}"

        def cell(x, key, fmt):
            return "no GPU" if x is None else format(x[key], fmt)

        lines += [
            f"| {size} | device | {cpu['device']} | {'no GPU' if gpu is None else gpu['device']} |",
            f"| {size} | scatter pass (s) | {cpu['scatter_s']:.3f} | {cell(gpu, 'scatter_s', '.3f')} |",
            f"| {size} | solver (s) | {cpu['solver_s']:.4f} | {cell(gpu, 'solver_s', '.4f')} |",
            f"| {size} | torch.linalg.eigh of C (s) | {cpu['eigh_s']:.4f} | {cell(gpu, 'eigh_s', '.4f')} |",
            f"| {size} | fit: scatter + solve (s) | {cpu['fit_s']:.3f} | {cell(gpu, 'fit_s', '.3f')} |",
            f"| {size} | solver iterations | {cpu['n_iter']} | {cell(gpu, 'n_iter', 'd')} |",
            f"| {size} | lambda | {cpu['lam']:.10g} | {cell(gpu, 'lam', '.10g')} |",
            f"| {size} | top-10 min \\|cos\\| vs eigh, 1 - d: d | {1 - cpu['min_abs_cos_top10_vs_eigh']:.1e} | "
            + ("no GPU" if gpu is None else f"{1 - gpu['min_abs_cos_top10_vs_eigh']:.1e}")
            + " |",
        ]
        if gpu is not None:
            lines += [
                f"| {size} | top-10 min \\|cos\\| CPU vs GPU, 1 - d: d | | "
                f"{1 - r['min_abs_cos_top10_cpu_vs_gpu']:.1e} |",
                f"| {size} | lambda relative difference CPU vs GPU | | {r['lambda_rel_diff_cpu_vs_gpu']:.1e} |",
                f"| {size} | the same, GPU solver on the CPU's C: top-10 1 - \\|cos\\| / lambda rel. difference | | "
                f"{1 - r['min_abs_cos_top10_same_C']:.1e} / {r['lambda_rel_diff_same_C']:.1e} |",
                f"| {size} | host-to-device copy, pageable / pinned (GB/s) | | "
                f"{gpu['h2d_pageable_GBps']:.1f} / {gpu['h2d_pinned_GBps']:.1f} |",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
