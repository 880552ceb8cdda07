"""rlae-sc: principal directions of single-cell data from a regularized linear autoencoder.

Used as scanpy is, AnnData in and results in scanpy's slots::

    import rlae_sc as rl

    adata = rl.read("counts.h5ad")            # validated counts
    rl.pp.recipe(adata)                       # QC, normalisation, HVGs, scaling; the recipe in uns
    rl.tl.rlae(adata, n_comps=50)             # obsm['X_rlae'], varm['rlae_directions'], uns['rlae']
    rl.pl.variance_ratio(adata)
    model = rl.get.model(adata)               # model.save("model.npz"); rl.read_model("model.npz")
    rl.tl.embed(new_cells, model)             # raw counts -> new_cells.obsm['X_rlae']

Importing it changes nothing global (matplotlib's backend and rcParams stay as they are). Session settings
(progress bars, verbosity, block size, device, threads) are ``rl.settings`` (:class:`rlae_sc.settings.Settings`).

Larger than memory: ``fit_recipe(H5adMatrix(path), genes)``, ``fit(anndata.read_h5ad(path, backed="r"))``
and ``model.embed(cells, matrix=H5adMatrix(path))`` read blocks of cells; ``with dask_client(2) as client``
gives them a Dask client (``client=``).
"""

from importlib import import_module as _import_module
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("rlae-sc")
except _PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

# ``preprocess`` and ``settings`` are both submodules and what they define (a function, the settings object);
# those are bound here, over the submodules' names, so that ``rlae_sc.preprocess`` is the function and
# ``rlae_sc.settings`` the object however the submodules are imported later.
from rlae_sc.preprocess import fit_recipe, preprocess
from rlae_sc.recipe import Recipe
from rlae_sc.settings import settings

# Every other public name and the module that defines it, imported on first use (PEP 562): a process that runs
# one stage loads only the libraries it needs (torch, umap-learn, faiss and matplotlib take seconds).
_EXPORTS = {
    "H5adMatrix": "rlae_sc.rows",
    "dask_client": "rlae_sc.dask_engine",
    "InputError": "rlae_sc.errors",
    "read": "rlae_sc.io",
    "RLAEModel": "rlae_sc.model",
    "fit": "rlae_sc.train",
    "load_model": "rlae_sc.model",
    "run": "rlae_sc.pipeline",
}
_ALIASES = {"read_model": "load_model"}  # scanpy's name for readers, the same function
_SUBMODULES = ("get", "pl", "pp", "tl")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _import_module(f"rlae_sc.{name}")
    target = _ALIASES.get(name, name)
    if target in _EXPORTS:
        return getattr(_import_module(_EXPORTS[target]), target)
    raise AttributeError(f"module 'rlae_sc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_ALIASES, *_SUBMODULES})


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
    "settings",
    "tl",
]
