"""Checkpoint files: named arrays saved atomically with the signature of the run they belong to.

:func:`save` and :func:`load` are the file format; :class:`PassCheckpoint` is a pass's progress in such a file
(:func:`rlae_sc.engine.run_pass`).
"""

from __future__ import annotations

import time
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


class PassCheckpoint:
    """A pass's progress in the checkpoint file ``path``: the blocks done (``next_block``), the sums so far
    (``sums/<key>``) and the per-row results so far (``rows/<key>``), under the pass's ``signature`` (its rows,
    block size and function), saved at most every ``seconds``."""

    def __init__(self, path: str | Path, signature: str, seconds: float):
        self.path, self.signature, self.seconds = path, signature, seconds
        self.saved_at = time.monotonic()

    def load(self) -> tuple[int, dict, dict] | None:
        """``(next_block, sums, rows)`` saved by the same pass, or None (the pass starts over)."""
        state = load(self.path, self.signature)
        if state is None:
            return None
        sums = {key[5:]: val for key, val in state.items() if key.startswith("sums/")}
        rows = {key[5:]: val for key, val in state.items() if key.startswith("rows/")}
        return int(state["next_block"]), sums, rows

    def due(self) -> bool:
        """Whether ``seconds`` have passed since the last save (or the start)."""
        return time.monotonic() - self.saved_at >= self.seconds

    def save(self, next_block: int, sums: dict, rows: dict) -> None:
        """Save the pass's progress after its first ``next_block`` blocks, replacing the last save whole."""
        arrays = {
            "next_block": np.array(next_block),
            **{f"sums/{key}": np.asarray(val) for key, val in sums.items()},
            **{f"rows/{key}": val for key, val in rows.items()},
        }
        save(self.path, self.signature, arrays)
        self.saved_at = time.monotonic()
