"""Learning rules for linear autoencoders, full-batch on ``C`` or mini-batch on rows of ``X``.

Every rule takes one step from the current weights and a scatter matrix.
Full batch uses ``C = X^T X``; a mini-batch of B rows uses ``(n / B) Xb^T Xb``,
an unbiased estimate of ``C``, so lambda stays in the units of the full ``C``
(a sum over all n cells) in both modes.

Rules (``RULES``):

* ``gd``, ``adam``: gradient descent / Adam on the untied loss (any of ``LOSSES``);
* ``rotation``: gradient descent plus Bao et al.'s latent rotation
  ``G = (triu(S) - triu(S)^T) / 2`` with ``S = W1 C W1^T`` (strict upper
  triangle), subtracting ``G W1`` from the encoder's gradient and ``W2 G^T``
  from the decoder's;
* ``oja``: tied regularized Oja, ``W += eta (C W - W W^T C W - lam W)``;
* ``gha``: Sanger's generalized Hebbian algorithm with weight decay,
  ``W1 += eta (W1 C - lowertri(W1 C W1^T) W1 - lam W1)`` (ordered components);
* ``alternating``: exact decoder ``W2 = C W1^T (W1 C W1^T + lam I)^{-1}``, then
  the exact encoder for that decoder (sum loss, full batch);
* ``tied_ridge``: the decoder set to its ridge solution for the encoder and the
  encoder tied to it, ``W <- C W (W^T C W + lam I)^{-1}`` (full batch): the step of
  the default solver (:func:`rlae_sc.lae.solvers.fit_tied_exact`) on k units,
  without its oversampling, stopping rule and read-out;
* ``gd_oja``: gradient descent plus the regularized Oja term on the encoder,
  ``W1 += lr OJA_WEIGHT (W1 C - (W1 C W1^T) W1 - lam W1)`` (Oja's rule as a
  stabiliser of error-driven learning, Shervani-Tabar, Mirhoseini, Rosenbaum);
  the term vanishes at every critical point of the sum loss (where
  ``W1 = W2^T``), so the rule keeps the sum loss's minimum;
* rules without weight transport (sum loss; lam = 0 for none): the encoder's
  update sends the error back through a feedback matrix ``B`` (k x m) in place of
  ``W2^T``, ``W1 += lr (2 B (C - W2 W1 C) - 2 lam W1)``, while the decoder takes
  its gradient step ``W2 += lr (2 (C W1^T - W2 W1 C W1^T) - 2 lam W2)``:

  - ``feedback_alignment``: B fixed and random (Lillicrap et al. 2016);
  - ``kolen_pollack``: B receives the decoder's update transposed and the same
    weight decay, so ``B - W2^T`` shrinks by exactly ``1 - 2 lr lam`` per step;
  - ``weight_mirror``: B learns from the decoder's response to white noise in the
    hidden units (Akrout et al. 2019; the "amplification plus decay" rule of Kunin
    et al. 2020, with the two weighted equally): in expectation
    ``B += lr sigma^2 (W2^T - B)`` with noise variance ``sigma^2 = tr(C) / m``
    (the data's mean variance per gene, units of C), so B tracks W2^T whatever lam.

Tied rules keep ``W1 = W2^T`` by construction. Every rule's gradient (and the
step ``lr``) is that of the loss as written, a sum over cells with no factor 1/2;
see :func:`rlae_sc.lae.theory.mode_strength_flow` for the dynamics this implies.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlae_sc import checkpoint as checkpoint_file
from rlae_sc.lae.losses import LOSSES, regularized_loss
from rlae_sc.lae.solvers import LAEFit, ridge_decoder
from rlae_sc.lae.trace import TraceRecorder
from rlae_sc.params import FEEDBACK_RULES, RULES, TrainParams
from rlae_sc.progress import progress

GRADIENT_RULES = ("gd", "adam", "rotation", "gd_oja")
TIED_RULES = ("oja", "gha", "tied_ridge")
FULL_BATCH_ONLY = ("alternating", "tied_ridge")
OJA_WEIGHT = 1.0  # weight of Oja's term in the encoder's update of ``gd_oja``
# default step x (e_1 + lam): on Kunin et al.'s 20 x 20 matrix from the N(0, 1/m) start, 0.5 diverges with a
# feedback B and leaves gd_oja far from the minimum after 3,000 steps; 0.2 converges (also on pbmc68k_reduced)
SMALL_STEP_RULES = ("gd_oja", *FEEDBACK_RULES)


def top_eigenvalue(C: torch.Tensor, *, n_iter: int = 50) -> float:
    """Power-iteration estimate of ``e_1`` (used to scale default step sizes)."""
    v = torch.ones(C.shape[0], dtype=C.dtype, device=C.device) / C.shape[0] ** 0.5
    for _ in range(n_iter):
        v = C @ v
        v = v / torch.linalg.norm(v)
    return float(v @ C @ v)


def _save_checkpoint(path, signature: str, it: int, weights: dict, gen: torch.Generator, rows: dict, opt) -> None:
    arrays = {
        "iteration": np.array(it),
        **{key: w.detach().cpu().numpy() for key, w in weights.items() if w is not None},
        "generator": gen.get_state().numpy(),
        **{f"trace/{key}": np.asarray(values) for key, values in rows.items()},
    }
    if opt is not None:
        for i, st in opt.state_dict()["state"].items():
            arrays.update({f"adam/{i}/{key}": value.cpu().numpy() for key, value in st.items()})
    checkpoint_file.save(path, signature, arrays)


def exact_encoder(
    C: torch.Tensor, W2: torch.Tensor, lam: float, *, eig: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """Minimiser of the sum loss over the encoder for a fixed decoder.

    Solves ``(W2^T W2) W1 C + lam W1 = W2^T C`` in the eigenbases of
    ``W2^T W2 = Q diag(d) Q^T`` and ``C = V diag(c) V^T``: entry (i, j) of
    ``Q^T W1 V`` is entry (i, j) of ``Q^T W2^T C V`` divided by ``d_i c_j +
    lam``. ``eig``: ``(c, V)`` of ``C`` when the caller has them (full-batch
    training solves with the same ``C`` every step); else computed here.
    """
    c, V = torch.linalg.eigh(C) if eig is None else eig
    d, Q = torch.linalg.eigh(W2.T @ W2)
    B = (Q.T @ W2.T @ C) @ V
    return Q @ (B / (d[:, None] * c[None, :] + lam)) @ V.T


def feedback_step(
    rule: str,
    *,
    C: torch.Tensor,
    W1: torch.Tensor,
    W2: torch.Tensor,
    B: torch.Tensor,
    lam: torch.Tensor,
    lr: float,
    mirror: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of a rule of ``FEEDBACK_RULES``; returns the new ``(W1, W2, B)``.

    ``C`` (m x m, units of the full C; a mini-batch's scaled scatter), encoder ``W1``
    (k x m), decoder ``W2`` (m x k), feedback ``B`` (k x m), ``lam`` a scalar or (k,)
    tensor, step ``lr``, ``mirror`` the weight mirror's noise variance (units of C).
    """
    W1C, BC = torch.split(torch.cat([W1, B]) @ C, W1.shape[0])  # one pass over C for both
    dW2 = 2 * (W1C.T - W2 @ (W1C @ W1.T))  # error x hidden^T, summed over cells
    dW1 = 2 * (BC - (B @ W2) @ W1C)  # the error sent back through B instead of W2^T
    decay = lam.reshape(-1, 1)
    if rule == "kolen_pollack":
        B = B + lr * (dW2.T - 2 * decay * B)
    elif rule == "weight_mirror":
        B = B + lr * mirror * (W2.T - B)
    return W1 + lr * (dW1 - 2 * decay * W1), W2 + lr * (dW2 - 2 * W2 * decay.T), B


