"""rlae-sc: principal directions of single-cell data from a regularized linear autoencoder.

The public API, data first and every other argument keyword-only::

    adata = rlae_sc.read("counts.h5ad")
    pre, recipe = rlae_sc.preprocess(adata)
    model = rlae_sc.fit(pre, n_components=50)
    model.save("model.npz"); model = rlae_sc.load_model("model.npz")
    model.embed(new_cells)            # fills new_cells.obsm["X_rlae"]

Larger than memory: ``fit_recipe(H5adMatrix(path), genes)``, ``fit(anndata.read_h5ad(path, backed="r"))``
and ``model.embed(cells, matrix=H5adMatrix(path))`` read blocks of cells; ``with dask_client(2) as client``
gives them a Dask client (``client=``).
"""

from rlae_sc.chunks import H5adMatrix, dask_client
from rlae_sc.cluster import cluster
from rlae_sc.directions import compare_with_pca, directions_adata
from rlae_sc.errors import InputError
from rlae_sc.io import read
from rlae_sc.model import RLAEModel, fit, load_model
from rlae_sc.pipeline import run
from rlae_sc.preprocess import Recipe, fit_recipe, preprocess

__all__ = [
    "H5adMatrix",
    "InputError",
    "RLAEModel",
    "Recipe",
    "cluster",
    "compare_with_pca",
    "dask_client",
    "directions_adata",
    "fit",
    "fit_recipe",
    "load_model",
    "preprocess",
    "read",
    "run",
]
