"""End to end, both ways (issue 25): ``rlae-sc run`` against scanpy's standard pipeline, cold and warm, on kang
and on 100k cells; and where rlae-sc's time goes in its warm run.

Full run, on a quiet machine (nothing else running: on 2 busy cores BLAS collapses and the numbers mean
nothing). About 45 minutes on a 2-core machine: kang about 10, the 100k set about 35 (its counts, 0.9 GB, are
written once to benchmarks/data/atlas_100000.h5ad, shared with atlas.py)::

    .venv/bin/python benchmarks/end_to_end.py
    # writes benchmarks/end_to_end.json (the record) and benchmarks/end_to_end.md (tables, from the JSON)

    .venv/bin/python benchmarks/end_to_end.py --datasets kang      # one dataset; the record keeps the other's
    .venv/bin/python benchmarks/end_to_end.py --markdown-only      # rewrite end_to_end.md from the JSON

Smoke check (1,500 kang cells and 2,000 resampled cells, one round, every kind of run; about 10 minutes on 2
busy cores, most of it numba compiling in the cold runs and the warm-up; written to
benchmarks/data/end_to_end_smoke/, never over the committed record)::

    .venv/bin/python benchmarks/end_to_end.py --smoke

Datasets: ``kang`` is kang_se_12261 from ../shared/data (12,261 cells x 1,287 genes, labels ``cell_type``);
``resampled`` is soupx_pbmc4k_2170 resampled to ``--cells`` (default 100,000) cells x 33,694 genes, each new
cell pooling the binomially thinned counts of two seed cells with the same label (``atlas.counts_file``, the
same counts as atlas.py's 100k comparison; see ``bench.resample``).

Tools, each run in a fresh process of its own, its wall time (launch to exit: interpreter start, imports, reading
the counts, every step, writing), CPU time and peak resident memory (GNU time) recorded:

- ``rlae``: ``rlae-sc run COUNTS --out DIR --label-key cell_type`` (preprocess, train, directions with the
  exact-PCA check, cluster: kNN graph, Leiden, UMAP, markers; report: figures and report.html), defaults.
- ``scanpy``: this script's scanpy worker: read_h5ad, normalize_total, log1p, highly_variable_genes
  (n_top_genes 2,000, subset), scale (max_value 10), pca (defaults, 50 components), neighbors (defaults),
  leiden (flavor igraph, n_iterations 2, undirected: scanpy's coming default), umap, then ``write_h5ad`` of
  the result (``--scanpy-write none`` leaves it out); each step's time is recorded too.

Ways of counting:

- cold: ``NUMBA_CACHE_DIR`` is a fresh, empty folder for that one run: every numba function is compiled in the
  run, as in a user's first run (Python's bytecode caches, matplotlib's font cache and the OS page cache stay
  as they are).
- warm: ``NUMBA_CACHE_DIR`` is one folder for the whole run, filled by one untimed run of each tool on each
  dataset before any warm run is timed (numba functions that are not cacheable still compile in every run).

Per dataset: the untimed warm-up runs, then ``--repeats`` rounds (default 2), each with a cold and a warm run of
both tools, the tools' order swapped each round; medians reported. Then the per-stage breakdown of rlae-sc's
warm run: ``--repeats`` more processes run ``rlae-sc run``'s own command line in-process
(``rlae_sc.cli.main(["run", ...])``) with the pipeline's stage functions (``rlae_sc.pipeline.*_file``) timed:
interpreter start, imports, each stage, the rest, exit; with the sub-stage times rlae-sc records itself
(metrics.json's ``*_seconds``); and one more run under cProfile (``--no-profile`` to skip) whose top functions
by cumulative and own time are stored. Load average is recorded before and after the whole run and before each
timed run. A run that fails stops everything with a non-zero exit that names it; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import record  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
KANG = SHARED / "kang_se_12261.h5ad"
LABEL_KEY = "cell_type"
TOOLS = ("rlae", "scanpy")
MODES = ("cold", "warm")
GNU_TIME = Path("/usr/bin/time")
PACKAGES = (
    "rlae-sc",
    "numpy",
    "scipy",
    "torch",
    "numba",
    "llvmlite",
    "anndata",
    "scanpy",
    "scikit-learn",
    "pynndescent",
    "umap-learn",
    "faiss-cpu",
    "leidenalg",
    "igraph",
    "matplotlib",
    "h5py",
)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
CHILD_ENV: dict[str, str] = {}  # --threads
PROFILE_TOP = 40


class RunFailed(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------- workers


def _startup_seconds() -> float:
    """Seconds from the parent's launch of this process (``E2E_LAUNCH``, wall clock) to now."""
    launch = os.environ.get("E2E_LAUNCH")
    return time.time() - float(launch) if launch else float("nan")


