"""The workflow on a real one-node SLURM cluster, through ``profiles/slurm``.

The test brings up Debian's ``slurm-wlm`` (22.05) with munge on this machine: ``munged``, ``slurmctld -D`` and
``slurmd -D``, started as root without systemd, on 127.0.0.1, with no ``slurmdbd`` (so no ``sacct``: the
executor plugin asks ``squeue``, and ``MinJobAge`` keeps finished jobs visible to it). It runs the ``.test``
config through the profile and a run whose input is damaged, beside a local run of the same config; it checks
that every rule ran as a SLURM job with the resources the rule requests, that the outputs equal the local run's,
and that the failing rule is reported as failed by Snakemake and by SLURM. Then it gets Dask workers
as SLURM jobs (``dask: slurm:2``, dask-jobqueue) and runs a pass on them.

Needs root and the packages ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them); skipped with the reason
otherwise, unless ``RLAE_SC_REQUIRE_SLURM=1`` (set by ``.ci/run`` where it can install them), where a missing
piece fails the test instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import yaml
from sklearn.metrics import adjusted_rand_score

from rlae_sc.dask_engine import dask_client
from rlae_sc.products import scatter_matrix
from rlae_sc.rows import H5adMatrix
from tests.conftest import workflow_dir

ROOT = Path(__file__).resolve().parents[1]
SLURM_CONF = Path("/etc/slurm/slurm.conf")  # srun inside a job reads it there: the job step drops SLURM_CONF
MARKER = "# written by rlae-sc tests/test_slurm.py"
STATE = Path("/run/rlae-sc-slurm")
LOCK = Path("/run/lock/rlae-sc-slurm-test.lock")  # one test cluster at a time on a machine
DAEMONS = ("slurmctld", "slurmd", "munged", "munge", "sbatch", "squeue", "scancel", "sinfo")


def unavailable(reason: str):
    """Skip with ``reason``, or fail where the CI asked for the cluster."""
    if os.environ.get("RLAE_SC_REQUIRE_SLURM") == "1":
        pytest.fail(f"RLAE_SC_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def env() -> dict:
    """This interpreter's bin first on PATH (jobs inherit it: rules call ``python``), the daemons' last."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", ""), "/usr/sbin"])
    return dict(os.environ, PATH=path)


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, env=env(), timeout=60)


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(node: str) -> str:
    """One node (this machine as ``slurmd -C`` describes it) in one partition, on 127.0.0.1."""
    host = socket.gethostname().split(".")[0]
    return f"""{MARKER}
ClusterName=rlaetest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={STATE}/state
SlurmdSpoolDir={STATE}/spool
SlurmctldPidFile={STATE}/slurmctld.pid
SlurmdPidFile={STATE}/slurmd.pid
SlurmctldLogFile={STATE}/slurmctld.log
SlurmdLogFile={STATE}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job without a memory request would otherwise take the whole node
DefMemPerCPU=1000
# finished jobs stay visible to squeue (no slurmdbd, so no sacct) for an hour
MinJobAge=3600
ReturnToService=2
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def stop_stale_daemons() -> None:
    """Daemons of an earlier run of this test that was killed before its teardown, found by their pid files."""
    for name in ("slurmctld", "slurmd"):
        pid_file = STATE / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm")
        if comm.exists() and comm.read_text().strip() == name:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), f"stale {name} ({pid}) to stop", 30)


def start(*cmd: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def cluster():
    """A one-node SLURM cluster on this machine for the tests of this module."""
    if os.geteuid() != 0:
        unavailable("the SLURM test starts slurmctld, slurmd and munged and needs root")
    missing = [name for name in DAEMONS if shutil.which(name, path=env()["PATH"]) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge; .ci/run does)")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        unavailable("snakemake-executor-plugin-slurm not installed (pip install -e '.[test]')")
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text():
        unavailable(f"{SLURM_CONF} exists: this machine has its own SLURM setup, which the test leaves alone")
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        STATE.mkdir(exist_ok=True)
        stop_stale_daemons()
        for sub in ("state", "spool"):
            shutil.rmtree(STATE / sub, ignore_errors=True)
            (STATE / sub).mkdir()
        node = run("slurmd", "-C").stdout.splitlines()[0].split(" UpTime")[0]
        SLURM_CONF.parent.mkdir(exist_ok=True)
        SLURM_CONF.write_text(slurm_conf(node))
        daemons = []
        if run("munge", "-n", check=False).returncode != 0:  # else a running munged serves us
            Path("/run/munge").mkdir(exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            daemons.append(start("runuser", "-u", "munge", "--", "munged", "-F", log=STATE / "munged.out"))
            wait_for(lambda: run("munge", "-n", check=False).returncode == 0, "munged")
        daemons.append(start("slurmctld", "-D", log=STATE / "slurmctld.out"))
        daemons.append(start("slurmd", "-D", log=STATE / "slurmd.out"))
        try:
            wait_for(lambda: run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle", "an idle node")
            yield
        finally:
            run("scancel", "--full", "--partition", "debug", check=False)
            for proc in reversed(daemons):
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            SLURM_CONF.unlink()


def snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


STREAMED = "tiny_streamed"  # the .test config's streamed dataset, left out of the SLURM run

# no slurmdbd: status from squeue; first status check after a second (the default waits 40 s)
SLURM_ARGS = [
    "--profile",
    str(ROOT / "profiles" / "slurm"),
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--slurm-keep-successful-logs",
]


@pytest.fixture(scope="module")
def runs(cluster, small_counts, workflow_run, tmp_path_factory):
    """The .test config run through profiles/slurm, and a run whose input is damaged through profiles/slurm (at
    the same time), beside the local run of the same config (conftest's ``workflow_run``, shared with
    tests/test_workflow.py); returns ``{name: (workdir, returncode, output)}``."""
    dirs = {name: workflow_dir(small_counts, tmp_path_factory.mktemp(name)) for name in ("slurm", "broken")}
    for name, edit in {"slurm": _only_in_memory, "broken": _add_broken}.items():
        cfg_file = dirs[name] / "config" / "config.yaml"
        cfg_file.write_text(yaml.safe_dump(edit(yaml.safe_load(cfg_file.read_text()))))
    (dirs["broken"] / "data" / "broken.h5ad").write_bytes((dirs["broken"] / "data" / "tiny.h5ad").read_bytes()[:5000])
    procs = {
        "slurm": snakemake(dirs["slurm"], *SLURM_ARGS),
        "broken": snakemake(dirs["broken"], *SLURM_ARGS, "results/broken/preprocessed.h5ad"),
    }
    results = {"local": (workflow_run[0], 0, workflow_run[1])}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=900)
        results[name] = (dirs[name], proc.returncode, out)
    return results


def _only_in_memory(cfg: dict) -> dict:
    """The .test config less its streamed dataset: each rule still runs as a job (the streamed twin only repeats
    them with other options, and test_workflow.py compares the two), in half the jobs."""
    del cfg["datasets"][STREAMED]
    return cfg


def _add_broken(cfg: dict) -> dict:
    cfg["datasets"]["broken"] = {"path": "data/broken.h5ad"}
    return cfg


def squeue() -> dict[str, dict]:
    """Every job the cluster knows (running, or finished within MinJobAge), by job id."""
    fields = ["state", "name", "comment", "cpus", "memory", "time_limit"]
    out = run("squeue", "--states=all", "--noheader", "--format=%i|%T|%j|%k|%C|%m|%l").stdout
    return {line.split("|")[0]: dict(zip(fields, line.split("|")[1:], strict=True)) for line in out.splitlines()}


def minutes(limit: str) -> int:
    """SLURM's time limit ``[D-][H:]M:S`` in minutes."""
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, mins, secs = parts
    return (int(days or 0) * 24 + hours) * 60 + mins + round(secs / 60)


