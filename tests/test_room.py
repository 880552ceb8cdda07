"""Room on disk and in memory: a stage that cannot fit its output (on disk) or its work (the cluster stage, in
memory) stops before it starts, with the file, the need and the fix."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest

from rlae_sc.errors import InputError
from rlae_sc.room import available_memory, check_disk, check_memory, cluster_bytes, csr_bytes, free_bytes


def test_check_disk_against_the_real_free_space(tmp_path):
    free = free_bytes(tmp_path / "not" / "yet" / "made.h5ad")  # the nearest existing folder's disk
    assert abs(free - shutil.disk_usage(tmp_path).free) < 1e8  # the same disk, give or take other writers
    check_disk(tmp_path / "small.h5ad", 1e6, what="a small file")
    with pytest.raises(InputError) as err:
        check_disk(tmp_path / "huge.h5ad", 2.0 * free, what="a huge file")
    message = str(err.value)
    assert str(tmp_path / "huge.h5ad") in message and "GB free" in message and "--out" in message


@pytest.mark.parametrize("streaming", [True, False])
def test_a_full_disk_stops_preprocessing_before_it_writes(tmp_path, monkeypatch, streaming):
    from rlae_sc.pipeline import preprocess_file
    from rlae_sc.simulate import synthetic_counts

    counts = tmp_path / "counts.h5ad"
    synthetic_counts(n_cells=600, n_genes=300, n_types=3, rank=4, seed=0).write_h5ad(counts)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("rlae_sc.room.shutil.disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "pre.h5ad"
    with pytest.raises(InputError, match="GB free"):
        preprocess_file(counts, out, streaming=streaming, n_top_genes=100, min_genes=10)
    assert not out.exists() and not list(tmp_path.glob("pre.h5ad*"))  # nothing half-written


def test_the_recipe_counts_the_values_the_matrix_will_hold(tmp_path):
    """The disk check's size is exact: the stored values counted while fitting equal those written."""
    import h5py

    from rlae_sc.pipeline import preprocess_file
    from rlae_sc.simulate import synthetic_counts

    counts = tmp_path / "counts.h5ad"
    synthetic_counts(n_cells=800, n_genes=300, n_types=3, rank=4, seed=1).write_h5ad(counts)
    stats = preprocess_file(counts, tmp_path / "pre.h5ad", streaming=True, n_top_genes=100, min_genes=10)
    with h5py.File(tmp_path / "pre.h5ad", "r") as f:
        n = f["X/indptr"].shape[0] - 1
        written = f["X/data"].nbytes + f["X/indices"].nbytes + f["X/indptr"].nbytes
        assert stats["n_values"] == f["X/data"].shape[0] == f["X/indptr"][-1]
    assert csr_bytes(n, stats["n_values"]) == written


def test_check_memory_against_the_memory_available():
    available = available_memory()
    assert available is not None and 0 < available <= mem_total()  # this machine runs Linux
    check_memory("in.h5ad", 1e6, what="a little work", fix="none needed")
    with pytest.raises(InputError) as err:
        check_memory("in.h5ad", 2.0 * available, what="a lot of work", fix="Use a larger machine")
    assert "in.h5ad" in str(err.value) and "GB is available" in str(err.value)


def mem_total() -> int:
    """``MemTotal`` of /proc/meminfo (bytes)."""
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))


def test_the_cluster_stage_stops_before_work_when_memory_will_not_suffice(tmp_path, monkeypatch):
    from rlae_sc.pipeline import cluster_file, directions_file, preprocess_file, train_file
    from rlae_sc.simulate import synthetic_counts

    counts, pre, model, directions = (tmp_path / f for f in ("c.h5ad", "p.h5ad", "m.npz", "d.h5ad"))
    synthetic_counts(n_cells=600, n_genes=300, n_types=3, rank=4, seed=0).write_h5ad(counts)
    preprocess_file(counts, pre, n_top_genes=100, min_genes=10)
    train_file(pre, model, n_components=5)
    directions_file(pre, model, directions)
    need = cluster_bytes(600, 5, 15)
    monkeypatch.setattr("rlae_sc.room.available_memory", lambda: int(need))  # less than need with headroom
    out = tmp_path / "embedding.h5ad"
    with pytest.raises(InputError, match="clustering 600 cells needs about .* GB of memory"):
        cluster_file(directions, out, tmp_path / "metrics.json")
    assert not out.exists() and not (tmp_path / "metrics.json").exists()
    monkeypatch.setattr("rlae_sc.room.available_memory", lambda: int(2 * need))
    cluster_file(directions, out, tmp_path / "metrics.json")
    assert out.exists()
