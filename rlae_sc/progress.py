"""Progress bars that stay quiet when stderr is not a terminal (logs, CI, Snakemake)."""

from __future__ import annotations

import sys

from tqdm import tqdm  # the console bar: in a notebook stderr is no TTY, so no bar is drawn there


def progress(*, total: int, desc: str, initial: int = 0) -> tqdm:
    """A tqdm bar on stderr, disabled unless stderr is a TTY."""
    return tqdm(total=total, desc=desc, initial=initial, disable=not sys.stderr.isatty(), leave=False)
