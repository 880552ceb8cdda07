"""Getters, as scanpy's ``get``: objects read back out of an annotated AnnData."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np

from rlae_sc.keys import UNS_KEY
from rlae_sc.model import RLAEModel
from rlae_sc.recipe import Recipe


def model(adata: ad.AnnData, *, key: str = UNS_KEY) -> RLAEModel:
    """The model :func:`rlae_sc.tl.rlae` trained on ``adata``, to embed other cells or to save.

    Parameters
    ----------
    adata
        Annotated by :func:`rlae_sc.tl.rlae` (in memory or read back from an ``.h5ad`` file).
    key
        The entry of ``adata.uns`` it wrote (its ``key_added``; ``"rlae"`` by default).

    Returns
    -------
    rlae_sc.RLAEModel
        The recipe (``uns['rlae_recipe']``), encoder and decoder, lambda, training parameters and history;
        :meth:`~rlae_sc.RLAEModel.save` writes it as a portable model file.
    """
    if key not in adata.uns or "decoder" not in adata.uns[key]:
        raise KeyError(f"adata.uns[{key!r}] holds no model: train one with rlae_sc.tl.rlae(adata)")
    u = adata.uns[key]
    return RLAEModel(
        recipe=Recipe.from_dict(json.loads(adata.uns["rlae_recipe"])),
        encoder=np.asarray(u["encoder"]),
        decoder=np.asarray(u["decoder"]),
        lam=float(u["lambda"]),
        total_scatter=float(u["total_scatter"]),
        n_cells=int(u["n_cells"]),
        params={name: _plain(value) for name, value in u["params"].items()},
        trace={name: np.asarray(values).tolist() for name, values in u["trace"].items()},
    )


def _plain(value):
    """A numpy scalar (as read back from ``.h5ad``) as the Python value the model file's JSON takes."""
    return value.item() if isinstance(value, np.generic) else value


__all__ = ["model"]


def __dir__() -> list[str]:
    return sorted(__all__)  # the namespace's public functions only, as a notebook's completion shows them
