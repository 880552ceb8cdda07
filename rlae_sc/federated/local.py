"""``rlae-sc federate``: a coordinator and one process per site on this machine, over TLS on 127.0.0.1.

The processes are the commands of a real deployment (``rlae-sc coordinator``
and ``rlae-sc site``), with a throwaway certificate authority; only the
addresses and the certificates differ between the two.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlae_sc.errors import InputError
from rlae_sc.federated import FederationError
from rlae_sc.federated.protocol import make_certificates
from rlae_sc.federated.secure import MIN_SITES
from rlae_sc.params import (
    ClusterParams,
    FederationParams,
    LabelParams,
    PreprocessParams,
    ReadParams,
    TrainParams,
    as_flags,
)

HOST = "127.0.0.1"


def federate(
    sites: list[str | Path],
    out: str | Path,
    *,
    label_key: str | None = None,
    layer: str | None = None,
    secure: bool = False,
    allow_small_site: bool = False,
    preprocess_params: dict | None = None,
    train_params: dict | None = None,
    cluster_params: dict | None = None,
    timeout: float = FederationParams.timeout,
    capture: str | Path | None = None,
) -> Path:
    """Fit one model on several sites' ``.h5ad`` files without pooling their cells; returns ``out/model.npz``.

    Writes ``out/model.npz``, ``out/federation.json``, ``out/sites/<site file
    stem>/`` (each site's outputs) and ``out/logs/<process>.log``. ``timeout``
    bounds each wait for a message; the whole run is stopped after ten times
    that. ``allow_small_site``: see :func:`~rlae_sc.federated.statistics.check_site_size`.
    Raises :class:`~rlae_sc.federated.FederationError` naming the failing
    process (its last log line) when any of them fails.
    """
    paths = [Path(p) for p in sites]
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        raise InputError(", ".join(map(str, paths)), "two site files have the same stem", "Rename them.")
    if secure and len(paths) < MIN_SITES:
        raise InputError(
            ", ".join(map(str, paths)),
            f"secure aggregation needs at least {MIN_SITES} sites (got {len(paths)})",
            "Add sites, or run without --secure in a federation whose sites may see each other's statistics.",
        )
    for p in paths:
        if not p.exists():
            raise InputError(p, "site file not found", "Check the path.")
    out = Path(out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    common = ["--secure"] if secure else []
    with tempfile.TemporaryDirectory(prefix="rlae-sc-tls-") as tls_dir:
        certs = make_certificates(Path(tls_dir), ["coordinator", *names], host=HOST)
        port_file = Path(tls_dir) / "port"
        coordinator = [
            *_tls_args(certs["coordinator"]),
            "--listen",
            f"{HOST}:0",
            "--port-file",
            str(port_file),
            "--sites",
            str(len(paths)),
            "--out",
            str(out),
            "--timeout",
            str(timeout),
            *(["--capture", str(capture)] if capture else []),
            *as_flags(preprocess_params, PreprocessParams),
            *as_flags(train_params, TrainParams),
        ]
        procs = {"coordinator": _start("coordinator", coordinator + common, logs)}
        port = _wait_for_port(port_file, procs["coordinator"], logs, timeout)
        for path, name in zip(paths, names, strict=True):
            args = [
                str(path),
                *_tls_args(certs[name]),
                "--coordinator",
                f"{HOST}:{port}",
                "--out",
                str(out / "sites" / name),
                *as_flags({"timeout": timeout}, FederationParams),
                *as_flags({"label_key": label_key} if label_key else {}, LabelParams),
                *as_flags({"layer": layer} if layer else {}, ReadParams),
                *(["--allow-small-site"] if allow_small_site else []),
                *as_flags(cluster_params, ClusterParams),
            ]
            procs[name] = _start("site", args + common, logs, name=name)
        _wait(procs, logs, deadline=time.monotonic() + 10 * timeout)
    return out / "model.npz"


def _tls_args(files) -> list[str]:
    return ["--tls-ca", str(files.ca), "--tls-cert", str(files.cert), "--tls-key", str(files.key)]


def _start(command: str, args: list[str], logs: Path, *, name: str | None = None) -> subprocess.Popen:
    with open(logs / f"{name or command}.log", "w") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen([sys.executable, "-m", "rlae_sc", command, *args], stdout=log, stderr=subprocess.STDOUT)


def _wait_for_port(port_file: Path, proc: subprocess.Popen, logs: Path, timeout: float) -> int:
    """The coordinator's port, once it listens (it writes the port file then)."""
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if proc.poll() is not None:
            raise FederationError(f"the coordinator stopped before listening: {_last_line(logs / 'coordinator.log')}")
        if time.monotonic() > deadline:
            proc.kill()
            raise FederationError(f"the coordinator did not start listening within {timeout:g} s")
        time.sleep(0.2)
    return int(port_file.read_text())


def _wait(procs: dict[str, subprocess.Popen], logs: Path, *, deadline: float) -> None:
    """Wait for every process; stop the rest at ``deadline``. Raises naming the first that failed."""
    failed = []
    try:
        for name, proc in procs.items():
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                failed.append(f"{name}: still running at the deadline, stopped")
                continue
            if rc != 0:
                failed.append(f"{name}: {_last_line(logs / f'{name}.log')}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if failed:
        raise FederationError("federated run failed; " + "; ".join(failed) + f" (logs in {logs})")


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1]
