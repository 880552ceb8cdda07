"""Federated fit: the sums over sites give the pooled recipe and model; secure mode hides each site's
statistics from the coordinator; a site that stops ends the run with a named error and no model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from rlae_sc import pipeline
from rlae_sc.blocks import kept_rows
from rlae_sc.cli import main
from rlae_sc.errors import InputError
from rlae_sc.federated import FederationError
from rlae_sc.federated.local import federate
from rlae_sc.federated.plan import new_plan
from rlae_sc.federated.secure import PairwiseMasks
from rlae_sc.federated.statistics import decode, encode, open_site, site_statistics
from rlae_sc.lae import theory
from rlae_sc.model import load_model
from rlae_sc.preprocess import fit_recipe
from rlae_sc.products import scatter_matrix
from rlae_sc.rows import InMemory
from tests.conftest import shared_file

PRE = {"min_genes": 50, "n_top_genes": 150, "clip": 3.0}  # QC, seurat_v3 selection and clipping all take part
TRAIN = {"n_components": 10}


@pytest.fixture(scope="module")
def sites(small_counts, tmp_path_factory):
    """small_counts split into three sites of unequal size, with two cells that fail QC."""
    a = small_counts.copy()
    X = a.X.tolil()
    X[0, :] = 0
    X[0, :5] = 1
    X[350, :] = 0
    a.X = sp.csr_matrix(X)
    folder = tmp_path_factory.mktemp("sites")
    paths = []
    for name, rows in {"north": slice(0, 150), "east": slice(150, 350), "south": slice(350, 600)}.items():
        paths.append(folder / f"{name}.h5ad")
        a[rows].copy().write_h5ad(paths[-1])
    return paths


@pytest.fixture(scope="module")
def pooled(sites, tmp_path_factory):
    """The pooled fit on the same cells (all sites concatenated, in order): recipe and model."""
    d = tmp_path_factory.mktemp("pooled")
    ad.concat([ad.read_h5ad(p) for p in sites]).write_h5ad(d / "all.h5ad")
    pipeline.preprocess_file(d / "all.h5ad", d / "pre.h5ad", **PRE)
    pipeline.train_file(d / "pre.h5ad", d / "model.npz", **TRAIN)
    return load_model(d / "model.npz")


def _in_process(paths, *, secure: bool, train=TRAIN):
    """Run a plan's rounds with the sites in this process (the network left out): returns (plan, C, received)."""
    plan = new_plan(PRE, train)
    opened = [open_site(p) for p in paths]
    masks = {s.name: PairwiseMasks() for s in opened} if secure else {}
    keys = {name: m.public_key for name, m in masks.items()}
    for name, m in masks.items():
        m.agree(name, keys, plan.run)
    received, C = [], None
    while C is None:
        request, spec = plan.request(), plan.spec(len(opened[0].genes))
        total = 0
        for s in opened:
            v = encode(site_statistics(s, request), spec, source=s.name)
            v = masks[s.name].mask(v, request["index"]) if secure else v
            received.append((s.name, request, spec, v))
            total = total + v
        C = plan.advance(decode(total, spec), genes=list(opened[0].genes))
    return plan, C, received


def test_sums_over_sites_give_the_pooled_recipe_and_scatter(sites, pooled, small_counts):
    plan, C, _ = _in_process(sites, secure=True, train={**TRAIN, "scatter_precision": "float64"})
    ref = pooled.recipe
    assert plan.recipe["genes"] == ref.genes and plan.recipe["target_sum"] == ref.target_sum
    assert plan.recipe["stats"] == ref.stats
    for key in ("mean", "std", "offset"):
        np.testing.assert_allclose(plan.recipe[key], getattr(ref, key), rtol=1e-12, atol=1e-13)
    # C against the exact float64 scatter of the pooled trained matrix (float32, as stored)
    X = sp.csr_matrix(ad.concat([ad.read_h5ad(p) for p in sites]).X)
    keep = ref.keep(*(np.asarray(v) for v in _qc(X, small_counts.var_names)))
    Z = ref.scale_rows(ref.normalize_rows(kept_rows(X, 0, keep)), ref.gene_index(ref.input_genes))
    C0 = scatter_matrix(Z.astype(np.float64))
    assert np.abs(C - C0).max() <= 1e-10 * np.abs(C0).max()


def _qc(X, genes):
    from rlae_sc.recipe import cell_qc, mito_mask

    return cell_qc(X, mito_mask(genes))


def test_median_of_totals_from_histograms_equals_numpy(sites):
    """target_sum (a median, not a sum) from the two histogram rounds equals the pooled numpy.median."""
    plan, _, _ = _in_process(sites, secure=False)
    totals = []
    for p in sites:
        recipe, qc = fit_recipe(InMemory(sp.csr_matrix(ad.read_h5ad(p).X)), open_site(p).genes, **PRE)
        totals.append(qc["total_counts"].to_numpy()[qc["qc_pass"].to_numpy()])
    assert plan.recipe["target_sum"] == float(np.median(np.concatenate(totals)))


