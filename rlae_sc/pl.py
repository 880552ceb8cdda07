"""Plotting, as scanpy's ``pl``: each function draws one panel into ``ax=`` (or a new figure) and returns the axes.

They read ``uns['rlae']`` as :func:`rlae_sc.tl.rlae` writes it (``key=`` for another ``key_added``). For the
embedding itself use scanpy's: ``sc.pl.embedding(adata, basis="rlae")``, or ``sc.pl.umap``.
"""

from rlae_sc.plots import alignment, eigengaps, mode_strengths, shrinkage, stability, training, variance_ratio

__all__ = ["alignment", "eigengaps", "mode_strengths", "shrinkage", "stability", "training", "variance_ratio"]
