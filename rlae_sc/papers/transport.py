"""Learning without weight transport (Kunin, Nayebi, Sagastuy-Brena, Ganguli, Bloom, Yamins, ICML 2020, 'Two
routes to scalable credit assignment without weight symmetry'): feedback alignment, Kolen-Pollack and the
weight mirror against backprop, with and without weight decay."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rlae_sc.lae import theory
from rlae_sc.lae.rules import train_rule

TRANSPORT_RULES = {  # rule -> label in the weight-transport figure
    "gd": "backprop (gd)",
    "feedback_alignment": "feedback alignment",
    "kolen_pollack": "Kolen-Pollack",
    "weight_mirror": "weight mirror",
}
TRANSPORT_TOP = 5  # alignment in the weight-transport figure: min |cos| over the top 5 directions


def transport_runs(C: np.ndarray, *, k: int, lam: float, n_iter: int) -> dict[tuple[str, bool], dict]:
    """Each rule of ``TRANSPORT_RULES`` with weight decay ``lam`` and without (lam = 0), from one random start.

    All runs use the step ``0.2 / (e_1 + lam)`` (the feedback rules' default) on ``C`` (m x m).
    Returns the traces, keyed by ``(rule, decayed)``.
    """
    e1 = theory.exact_pca(C, 1)[0][0]
    Ct = torch.from_numpy(C)
    return {
        (rule, decay > 0): train_rule(
            rule, k=k, lam=decay, C=Ct, lr=0.2 / (e1 + lam), n_iter=n_iter, trace_every=max(1, n_iter // 150), seed=1
        ).trace
        for rule in TRANSPORT_RULES
        for decay in (lam, 0.0)
    }


def _top_cos(trace: dict) -> np.ndarray:
    return np.min([trace[f"cos_{i + 1}"] for i in range(TRANSPORT_TOP)], axis=0)


def _transport_numbers(name: str, runs: dict) -> dict:
    numbers = {}
    for (rule, decayed), trace in runs.items():
        key = f"transport_{name}_{rule}_{'decay' if decayed else 'no_decay'}"
        numbers[f"{key}_top{TRANSPORT_TOP}_cos"] = float(_top_cos(trace)[-1])
        numbers[f"{key}_transpose_distance"] = trace["transpose_distance"][-1]
        if "feedback_distance" in trace:
            numbers[f"{key}_feedback_distance"] = trace["feedback_distance"][-1]
    return numbers


def _transport_summary(key: str, name: str, numbers: dict) -> str:
    n = {k.removeprefix(f"transport_{key}_"): v for k, v in numbers.items() if k.startswith(f"transport_{key}_")}
    return (
        f"{name}: Kolen-Pollack with decay ||B - W2^T||/||W2|| {n['kolen_pollack_decay_feedback_distance']:.1e}, "
        f"top-5 |cos| {n['kolen_pollack_decay_top5_cos']:.6f} (backprop {n['gd_decay_top5_cos']:.6f}), without decay "
        f"{n['kolen_pollack_no_decay_feedback_distance']:.2f}; feedback alignment without decay "
        f"{n['feedback_alignment_no_decay_feedback_distance']:.2f} (top-5 |cos| "
        f"{n['feedback_alignment_no_decay_top5_cos']:.2f}), with decay "
        f"{n['feedback_alignment_decay_feedback_distance']:.2f}; "
        f"weight mirror with decay {n['weight_mirror_decay_feedback_distance']:.1e}, without "
        f"{n['weight_mirror_no_decay_feedback_distance']:.1e} (top-5 |cos| {n['weight_mirror_no_decay_top5_cos']:.2f})"
    )


def weight_transport(runs: dict[str, dict], names: dict[str, str]) -> tuple[Figure, str, dict]:
    """Figure of :func:`transport_runs` for each data set in ``runs`` (key -> runs; ``names``: key -> title)."""
    fig = Figure(figsize=(13, 3.6 * len(runs)))
    axes = fig.subplots(len(runs), 3, squeeze=False)
    labels = ("||B - W2^T|| / ||W2||", "||W1 - W2^T|| / ||W2||", f"1 - min top-{TRANSPORT_TOP} |cos| with PCA")
    numbers = {}
    for row, (key, res) in zip(axes, runs.items()):
        for (rule, decayed), trace in res.items():
            style = dict(color=f"C{list(TRANSPORT_RULES).index(rule)}", ls="-" if decayed else "--", lw=1.0)
            it = np.maximum(trace["iteration"], 1)
            if "feedback_distance" in trace:
                row[0].semilogy(it, np.maximum(trace["feedback_distance"], 1e-17), **style)
            row[1].semilogy(it, np.maximum(trace["transpose_distance"], 1e-17), **style)
            row[2].semilogy(it, np.maximum(1 - _top_cos(trace), 1e-17), **style)
        for ax, label in zip(row, labels):
            ax.set_ylabel(label, fontsize=8)
            ax.set_xlabel("iteration")
            ax.set_title(names[key], fontsize=9)
        numbers.update(_transport_numbers(key, res))
    handles = [Line2D([], [], color=f"C{i}", label=label) for i, label in enumerate(TRANSPORT_RULES.values())]
    handles += [Line2D([], [], color="k", ls=ls, label=lab) for ls, lab in (("-", "weight decay"), ("--", "none"))]
    axes[0, 2].legend(handles=handles, frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle("Learning without weight transport: feedback B in place of W2^T", fontsize=10)
    fig.tight_layout()
    caption = (
        "What it shows: the autoencoder can learn PCA without its backward pass reading the forward weights, if "
        "the backward copy B gets the decoder's updates and the same weight decay (Kolen-Pollack): decay alone "
        "makes the copy equal the transpose; a fixed random copy (feedback alignment) never does. "
        "The encoder's update needs the decoder read backwards (W2^T); the rules here send the error back through a "
        "separate matrix B instead: fixed and random (feedback alignment), given the decoder's own update and "
        "weight decay (Kolen-Pollack), or learned from the decoder's response to noise in the hidden units (weight "
        "mirror). Backprop uses W2^T itself (B - W2^T = 0, not drawn). Solid: sum loss with weight decay "
        "(lambda = 10 on the 20 x 20 matrix, 0.3 e_k on cells); dashed: without (lambda = 0); k = 10, same start "
        "and step for every rule. Theory: with Kolen-Pollack B - W2^T shrinks by exactly 1 - 2 step lambda per step, "
        "so weight decay alone makes the two copies agree, and the autoencoder then is the sum-regularized one and "
        "learns the principal directions; without decay the difference never shrinks; a fixed random B stays "
        "random. Measured at the end: " + "; ".join(_transport_summary(key, names[key], numbers) for key in runs) + "."
    )
    return fig, caption, numbers
