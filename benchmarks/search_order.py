"""Benchmark: the parts of the cluster stage's neighbour step, and the search in list order against row order.

    python benchmarks/search_order.py DIRECTIONS_H5AD [--record benchmarks/search_order.json]

On the embedding of a finished run (``obsm/X_rlae`` of its ``directions.h5ad``, read block by block as the stage
reads it), times building the IVF index (training its coarse quantiser, adding the cells), writing it and reading it
back, the search of every cell for its 14 nearest other cells as :func:`rlae_sc.neighbors.knn` does it (the cells
of each inverted list together), the same search with the cells taken in row order (how the library searched
before), both on the same worker threads (:func:`rlae_sc.neighbors.nearest_others`), and the graph
(:func:`rlae_sc.fuzzy_graph.umap_graph`); and checks that both orders give the same neighbours and distances to the
bit.
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


def row_order_blocks(rows: EmbeddingRows):
    """The cells in row order, :data:`rlae_sc.neighbors.SEARCH_BLOCK` at a time, read from the embedding: the query
    blocks of :func:`rlae_sc.neighbors.nearest_others` as the library searched before."""
    for start, block in rows.blocks(neighbors.SEARCH_BLOCK):
        yield np.arange(start, start + len(block)), block


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
        (dist_rows, idx_rows), seconds["search_row_order"] = timed(
            lambda: neighbors.nearest_others(index, K, row_order_blocks(rows))
        )
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
