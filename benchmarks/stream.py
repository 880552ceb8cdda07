"""Benchmark: the streaming pipeline from a counts .h5ad on disk, with peak memory per stage.

    python benchmarks/stream.py [--cells 1000000] [--compare-cells 100000] [--dense-check] [--seed-data COUNTS.h5ad]

1. Writes a counts .h5ad of ``--cells`` cells (CSR, float32) block by block,
   never holding it whole: cells of a real count matrix (soupx_pbmc4k_2170 by
   default) drawn with replacement and binomially thinned, as in bench.py.
2. Runs the pipeline's stages on it as a user would, each in its own process
   (``/usr/bin/time`` gives wall time and peak resident memory):
   ``rlae-sc preprocess --streaming``, ``train``, ``directions`` and
   ``embed --streaming`` (the cells embedded again as new data).
3. Reads the accuracy of the directions against exact PCA (``train --exact-check``: float64 scatter
   matrix of the preprocessed file, scipy eigh) from the directions stage.
4. With ``--dense-check``, compares the largest run's directions with the exact eigenvectors of ``C``
   computed by the dense path (blocks densified, float64 BLAS), as the sparse products must match it.
5. With ``--compare-cells`` (default 100,000), also runs the in-memory
   stages on a file of that size and compares both modes' directions.

Writes streaming.md and streaming.json here; scratch files go to benchmarks/data/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import record  # noqa: E402
from bench import DEFAULT_SEED, resample  # noqa: E402

PACKAGES = ("rlae-sc", "numpy", "scipy", "torch", "anndata", "h5py")


def write_counts(seed_counts, n_cells: int, path: Path, *, block: int = 50_000, mix_key: str | None = None) -> None:
    """A CSR counts matrix of ``n_cells`` resampled cells (with the seed cells' ``obs`` columns, labels
    included; ``mix_key``: see :func:`bench.resample`), written ``block`` cells at a time: an ``.h5ad`` file, or an
    anndata zarr store (format 2, ``data`` and ``indices`` in chunks of 2^20 values compressed by Blosc's zstd
    with bit shuffling) when ``path`` ends in ``.zarr``."""
    import pandas as pd
    from anndata.io import write_elem

    n_genes = seed_counts.n_vars
    attrs = {"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, n_genes)}
    root = _zarr_store(path, seed_counts.var[[]]) if path.suffix == ".zarr" else _h5ad_file(path, seed_counts.var[[]])
    try:
        g = root.create_group("X")
        g.attrs.update(attrs)
        data, indices = (_growing(g, name, dtype) for name, dtype in (("data", "float32"), ("indices", "int32")))
        indptr, obs, nnz = [np.zeros(1, dtype=np.int64)], [], 0
        for i, start in enumerate(range(0, n_cells, block)):
            cells = resample(seed_counts, min(block, n_cells - start), seed=i, mix_key=mix_key)
            obs.append(cells.obs)
            X = cells.X
            for array, values in ((data, X.data), (indices, X.indices)):
                array.resize((nnz + X.nnz,))
                array[nnz:] = values
            indptr.append(X.indptr[1:].astype(np.int64) + nnz)
            nnz += X.nnz
        offsets, indptr = _growing(g, "indptr", "int64"), np.concatenate(indptr)
        offsets.resize((len(indptr),))
        offsets[:] = indptr
        obs = pd.concat(obs)
        obs.index = [f"cell{i:08d}" for i in range(n_cells)]
        write_elem(root, "obs", obs)
    finally:
        if hasattr(root, "close"):
            root.close()


def _h5ad_file(path: Path, var):
    """An ``.h5ad`` file holding ``var`` (and no ``X`` or ``obs`` yet), open for writing (h5py)."""
    import anndata as ad
    import h5py
    import pandas as pd

    ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(0).astype(str)), var=var.copy()).write_h5ad(path)
    f = h5py.File(path, "a")
    for key in ("obs", "X"):
        if key in f:
            del f[key]
    return f


def _zarr_store(path: Path, var):
    """A zarr store (format 2) with anndata's root attributes and ``var``, open for writing."""
    import zarr
    from anndata.io import write_elem

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    write_elem(root, "var", var.copy())
    return root


def _growing(group, name: str, dtype: str):
    """An empty one-dimensional array of ``group`` that grows by ``resize``: an h5py dataset (chunks of 2^20
    values, uncompressed) or a zarr array (chunks of 2^20 values, Blosc zstd level 3 with bit shuffling)."""
    if hasattr(group, "file"):
        return group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1 << 20,))
    import numcodecs

    blosc = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
    return group.create_array(name, shape=(0,), dtype=dtype, chunks=(1 << 20,), compressors=blosc)


def stage(name: str, *args) -> dict:
    """Run ``rlae-sc ARGS`` under /usr/bin/time; returns wall seconds and peak RSS (GB)."""
    cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "rlae_sc", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    seconds, kb = proc.stderr.strip().splitlines()[-1].split()
    row = {"stage": name, "seconds": float(seconds), "peak_rss_gb": int(kb) / 1024**2}
    print(json.dumps(row), flush=True)
    return row


def run_stages(counts: Path, out: Path, *, streaming: bool, k: int) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    flag = ["--streaming"] if streaming else []
    pre, model, dirs = out / "preprocessed.h5ad", out / "model.npz", out / "directions.h5ad"
    return [
        stage("preprocess", "preprocess", counts, "--out", pre, *flag),
        stage("train", "train", pre, "--out", model, "--n-components", k, "--trace-metrics", "false", "--exact-check"),
        stage("directions", "directions", pre, model, "--out", dirs),
        stage("embed", "embed", counts, "--model", model, "--out", out / "embedded.h5ad", *flag),
    ]


