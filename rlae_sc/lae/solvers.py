"""Solvers that train the sum-regularized linear autoencoder from ``C = X^T X``.

Each solver is a function ``(C, k, ...) -> LAEFit``. ``C`` is the m x m scatter
matrix (a sum over cells) as a float64 torch tensor on any device; lambda is in
the units of ``C``. Nothing here knows about AnnData.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from rlae_sc.lae.theory import alignment, rayleigh_ritz_decoder
from rlae_sc.lae.trace import TraceRecorder
from rlae_sc.progress import progress

FLOAT32_FLOOR = 1e-8  # read-out change below which float32 iterations stop improving


@dataclass
class LAEFit:
    """Weights and history of one training run.

    Attributes
    ----------
    encoder, decoder
        ``W1`` (k x m) and ``W2`` (m x k), float64.
    lam
        Lambda in the units of ``C`` (sum over cells); a vector (k,) for the non-uniform loss.
    lambda_rule
        How lambda was chosen, e.g. ``"0.1 x e_k estimate (Ritz value after 30 warm-up iterations)"``.
    n_iter, converged
        Iterations run and whether a stopping tolerance was met (rules that
        run a fixed number of steps report False).
    trace
        Columns ``iteration``, ``loss`` (sum loss, units of ``C``) and
        ``transpose_distance`` (``||W1 - W2^T|| / ||W2||``, with W2 the
        decoder's exact ridge solution for the encoder W1), one row per stride.
    seconds
        Wall time of the solver (not counting the pass that built ``C``).
    diagnostics
        Solver-specific numbers, e.g. how well the raw decoder's own singular
        vectors already matched the read-out.
    """

    encoder: np.ndarray
    decoder: np.ndarray
    lam: float | np.ndarray
    lambda_rule: str
    solver: str
    n_iter: int
    converged: bool
    trace: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    diagnostics: dict[str, float] = field(default_factory=dict)


def ridge_decoder(C: torch.Tensor, W1: torch.Tensor, lam: float) -> torch.Tensor:
    """Exact minimiser of the sum loss over the decoder for a fixed encoder.

    ``W2 = C W1^T (W1 C W1^T + lam I)^{-1}`` (m x k).
    """
    return _ridge_step(C, W1, lam)[0]


def _ridge_step(C: torch.Tensor, W1: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ridge_decoder` and the product ``C W1^T`` it was built from (m x k), for reuse."""
    CW = C @ W1.T
    A = W1 @ CW + lam * torch.eye(W1.shape[0], dtype=C.dtype, device=C.device)
    return torch.linalg.solve(A, CW.T).T, CW


def fit_tied_exact(
    C: torch.Tensor,
    k: int,
    *,
    lam: float | None = None,
    lambda_frac: float = 0.1,
    oversample: int = 40,
    max_iter: int = 1000,
    tol: float = 1e-10,
    check_every: int = 10,
    seed: int = 0,
    iteration_dtype: torch.dtype = torch.float32,
    recorder: TraceRecorder | None = None,
) -> LAEFit:
    """Train with tied exact updates ``W <- C W (W^T C W + lam I)^{-1}`` and read out k units.

    Each step sets the decoder to its exact ridge solution for the encoder
    ``W^T`` and ties the encoder to it (a regularized subspace iteration);
    its fixed points are the critical points of the sum loss with
    ``W1 = W2^T``. Training runs ``k + oversample`` latent units, because the
    top-k subspace then converges at the rate ``e_{k+p+1} / e_k`` instead of
    ``e_{k+1} / e_k``. The read-out is the minimiser of the k-unit sum loss
    within the learned subspace (Rayleigh-Ritz,
    :func:`~rlae_sc.lae.theory.rayleigh_ritz_decoder`), which also removes
    the slow rotation inside the subspace.

    Parameters
    ----------
    C
        Scatter matrix (m x m), float64, a sum over cells.
    k
        Number of latent units kept.
    lam
        Lambda in the units of ``C``. By default ``lambda_frac`` times a lower
        estimate of ``e_{k+p}`` taken after 20 warm-up iterations (the
        subspace sequence does not depend on lambda, so they are not wasted).
    oversample
        Extra latent units p trained and dropped (clipped to ``m - k``).
    max_iter, tol, check_every
        Every ``check_every`` iterations the top-k read-out is compared with
        the previous one; training stops when their subspace distance
        (mean squared sine of the principal angles) is below ``tol``.
    seed
        Seed of the random start.
    iteration_dtype
        Precision of the first training iterations (float32 by default: about
        1.6x faster). Once the read-out moves less than ``FLOAT32_FLOOR`` (or
        ``tol``) between checks, training continues in the precision of ``C``
        (float64) until it moves less than ``tol``. The read-outs, lambda and the final decoder always use ``C``.
    recorder
        When given, each check records the THEORY.md metrics of the trained
        units (encoder ``W_t^T``, decoder ``W_{t+1}``; the top-k singular
        vectors of that raw decoder against exact PCA) into the trace; its
        time is left out of ``seconds``.

    Returns
    -------
    LAEFit
        ``encoder`` is the transpose of the k-unit optimum in the learned
        subspace and ``decoder`` the exact ridge decoder for that encoder, so
        ``transpose_distance(encoder, decoder)`` measures how close the pair
        is to a critical point. ``trace['transpose_distance']`` is the
        relative step ``||W_{t+1} - W_t|| / ||W_{t+1}||`` of the trained
        units, which is the transpose distance between the encoder ``W_t^T``
        and its ridge decoder ``W_{t+1}``.
    """
    t0 = time.perf_counter()
    m = C.shape[0]
    if not 0 < k < m:
        raise ValueError(f"k must be between 1 and {m - 1} (number of genes - 1), got {k}")
    kk = min(k + oversample, m)
    gen = torch.Generator(device=C.device).manual_seed(seed)
    Ci = C.to(iteration_dtype)
    W = torch.linalg.qr(torch.randn(m, kk, dtype=iteration_dtype, device=C.device, generator=gen))[0]
    n_warmup = 20
    for _ in range(n_warmup):
        W = torch.linalg.qr(Ci @ W)[0]
    Wd = W.to(C.dtype)
    ritz = torch.linalg.eigvalsh(Wd.T @ C @ Wd).flip(0).cpu().numpy()
    if lam is None:
        lam = lambda_frac * float(ritz[-1])
        rule = f"{lambda_frac:g} x e_{kk} estimate (smallest Ritz value after {n_warmup} warm-up iterations)"
    else:
        rule = "given"
    if not lam > 0:
        raise ValueError(f"lambda must be positive, got {lam}")
    collapsed = np.flatnonzero(ritz[:k] <= lam)
    if collapsed.size:
        raise ValueError(
            f"lambda = {lam:.4g} is not below the eigenvalues of latent units {collapsed[0] + 1}..{k} "
            f"(estimated e_{collapsed[0] + 1} = {ritz[collapsed[0]]:.4g}): those units would collapse to zero. "
            f"Choose lambda below {ritz[k - 1]:.4g} or fewer components."
        )
    Cn = C.cpu().numpy()
    trace_C = float(torch.trace(C))
    trace: dict[str, list[float]] = {"iteration": [], "loss": [], "transpose_distance": []}
    readout_change: list[float] = []
    trace_seconds = 0.0
    readout = None
    converged = False
    it = 0
    with progress(total=max_iter, desc="train (tied exact)") as bar:
        for it in range(1, max_iter + 1):
            W_new, CW = _ridge_step(Ci, W.T, lam)  # CW = C W1^T is reused by the trace's loss
            if it % check_every == 0 or it == max_iter:
                new = rayleigh_ritz_decoder(Cn, W_new.cpu().numpy().astype(np.float64), lam)[:, :k]
                change = 1.0 if readout is None else _subspace_change(readout, new)
                Wd, Wd_new = W.to(C.dtype), W_new.to(C.dtype)
                if recorder is None:
                    trace["iteration"].append(n_warmup + it)
                    rec = trace_C - 2 * torch.sum(W_new * CW) + torch.sum((W.T @ CW) * (W_new.T @ W_new))
                    trace["loss"].append(float(rec + lam * (W.square().sum() + W_new.square().sum())))
                    trace["transpose_distance"].append(
                        float(torch.linalg.norm(Wd_new - Wd) / torch.linalg.norm(Wd_new))
                    )
                else:
                    t1 = time.perf_counter()
                    recorder.record(n_warmup + it, Wd.T, Wd_new, lam)
                    trace_seconds += time.perf_counter() - t1
                readout_change.append(change)
                bar.update(check_every)
                readout = new
                if Ci.dtype != C.dtype and change < max(tol, FLOAT32_FLOOR):
                    Ci, W_new = C, W_new.to(C.dtype)  # float32 has done its part: finish in C's precision
                elif change < tol:
                    converged = True
                    W = W_new
                    break
            W = W_new
    trace = {**(recorder.rows if recorder is not None else trace), "readout_change": readout_change}
    W1 = readout.T.copy()
    W2 = ridge_decoder(C, torch.from_numpy(W1).to(C.device), lam).cpu().numpy()
    raw_P = np.linalg.svd(W.cpu().numpy().astype(np.float64), full_matrices=False)[0][:, :10]
    ritz_P = np.linalg.svd(readout[:, :10], full_matrices=False)[0]
    return LAEFit(
        encoder=W1,
        decoder=W2,
        lam=float(lam),
        lambda_rule=rule,
        solver="tied_exact",
        n_iter=n_warmup + it,
        converged=converged,
        trace=trace,
        seconds=time.perf_counter() - t0 - trace_seconds,
        diagnostics={
            "n_trained_units": kk,
            "trace_seconds": trace_seconds,
            "raw_decoder_min_abs_cos_top10": float(np.min(alignment(raw_P, ritz_P))),
        },
    )


def _subspace_change(A: np.ndarray, B: np.ndarray) -> float:
    """Subspace distance between the column spaces of two m x k matrices."""
    Qa = np.linalg.qr(A)[0]
    Qb = np.linalg.qr(B)[0]
    return float(max(0.0, 1.0 - np.linalg.norm(Qa.T @ Qb) ** 2 / A.shape[1]))