def test_masks_cancel_in_the_sum_and_hide_each_vector():
    names = ["a", "b", "c"]
    masks = {n: PairwiseMasks() for n in names}
    keys = {n: m.public_key for n, m in masks.items()}
    for n, m in masks.items():
        m.agree(n, keys, "run0")
    rng = np.random.default_rng(0)
    plain = {n: rng.integers(0, 1000, 50).astype(np.uint64) for n in names}
    masked = {n: masks[n].mask(plain[n], 3) for n in names}
    np.testing.assert_array_equal(sum(masked.values()), sum(plain.values()))
    for n in names:
        assert (masked[n] != plain[n]).mean() > 0.99
    with pytest.raises(FederationError, match="at least 3 distinct sites"):
        masks["a"].agree("a", {"a": keys["a"], "b": keys["b"]}, "run1")


def test_secure_run_over_the_network_equals_pooled_and_coordinator_sees_only_sums(sites, pooled, tmp_path):
    out, capture = tmp_path / "fed", tmp_path / "capture"
    federate(
        sites,
        out,
        secure=True,
        label_key="cell_type",
        preprocess_params=PRE,
        train_params=TRAIN,
        timeout=300,
        capture=capture,
    )
    model = load_model(out / "model.npz")
    assert model.recipe.genes == pooled.recipe.genes
    cos = theory.alignment(model.directions, pooled.directions)
    assert cos[:10].min() >= 1 - 1e-6
    np.testing.assert_allclose(model.eigenvalues[:10], pooled.eigenvalues[:10], rtol=1e-5)
    for p in sites:
        site = out / "sites" / p.stem
        emb = ad.read_h5ad(site / "embedding.h5ad")
        assert emb.n_obs == int(open_site(p).matrix.shape[0]) - (p.stem != "east")  # one failing cell each
        assert (site / "report.html").exists() and (site / "metrics.json").exists()
    # everything the coordinator received: compare each vector with every site's own statistics
    _, _, plain = _in_process(sites, secure=False)
    files = sorted(capture.glob("*.npy"))
    assert len(files) == len(plain)
    for f in files:
        got = np.load(f, allow_pickle=False)
        index, round_name, _ = f.stem.split("-", 2)
        for name, request, spec, vector in plain:
            if request["round"] != round_name:
                continue
            seen, own = decode(got, spec), decode(vector, spec)
            for key in own:
                diff = np.abs(seen[key] - own[key])
                assert (diff > 1e-3 * np.maximum(np.abs(own[key]), 1e-12)).any(), (f.name, name, key)


def test_stopped_site_ends_the_run_with_a_named_error_and_no_model(sites, tmp_path):
    out = tmp_path / "fed"
    port_file = tmp_path / "port"
    cmd = [sys.executable, "-m", "rlae_sc"]
    coord = subprocess.Popen(
        [*cmd, "coordinator", "--listen", "127.0.0.1:0", "--port-file", str(port_file), "--sites", "3"]
        + ["--out", str(out), "--secure", "--timeout", "120", "--min-genes", "50", "--n-components", "5"],
        stderr=subprocess.PIPE,
        text=True,
    )
    procs = []
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = f"127.0.0.1:{port_file.read_text()}"
        for p in sites:
            args = [*cmd, "site", str(p), "--coordinator", address, "--out", str(tmp_path / p.stem), "--secure"]
            procs.append(subprocess.Popen(args, stderr=subprocess.DEVNULL))
        lines = []
        for _ in range(20):  # the coordinator's log lines up to the third site joining (round 1 starts then)
            lines.append(coord.stderr.readline())
            if "joined (3 of 3)" in lines[-1] or not lines[-1]:
                break
        os.kill(procs[1].pid, signal.SIGKILL)  # east: stopped while it computes its first answer
        err = "".join(lines) + coord.communicate(timeout=300)[1]
    finally:
        for proc in [coord, *procs]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert coord.returncode == 2
    assert "error: site east: closed the connection" in err or "error: site east: connection lost" in err, err
    assert "(in round " in err, err  # the round the site dropped out in is named
    assert not (out / "model.npz").exists()
    assert all(proc.returncode != 0 for proc in procs)


def test_trusted_file_mode_equals_pooled_and_refuses_small_sites(sites, pooled, tmp_path):
    out = tmp_path / "combined"
    flags = ["--min-genes", "50", "--n-top-genes", "150", "--clip", "3"]
    plan = None
    for round_index in range(5):
        files = []
        for p in sites:
            files.append(tmp_path / f"{p.stem}.{round_index}.npz")
            extra = ["--plan", str(plan)] if plan else flags
            assert main(["summarize", str(p), "--out", str(files[-1]), "--allow-small-site", *extra]) == 0
        assert main(["combine", *map(str, files), "--out", str(out), "--n-components", "10"]) == 0
        plan = out / "plan.json"
        if (out / "model.npz").exists():
            break
    model = load_model(out / "model.npz")
    assert theory.alignment(model.directions, pooled.directions)[:10].min() >= 1 - 1e-6
    # north has 149 cells passing QC, fewer than the 150 genes used: refused without the override
    with pytest.raises(InputError, match="fewer than the 150 genes used"):
        from rlae_sc.federated.trusted import summarize

        summarize(sites[0], tmp_path / "north.npz", plan=_plan_at(out, "scatter"))
    assert main(["site-outputs", str(sites[1]), "--model", str(out / "model.npz"), "--out", str(tmp_path / "s")]) == 0
    assert ad.read_h5ad(tmp_path / "s" / "embedding.h5ad").obsm["X_rlae"].shape == (200, 10)