def scanpy_worker(counts: str, out: str, result: str, write: str) -> None:
    """scanpy's standard pipeline on ``counts``; each step timed; ``result``: JSON of the times."""
    startup = _startup_seconds()
    t0 = time.perf_counter()
    import anndata as ad
    import scanpy as sc

    imports = time.perf_counter() - t0
    steps: dict[str, float] = {}
    box: dict = {}

    def step(name: str, fn) -> None:
        t = time.perf_counter()
        fn()
        steps[name] = time.perf_counter() - t

    step("read", lambda: box.update(a=ad.read_h5ad(counts)))
    a = box["a"]
    step("normalize_total", lambda: sc.pp.normalize_total(a))
    step("log1p", lambda: sc.pp.log1p(a))
    step("highly_variable_genes", lambda: sc.pp.highly_variable_genes(a, n_top_genes=2000, subset=True))
    step("scale", lambda: sc.pp.scale(a, max_value=10))
    step("pca", lambda: sc.pp.pca(a, n_comps=50))
    step("neighbors", lambda: sc.pp.neighbors(a))
    step("leiden", lambda: sc.tl.leiden(a, flavor="igraph", n_iterations=2, directed=False))
    step("umap", lambda: sc.tl.umap(a))
    if write == "full":
        step("write", lambda: a.write_h5ad(out))
    summary = {
        "startup_s": startup,
        "import_s": imports,
        "steps": steps,
        "n_cells": int(a.n_obs),
        "n_genes_used": int(a.n_vars),
        "n_clusters": int(a.obs["leiden"].nunique()),
    }
    Path(result).write_text(json.dumps({**summary, "end_wall": time.time()}))