def train_rule(
    rule: str,
    *,
    k: int,
    lam,
    C: torch.Tensor | None = None,
    X: torch.Tensor | None = None,
    loss: str = "sum",
    lr: float | None = TrainParams.lr,
    n_iter: int = TrainParams.max_iter,
    batch_size: int | None = TrainParams.batch_size,
    trace_every: int = TrainParams.trace_every,
    seed: int = TrainParams.seed,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    recorder: TraceRecorder | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
) -> LAEFit:
    """Train k latent units with one of ``RULES`` and record a trace.

    Parameters
    ----------
    rule
        One of ``RULES``.
    k
        Latent units.
    lam
        Lambda in the units of the full ``C`` (sum over cells): a scalar, or a
        vector (k,) for the ``nonuniform`` loss.
    C, X
        The scatter matrix (m x m) for full-batch training, or the centred data
        (n x m) for mini-batch training with ``batch_size`` rows per step.
        Either gives the reference for the trace (``C`` is formed once from
        ``X`` when only ``X`` is given).
    loss
        For ``GRADIENT_RULES``: one of ``LOSSES``. The other rules implement the
        sum loss (lam = 0: unregularized; ``gha``, ``oja`` and ``FEEDBACK_RULES`` also
        accept a vector lambda).
    lr
        Step size; default ``0.5 / (e_1 + max(lam))`` (``0.2 / (e_1 + max(lam))`` for
        ``SMALL_STEP_RULES``, ``1e-2`` for Adam).
    n_iter, trace_every, seed
        Steps, trace stride, and the seed of the random start and of batches.
    init
        Optional starting ``(W1, W2)``. ``FEEDBACK_RULES`` draw ``B`` (k x m,
        entries N(0, 1/m)) from the seeded generator after the start.
    recorder
        Trace recorder to fill (one is made from ``C`` when not given).
    checkpoint, checkpoint_every
        A file where the weights, the trace, the batch sampler's state and
        Adam's moments are saved every ``checkpoint_every`` steps. If it
        exists and was written by a run with the same rule, k, lambda, loss,
        step size, batch size, seed and stride, training resumes from it and
        ends exactly as an uninterrupted run would. The caller removes it.
    """
    C = _checked_scatter(rule, loss, batch_size, C, X)
    t0 = time.perf_counter()
    t, recorder, signature, first = _start(
        rule, k=k, lam=lam, C=C, loss=loss, lr=lr, batch_size=batch_size, trace_every=trace_every, seed=seed,
        init=init, recorder=recorder, checkpoint=checkpoint,
    )  # fmt: skip
    n = None if X is None else X.shape[0]
    step = STEPS[rule]
    with progress(total=n_iter, desc=f"train ({rule})", initial=first - 1) as bar:
        for it in range(first, n_iter + 1):
            if batch_size is None:
                Ct = C
            else:
                rows = torch.randint(0, n, (batch_size,), generator=t.gen, device=C.device)
                Xb = X[rows]
                Ct = (n / batch_size) * (Xb.T @ Xb)
            step(t, Ct)
            if it % trace_every == 0 or it == n_iter:
                recorder.record(it, t.W1, t.W2, lam, t.B)
                bar.update(trace_every)
            if checkpoint is not None and it % checkpoint_every == 0:
                weights = {"W1": t.W1, "W2": t.W2, "B": t.B}
                _save_checkpoint(checkpoint, signature, it, weights, t.gen, recorder.rows, t.opt)
    return LAEFit(
        encoder=t.W1.detach().cpu().numpy().copy(),
        decoder=t.W2.detach().cpu().numpy().copy(),
        lam=float(lam) if np.ndim(lam) == 0 else np.asarray(lam, dtype=np.float64),
        lambda_rule="given",
        solver=rule,
        n_iter=n_iter,
        converged=False,  # a fixed number of steps, no stopping tolerance
        trace=recorder.rows,
        seconds=time.perf_counter() - t0,
        diagnostics={"lr": t.lr, "loss": loss, "batch_size": batch_size or 0},
    )


