"""Draw the README's picture, ``docs/_static/overview.png``, from the package's own code and simulated counts.

Run from the repository root: ``.venv/bin/python docs/readme_figure.py``. Left, the theorem on the data: the
decoder's singular values against the curve ``sqrt(1 - lambda / e)`` that the theory predicts from the exact
eigenvalues ``e`` of the same matrix, with lambda at the noise floor (``n_comps="auto"``). Right, the cells in the
learned embedding (UMAP of ``X_rlae``), coloured by their simulated cell type.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import scanpy as sc  # noqa: E402

import rlae_sc as rl  # noqa: E402
from rlae_sc.simulate import synthetic_counts  # noqa: E402

OUT = Path(__file__).resolve().parent / "_static" / "overview.png"


def main() -> None:
    adata = synthetic_counts(n_cells=1500, n_genes=1000, seed=0)
    rl.pp.recipe(adata, n_top_genes=600)
    rl.tl.rlae(adata, n_comps="auto")
    sc.pp.neighbors(adata, use_rep="X_rlae")
    sc.tl.umap(adata, random_state=0)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    rl.pl.shrinkage(adata, ax=left)
    k = adata.obsm["X_rlae"].shape[1]
    left.set_title(f"decoder singular values vs theory (k = {k} above the noise floor)", fontsize=10)
    left.set_xlabel("e_i / lambda (exact eigenvalue of C over lambda)")
    xy = adata.obsm["X_umap"]
    types = adata.obs["cell_type"].astype("category")
    for i, name in enumerate(types.cat.categories):
        mask = (types == name).to_numpy()
        right.scatter(xy[mask, 0], xy[mask, 1], s=3, color=f"C{i}", label=str(name), rasterized=True)
    right.set_xticks([])
    right.set_yticks([])
    right.set_xlabel("UMAP 1")
    right.set_ylabel("UMAP 2")
    right.set_title("cells in the learned embedding (simulated types)", fontsize=10)
    right.legend(markerscale=4, frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=90)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
