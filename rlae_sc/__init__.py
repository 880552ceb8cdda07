"""rlae-sc: principal directions of single-cell data from a regularized linear autoencoder.

Used as scanpy is, AnnData in and results in scanpy's slots::

    import rlae_sc as rl

    adata = rl.read("counts.h5ad")            # validated counts
    rl.pp.recipe(adata)                       # QC, normalisation, HVGs, scaling; the recipe in uns
    rl.tl.rlae(adata, n_comps=50)             # obsm['X_rlae'], varm['rlae_directions'], uns['rlae']
    rl.pl.variance_ratio(adata)
    model = rl.get.model(adata)               # model.save("model.npz"); rl.read_model("model.npz")
    rl.tl.embed(new_cells, model)             # raw counts -> new_cells.obsm['X_rlae']

Importing it changes nothing global (matplotlib's backend and rcParams stay as they are).

Larger than memory: ``fit_recipe(H5adMatrix(path), genes)``, ``fit(anndata.read_h5ad(path, backed="r"))``
and ``model.embed(cells, matrix=H5adMatrix(path))`` read blocks of cells; ``with dask_client(2) as client``
gives them a Dask client (``client=``).
"""

from rlae_sc import get, pl, pp, tl
from rlae_sc.chunks import H5adMatrix, dask_client
from rlae_sc.errors import InputError
from rlae_sc.io import read
from rlae_sc.model import RLAEModel, fit, load_model
from rlae_sc.model import load_model as read_model
from rlae_sc.pipeline import run
from rlae_sc.preprocess import Recipe, fit_recipe, preprocess

__all__ = [
    "H5adMatrix",
    "InputError",
    "RLAEModel",
    "Recipe",
    "dask_client",
    "fit",
    "fit_recipe",
    "get",
    "load_model",
    "pl",
    "pp",
    "preprocess",
    "read",
    "read_model",
    "run",
    "tl",
]
