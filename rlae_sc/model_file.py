"""The portable model file: named arrays plus a JSON manifest in one ``.npz``, with a checksum.

Loading uses ``numpy.load(allow_pickle=False)``: no code is ever unpickled.
The checksum is SHA-256 over the manifest and every array's name, dtype,
shape and bytes; a file whose checksum does not match is refused.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from rlae_sc.atomic import atomic_path
from rlae_sc.errors import InputError

FORMAT = "rlae-sc-model"
FORMAT_VERSION = 1


def _digest(manifest_bytes: bytes, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(manifest_bytes)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(path: str | Path, manifest: dict, arrays: dict[str, np.ndarray]) -> str:
    """Write ``manifest`` (JSON-ready) and numeric ``arrays`` to ``path`` atomically; return the checksum."""
    body = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION)
    manifest_bytes = json.dumps(body, sort_keys=True).encode()
    checksum = _digest(manifest_bytes, arrays)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                __manifest__=np.frombuffer(manifest_bytes, dtype=np.uint8),
                __checksum__=np.frombuffer(checksum.encode(), dtype=np.uint8),
                **arrays,
            )
    return checksum


def load(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a model file; return ``(manifest, arrays)``."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "model file not found", "Give the model.npz written by `rlae-sc train`.")
    try:
        with np.load(path, allow_pickle=False) as z:
            contents = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(
            path,
            f"is not a readable model file ({exc})",
            "The file may be truncated or not written by rlae-sc; retrain or copy it again.",
        ) from None
    if "__manifest__" not in contents or "__checksum__" not in contents:
        raise InputError(
            path, "is not an rlae-sc model file (no manifest)", "Give the model.npz written by `rlae-sc train`."
        )
    manifest_bytes = contents.pop("__manifest__").tobytes()
    stored = contents.pop("__checksum__").tobytes().decode(errors="replace")
    if _digest(manifest_bytes, contents) != stored:
        raise InputError(
            path,
            "checksum mismatch: the model file was modified or damaged after it was written",
            "Use an intact copy of the model, or retrain it.",
        )
    manifest = json.loads(manifest_bytes)
    if manifest.get("format") != FORMAT or manifest.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            path,
            f"has format {manifest.get('format')!r} version {manifest.get('format_version')}",
            f"This rlae-sc reads {FORMAT} up to version {FORMAT_VERSION}; upgrade rlae-sc.",
        )
    return manifest, contents
