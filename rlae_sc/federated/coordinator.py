"""The coordinator process: waits for the sites, runs the rounds of a :class:`~rlae_sc.federated.plan.Plan`
over the network, trains on the sums and sends the model back.

In secure mode every site's answer is masked (:mod:`rlae_sc.federated.secure`);
the coordinator adds the masked vectors and sees only the sum over all sites.
It writes nothing per site: ``model.npz`` and ``federation.json`` (sites taking
part, rounds, timings, the fit's checks) in the output folder, and, with
``capture``, a copy of every vector it received (an audit trail of exactly
what it saw). If a site disconnects, times out or breaks the protocol in any
round, the run stops with a :class:`~rlae_sc.federated.FederationError`
naming it, tells the other sites, and writes no model: in secure mode a sum
with a site missing cannot be unmasked, and a fit on fewer sites must be
started again by the users, so that no sum over a subset is ever revealed
beside the sum over all.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from pathlib import Path

import numpy as np

from rlae_sc.atomic import atomic_path
from rlae_sc.federated import FederationError
from rlae_sc.federated.plan import Plan
from rlae_sc.federated.protocol import TLSFiles, parse_address, recv, send, server_context
from rlae_sc.federated.secure import MIN_SITES
from rlae_sc.federated.statistics import decode
from rlae_sc.io import write_json
from rlae_sc.params import FederationParams

log = logging.getLogger("rlae_sc")


def serve(
    plan: Plan,
    *,
    listen: str,
    n_sites: int,
    out: str | Path,
    secure: bool = False,
    tls: TLSFiles | None = None,
    timeout: float = FederationParams.timeout,
    port_file: str | Path | None = None,
    capture: str | Path | None = None,
) -> Path:
    """Run a federated fit as its coordinator; returns the path of the model written.

    Parameters
    ----------
    plan
        The fit's parameters (:func:`rlae_sc.federated.plan.new_plan`).
    listen
        ``HOST:PORT`` to accept the sites on (port 0: any free port, written to ``port_file``).
    n_sites
        Sites to wait for; rounds start when all have joined.
    out
        Folder for ``model.npz`` and ``federation.json``.
    secure
        Secure aggregation: sites mask their answers; needs at least three sites.
    tls
        Certificate files: TLS with client certificates; ``None``: plain TCP (loopback tests only).
    timeout
        Seconds to wait for any one message (joining included).
    capture
        A folder to keep every vector received in (``<round>-<site>.npy``).
    """
    if secure and n_sites < MIN_SITES:
        raise FederationError(
            f"secure aggregation needs at least {MIN_SITES} sites (got {n_sites}): with two, each could subtract "
            "its own statistics from the sum and recover the other's"
        )
    out = Path(out)
    host, port = parse_address(listen)
    t0 = time.perf_counter()
    with socket.create_server((host, port)) as server:
        server.settimeout(timeout)
        if port_file is not None:
            with atomic_path(port_file) as tmp:
                Path(tmp).write_text(str(server.getsockname()[1]))
        log.info("coordinator: listening on %s:%d for %d sites", host, server.getsockname()[1], n_sites)
        sites: dict[str, socket.socket] = {}
        try:
            genes, keys = _join(server, sites, n_sites, secure=secure, tls=tls, timeout=timeout)
            if secure:
                for conn in sites.values():
                    send(conn, "keys", {"run": plan.run, "keys": keys})
            plan.sites = sorted(sites)
            rounds, C = [], None
            while C is None:
                t1 = time.perf_counter()
                request, spec = plan.request(), plan.spec(len(genes))
                for conn in sites.values():
                    send(conn, "round", {"request": request, "spec": spec})
                total = np.zeros(sum(length for _, length, _ in spec), dtype=np.uint64)
                for name, conn in sites.items():
                    vector = _answer(conn, name, plan, len(total), timeout)
                    if capture is not None:
                        Path(capture).mkdir(parents=True, exist_ok=True)
                        np.save(Path(capture) / f"{plan.index}-{plan.round}-{name}.npy", vector)
                    total += vector
                rounds.append({"round": plan.round, "values": len(total), "seconds": time.perf_counter() - t1})
                log.info("coordinator: round %s (%d values per site) summed", plan.round, len(total))
                C = plan.advance(decode(total, spec), genes=genes)
            model = plan.train_model(C, scatter_seconds=sum(r["seconds"] for r in rounds))
            model_path = out / "model.npz"
            model.save(model_path)
            write_summary(out, plan, model, rounds, secure=secure, seconds=time.perf_counter() - t0)
            payload = np.frombuffer(model_path.read_bytes(), dtype=np.uint8)
            for conn in sites.values():
                send(conn, "model", {"run": plan.run}, {"model": payload})
            log.info("coordinator: model %s sent to %d sites", model_path, len(sites))
            return model_path
        except Exception as exc:
            for conn in sites.values():
                with contextlib.suppress(OSError):
                    send(conn, "abort", {"error": str(exc)})
            raise
        finally:
            for conn in sites.values():
                conn.close()


def _join(server, sites: dict, n_sites: int, *, secure: bool, tls: TLSFiles | None, timeout: float):
    """Accept ``n_sites`` sites; check their genes agree and their mode matches. Returns (genes, public keys)."""
    context = server_context(tls) if tls is not None else None
    genes, keys = None, {}
    deadline = time.monotonic() + timeout
    while len(sites) < n_sites:
        server.settimeout(max(1.0, deadline - time.monotonic()))
        try:
            conn, addr = server.accept()
        except TimeoutError:
            raise FederationError(
                f"coordinator: only {len(sites)} of {n_sites} sites joined within {timeout:g} s "
                f"({', '.join(sorted(sites)) or 'none'}); start the others or lower --sites"
            ) from None
        if context is not None:
            try:
                conn = context.wrap_socket(conn, server_side=True)
            except OSError as exc:
                conn.close()
                log.warning("coordinator: refused a connection from %s: %s", addr, exc)
                continue
        _, fields, _ = recv(conn, peer=f"site at {addr[0]}:{addr[1]}", timeout=timeout)
        name = str(fields.get("site"))
        if name in sites:
            conn.close()
            raise FederationError(f"site {name}: two sites have this name; give each site file a distinct name")
        sites[name] = conn
        if fields.get("secure") != secure:
            raise FederationError(
                f"site {name}: joined in {'secure' if fields.get('secure') else 'trusted'} mode, the coordinator "
                f"runs in {'secure' if secure else 'trusted'} mode; start both with the same --secure"
            )
        if genes is None:
            genes = fields["genes"]
        elif fields["genes"] != genes:
            raise FederationError(
                f"site {name}: its {len(fields['genes'])} genes differ from the first site's {len(genes)} "
                "(names or order); give every site the same genes in the same order"
            )
        keys[name] = fields.get("public_key")
        log.info("coordinator: site %s joined (%d of %d)", name, len(keys), n_sites)
    return genes, keys


def _answer(conn: socket.socket, name: str, plan: Plan, length: int, timeout: float) -> np.ndarray:
    """One site's (masked) vector for the current round, checked for kind, run, round and length."""
    try:
        kind, fields, arrays = recv(conn, peer=f"site {name}", timeout=timeout)
    except FederationError as exc:  # a site that dropped out: say in which round
        raise FederationError(f"{exc} (in round {plan.round}, request {plan.index})") from None
    if kind == "error":
        raise FederationError(f"site {name}: stopped in round {plan.round}: {fields.get('error')}")
    vector = arrays.get("vector")
    if kind != "answer" or fields.get("run") != plan.run or fields.get("index") != plan.index:
        raise FederationError(f"site {name}: answered out of turn in round {plan.round}; restart the run")
    if vector is None or vector.dtype != np.uint64 or vector.shape != (length,):
        raise FederationError(f"site {name}: sent a malformed vector in round {plan.round}")
    return vector


def write_summary(out: Path, plan: Plan, model, rounds: list, *, secure: bool, seconds: float) -> None:
    """``federation.json``: who took part, the rounds, and the fit's own checks (no per-site numbers)."""
    params = model.params
    summary = {
        "sites": plan.sites,
        "n_sites": len(plan.sites),
        "secure": secure,
        "n_cells": model.n_cells,
        "n_genes": len(model.recipe.genes),
        "k": model.n_components,
        "lambda": model.lam,
        "target_sum": model.recipe.target_sum,
        "rounds": rounds,
        "seconds": seconds,
        "params": params,
    }
    write_json(summary, out / "federation.json")