def _checked_scatter(rule: str, loss: str, batch_size: int | None, C, X) -> torch.Tensor:
    """``C`` (m x m), formed from ``X`` (n x m) when not given, once the rule, the loss and the batches are
    checked to go together (a ``ValueError`` otherwise)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if rule not in GRADIENT_RULES and loss not in ("sum", "nonuniform"):
        raise ValueError(
            f"rule {rule!r} implements the sum loss (lam = 0 for none); use one of {', '.join(GRADIENT_RULES)} "
            f"for the {loss} loss"
        )
    if batch_size is not None and rule in FULL_BATCH_ONLY:
        raise ValueError(f"rule {rule!r} is full-batch only; leave batch_size unset")
    if C is None:
        if X is None:
            raise ValueError("give C (full batch) or X (mini-batch)")
        C = X.T @ X
    if batch_size is not None and X is None:
        raise ValueError("mini-batch training needs the data rows X")
    return C


@dataclass
class _Training:
    """A learning rule's state between steps: the rule, its loss and lambda (as given, and as a tensor on
    ``C``'s device), step size, the weight mirror's noise variance (units of C), the encoder ``W1`` (k x m),
    decoder ``W2`` (m x k), feedback ``B`` (k x m; ``None`` but for ``FEEDBACK_RULES``), Adam (``None`` but
    for ``adam``), the seeded generator, and the eigendecomposition of the full-batch ``C`` (``alternating``
    only)."""

    rule: str
    loss: str
    lam: object
    lam_t: torch.Tensor
    lr: float
    mirror: float
    W1: torch.Tensor
    W2: torch.Tensor
    B: torch.Tensor | None
    opt: torch.optim.Optimizer | None
    gen: torch.Generator
    C_eig: tuple[torch.Tensor, torch.Tensor] | None


def _start(
    rule: str,
    *,
    k: int,
    lam,
    C: torch.Tensor,
    loss: str,
    lr: float | None,
    batch_size: int | None,
    trace_every: int,
    seed: int,
    init: tuple[torch.Tensor, torch.Tensor] | None,
    recorder: TraceRecorder | None,
    checkpoint: str | Path | None,
) -> tuple[_Training, TraceRecorder, str, int]:
    """The state :func:`train_rule` starts from (the seeded start, or its checkpoint when one of the same run
    exists), the trace recorder (the start recorded unless resumed), the run's checkpoint signature and the
    first step to take."""
    gen = torch.Generator(device=C.device).manual_seed(seed)
    m = C.shape[0]
    if init is None:
        W1 = torch.randn(k, m, dtype=C.dtype, device=C.device, generator=gen) * m**-0.5
        W2 = torch.randn(m, k, dtype=C.dtype, device=C.device, generator=gen) * m**-0.5
    else:
        W1, W2 = (w.clone().to(C) for w in init)
    if rule in TIED_RULES:
        W2 = W1.T.clone()
    B = torch.randn(k, m, dtype=C.dtype, device=C.device, generator=gen) * m**-0.5 if rule in FEEDBACK_RULES else None
    mirror = float(torch.trace(C)) / m  # the weight mirror's noise variance: mean variance per gene
    lam_t = torch.as_tensor(lam, dtype=C.dtype, device=C.device)
    if lr is None:
        scale = 0.2 if rule in SMALL_STEP_RULES else 0.5
        lr = 1e-2 if rule == "adam" else scale / (top_eigenvalue(C) + float(np.max(lam)))
    recorder = recorder or TraceRecorder(C, k, loss)
    signature = json.dumps(
        {
            "rule": rule,
            "k": k,
            "m": m,
            "lam": np.asarray(lam, dtype=float).tolist(),
            "loss": loss,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "trace_every": trace_every,
        }
    )
    state = checkpoint_file.load(checkpoint, signature) if checkpoint is not None else None
    first = 1
    if state is not None:
        W1, W2 = (torch.from_numpy(state[key]).to(C) for key in ("W1", "W2"))
        B = torch.from_numpy(state["B"]).to(C) if B is not None else None
        first = int(state["iteration"]) + 1
        gen.set_state(torch.from_numpy(state["generator"]))
        recorder.rows = {key.split("/", 1)[1]: state[key].tolist() for key in state if key.startswith("trace/")}
    W1.requires_grad_(rule in GRADIENT_RULES)
    W2.requires_grad_(rule in GRADIENT_RULES)
    opt = torch.optim.Adam([W1, W2], lr=lr) if rule == "adam" else None
    if opt is not None and state is not None:
        saved = opt.state_dict()
        saved["state"] = {
            i: {key: torch.from_numpy(state[f"adam/{i}/{key}"]) for key in ("step", "exp_avg", "exp_avg_sq")}
            for i in range(2)
        }
        opt.load_state_dict(saved)
    C_eig = torch.linalg.eigh(C) if rule == "alternating" else None  # full batch only: the same C every step
    if state is None:
        recorder.record(0, W1, W2, lam, B)
    t = _Training(rule, loss, lam, lam_t, lr, mirror, W1, W2, B, opt, gen, C_eig)
    return t, recorder, signature, first


def _gradient_step(t: _Training, Ct: torch.Tensor) -> None:
    """One step of a rule of ``GRADIENT_RULES`` on the scatter ``Ct`` (m x m): the loss's gradient, with
    ``rotation``'s or ``gd_oja``'s term, taken by gradient descent or Adam."""
    value = regularized_loss(t.W1, t.W2, t.lam_t, t.loss, scatter=Ct)
    g1, g2 = torch.autograd.grad(value, [t.W1, t.W2])
    with torch.no_grad():
        if t.rule == "rotation":
            S = torch.triu(t.W1 @ Ct @ t.W1.T, diagonal=1)
            G = (S - S.T) / 2
            g1 = g1 - G @ t.W1
            g2 = g2 - t.W2 @ G.T
        elif t.rule == "gd_oja":
            W1C = t.W1 @ Ct
            g1 = g1 - OJA_WEIGHT * (W1C - (W1C @ t.W1.T) @ t.W1 - t.lam_t.reshape(-1, 1) * t.W1)
    if t.opt is not None:
        t.W1.grad, t.W2.grad = g1, g2
        t.opt.step()
    else:
        with torch.no_grad():
            t.W1 -= t.lr * g1
            t.W2 -= t.lr * g2


def _feedback_step(t: _Training, Ct: torch.Tensor) -> None:
    """One step of a rule of ``FEEDBACK_RULES`` (:func:`feedback_step`)."""
    t.W1, t.W2, t.B = feedback_step(t.rule, C=Ct, W1=t.W1, W2=t.W2, B=t.B, lam=t.lam_t, lr=t.lr, mirror=t.mirror)


def _oja_step(t: _Training, Ct: torch.Tensor) -> None:
    """Tied regularized Oja, ``W += lr (C W - W W^T C W - lam W)``."""
    W = t.W2
    CW = Ct @ W
    W = W + t.lr * (CW - W @ (W.T @ CW) - W * t.lam_t)
    t.W1, t.W2 = W.T, W


def _gha_step(t: _Training, Ct: torch.Tensor) -> None:
    """Sanger's rule with weight decay, ``W1 += lr (W1 C - lowertri(W1 C W1^T) W1 - lam W1)``, tied."""
    W1C = t.W1 @ Ct
    t.W1 = t.W1 + t.lr * (W1C - torch.tril(W1C @ t.W1.T) @ t.W1 - t.lam_t.reshape(-1, 1) * t.W1)
    t.W2 = t.W1.T


def _alternating_step(t: _Training, Ct: torch.Tensor) -> None:
    """The exact decoder for the encoder, then the exact encoder for that decoder."""
    t.W2 = ridge_decoder(Ct, t.W1, float(t.lam))
    t.W1 = exact_encoder(Ct, t.W2, float(t.lam), eig=t.C_eig)


def _tied_ridge_step(t: _Training, Ct: torch.Tensor) -> None:
    """The decoder set to its ridge solution for the encoder, the encoder tied to it."""
    t.W2 = ridge_decoder(Ct, t.W1, float(t.lam))
    t.W1 = t.W2.T


STEPS = {  # each rule's step, by name: it updates the state in place from a scatter matrix (m x m)
    **dict.fromkeys(GRADIENT_RULES, _gradient_step),
    **dict.fromkeys(FEEDBACK_RULES, _feedback_step),
    "oja": _oja_step,
    "gha": _gha_step,
    "alternating": _alternating_step,
    "tied_ridge": _tied_ridge_step,
}
