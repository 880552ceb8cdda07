"""Shared fixtures: small synthetic counts, and the real matrices in ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlae_sc.simulate import synthetic_counts

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def small_counts():
    """600 cells x 400 genes, 4 cell types, rank-5 structure, 13 MT- genes."""
    return synthetic_counts(n_cells=600, n_genes=400, n_types=4, rank=5, seed=1)


@pytest.fixture(scope="session")
def small_counts_file(small_counts, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "small.h5ad"
    small_counts.write_h5ad(path)
    return path


def shared_file(name: str) -> Path:
    """A file of ../shared/data, or skip the test with a clear reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found: real-data tests need ../shared/data beside the checkout")
    return path
