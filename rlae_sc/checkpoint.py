"""Checkpoint files: named arrays saved atomically with the signature of the run they belong to."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from rlae_sc.atomic import atomic_path


def save(path: str | Path, signature: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and ``signature`` to ``path`` (``.npz``), replacing any earlier checkpoint whole."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, signature=np.frombuffer(signature.encode(), dtype=np.uint8), **arrays)


def load(path: str | Path, signature: str) -> dict[str, np.ndarray] | None:
    """The arrays of the checkpoint at ``path``, or None when there is none, it is damaged, or it was
    written by a run with another signature (the caller then starts over)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            state = {key: z[key] for key in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if state.pop("signature").tobytes().decode() != signature:
        return None
    return state