def stage_worker(counts: str, out: str, result: str, profile: bool) -> None:
    """``rlae-sc run``'s command line in this process, every stage function of ``rlae_sc.pipeline`` timed (the
    outermost call only); with ``profile``, under cProfile, its top functions stored."""
    import functools
    import inspect

    startup = _startup_seconds()
    t0 = time.perf_counter()
    from rlae_sc import cli, pipeline

    imports = time.perf_counter() - t0
    stages: dict[str, float] = {}
    depth = [0]

    def timed(name: str, fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - t

        return call

    wrapped = [
        name
        for name, fn in vars(pipeline).items()
        if name.endswith("_file") and inspect.isfunction(fn) and fn.__module__ == pipeline.__name__
    ]
    for name in wrapped:
        setattr(pipeline, name, timed(name.removesuffix("_file"), getattr(pipeline, name)))
    argv = ["run", counts, "--out", out, "--label-key", LABEL_KEY]
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    t1 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    status = cli.main(argv)
    if profiler is not None:
        profiler.disable()
    run_s = time.perf_counter() - t1
    if status:
        sys.exit(f"rlae-sc run exited with {status}")
    if not stages:
        sys.exit(f"no stage function of rlae_sc.pipeline was called (wrapped: {wrapped}); update stage_worker")
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    summary = {
        "startup_s": startup,
        "import_s": imports,
        "run_s": run_s,
        "stages": stages,
        "stage_functions": wrapped,
        "metrics_seconds": {k: v for k, v in metrics.items() if k.endswith("_seconds")},
        "n_cells": metrics.get("n_cells"),
        "n_clusters": metrics.get("n_clusters"),
    }
    if profiler is not None:
        summary["profile"] = profile_table(profiler)
    Path(result).write_text(json.dumps({**summary, "end_wall": time.time()}))


def profile_table(profiler) -> dict:
    """The top functions of a cProfile run, by cumulative and by own time."""
    import pstats

    stats = pstats.Stats(profiler)
    entries = []
    for (file, line, name), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        where = name if file == "~" else f"{_short(file)}:{line}({name})"
        entries.append({"function": where, "ncalls": ncalls, "tottime_s": tottime, "cumtime_s": cumtime})
    imports = [e["cumtime_s"] for e in entries if e["function"].endswith("(_find_and_load)")]
    return {
        "total_s": stats.total_tt,
        "imports_cumulative_s": max(imports) if imports else None,
        "by_cumulative": sorted(entries, key=lambda e: -e["cumtime_s"])[:PROFILE_TOP],
        "by_own_time": sorted(entries, key=lambda e: -e["tottime_s"])[:PROFILE_TOP],
    }


def _short(file: str) -> str:
    """A source path from its package down (``site-packages/`` and the checkout's root dropped)."""
    for marker in ("site-packages/", f"{ROOT}/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


# ------------------------------------------------------------------------------------------------- running


def rlae_command(counts: Path, out: Path) -> list[str]:
    exe = Path(sys.executable).parent / "rlae-sc"
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "rlae_sc"]
    return [*head, "run", str(counts), "--out", str(out), "--label-key", LABEL_KEY]


def scanpy_command(counts: Path, out: Path, result: Path, write: str) -> list[str]:
    return [sys.executable, __file__, "--scanpy-worker", str(counts), str(out), str(result), write]


def stage_command(counts: Path, out: Path, result: Path, profile: bool) -> list[str]:
    return [sys.executable, __file__, "--stage-worker", str(counts), str(out), str(result), str(int(profile))]


def numba_files(folder: Path) -> int:
    """Numba cache entries (index files) under ``folder``."""
    return sum(1 for _ in folder.rglob("*.nbi")) if folder.exists() else 0


def timed_run(name: str, cmd: list[str], log: Path, *, numba_cache: Path, timeout_s: float) -> dict:
    """Run ``cmd`` in a fresh process (its own session) with ``NUMBA_CACHE_DIR=numba_cache``; wall seconds
    (launch to exit), CPU seconds and peak resident memory. A failure or timeout raises :class:`RunFailed`
    naming ``name``."""
    env = {**os.environ, **CHILD_ENV, "NUMBA_CACHE_DIR": str(numba_cache)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    peak_file = log.with_name(log.name + ".maxrss")
    prefix = [str(GNU_TIME), "-f", "%M", "-o", str(peak_file)] if GNU_TIME.exists() else []
    load = record.load_average()
    cache_before = numba_files(numba_cache)
    with open(log, "w") as out:
        env["E2E_LAUNCH"] = repr(time.time())
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [*prefix, *cmd], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
        timer = threading.Timer(timeout_s, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        end_wall = time.time()
        timer.cancel()
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        why = f"killed after {timeout_s:g} s" if wall >= timeout_s else f"exit {rc}"
        raise RunFailed(f"{name} failed ({why}): {shlex.join(cmd)}\n--- last lines of {log} ---\n{tail}")
    peak_kb = int(peak_file.read_text().split()[-1]) if prefix else usage.ru_maxrss
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_gb": peak_kb * 1024 / 1e9,
        "load_1min_before": load[0],
        "numba_cache_files_before": cache_before,
        "numba_cache_files_after": numba_files(numba_cache),
        "end_wall": end_wall,
    }


class Dataset:
    """One dataset's runs: the counts, its scratch folder, the warm numba cache."""

    def __init__(self, name: str, counts: Path, work: Path, args):
        self.name, self.counts, self.args = name, counts, args
        self.work = work / name
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        self.warm_cache = self.work / "numba_warm"
        self.warm_cache.mkdir()

    def run(self, tool: str, mode: str, label: str) -> dict:
        """One timed run of ``tool`` (``rlae``, ``scanpy`` or ``stages``/``profile``) in ``mode``."""
        tag = f"{self.name}: {tool} {mode} {label}"
        out = self.work / f"{tool}_{mode}_{label}"
        result = self.work / f"{tool}_{mode}_{label}.json"
        log = self.work / f"{tool}_{mode}_{label}.log"
        if tool == "rlae":
            cmd = rlae_command(self.counts, out)
        elif tool == "scanpy":
            cmd = scanpy_command(self.counts, out.with_suffix(".h5ad"), result, self.args.scanpy_write)
        else:
            cmd = stage_command(self.counts, out, result, tool == "profile")
        cold = Path(tempfile.mkdtemp(prefix="numba_cold_", dir=self.work)) if mode == "cold" else None
        try:
            entry = timed_run(tag, cmd, log, numba_cache=cold or self.warm_cache, timeout_s=self.args.timeout)
        finally:
            if cold is not None:
                shutil.rmtree(cold, ignore_errors=True)
        entry = {"tool": tool, "mode": mode, "label": label, **entry}
        if result.exists():
            inner = json.loads(result.read_text())
            entry["exit_s"] = entry["end_wall"] - inner.pop("end_wall")
            entry["inside"] = inner
        if tool == "rlae":
            metrics = json.loads((out / "metrics.json").read_text())
            entry["inside"] = {
                "metrics_seconds": {k: v for k, v in metrics.items() if k.endswith("_seconds")},
                "n_cells": metrics.get("n_cells"),
                "n_clusters": metrics.get("n_clusters"),
            }
        entry.pop("end_wall")
        shutil.rmtree(out, ignore_errors=True)
        out.with_suffix(".h5ad").unlink(missing_ok=True)
        brief = {k: entry[k] for k in ("wall_s", "cpu_s", "peak_rss_gb", "load_1min_before")}
        print(f"{tag}: {json.dumps(brief)}", flush=True)
        return entry


def measure(name: str, counts: Path, description: str, args) -> dict:
    """Every run of one dataset, in the order the module docstring gives."""
    import anndata as ad

    shape = ad.read_h5ad(counts, backed="r").shape
    d = Dataset(name, counts, args.work, args)
    started = record.now()
    warmup = [d.run(tool, "warm", "warmup") for tool in TOOLS]
    runs = []
    for r in range(args.repeats):
        order = TOOLS if r % 2 == 0 else TOOLS[::-1]
        for mode in args.modes:
            for tool in order:
                runs.append({**d.run(tool, mode, f"r{r + 1}"), "repeat": r + 1})
    stages = [d.run("stages", "warm", f"r{r + 1}") for r in range(args.repeats)]
    profile = d.run("profile", "warm", "p1") if args.profile else None
    shutil.rmtree(d.warm_cache, ignore_errors=True)
    return {
        "counts": str(counts),
        "description": description,
        "n_cells_in": shape[0],
        "n_genes_in": shape[1],
        "started": started,
        "finished": record.now(),
        "commands": {
            "rlae": shlex.join(rlae_command(counts, Path("OUT"))),
            "scanpy": shlex.join(scanpy_command(counts, Path("OUT.h5ad"), Path("RESULT.json"), args.scanpy_write)),
            "stages": shlex.join(stage_command(counts, Path("OUT"), Path("RESULT.json"), False)),
        },
        "warmup": warmup,
        "runs": runs,
        "summary": summarize(runs),
        "stages": {"runs": stages, "median": stage_medians(stages)},
        "profile": profile,
    }


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict]) -> dict:
    """Per mode: each tool's median wall time (and all of them), peak memory, and rlae / scanpy."""
    out = {}
    for mode in MODES:
        here = {tool: [r for r in runs if r["mode"] == mode and r["tool"] == tool] for tool in TOOLS}
        if not all(here.values()):
            continue
        entry = {
            tool: {
                "wall_s": _median([r["wall_s"] for r in rs]),
                "wall_s_all": [r["wall_s"] for r in rs],
                "cpu_s": _median([r["cpu_s"] for r in rs]),
                "peak_rss_gb": max(r["peak_rss_gb"] for r in rs),
            }
            for tool, rs in here.items()
        }
        entry["ratio_rlae_over_scanpy"] = entry["rlae"]["wall_s"] / entry["scanpy"]["wall_s"]
        steps = [r["inside"]["steps"] for r in here["scanpy"] if "inside" in r]
        entry["scanpy"]["steps_median_s"] = {k: _median([s.get(k) for s in steps]) for k in (steps[0] if steps else {})}
        out[mode] = entry
    return out


