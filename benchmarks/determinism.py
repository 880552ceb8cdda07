"""The same bytes with one thread and with two (issue 27): ``rlae-sc run`` on real cells, repeated, compared by the
SHA-256 fingerprints each run writes to ``metrics.json`` (``sha256``: embedding, neighbour graph, Leiden labels,
UMAP; :mod:`rlae_sc.fingerprints`).

    .venv/bin/python benchmarks/determinism.py                      # kang and garnett, threads 2, 1, 2, 1
    .venv/bin/python benchmarks/determinism.py --datasets garnett --threads 2 1

Each run is a fresh process with ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``NUMBA_NUM_THREADS`` set to its thread count and the default configuration (``resolution: auto``, the label key
given so the report scores the clusters). Writes ``determinism.json`` and ``determinism.md`` here: per run the
thread count, wall seconds and the four fingerprints; per dataset whether every run matched the first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import record

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
DATASETS = {"kang": ("kang_se_12261.h5ad", "cell_type"), "garnett": ("garnett_pbmc800.h5ad", "cell_type")}
PACKAGES = ("rlae-sc", "numpy", "scipy", "torch", "scanpy", "anndata", "faiss-cpu", "umap-learn", "leidenalg")


def one_run(counts: Path, label_key: str, threads: int, out: Path) -> dict:
    """``rlae-sc run`` in a fresh process with every thread variable set to ``threads``; its fingerprints."""
    env = {**os.environ, **{var: str(threads) for var in record.THREAD_VARS if var != "OMP_WAIT_POLICY"}}
    cmd = [sys.executable, "-m", "rlae_sc", "run", str(counts), "--out", str(out), "--label-key", label_key]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"threads": threads, "wall_s": seconds, "sha256": metrics["sha256"], "n_clusters": metrics["n_clusters"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--threads", nargs="+", type=int, default=[2, 1, 2, 1], help="one run per entry, in order")
    ap.add_argument("--out", type=Path, default=HERE, help="folder of determinism.json/.md")
    args = ap.parse_args()
    run = record.header(PACKAGES)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for name in args.datasets:
            file, label_key = DATASETS[name]
            runs = [one_run(SHARED / file, label_key, t, Path(work) / f"{name}{i}") for i, t in enumerate(args.threads)]
            same = {key: all(r["sha256"][key] == runs[0]["sha256"][key] for r in runs) for key in runs[0]["sha256"]}
            results[name] = {"counts": file, "label_key": label_key, "runs": runs, "identical": same}
            print(name, json.dumps(same))
    record.finish(run)
    result = record.clean({"benchmark": "determinism", "issue": 27, "run": run, "datasets": results})
    (args.out / "determinism.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "determinism.md").write_text(markdown(result))
    print((args.out / "determinism.md").read_text())


def markdown(result: dict) -> str:
    lines = ["# The same bytes with one thread and with two", "", *record.markdown_header(result["run"]), ""]
    lines += ["| dataset | run | threads | wall (s) | clusters | embedding | graph | leiden | umap |", "|---" * 9 + "|"]
    for name, d in result["datasets"].items():
        for i, r in enumerate(d["runs"]):
            h = r["sha256"]
            lines.append(
                f"| {name} | {i + 1} | {r['threads']} | {r['wall_s']:.1f} | {r['n_clusters']} | "
                + " | ".join(f"`{h[k][:12]}`" for k in ("embedding", "graph", "leiden", "umap"))
                + " |"
            )
    lines.append("")
    for name, d in result["datasets"].items():
        same = [k for k, v in d["identical"].items() if v]
        differ = [k for k, v in d["identical"].items() if not v]
        lines.append(
            f"- {name}: identical in every run: {', '.join(same) or 'none'}"
            + (f"; differ: {', '.join(differ)}" if differ else "")
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
