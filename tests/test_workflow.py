"""The Snakemake workflow: lint, schema validation, and a whole run on a tiny dataset."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import yaml

from rlae_sc.report import FIGURES, MAPPING_FIGURES
from tests.conftest import snakemake, workflow_dir

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.fixture(scope="module")
def workdir(small_counts, tmp_path_factory):
    """The ``.test`` configuration and its data, not run."""
    return workflow_dir(small_counts, tmp_path_factory.mktemp("wf"))


@pytest.fixture(scope="module")
def completed(workflow_run):
    """The whole chain run once, uninterrupted (conftest's ``workflow_run``, shared with tests/test_slurm.py)."""
    return workflow_run[0]


def test_lint_is_clean():
    res = snakemake("--lint")
    assert res.returncode == 0, res.stdout + res.stderr


def test_whole_chain_runs_and_logs_every_rule(completed):
    workdir = completed
    out = workdir / "results" / "tiny"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["k"] == 5 and metrics["min_abs_cos_top10"] >= 0.999
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
    for rule in ["preprocess", "train", "directions", "cluster", "report"]:
        assert (workdir / "logs" / "tiny" / f"{rule}.log").exists(), rule
    streamed = ad.read_h5ad(workdir / "results" / "tiny_streamed" / "embedding.h5ad")
    np.testing.assert_array_equal(streamed.obsm["X_rlae"], ad.read_h5ad(out / "embedding.h5ad").obsm["X_rlae"])
    mapping = json.loads((workdir / "results" / "mapping" / "tiny_again" / "mapping.json").read_text())
    assert mapping["accuracy"] >= 0.9  # the reference's own cells, mapped back
    # nothing left to do on a rerun
    again = snakemake("--cores", "1", "--directory", str(workdir), "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_run_completes_on_rerun_with_the_same_results(completed, tmp_path, sig):
    workdir = completed

    shutil.copytree(workdir / "config", tmp_path / "config")
    shutil.copytree(workdir / "data", tmp_path / "data")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    # the chain up to the directions, where the kill below falls (at the first model; the stages after it only
    # read finished files, and the uninterrupted run and tests/test_slurm.py cover them); the same thread count
    # as the uninterrupted run: results are bit-identical only for a fixed thread count
    targets = [f"results/{dataset}/directions.h5ad" for dataset in ("tiny", "tiny_streamed")]
    proc = subprocess.Popen(
        [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--cores", "2", "--directory", str(tmp_path), *targets],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while not (tmp_path / "results" / "tiny" / "model.npz").exists() and time.time() < deadline:
        time.sleep(0.2)
    running = proc.poll() is None
    proc.send_signal(sig)  # as `kill`, a cluster's time limit or `kill -9` would
    proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # and whatever of its job is still running
    except ProcessLookupError:
        pass
    # the kill landed mid-run: after the first model, on a run still going, with targets still to make
    assert (tmp_path / "results" / "tiny" / "model.npz").exists(), "no model within 120 s: killed before it"
    assert running and proc.returncode != 0, f"the run had ended (exit code {proc.returncode}) before the kill"
    unmade = [target for target in targets if not (tmp_path / target).exists()]
    assert unmade, "every target was made before the kill: the rerun below would have nothing to do"
    assert not list((tmp_path / "results").rglob("*.tmp*")), "a half-written file was left behind"
    res = snakemake("--cores", "2", "--directory", str(tmp_path), *targets)
    assert res.returncode == 0, res.stderr[-3000:]
    assert all((tmp_path / target).exists() for target in unmade)
    for dataset in ("tiny", "tiny_streamed"):
        a = ad.read_h5ad(tmp_path / "results" / dataset / "directions.h5ad")
        b = ad.read_h5ad(workdir / "results" / dataset / "directions.h5ad")
        np.testing.assert_array_equal(a.obsm["X_rlae"], b.obsm["X_rlae"])
        np.testing.assert_array_equal(a.varm["rlae_directions"], b.varm["rlae_directions"])


def test_snakemake_report_builds(completed):
    workdir = completed
    res = snakemake("--directory", str(workdir), "--report", str(workdir / "report.zip"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert (workdir / "report.zip").stat().st_size > 0


def test_mistyped_config_key_is_named(workdir, tmp_path):
    shutil.copytree(workdir / "config", tmp_path / "config")
    cfg = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    cfg["train"]["n_component"] = 5
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--directory", str(tmp_path))
    assert res.returncode != 0
    assert "n_component" in res.stdout + res.stderr


def test_query_naming_an_unknown_reference_is_named(workdir, tmp_path):
    shutil.copytree(workdir / "config", tmp_path / "config")
    cfg = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    cfg["queries"]["tiny_again"]["reference"] = "tinny"
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--directory", str(tmp_path))
    assert res.returncode != 0 and "names reference 'tinny'" in res.stdout + res.stderr


def test_captions_match_the_html_report():
    for name, (_, caption) in [*FIGURES.items(), *[(n, MAPPING_FIGURES[n]) for n in ("mapped_umap", "confidence")]]:
        assert (ROOT / "workflow" / "report" / f"{name}.rst").read_text().strip() == caption


def test_slurm_profile_sets_known_options():
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    res = subprocess.run([*SNAKEMAKE, "--help"], capture_output=True, text=True)
    for key in profile:
        if key not in ("executor", "default-resources", "set-resources"):
            assert f"--{key}" in res.stdout, key
    assert set(profile["set-resources"]) <= {
        "preprocess",
        "train",
        "directions",
        "cluster",
        "report",
        "map_query",
        "figures",
        "index",
        "demo_data",
    }


def test_every_rule_command_of_the_default_config_parses(tmp_path):
    """The shell commands the default config/config.yaml gives (a dry run, every option of every section spelled
    out) are accepted by rlae-sc's own parser: a boolean switch written as '--harmony false' would not be."""
    import shlex

    from rlae_sc.cli import build_parser

    shutil.copytree(ROOT / "config", tmp_path / "config")
    res = snakemake("-n", "-p", "--directory", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    commands = [line for line in res.stdout.splitlines() if "-m rlae_sc " in line]
    assert len(commands) >= 10, res.stdout[-3000:]
    for line in commands:
        words = shlex.split(line.split("-m rlae_sc ", 1)[1].split(" > ")[0])
        build_parser().parse_args(words)  # exits (SystemExit) on an option the CLI refuses


def test_embedding_format_zarr_makes_the_cluster_stage_write_a_store_that_report_and_map_read(tmp_path):
    shutil.copytree(ROOT / "config", tmp_path / "config")
    cfg = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({**cfg, "embedding_format": "zarr"}))
    res = snakemake("-n", "-p", "--directory", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    commands = [line.split("-m rlae_sc ", 1)[1] for line in res.stdout.splitlines() if "-m rlae_sc " in line]
    for stage, given in [
        ("cluster", "--out results/{}/embedding.zarr"),
        ("report", "report results/{}/embedding.zarr"),
    ]:
        for dataset in cfg["datasets"]:
            assert any(c.startswith(stage) and given.format(dataset) in c for c in commands), (stage, dataset)
    assert not any("embedding.h5ad" in c for c in commands)
    assert any(c.startswith("map") and "--reference results/synthetic/embedding.zarr" in c for c in commands)