def submitted(log: str) -> dict[str, dict]:
    """SLURM job id -> the Snakemake job's resources, from a Snakemake log."""
    resources = {
        jobid: dict(item.split("=", 1) for item in res.split(", "))
        for jobid, res in re.findall(r"jobid: (\d+)\n(?:    .*\n)*?    resources: (.*)\n", log)
    }
    return {
        slurm_id: resources[jobid]
        for jobid, slurm_id in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log)
    }


def jobs_run(log: str, kind: str = "(?:local)?rule") -> list[str]:
    """The jobs a Snakemake log says it ran (``kind``: a regular expression for the word before the rule's
    name: ``localrule`` for those run by Snakemake itself), named as the SLURM plugin names them (its job
    comment: ``rule_<rule>[_wildcards_<values joined by _>]``)."""
    names = []
    for rule, body in re.findall(rf"^{kind} (\w+):\n((?:    .*\n)*)", log, flags=re.M):
        wildcards = re.search(r"^    wildcards: (.*)$", body, flags=re.M)
        values = [item.split("=", 1)[1] for item in wildcards.group(1).split(", ")] if wildcards else []
        names.append(f"rule_{rule}" + (f"_wildcards_{'_'.join(values)}" if values else ""))
    return names


def test_every_rule_runs_as_a_slurm_job_with_its_resources(runs):
    workdir, returncode, out = runs["slurm"]
    assert returncode == 0, out[-3000:]
    # the jobs of the same config run locally, less those the SLURM run keeps local (`all`)
    local_only = set(jobs_run(out, "localrule"))
    expected = [job for job in jobs_run(runs["local"][2]) if job not in local_only and STREAMED not in job]
    assert {"rule_preprocess_wildcards_tiny", "rule_map_query_wildcards_tiny_again", "rule_index"} <= set(expected)
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    jobs = submitted(out)
    known = {jid: job for jid, job in squeue().items() if job["name"] == run_id}
    assert set(known) == set(jobs), (known, jobs)
    assert sorted(job["comment"] for job in known.values()) == sorted(expected)
    for jid, job in known.items():
        assert job["state"] == "COMPLETED", (jid, job)
        assert job["memory"] == f"{jobs[jid]['mem_mb']}M", (jid, job, jobs[jid])
        assert minutes(job["time_limit"]) == int(jobs[jid]["runtime"]), (jid, job, jobs[jid])
        rule = job["comment"].removeprefix("rule_").split("_wildcards_")
        slurm_log = workdir / ".snakemake" / "slurm_logs" / f"rule_{rule[0]}" / "/".join(rule[1:]) / f"{jid}.log"
        assert f"rule {rule[0]}:" in slurm_log.read_text(), slurm_log  # the rule ran inside that job
    # every stage's own log, written from inside the jobs
    for rule in ("preprocess", "train", "directions", "cluster", "report"):
        assert (workdir / "logs" / "tiny" / f"{rule}.log").exists(), rule


