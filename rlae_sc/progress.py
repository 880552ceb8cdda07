"""Progress bars of the passes: on a terminal, as widgets in a Jupyter notebook, and quiet elsewhere (logs, CI,
Snakemake), unless ``rl.settings.progress`` says otherwise."""

from __future__ import annotations

import importlib.util
import sys

from tqdm import tqdm

from rlae_sc.settings import settings


def progress(*, total: int, desc: str, initial: int = 0) -> tqdm:
    """A tqdm bar (a widget in a notebook, else on stderr), shown as :attr:`rlae_sc.settings.Settings.progress`
    says: by default where it can be seen, a terminal's stderr or a notebook."""
    notebook = in_notebook()
    shown = settings.progress if settings.progress is not None else notebook or sys.stderr.isatty()
    if notebook:
        from tqdm.auto import tqdm as bar  # the widget bar (tqdm.notebook) in a kernel with ipywidgets
    else:
        bar = tqdm
    return bar(total=total, desc=desc, initial=initial, disable=not shown, leave=False)


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel that can draw widget bars (ipykernel running, ipywidgets
    installed); without ipywidgets a notebook gets no bar unless ``rl.settings.progress`` is True."""
    if "ipykernel" not in sys.modules or importlib.util.find_spec("ipywidgets") is None:
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None
