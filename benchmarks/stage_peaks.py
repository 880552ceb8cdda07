"""Benchmark: the true peak memory of each stage after preprocessing, on a finished atlas run's files.

    python benchmarks/stage_peaks.py WORKDIR [--record benchmarks/atlas_5m_peaks.json]

Snakemake's benchmark files sample a rule's memory from time to time (``max_rss``), so a peak shorter than the
interval can be missed. This runs train, directions, cluster and report again on the files of a finished
``benchmarks/atlas.py`` workflow in WORKDIR (its preprocessed matrix; the commands of the workflow's rules, with the
atlas config's label key), into a scratch folder inside it, each under ``atlas.monitored``: the process's own
high-water mark (``VmHWM``, the kernel's peak) and its wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import record  # noqa: E402
from atlas import PACKAGES, monitored  # noqa: E402


def stage_commands(results: Path, scratch: Path) -> dict[str, list[str]]:
    """The rules' commands for train, directions, cluster and report, reading ``results`` (the preprocessed
    matrix) and writing into ``scratch``."""
    rlae = str(Path(sys.executable).parent / "rlae-sc")
    label = ["--label-key", "cell_type"]
    return {
        "train": [rlae, "train", str(results / "preprocessed.h5ad"), "--out", str(scratch / "model.npz")],
        "directions": [
            rlae, "directions", str(results / "preprocessed.h5ad"), str(scratch / "model.npz"),
            "--out", str(scratch / "directions.h5ad"),
        ],
        "cluster": [
            rlae, "cluster", str(scratch / "directions.h5ad"), "--out", str(scratch / "embedding.h5ad"),
            "--metrics", str(scratch / "metrics.json"), *label,
        ],
        "report": [
            rlae, "report", str(scratch / "embedding.h5ad"), "--out-dir", str(scratch), "--dataset", "atlas", *label,
        ],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path, help="a finished atlas.py workflow folder (atlas_wd_*)")
    parser.add_argument("--record", type=Path, default=HERE / "atlas_5m_peaks.json")
    args = parser.parse_args()
    scratch = args.workdir / "stage_peaks"
    scratch.mkdir(exist_ok=True)
    header = record.header(PACKAGES)
    stages = {}
    for stage, cmd in stage_commands(args.workdir / "results" / "atlas", scratch).items():
        run = monitored(cmd, log=scratch / f"{stage}.log")
        if run["returncode"]:
            sys.exit(f"{stage} failed: see {scratch / f'{stage}.log'}")
        stages[stage] = {
            "seconds": run["seconds"],
            "peak_gb": run["process_peak_gb"],
            "peak_gib": run["process_peak_gb"] * 1e9 / 2**30,
        }
        print(f"{stage:<11} {run['seconds']:8.1f} s  {run['process_peak_gb']:.2f} GB", flush=True)
    report = {"workdir": args.workdir.name, "stages": stages, "run": record.finish(header)}
    args.record.write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
