"""A site's process: joins the coordinator, answers each round from its own cells, then embeds, clusters and
reports on them locally with the federation's model.

The counts never leave the site; what leaves is, per round, the vector of
sums the plan asks for (:func:`rlae_sc.federated.statistics.site_statistics`),
masked in secure mode. Outputs, in the site's folder: ``model.npz`` (the
federation's), ``preprocessed.h5ad``, ``directions.h5ad``,
``embedding.h5ad``, ``metrics.json`` and ``report.html`` with ``figures/``,
the contract of a dataset's outputs (:mod:`rlae_sc.pipeline`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from pathlib import Path

import numpy as np

from rlae_sc import pipeline
from rlae_sc.atomic import atomic_path
from rlae_sc.errors import InputError
from rlae_sc.federated import FederationError
from rlae_sc.federated.protocol import TLSFiles, client_context, parse_address, recv, send
from rlae_sc.federated.secure import PairwiseMasks
from rlae_sc.federated.statistics import (
    Site,
    check_site_size,
    encode,
    open_site,
    site_qc,
    site_statistics,
)
from rlae_sc.labels import obs_column
from rlae_sc.model import load_model
from rlae_sc.params import FederationParams
from rlae_sc.recipe import Recipe

log = logging.getLogger("rlae_sc")


def run_site(
    counts: str | Path,
    *,
    coordinator: str,
    out: str | Path,
    label_key: str | None = None,
    layer: str | None = None,
    secure: bool = False,
    tls: TLSFiles | None = None,
    timeout: float = FederationParams.timeout,
    allow_small_site: bool = False,
    cluster_params: dict | None = None,
) -> dict:
    """Take part in a federated fit as the site holding ``counts``; returns the site's metrics.

    Parameters
    ----------
    counts
        The site's ``.h5ad`` of counts (cells x genes, in ``X`` or ``layer``); its stem names the site.
    coordinator
        ``HOST:PORT`` of the coordinator; joining is retried until ``timeout``.
    out
        Folder for the site's outputs.
    secure
        Mask every answer (secure aggregation).
    tls
        Certificate files (``None``: plain TCP, loopback tests only).
    timeout
        Seconds to wait for the coordinator's next message.
    allow_small_site
        Send the scatter matrix in trusted mode even when the site has fewer cells than genes used.
    cluster_params
        Parameters of :func:`rlae_sc.pipeline.cluster_file`.
    """
    site = open_site(counts, layer=layer)
    if label_key is not None:
        obs_column(site.obs, label_key, what="label", source=counts)
    masks = PairwiseMasks() if secure else None
    with contextlib.closing(_connect(coordinator, tls, timeout, site.name)) as conn:
        send(
            conn,
            "hello",
            {
                "site": site.name,
                "genes": list(site.genes),
                "secure": secure,
                "public_key": masks.public_key if masks else None,
            },
        )
        peer = f"coordinator {coordinator}"
        last = {"round": "joining", "index": -1}  # the last request answered
        while True:
            try:
                kind, fields, arrays = recv(conn, peer=peer, timeout=timeout)
            except FederationError as exc:
                raise FederationError(f"site {site.name}: {exc} (after round {last['round']})") from None
            if kind == "abort":
                raise FederationError(f"site {site.name}: the coordinator stopped the run: {fields.get('error')}")
            try:
                if kind == "keys":
                    masks.agree(site.name, fields["keys"], fields["run"])
                elif kind == "round":
                    request = fields["request"]
                    if not request["index"] > last["index"]:  # a replayed request would reuse the masks
                        raise FederationError(
                            f"site {site.name}: request {request['index']} (round {request['round']}) does not "
                            f"follow request {last['index']}; a coordinator's requests must increase"
                        )
                    vector = _answer(site, fields, masks, allow_small_site=allow_small_site)
                    send(conn, "answer", {"run": request["run"], "index": request["index"]}, {"vector": vector})
                    last = {"round": request["round"], "index": request["index"]}
                elif kind == "model":
                    model_path = Path(out) / "model.npz"
                    with atomic_path(model_path) as tmp:
                        Path(tmp).write_bytes(arrays["model"].tobytes())
                    conn.close()  # the coordinator's part ends here; the outputs are the site's own
                    return site_outputs(site, model_path, out, label_key=label_key, cluster_params=cluster_params)
                else:
                    raise FederationError(f"site {site.name}: unexpected message {kind!r} from the coordinator")
            except (InputError, FederationError) as exc:
                log.error("site %s: %s", site.name, exc)
                # in secure mode the coordinator learns only that the site stopped: the details (a statistic,
                # a path) stay in the site's own log
                text = f"site {site.name} stopped (details in its own log)" if secure else str(exc)
                with contextlib.suppress(OSError):
                    send(conn, "error", {"error": text})
                raise


def _answer(site: Site, fields: dict, masks: PairwiseMasks | None, *, allow_small_site: bool) -> np.ndarray:
    """The encoded (and, in secure mode, masked) vector answering one round."""
    request = fields["request"]
    if request["round"] == "scatter" and masks is None:
        check_site_size(site, Recipe.from_dict(request["recipe"]), allow_small_site=allow_small_site)
    stats = site_statistics(site, request)
    vector = encode(stats, fields["spec"], source=str(site.path))
    log.info("site %s: round %s answered (%d values)", site.name, request["round"], len(vector))
    return masks.mask(vector, request["index"]) if masks is not None else vector


def _connect(address: str, tls: TLSFiles | None, timeout: float, name: str) -> socket.socket:
    """Connect to the coordinator, retrying every half second until ``timeout``."""
    host, port = parse_address(address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise FederationError(
                    f"site {name}: cannot reach the coordinator at {address} within {timeout:g} s ({exc}); "
                    "start it first, or check the address"
                ) from None
            time.sleep(0.5)
    if tls is not None:
        sock = client_context(tls).wrap_socket(sock, server_hostname=host)
    return sock


def site_outputs(
    site: Site, model_path: str | Path, out: str | Path, *, label_key: str | None = None, cluster_params=None
) -> dict:
    """Preprocess the site's cells with the model's recipe, then directions, clusters and report into ``out``.

    The site's embedding, clusters and report are its own cells'; the exact-PCA comparison in its
    ``metrics.json`` is the federation's (the model's directions against exact PCA of the summed ``C``, as in
    ``federation.json``), not a PCA of this site's cells alone. Returns the site's metrics.
    """
    out = Path(out)
    recipe = load_model(model_path).recipe
    qc = site_qc(site, recipe)
    pre, directions, embedding = (out / pipeline.OUTPUTS[key] for key in ("preprocessed", "directions", "embedding"))
    pipeline.write_preprocessed(site.matrix, site.obs, recipe, qc, pre, counts=site.path, layer=site.layer)
    pipeline.directions_file(pre, model_path, directions)
    metrics = pipeline.cluster_file(
        directions, embedding, out / pipeline.OUTPUTS["metrics"], label_key=label_key, **(cluster_params or {})
    )
    pipeline.report_file(embedding, out, dataset=f"{site.name} (federated)", label_key=label_key)
    return metrics