def stage_medians(stages: list[dict]) -> dict:
    """Median seconds of each part of the in-process ``rlae-sc run``: start, imports, stages, rest, exit."""
    if not stages:
        return {}
    parts: dict[str, list[float]] = {}
    for s in stages:
        inner = s["inside"]
        split = {"interpreter start": inner["startup_s"], "imports (rlae_sc.cli, rlae_sc.pipeline)": inner["import_s"]}
        split.update(inner["stages"])
        split["rest of the run (outside the stage functions)"] = inner["run_s"] - sum(inner["stages"].values())
        split["exit (after the run, until the process ended)"] = s.get("exit_s")
        split["process wall time"] = s["wall_s"]
        for key, value in split.items():
            parts.setdefault(key, []).append(value)
        for key, value in inner["metrics_seconds"].items():
            parts.setdefault(f"metrics.json {key}", []).append(value)
    return {key: _median(values) for key, values in parts.items()}


# ---------------------------------------------------------------------------------------------------- data


def kang_counts(n: int | None, work: Path) -> tuple[Path, str]:
    """kang_se_12261, or ``n`` of its cells drawn without replacement (seed 0) for a smoke check."""
    if not KANG.exists():
        raise SystemExit(f"{KANG} is missing (see ../shared/data/README.md)")
    if n is None:
        return KANG, "kang_se_12261 (../shared/data), as it is"
    import anndata as ad
    import numpy as np

    path = work / f"kang_{n}.h5ad"
    if not path.exists():
        a = ad.read_h5ad(KANG)
        keep = np.sort(np.random.default_rng(0).choice(a.n_obs, n, replace=False))
        a[keep].copy().write_h5ad(path)
    return path, f"kang_se_12261, {n:,} cells drawn without replacement (seed 0)"


