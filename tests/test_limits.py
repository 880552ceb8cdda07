"""Limits that hold before any work: each bad parameter ends in one named line, exit code 2, nothing written."""

from __future__ import annotations

import pytest

from rlae_sc.params import ClusterParams, PreprocessParams, TrainParams
from rlae_sc.simulate import synthetic_counts
from tests.conftest import rlae_cli


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    """300 cells x 400 genes."""
    path = tmp_path_factory.mktemp("limits") / "small.h5ad"
    synthetic_counts(n_cells=300, n_genes=400, n_types=3, rank=4, seed=2).write_h5ad(path)
    return path


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--n-components=5000", "too small for n_components=5000"),
        ("--n-components=0", "n_components must be at least 1, got 0"),
        ("--n-components=-3", "n_components must be at least 1, got -3"),
        ("--n-components=abc", "n_components must be int or auto, got 'abc'"),
        ("--lambda-frac=1.5", "lambda_frac must be below 1, got 1.5"),
        ("--max-pct-mito=150", "max_pct_mito must be at most 100"),
        ("--resolution=0", "resolution must be above 0"),
    ],
)
def test_bad_parameters_stop_in_one_line_and_leave_nothing(counts, tmp_path, option, message):
    out = tmp_path / "run"
    result = rlae_cli("run", counts, "--out", out, "--min-genes", "10", option, check=False)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_components_close_to_the_number_of_cells_train(counts, tmp_path):
    """k + oversample above the cells' rank: the oversampled units are cut to what the data allow."""
    out = tmp_path / "run"
    rlae_cli("run", counts, "--out", out, "--min-genes", "10", "--n-components", "280", "--trace-metrics", "false")
    assert (out / "report.html").exists()


def test_every_number_field_has_its_bounds_checked():
    for cls, name, bad in (
        (PreprocessParams, "n_top_genes", 1),
        (TrainParams, "tol", 0.0),
        (TrainParams, "noise_quantile", 1.0),
        (ClusterParams, "n_neighbors", 1),
    ):
        with pytest.raises(Exception, match=f"{name} must be"):
            cls.of({name: bad})
