"""Atomic file writes: a temporary file (or directory) beside the target, renamed into place only on success."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def names_store(path: str | Path) -> bool:
    """Whether the output ``path`` names a zarr store (a directory): its name ends in ``.zarr``."""
    return Path(path).suffix == ".zarr"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds. For a zarr store
    (``path`` ends in ``.zarr``) the temporary path is an empty directory, and a store already at ``path`` is
    removed just before the new one takes its place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = names_store(path)
    prefix, suffix = f".{path.stem}.", f".tmp{path.suffix}"
    if store:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (0o777 if store else 0o666) & ~umask)  # mkstemp/mkdtemp create 0600/0700; give the usual ones
    try:
        yield tmp
        if store and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)