def resampled_counts(n: int, folder: Path) -> tuple[Path, str]:
    """soupx resampled to ``n`` cells, two same-label seed cells pooled per new cell (atlas.py's counts)."""
    from atlas import counts_file

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    path = counts_file(n, folder)
    print(f"resampled counts {path} ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return path, (
        f"soupx_pbmc4k_2170 resampled to {n:,} cells, each pooling the binomially thinned counts of two seed cells "
        "with the same label (atlas.counts_file / bench.resample(mix_key='cell_type'))"
    )


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["kang", "resampled"], choices=["kang", "resampled"])
    ap.add_argument("--cells", type=int, default=100_000, help="cells of the resampled set")
    ap.add_argument("--kang-cells", type=int, default=None, help="draw this many of kang's cells (smoke checks)")
    ap.add_argument("--repeats", type=int, default=None, help="rounds of timed runs, median reported (default 2)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the cProfile run")
    ap.add_argument("--scanpy-write", choices=["full", "none"], default="full", help="scanpy's last step")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run is killed (and fails)")
    ap.add_argument("--threads", type=int, default=None, help="set OMP/MKL/OpenBLAS/numba threads in every run")
    ap.add_argument("--smoke", action="store_true", help="tiny sets; written to benchmarks/data/end_to_end_smoke")
    ap.add_argument("--out", type=Path, default=None, help="folder of end_to_end.json/.md (default: here)")
    ap.add_argument("--work", type=Path, default=HERE / "data" / "end_to_end", help="scratch (git-ignored)")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite end_to_end.md from end_to_end.json")
    ap.add_argument("--scanpy-worker", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--stage-worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scanpy_worker:
        scanpy_worker(*args.scanpy_worker)
        return
    if args.stage_worker:
        counts, out, result, profile = args.stage_worker
        stage_worker(counts, out, result, profile == "1")
        return
    if args.smoke:
        args.cells, args.kang_cells = 2000, args.kang_cells or 1500
        args.repeats = args.repeats or 1
        args.out = args.out or HERE / "data" / "end_to_end_smoke"
        args.work = args.work / "smoke"
    out_dir = args.out or HERE
    json_path, md_path = out_dir / "end_to_end.json", out_dir / "end_to_end.md"
    if args.markdown_only:
        md_path.write_text(markdown(json.loads(json_path.read_text())))
        print(md_path.read_text())
        return
    args.repeats = args.repeats or 2
    if args.threads:
        CHILD_ENV.update({var: str(args.threads) for var in THREAD_VARS})
    args.work.mkdir(parents=True, exist_ok=True)
    run = record.header(PACKAGES)
    run["thread_environment"] = {
        var: ({**os.environ, **CHILD_ENV}).get(var) for var in (*THREAD_VARS, "OMP_WAIT_POLICY")
    }
    run.update(smoke=args.smoke, repeats=args.repeats, modes=args.modes, scanpy_write=args.scanpy_write)
    datasets = {}
    for which in args.datasets:
        if which == "kang":
            counts, description = kang_counts(args.kang_cells, args.work)
            name = "kang" if args.kang_cells is None else f"kang_{args.kang_cells}"
        else:
            counts, description = resampled_counts(args.cells, args.work if args.smoke else HERE / "data")
            name = f"resampled_{args.cells}"
        datasets[name] = measure(name, counts, description, args)
        datasets[name]["run"] = {"started": run["started"], "commit": run["git"]["commit"], "command": run["command"]}
    record.finish(run)
    previous = json.loads(json_path.read_text()) if json_path.exists() else {}
    kept = {k: v for k, v in previous.get("datasets", {}).items() if k not in datasets}
    result = record.clean({"benchmark": "end_to_end", "issue": 25, "run": run, "datasets": {**kept, **datasets}})
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    md_path.write_text(text)
    print(text)
    print(f"wrote {json_path} and {md_path}")


# -------------------------------------------------------------------------------------------------- tables


def _s(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(result: dict) -> str:
    run = result["run"]
    lines = [
        "# End to end: rlae-sc against scanpy's standard pipeline, cold and warm (issue 25)",
        "",
        "Written by `benchmarks/end_to_end.py` from `end_to_end.json`"
        + (" (**--smoke**: tiny sets, not a result)" if run.get("smoke") else "")
        + ".",
        "",
        *record.markdown_header(run),
        "",
        "Each run is a fresh process; its wall time runs from launch to exit (interpreter start, imports, reading "
        "the counts, every step, writing the results). **rlae-sc**: `rlae-sc run COUNTS --out DIR --label-key "
        "cell_type` (defaults: preprocess, train, directions with the exact-PCA check, cluster, report). "
        "**scanpy**: read_h5ad, normalize_total, log1p, highly_variable_genes (2,000, subset), scale "
        "(max_value 10), pca (50), neighbors, leiden (igraph), umap"
        + (", write_h5ad" if run.get("scanpy_write") == "full" else "")
        + ". **cold**: an empty numba cache (`NUMBA_CACHE_DIR` a fresh folder) for the run, as a user's first "
        "run; **warm**: numba's cache filled for both tools by an untimed run of each first. "
        f"Rounds: {run.get('repeats')}, each with a run of each tool in each mode, the tools' order swapped each "
        "round; the median of the rounds, with each round's time in brackets.",
    ]
    for name, d in result["datasets"].items():
        lines += ["", f"## {name}: {d['n_cells_in']:,} cells x {d['n_genes_in']:,} genes", "", d["description"] + "."]
        drun = d.get("run", {})
        if drun and drun.get("started") != run.get("started"):
            lines += ["", f"From an earlier run: {drun['started']}, commit {drun['commit'][:12]}, `{drun['command']}`."]
        lines += [
            "",
            "| | rlae-sc (s) | scanpy (s) | rlae-sc / scanpy | peak RSS rlae-sc / scanpy (GB) |",
            "|---|---|---|---|---|",
        ]
        for mode, s in d["summary"].items():
            ours, theirs = s["rlae"], s["scanpy"]
            each = " (" + ", ".join(_s(v) for v in ours["wall_s_all"]) + ")"
            their_each = " (" + ", ".join(_s(v) for v in theirs["wall_s_all"]) + ")"
            lines.append(
                f"| {mode} | {_s(ours['wall_s'])}{each} | {_s(theirs['wall_s'])}{their_each} | "
                f"**{s['ratio_rlae_over_scanpy']:.2f}** | {ours['peak_rss_gb']:.2f} / {theirs['peak_rss_gb']:.2f} |"
            )
        loads = [r["load_1min_before"] for r in d["runs"]]
        if loads:
            lines += ["", f"1-minute load average before the timed runs: {min(loads):.2f} to {max(loads):.2f}."]
        warm_steps = d["summary"].get("warm", {}).get("scanpy", {}).get("steps_median_s", {})
        if warm_steps:
            lines += [
                "",
                "scanpy's steps, warm (median s): " + ", ".join(f"{k} {_s(v, 2)}" for k, v in warm_steps.items()) + ".",
            ]
        med = d["stages"]["median"]
        if med:
            wall = med.get("process wall time")
            lines += [
                "",
                f"Where rlae-sc's warm run goes (median of {len(d['stages']['runs'])} processes running `rlae-sc "
                "run`'s command line in-process with the pipeline's stage functions timed; a stage's time includes "
                "the imports it triggers; metrics.json rows are rlae-sc's own sub-stage timings, inside the stages "
                "above them):",
                "",
                "| part | seconds | share of the process |",
                "|---|---|---|",
            ]
            for key, value in med.items():
                share = "" if (value is None or not wall or key == "process wall time") else f"{value / wall:.0%}"
                label = f"**{key}**" if key == "process wall time" else key
                lines.append(f"| {label} | {_s(value, 2)} | {share} |")
        prof = d.get("profile")
        if prof and "profile" in prof.get("inside", {}):
            p = prof["inside"]["profile"]
            lines += [
                "",
                f"One more warm run under cProfile ({prof['wall_s']:.1f} s with the profiler's overhead; "
                f"{_s(p.get('imports_cumulative_s'))} s of it inside imports); the top functions by cumulative time "
                "(the top 40, and by own time, are in the JSON):",
                "",
                "| function | calls | own (s) | cumulative (s) |",
                "|---|---|---|---|",
            ]
            for e in p["by_cumulative"][:20]:
                lines.append(f"| `{e['function']}` | {e['ncalls']} | {e['tottime_s']:.2f} | {e['cumtime_s']:.2f} |")
        lines += ["", "Commands: " + "; ".join(f"{k}: `{v}`" for k, v in d["commands"].items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        main()
    except RunFailed as exc:
        sys.exit(f"end_to_end.py: a run failed, nothing written:\n{exc}")
