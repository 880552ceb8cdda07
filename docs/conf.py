"""Sphinx configuration of rlae-sc's documentation (``make docs``: ``sphinx-build -W -b html docs build/docs``).

Three local extensions live in ``_ext/``: ``records`` reads the numbers the pages quote from the committed benchmark
records (``benchmarks/*.json``) at build time, ``defaults`` reads parameter defaults from ``rlae_sc.params``, and
``notebook`` executes ``tutorial.ipynb`` and renders it as a page.
Nothing is fetched from the network while building.
"""

import sys
from importlib.metadata import version as installed_version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "rlae-sc"
release = installed_version("rlae-sc")
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",  # equations are typeset in the reader's browser
    "numpydoc",
    "records",
    "defaults",
    "notebook",
]
autosummary_generate = False  # the reference lists its entries itself: building writes nothing into docs/
autodoc_typehints = "none"  # the docstrings state types and shapes
numpydoc_show_class_members = False
intersphinx_mapping = {}  # nothing is fetched at build time
exclude_patterns = ["_build", "**.ipynb_checkpoints", "_ext"]
smartquotes = False  # commands and options keep their -- and quotes
html_theme = "alabaster"
html_static_path = ["_static"]
html_theme_options = {"description": "principal directions of single cells, from a regularized linear autoencoder"}