def test_slurm_outputs_equal_a_local_run(runs):
    (slurm, rc_slurm, out_slurm), (local, rc_local, out_local) = runs["slurm"], runs["local"]
    assert rc_slurm == 0, out_slurm[-3000:]
    assert rc_local == 0, out_local[-3000:]
    dataset = "tiny"
    a = ad.read_h5ad(slurm / "results" / dataset / "embedding.h5ad")
    b = ad.read_h5ad(local / "results" / dataset / "embedding.h5ad")
    # the same code on the same cells and thread counts: equal up to rounding
    scale = np.abs(b.obsm["X_rlae"]).max()
    np.testing.assert_allclose(a.obsm["X_rlae"], b.obsm["X_rlae"], rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(a.varm["rlae_directions"], b.varm["rlae_directions"], rtol=1e-6, atol=1e-7)
    assert adjusted_rand_score(a.obs["leiden"], b.obs["leiden"]) == 1.0
    ma = json.loads((slurm / "results" / dataset / "metrics.json").read_text())
    mb = json.loads((local / "results" / dataset / "metrics.json").read_text())
    assert ma.keys() == mb.keys()
    for key, val in mb.items():
        if isinstance(val, int | float) and not key.endswith("_seconds"):
            assert ma[key] == pytest.approx(val, rel=1e-6, abs=1e-9), key
    mapping = [
        json.loads((wd / "results" / "mapping" / "tiny_again" / "mapping.json").read_text()) for wd in (slurm, local)
    ]
    assert mapping[0]["accuracy"] == mapping[1]["accuracy"]
    assert (slurm / "results" / "index.html").stat().st_size > 0


def test_a_failing_rule_is_reported_as_failed(runs):
    workdir, returncode, out = runs["broken"]
    assert returncode != 0
    failed = re.search(r"SLURM-job '(\d+)' failed, SLURM status is: 'FAILED'", out)
    assert failed and "Error in rule preprocess" in out, out[-3000:]
    job = squeue()[failed.group(1)]
    assert job["state"] == "FAILED" and job["comment"] == "rule_preprocess_wildcards_broken", job
    assert not (workdir / "results" / "broken" / "preprocessed.h5ad").exists()
    assert "broken.h5ad" in (workdir / "logs" / "broken" / "preprocess.log").read_text()  # rlae-sc's named error


def test_dask_workers_from_slurm_jobs(cluster, small_counts_file, tmp_path):
    """``dask: slurm:2``: two SLURM jobs of one Dask worker each (dask-jobqueue), configured the way users
    configure dask-jobqueue (Dask's config; here in-process), on 127.0.0.1."""
    import dask

    config = {
        "jobqueue.slurm": {
            "cores": 1,
            "memory": "1GB",
            "walltime": "00:10:00",
            "interface": "lo",
            "scheduler-options": {"interface": "lo", "dashboard_address": "127.0.0.1:0"},
            "log-directory": str(tmp_path),
            "local-directory": str(tmp_path),
        }
    }
    matrix = H5adMatrix(str(small_counts_file))
    with dask.config.set(config), dask_client("slurm:2") as client:
        client.wait_for_workers(2, timeout=120)
        jobs = [line.split("|") for line in run("squeue", "--noheader", "--format=%j|%T").stdout.split()]
        assert jobs.count(["dask-worker", "RUNNING"]) == 2, jobs
        C = scatter_matrix(matrix, chunk_size=100, client=client)
    np.testing.assert_allclose(C, scatter_matrix(matrix, chunk_size=100), rtol=1e-12, atol=1e-9)
