"""Benchmark: the parts of the cluster stage's neighbour step, and the search in list order against row order.

    python benchmarks/search_order.py DIRECTIONS_H5AD [--record benchmarks/search_order.json]

On the embedding of a finished run (``obsm/X_rlae`` of its ``directions.h5ad``, read block by block as the stage
reads it), times building the IVF index (training its coarse quantiser, adding the cells), writing it and reading it
back, the search of every cell for its 14 nearest other cells as :func:`rlae_sc.neighbors.knn` does it (the cells
of each inverted list together), the same search with the cells taken in row order (how the library searched
before), and the graph (:func:`rlae_sc.fuzzy_graph.umap_graph`); and checks that both orders give the same
neighbours and distances to the bit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import record  # noqa: E402

from rlae_sc import neighbors  # noqa: E402
from rlae_sc.embedding_rows import EmbeddingRows  # noqa: E402
from rlae_sc.fuzzy_graph import umap_graph  # noqa: E402

K = 15  # the cluster stage's default n_neighbors


def row_order_knn(index, rows: EmbeddingRows, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rlae_sc.neighbors.knn`'s results with the cells searched in row order, read from the embedding."""
    import faiss

    index.make_direct_map()
    n = len(rows)
    dist = np.empty((n, k - 1), dtype=np.float32)
    idx = np.empty((n, k - 1), dtype=np.int32)
    for start, block in rows.blocks(neighbors.SEARCH_BLOCK):
        m = len(block)
        found = neighbors.search(index, block, k)[1]
        is_self = found == np.arange(start, start + m)[:, None]
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k - 1)
        keep = np.ones((m, k), dtype=bool)
        keep[np.arange(m), drop] = False
        others = found[keep].reshape(m, k - 1)
        diff = index.reconstruct_batch(others.ravel()).reshape(m, k - 1, -1).astype(np.float64) - block[:, None, :]
        d = np.sqrt(np.einsum("ikd,ikd->ik", diff, diff))
        order = np.argsort(d, axis=1, kind="stable")
        dist[start : start + m] = np.take_along_axis(d, order, axis=1)
        idx[start : start + m] = np.take_along_axis(others, order, axis=1)
    index.set_direct_map_type(faiss.DirectMap.NoMap)
    return dist, idx


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directions", type=Path, help="a directions.h5ad with obsm/X_rlae")
    parser.add_argument("--record", type=Path, default=HERE / "search_order.json")
    args = parser.parse_args()
    header = record.header(["numpy", "faiss-cpu", "numba"])
    seconds = {}
    with h5py.File(args.directions, "r") as f, tempfile.TemporaryDirectory(dir=args.directions.parent) as tmp:
        rows = EmbeddingRows(f["obsm/X_rlae"])
        index, seconds["build_index"] = timed(lambda: neighbors.build_index(rows, seed=0))
        path = Path(tmp) / "index.faiss"
        sha = neighbors.save_index(index, path)
        index, seconds["write_and_read_back"] = timed(lambda: neighbors.load_index(path, sha256=sha))
        (dist, idx), seconds["search_list_order"] = timed(lambda: neighbors.knn(index, K))
        (dist_rows, idx_rows), seconds["search_row_order"] = timed(lambda: row_order_knn(index, rows, K))
        _, seconds["umap_graph"] = timed(lambda: umap_graph(dist.copy(), idx.copy()))
        n, d = rows.shape
    result = {
        "benchmark": "search_order",
        "run": record.finish(header),
        "n_cells": n,
        "n_dims": d,
        "n_lists": int(index.nlist),
        "nprobe": int(index.nprobe),
        "seconds": seconds,
        "same_neighbours": bool(np.array_equal(idx, idx_rows)),
        "same_distances": bool(np.array_equal(dist, dist_rows)),
        "speedup": seconds["search_row_order"] / seconds["search_list_order"],
    }
    args.record.write_text(json.dumps(record.clean(result), indent=1) + "\n")
    print(f"{'part':<22}{'seconds':>10}")
    for part, s in seconds.items():
        print(f"{part:<22}{s:>10.1f}")
    print(f"same neighbours {result['same_neighbours']}, same distances {result['same_distances']}")


if __name__ == "__main__":
    main()
