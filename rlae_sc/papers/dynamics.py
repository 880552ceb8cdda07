"""The exact learning dynamics of Saxe, McClelland and Ganguli on the sum loss: each principal mode's strength
against iterations, measured and predicted (gradient flow and the exact discrete-time solution)."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import scipy.stats
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rlae_sc.lae import theory
from rlae_sc.lae.rules import train_rule

DYNAMICS_START = 1e-3  # each mode's singular value in W1 and W2 at the start of the dynamics runs: u(0) = 1e-6
SMALL_STEP = 0.01  # the dynamics figure's second run: this fraction of the figures' step, where the flow applies


def mode_dynamics(C: np.ndarray, *, k: int, lam: float, lr: float, n_iter: int, trace_every: int = 1) -> dict:
    """Gradient descent on the sum loss from a small aligned, balanced start; measured and predicted mode strengths.

    The start is ``W2 = DYNAMICS_START U_k O``, ``W1 = W2^T`` (``U_k`` the exact top-k
    directions of ``C`` (m x m), O a random k x k rotation). Returns a dict with
    ``iteration`` (T,), ``measured`` (T x k, :func:`rlae_sc.lae.theory.mode_strengths` from
    the trace), ``steps`` (the exact discrete-time solution) and ``flow`` (the gradient-flow
    sigmoid at ``t = lr x iteration``), ``half`` (first traced iteration at half the fixed
    point, per mode), ``e`` (k,) and ``u_star`` (k,). ``lam`` and ``lr`` are in the rules' units.
    """
    e, U = theory.exact_pca(C, k)
    W2 = DYNAMICS_START * U @ scipy.stats.ortho_group.rvs(k, random_state=2)
    fit = train_rule(
        "gd",
        k=k,
        lam=lam,
        C=torch.from_numpy(C),
        lr=lr,
        n_iter=n_iter,
        trace_every=trace_every,
        init=(torch.from_numpy(W2.T.copy()), torch.from_numpy(W2)),
    )
    it = np.asarray(fit.trace["iteration"])
    u = np.column_stack([fit.trace[f"strength_{i + 1}"] for i in range(k)])
    u_star = theory.mode_fixed_point(e, lam)
    return {
        "iteration": it,
        "measured": u,
        "steps": theory.mode_strength_steps(n_iter, e=e, lam=lam, lr=lr, u0=u[0])[it.astype(int)],
        "flow": theory.mode_strength_flow(lr * it, e=e, lam=lam, u0=u[0]),
        "half": theory.half_way_iterations(it, u, u_star),
        "e": e,
        "u_star": u_star,
    }


def _plot_strengths(ax, run: dict, title: str) -> None:
    colors = mpl.colormaps["viridis"](np.linspace(0, 0.9, run["measured"].shape[1]))
    it = run["iteration"]
    for i, color in enumerate(colors):
        ax.plot(it, run["measured"][:, i], "o", ms=2.2, color=color)
        ax.plot(it, run["steps"][:, i], "-", lw=0.9, color=color)
        ax.plot(it, run["flow"][:, i], "--", lw=0.7, color=color)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("gradient-descent iteration")


def saxe_mode_strengths(runs: dict[str, dict], names: dict[str, str]) -> tuple[Figure, str, dict]:
    """Figure of :func:`mode_dynamics` runs: ``runs`` has keys ``synthetic``, ``small_step`` and ``cells``."""
    fig = Figure(figsize=(13, 3.9))
    axes = fig.subplots(1, 3, sharey=True)
    dev = {key: float(np.max(np.abs(run["measured"] - run["steps"]))) for key, run in runs.items()}
    flow = {key: float(np.max(np.abs(run["measured"] - run["flow"]))) for key, run in runs.items()}
    for ax, key in zip(axes, ("synthetic", "small_step", "cells")):
        worst = f"worst |measured - discrete| {dev[key]:.1e}\nworst |measured - sigmoid| {flow[key]:.3f}"
        _plot_strengths(ax, runs[key], f"{names[key]}\n{worst}")
    axes[0].set_ylabel("mode strength u_i = u_i^T W2 W1 u_i")
    viridis = mpl.colormaps["viridis"]
    handles = [
        Line2D([], [], color="0.3", ls="", marker="o", ms=3, label="measured"),
        Line2D([], [], color="0.3", ls="-", label="exact discrete-time solution"),
        Line2D([], [], color="0.3", ls="--", label="gradient-flow sigmoid"),
        Line2D([], [], color=viridis(0.0), label="mode 1 (largest e)"),
        Line2D([], [], color=viridis(0.9), label="mode 10"),
    ]
    axes[2].legend(handles=handles, frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle("Exact learning dynamics: each principal mode rises along its own curve", fontsize=10)
    fig.tight_layout()
    order = {key: bool(np.all(np.diff(run["half"]) > 0)) for key, run in runs.items()}
    halves = {key: ", ".join(f"{h:g}" for h in run["half"]) for key, run in runs.items()}
    caption = (
        "What it shows: gradient descent learns the principal modes one at a time, the largest first, each along "
        "an S-shaped curve that theory predicts exactly. Gradient descent on the sum loss (k = 10) from a small "
        "balanced start aligned with the principal directions (each mode's singular value "
        f"{DYNAMICS_START:g} in encoder and decoder, so strength u_i(0) = 1e-6). Points: the measured strength of "
        "mode i, u_i^T W2 W1 u_i with u_i the exact principal direction. Dashed: the closed form of gradient flow "
        "(Saxe, McClelland, Ganguli, here for the sum loss in the rules' units), the logistic curve "
        "u_i(t) = u*_i / (1 + (u*_i/u_i(0) - 1) exp(-r_i t)) with fixed point u*_i = 1 - lambda/e_i, rate "
        "r_i = 4 (e_i - lambda) and t = step x iterations. Solid: the exact solution for a finite step, the "
        "recursion u <- u (1 + 2 step (e_i - lambda - e_i u))^2, which rises later than the sigmoid and, at the "
        "figures' step 0.5/(e_1 + lambda), overshoots and rings around u*_i for the top modes. "
        f"Left: Kunin et al.'s 20 x 20 matrix, lambda = 10, the figures' step; measured worst deviation from the "
        f"discrete solution {dev['synthetic']:.1e} over the whole run (from the sigmoid {flow['synthetic']:.2f}). "
        f"Middle: the same at {SMALL_STEP:g} x that step, where the sigmoid itself holds: worst deviation "
        f"{flow['small_step']:.3f}. Right: {names['cells']}, lambda = 0.3 e_k, the figures' step: worst deviation "
        f"from the discrete solution {dev['cells']:.1e} (from the sigmoid {flow['cells']:.2f}). Learning order: the "
        f"iterations at which modes 1-10 first reach half their fixed point are {halves['synthetic']} (20 x 20), "
        f"{halves['small_step']} (small step, traced every 20) and {halves['cells']} ({names['cells']}, traced "
        "every 2): "
        + (
            "strictly increasing in every run, so modes are learned in decreasing eigenvalue order."
            if all(order.values())
            else "NOT strictly increasing in every run."
        )
    )
    numbers = {f"saxe_{key}_max_dev_steps": v for key, v in dev.items()}
    numbers.update({f"saxe_{key}_max_dev_flow": v for key, v in flow.items()})
    numbers.update({f"saxe_{key}_ordered": float(v) for key, v in order.items()})
    for key, run in runs.items():
        numbers.update({f"saxe_{key}_half_iteration_{i + 1}": float(h) for i, h in enumerate(run["half"])})
    return fig, caption, numbers


def dynamics_runs(C: np.ndarray, Cc: np.ndarray) -> dict[str, dict]:
    """The three runs of :func:`saxe_mode_strengths`: the 20 x 20 matrix ``C`` (lambda = 10) at the figures' step
    and at ``SMALL_STEP`` of it, and the cells' ``Cc`` (lambda = 0.3 e_k) at the figures' step."""
    e = theory.exact_pca(C, 1)[0][0]
    ec = theory.exact_pca(Cc, 10)[0]
    lam_c = 0.3 * ec[-1]
    return {
        "synthetic": mode_dynamics(C, k=10, lam=10.0, lr=0.5 / (e + 10.0), n_iter=60),
        "small_step": mode_dynamics(
            C, k=10, lam=10.0, lr=SMALL_STEP * 0.5 / (e + 10.0), n_iter=int(40 / SMALL_STEP), trace_every=20
        ),
        "cells": mode_dynamics(Cc, k=10, lam=lam_c, lr=0.5 / (ec[0] + lam_c), n_iter=300, trace_every=2),
    }
