"""Every figure of :mod:`rlae_sc.papers` computed and written to one page: ``figures.html``, ``figures.json``
and ``figures/*.png``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.stats
import torch
from matplotlib.figure import Figure

from rlae_sc.io import write_json
from rlae_sc.lae import theory
from rlae_sc.papers.bao2020 import bao_iterations_vs_k, bao_rules, iterations_to_threshold
from rlae_sc.papers.data import cells_matrix, paper_matrix
from rlae_sc.papers.dynamics import SMALL_STEP, dynamics_runs, saxe_mode_strengths
from rlae_sc.papers.kunin2019 import (
    fig3_transpose_distance,
    fig4_heatmaps,
    fig5_shrinkage,
    fig6_unit_circle,
    fig7_directions,
    fig8_embeddings,
    losses_on,
)
from rlae_sc.papers.transport import transport_runs, weight_transport
from rlae_sc.products import scatter_matrix
from rlae_sc.report import write_page

FIGURE_NAMES = (  # the files figures/<name>.png; workflow/rules/figures.smk lists the same names
    "kunin_fig3_transpose_distance",
    "kunin_fig4_heatmaps",
    "kunin_fig5_shrinkage",
    "kunin_fig6_unit_circle",
    "kunin_fig7_directions",
    "kunin_fig8_embeddings",
    "bao_rules_synthetic",
    "bao_rules_cells",
    "bao_iterations_vs_k",
    "saxe_mode_strengths",
    "weight_transport",
)


def _in_table(key: str) -> bool:
    """The page's table: every number but the per-k iterations of Bao's figure and the per-mode half-way iterations."""
    return not (key.startswith("bao_") and "axis" not in key) and "half_iteration" not in key


def _entries(cells: str | Path | None, scale: float) -> list[tuple[str, Figure, str, dict]]:
    """Every figure as ``(name, figure, caption, numbers)``, in ``FIGURE_NAMES`` order; ``scale`` shortens runs."""
    X = paper_matrix()
    C = X.T @ X
    e, U = theory.exact_pca(C, 10)
    fits = losses_on(C, 10, 10.0, int(20000 * scale))
    Xc, labels, name = cells_matrix(cells)
    Cc = scatter_matrix(Xc)
    ks = [2, 4, 8, 16]
    synth = scipy.stats.ortho_group.rvs(40, random_state=5) @ np.diag(np.linspace(10, 1, 40))
    entries = [
        ("kunin_fig3_transpose_distance", *fig3_transpose_distance(fits)),
        ("kunin_fig4_heatmaps", *fig4_heatmaps(fits, U)),
        ("kunin_fig5_shrinkage", *fig5_shrinkage(C, e, n_iter=int(3000 * scale))),
        ("kunin_fig6_unit_circle", *fig6_unit_circle(C, theory.exact_pca(C, 2)[1], n_iter=int(20000 * scale))),
    ]
    fig7, cap7, num7, (P, Uc) = fig7_directions(Xc, name, n_iter=int(2000 * scale))
    entries.append(("kunin_fig7_directions", fig7, cap7, num7))
    entries.append(("kunin_fig8_embeddings", *fig8_embeddings(Xc, labels, name, P, Uc)))
    entries.append(("bao_rules_synthetic", *bao_rules(C, 10, "synthetic 20 x 20", int(3000 * scale))))
    entries.append(("bao_rules_cells", *bao_rules(Cc, 10, name, int(3000 * scale))))
    thr = {
        "synthetic 40 x 40": iterations_to_threshold(synth.T @ synth, ks, int(3000 * scale)),
        name: iterations_to_threshold(Cc, ks, int(3000 * scale)),
    }
    entries.append(("bao_iterations_vs_k", *bao_iterations_vs_k(thr, ks, int(3000 * scale))))
    dyn_names = {
        "synthetic": "20 x 20, the figures' step",
        "small_step": f"20 x 20, {SMALL_STEP:g} x the figures' step",
        "cells": f"{name}, the figures' step",
    }
    entries.append(("saxe_mode_strengths", *saxe_mode_strengths(dynamics_runs(C, Cc), dyn_names)))
    transport = {
        "synthetic": transport_runs(C, k=10, lam=10.0, n_iter=int(1000 * scale)),
        "cells": transport_runs(Cc, k=10, lam=0.3 * theory.exact_pca(Cc, 10)[0][-1], n_iter=int(1000 * scale)),
    }
    entries.append(
        ("weight_transport", *weight_transport(transport, {"synthetic": "synthetic 20 x 20", "cells": name}))
    )
    return entries


def make_figures(out_dir: str | Path, *, cells: str | Path | None = None, quick: bool = False) -> dict:
    """Compute every figure, write ``figures/*.png``, ``figures.html`` and ``figures.json`` under ``out_dir``.

    ``quick`` shortens every run (for tests); the published figures use the defaults.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices of at most 765 x 765: on a busy machine extra threads cost 10-30x
    try:
        entries = _entries(cells, 0.1 if quick else 1.0)
    finally:
        torch.set_num_threads(threads)
    numbers = {}
    for _, _, _, num in entries:
        numbers.update({key: None if np.isnan(value) else value for key, value in num.items()})
    assert tuple(name for name, *_ in entries) == FIGURE_NAMES
    out_dir = Path(out_dir)
    write_page(
        out_dir,
        title="rlae-sc: the papers' figures reproduced",
        page="figures.html",
        intro="Kunin, Bloom, Goeva, Seed (ICML 2019), 'Loss landscapes of regularized linear autoencoders', "
        "figures 3-8; Bao, Lucas, Sachdeva, Grosse (NeurIPS 2020), 'Regularized linear autoencoders recover "
        "the principal components, eventually', comparisons of learning rules; the exact learning dynamics of "
        "Saxe, McClelland, Ganguli on the sum loss; learning without weight transport (Kunin, Nayebi, "
        "Sagastuy-Brena, Ganguli, Bloom, Yamins, ICML 2020, 'Two routes to scalable credit assignment without "
        "weight symmetry'). Every number in a caption comes from this run.",
        table=[(key, key, value) for key, value in numbers.items() if _in_table(key)],
        figures=[(fname, fig, cap) for fname, fig, cap, _ in entries],
    )
    write_json(numbers, out_dir / "figures.json")
    return numbers
