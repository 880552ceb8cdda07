"""Messages between the coordinator and the sites over TCP (TLS in a deployment): a JSON header and raw arrays.

A message is ``MAGIC``, the header's length (8 bytes, big-endian), the header
(JSON: ``kind``, fields, and the name, dtype and shape of every array), then
each array's bytes. Only numeric dtypes are accepted, and nothing is
unpickled. Every read has a deadline; a closed connection or a timeout is a
:class:`~rlae_sc.federated.FederationError` naming the peer.

TLS: every party has a certificate signed by the federation's certificate
authority; the coordinator requires client certificates and sites check the
coordinator's (:func:`server_context`, :func:`client_context`).
:func:`make_certificates` creates a throwaway authority and certificates for
a run on one machine (``rlae-sc federate``).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlae_sc.federated import FederationError

MAGIC = b"RLSC"
MAX_HEADER = 1 << 28  # bytes of JSON in one message (the first round carries gene names)
NUMERIC = "biuf"


def send(sock: socket.socket, kind: str, fields: dict | None = None, arrays: dict | None = None) -> None:
    """Send one message: ``kind``, JSON-ready ``fields`` and numeric ``arrays`` (name -> array)."""
    arrays = {name: np.ascontiguousarray(a) for name, a in (arrays or {}).items()}
    meta = [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()]
    header = json.dumps({"kind": kind, "fields": fields or {}, "arrays": meta}).encode()
    sock.sendall(MAGIC + struct.pack(">Q", len(header)) + header)
    for a in arrays.values():
        sock.sendall(memoryview(a).cast("B"))


def recv(sock: socket.socket, *, peer: str, timeout: float) -> tuple[str, dict, dict[str, np.ndarray]]:
    """Receive one message from ``peer`` within ``timeout`` seconds per read: ``(kind, fields, arrays)``."""
    sock.settimeout(timeout)
    start = _read(sock, len(MAGIC) + 8, peer)
    if start[: len(MAGIC)] != MAGIC:
        raise FederationError(f"{peer}: sent data that is not an rlae-sc federation message")
    (size,) = struct.unpack(">Q", start[len(MAGIC) :])
    if size > MAX_HEADER:
        raise FederationError(f"{peer}: sent a header of {size} bytes, more than {MAX_HEADER}")
    header = json.loads(_read(sock, size, peer))
    arrays = {}
    for name, dtype, shape in header["arrays"]:
        dt = np.dtype(dtype)
        if dt.kind not in NUMERIC:
            raise FederationError(f"{peer}: sent array {name!r} of non-numeric dtype {dtype}")
        n = int(np.prod(shape)) * dt.itemsize
        arrays[name] = np.frombuffer(_read(sock, n, peer), dtype=dt).reshape(shape)
    return header["kind"], header["fields"], arrays


def _read(sock: socket.socket, n: int, peer: str) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        try:
            k = sock.recv_into(view[got:], n - got)
        except TimeoutError:
            raise FederationError(f"{peer}: no answer within {sock.gettimeout():g} s") from None
        except OSError as exc:
            raise FederationError(f"{peer}: connection lost ({exc})") from None
        if k == 0:
            raise FederationError(f"{peer}: closed the connection (the process stopped or lost the network)")
        got += k
    return bytes(buf)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> ``(host, port)``."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise FederationError(f"address {text!r} is not HOST:PORT")
    return host, int(port)


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of one party: the federation's CA certificate, this party's certificate and private key."""

    ca: Path
    cert: Path
    key: Path


def server_context(tls: TLSFiles) -> ssl.SSLContext:
    """The coordinator's TLS context: its certificate, and client certificates required, signed by the CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(tls: TLSFiles) -> ssl.SSLContext:
    """A site's TLS context: the coordinator's certificate checked against the CA (and its host name)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx


def make_certificates(folder: Path, names: list[str], *, host: str = "127.0.0.1") -> dict[str, TLSFiles]:
    """A throwaway CA and one certificate per name (``"coordinator"`` valid for ``host``) in ``folder``
    (private keys readable by the owner only), valid for one day. Returns each party's files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(cn: str, key, issuer_name, issuer_key, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if cn == "coordinator":
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    def write(name: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
        cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path

    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rlae-sc federation CA")])
    ca_path, _ = write("ca", issue("rlae-sc federation CA", ca_key, ca_name, ca_key, ca=True), ca_key)
    out = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert_path, key_path = write(name, issue(name, key, ca_name, ca_key, ca=False), key)
        out[name] = TLSFiles(ca=ca_path, cert=cert_path, key=key_path)
    return out