def _plan_at(out: Path, round_name: str) -> Path:
    """A copy of the finished plan set back to ``round_name`` (its state holds everything that round needs)."""
    from rlae_sc.federated.plan import Plan

    plan = Plan.load(out / "plan.json")
    plan.round = round_name
    path = out / f"plan.{round_name}.json"
    plan.save(path)
    return path


def test_secure_mode_needs_three_sites(sites, tmp_path):
    with pytest.raises(InputError, match="at least 3 sites"):
        federate(sites[:2], tmp_path / "two", secure=True)


@pytest.fixture(scope="module")
def kang(kang_run, tmp_path_factory):
    """kang_se_12261 split by donor (8 sites) and run with --secure; the pooled `rlae-sc run` on the same cells is
    conftest's ``kang_run``. Returns (pooled output folder, federated output folder, site files)."""
    path = shared_file("kang_se_12261.h5ad")
    d = tmp_path_factory.mktemp("kang")
    cells = ad.read_h5ad(path)
    paths = []
    for donor in sorted(cells.obs["sample_id"].astype(str).unique()):
        paths.append(d / "sites" / f"donor_{donor}.h5ad")
        paths[-1].parent.mkdir(exist_ok=True)
        cells[cells.obs["sample_id"].astype(str) == donor].copy().write_h5ad(paths[-1])
    federate(paths, d / "fed", secure=True, label_key="cell_type", timeout=600)
    return kang_run, d / "fed", paths


@pytest.mark.slow
def test_kang_one_site_per_donor_secure_equals_pooled(kang):
    pooled, fed, _ = kang
    pooled_model, model = load_model(pooled / "model.npz"), load_model(fed / "model.npz")
    assert model.recipe.genes == pooled_model.recipe.genes
    assert theory.alignment(model.directions, pooled_model.directions)[:10].min() >= 1 - 1e-6
    np.testing.assert_allclose(model.eigenvalues[:10], pooled_model.eigenvalues[:10], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.xfail(
    raises=AssertionError,
    strict=True,
    reason="each site runs Leiden on its own cells' graph, not the pooled one; the bar is finer than the pooled "
    "Leiden's own seed-to-seed variation (benchmarks/federated_ari.md): the ARI assertion fails (any other error, "
    "or a pass, fails the test)",
)
def test_kang_site_ari_within_001_of_pooled_ari_on_its_cells(kang):
    pooled, fed, paths = kang
    pooled_emb = ad.read_h5ad(pooled / "embedding.h5ad")
    for p in paths:
        emb = ad.read_h5ad(fed / "sites" / p.stem / "embedding.h5ad")
        ref = pooled_emb[emb.obs_names]
        pooled_ari = adjusted_rand_score(ref.obs["cell_type"].astype(str), ref.obs["leiden"].astype(str))
        site_ari = adjusted_rand_score(emb.obs["cell_type"].astype(str), emb.obs["leiden"].astype(str))
        assert abs(site_ari - pooled_ari) <= 0.01, (p.stem, site_ari, pooled_ari)


def test_a_site_refuses_a_request_that_does_not_follow_the_last(sites, tmp_path):
    """A coordinator (here a hand-written one on 127.0.0.1) that replays a request index is refused: a repeated
    index would reuse the secure masks. The site names the problem to the coordinator and stops."""
    import socket
    import threading

    from rlae_sc.federated.protocol import recv, send
    from rlae_sc.federated.site import run_site

    server = socket.create_server(("127.0.0.1", 0))
    said = {}

    def coordinator():
        conn, _ = server.accept()
        with conn:
            said["hello"] = recv(conn, peer="site", timeout=60)[0]
            send(conn, "round", {"request": {"index": -1, "round": "qc", "run": "r"}, "spec": []})
            said["reply"] = recv(conn, peer="site", timeout=60)[:2]

    thread = threading.Thread(target=coordinator)
    thread.start()
    with pytest.raises(FederationError, match="does not follow request -1"):
        run_site(sites[0], coordinator=f"127.0.0.1:{server.getsockname()[1]}", out=tmp_path / "site", timeout=60)
    thread.join(timeout=60)
    server.close()
    assert said["hello"] == "hello"
    kind, fields = said["reply"]
    assert kind == "error" and "must increase" in fields["error"]