def metrics_of(out: Path) -> dict:
    import h5py
    from anndata.io import read_elem

    with h5py.File(out / "directions.h5ad", "r") as f:
        return read_elem(f["uns/rlae_metrics"])


def dense_path_check(out: Path) -> dict:
    """The trained directions in ``out`` against the exact eigenvectors of ``C`` built by the dense path: every
    block of the preprocessed file densified and multiplied by BLAS in float64 (no sparse products)."""
    import anndata as ad

    from rlae_sc import products
    from rlae_sc.lae import theory
    from rlae_sc.model import load_model
    from rlae_sc.preprocess import trained_rows

    products.SPARSE_DENSITY = 0.0
    t0 = time.perf_counter()
    C = products.scatter_matrix(trained_rows(ad.read_h5ad(out / "preprocessed.h5ad", backed="r")), precision="float64")
    _, U = theory.exact_pca(C, 10)
    cos = theory.alignment(load_model(out / "model.npz").directions[:, :10], U)
    return {"min_abs_cos_top10": float(cos.min()), "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed-data", type=Path, default=DEFAULT_SEED)
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--compare-cells", type=int, default=100_000, help="0 to skip the in-memory comparison")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument(
        "--dense-check", action="store_true", help="also compare the largest run's directions with the dense path's"
    )
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--work", type=Path, default=HERE / "data")
    args = ap.parse_args()

    from rlae_sc.io import read
    from rlae_sc.lae import theory
    from rlae_sc.model import load_model

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    run_header = record.header(PACKAGES)
    seed_counts = read(args.seed_data)
    report: dict = {
        "benchmark": "streaming",
        "run": run_header,
        "k": args.k,
        "seed_data": args.seed_data.name,
        "runs": [],
    }
    sizes = [(args.cells, True)]
    if args.compare_cells:
        sizes = [(args.compare_cells, True), (args.compare_cells, False), *sizes]
    files: dict[int, Path] = {}
    for n, streaming in sizes:
        if n not in files:
            files[n] = args.work / f"counts_{n}.h5ad"
            t0 = time.perf_counter()
            write_counts(seed_counts, n, files[n])
            size_gb = files[n].stat().st_size / 1024**3
            print(f"{n:,} cells written ({size_gb:.1f} GB) in {time.perf_counter() - t0:.0f} s", flush=True)
        out = args.work / f"{'stream' if streaming else 'memory'}_{n}"
        rows = run_stages(files[n], out, streaming=streaming, k=args.k)
        run = {
            "n_cells": n,
            "mode": "streaming" if streaming else "in memory",
            "file_gb": files[n].stat().st_size / 1024**3,
            "stages": rows,
            "metrics": metrics_of(out),
        }
        report["runs"].append(run)
        print(json.dumps(record.clean({k: run[k] for k in ("n_cells", "mode", "metrics")})), flush=True)
    if args.dense_check:
        report["dense_path"] = dense_path_check(args.work / f"stream_{args.cells}")
        print(json.dumps(report["dense_path"]), flush=True)
    if args.compare_cells:
        a, b = (load_model(args.work / f"{m}_{args.compare_cells}" / "model.npz") for m in ("stream", "memory"))
        cos = theory.alignment(a.directions, b.directions)
        report["streaming_vs_in_memory"] = {
            "n_cells": args.compare_cells,
            "min_abs_cos_top10": float(cos[:10].min()),
            "subspace_distance": theory.subspace_distance(a.directions, b.directions),
        }
    record.finish(run_header)
    write_report(record.clean(report), args.out)


def write_report(report: dict, out: Path) -> None:
    lines = [
        "# Streaming benchmark",
        "",
        *record.markdown_header(report["run"]),
        "",
        f"Counts resampled from `{report['seed_data']}` (binomial thinning), written as a CSR .h5ad on disk; "
        f"k = {report['k']}; each stage a separate `rlae-sc` process timed by `/usr/bin/time` (wall seconds, "
        "peak resident memory). Accuracy: the directions stage's comparison with exact PCA (float64 scatter "
        "matrix of the preprocessed file, scipy eigh).",
        "",
        "| cells | mode | file (GB) | stage | seconds | peak RSS (GB) |",
        "|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        for row in run["stages"]:
            lines.append(
                f"| {run['n_cells']:,} | {run['mode']} | {run['file_gb']:.1f} | {row['stage']} | "
                f"{row['seconds']:.0f} | {row['peak_rss_gb']:.2f} |"
            )
    lines += [
        "",
        "| cells | mode | min abs cos top 10 | subspace distance | max eig. rel. err. top 10 |",
        "|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        m = run["metrics"]
        lines.append(
            f"| {run['n_cells']:,} | {run['mode']} | 1 - {1 - m['min_abs_cos_top10']:.1e} | "
            f"{m['subspace_distance']:.2e} | {m['eigenvalue_max_rel_err_top10']:.2e} |"
        )
    if "dense_path" in report:
        lines += [
            "",
            f"Directions of the {report['runs'][-1]['n_cells']:,}-cell run against the exact eigenvectors of `C` "
            "built by the dense path (every block densified, float64 BLAS products): min |cos| top 10 "
            f"1 - {1 - report['dense_path']['min_abs_cos_top10']:.1e}.",
        ]
    if "streaming_vs_in_memory" in report:
        c = report["streaming_vs_in_memory"]
        lines += [
            "",
            f"Streaming against in-memory directions at {c['n_cells']:,} cells: min |cos| top 10 "
            f"1 - {1 - c['min_abs_cos_top10']:.1e}, subspace distance {c['subspace_distance']:.2e}.",
        ]
    (out / "streaming.md").write_text("\n".join(lines) + "\n")
    (out / "streaming.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
