"""Sphinx configuration of rlae-sc's API reference (``sphinx-build -W -b html docs OUT``)."""

from importlib.metadata import version as installed_version

project = "rlae-sc"
release = installed_version("rlae-sc")
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.intersphinx", "numpydoc"]
autosummary_generate = False  # the reference lists its entries itself: building writes nothing into docs/
autodoc_typehints = "none"  # the docstrings state types and shapes
numpydoc_show_class_members = False
intersphinx_mapping = {}  # nothing is fetched at build time
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "alabaster"
