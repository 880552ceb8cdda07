"""The header every benchmark record carries: when, which commit, which machine, how loaded, which packages, and
the exact command. Standard library only, so that a script that needs little else (``gpu.py``) can use it.

    run = record.header(["numpy", "scanpy"])   # at the start: started, command, git, machine, load_before, ...
    ...                                        # the measurements
    record.finish(run)                         # finished, load_after
    json_path.write_text(json.dumps(record.clean({"benchmark": NAME, "run": run, ...}), indent=1) + "\\n")
    lines += record.markdown_header(run)       # the same facts as Markdown bullets
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY")


def git_state() -> dict:
    """HEAD's commit and the files that differ from it (``dirty``)."""

    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines() if line]  # "XY path": keep the path
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": bool(dirty), "dirty_files": dirty}


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Platform, CPU model and count, memory (GB) and Python version of this machine."""
    mem = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            if key in ("MemTotal", "MemAvailable"):
                mem[key] = round(int(value.split()[0]) * 1024 / 1e9, 2)
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_total_gb": mem.get("MemTotal"),
        "memory_available_gb_at_start": mem.get("MemAvailable"),
    }


def packages(names) -> dict:
    """Installed version of each distribution in ``names`` (``None`` when absent)."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def header(package_names, argv: list[str] | None = None) -> dict:
    """The record's ``run`` block at the start of a run; :func:`finish` completes it."""
    return {
        "started": now(),
        "command": shlex.join([sys.executable, *(sys.argv if argv is None else argv)]),
        "cwd": os.getcwd(),
        "git": git_state(),
        "machine": machine(),
        "load_before": load_average(),
        "thread_environment": {var: os.environ.get(var) for var in THREAD_VARS},
        "packages": packages(package_names),
    }


def finish(run: dict) -> dict:
    run["finished"] = now()
    run["load_after"] = load_average()
    return run


def clean(x):
    """JSON-safe: NaN -> null, numpy scalars and arrays -> Python."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):  # numpy scalar or array
        return clean(x.tolist())
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def markdown_header(run: dict) -> list[str]:
    """Bullets: run times and command, commit, machine and load, threads, packages."""
    m = run["machine"]
    loads = [f"{' / '.join(f'{v:.2f}' for v in run[key])} {when}" for key, when in
             (("load_before", "before"), ("load_after", "after")) if run.get(key)]  # fmt: skip
    threads = ", ".join(f"{k}={v}" for k, v in run.get("thread_environment", {}).items() if v)
    return [
        f"- Run: {run['started']} to {run.get('finished', '?')}; `{run['command']}`",
        f"- Commit {run['git']['commit'][:12]}" + (" with uncommitted changes" if run["git"]["dirty"] else ""),
        f"- Machine: {m.get('cpu_model') or m['processor']}, {m['cpu_count']} cores, {m['memory_total_gb']} GB; "
        f"{m['platform']}; load average (1/5/15 min) {', '.join(loads)}",
        "- Threads: " + (threads or "the libraries' defaults (no OMP/MKL/OpenBLAS/numba thread variables set)"),
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in run["packages"].items() if v),
    ]
