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
STALL_ITERATIONS = 10  # float32 iterations without a smaller read-out change before switching to float64


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


def _ridge_step(C: torch.Tensor, W1: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`ridge_decoder`, and the products ``C W1^T`` (m x k) and ``W1 C W1^T`` (k x k) it was built from."""
    CW = C @ W1.T
    G = W1 @ CW
    A = G + lam * torch.eye(W1.shape[0], dtype=C.dtype, device=C.device)
    return torch.linalg.solve(A, CW.T).T, CW, G


def fit_tied_exact(
    C: torch.Tensor,
    k: int,
    *,
    lam: float | None = None,
    lambda_frac: float = 0.1,
    oversample: int = 40,
    max_iter: int = 1000,
    tol: float = 1e-8,
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
        After every iteration the top-k read-out (Rayleigh-Ritz in the
        trained units' span, from ``W^T C W``, which the step computes anyway)
        is compared with the previous one; training stops when their subspace
        distance (mean squared sine of the principal angles) is below ``tol``.
        The distance to exact PCA is then typically ten times ``tol``. The
        trace records every ``check_every`` iterations and the last one.
    seed
        Seed of the random start.
    iteration_dtype
        Precision of the first training iterations (float32 by default: about
        1.6x faster). When ``tol`` is below ``FLOAT32_FLOOR`` and the read-out
        moves less than that floor, or float32 stops improving for
        ``STALL_ITERATIONS`` iterations, training continues in the precision
        of ``C`` (float64) until it moves less than ``tol``. The final
        read-out, lambda and the final decoder always use ``C``.
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
    for _ in range(n_warmup):  # lambda = 0: the same subspace sequence, no lambda needed yet
        W_prev, W, G = W, *_ridge_step(Ci, W.T, 0.0)[::2]
    ritz = _ritz(W_prev, G)[0].cpu().numpy()
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
    basis = None
    best, best_it = np.inf, 0  # smallest change so far, to notice when float32 stops improving
    it = 0
    with progress(total=max_iter, desc="train (tied exact)") as bar:
        for it in range(1, max_iter + 1):
            W_new, CW, G = _ridge_step(Ci, W.T, lam)  # CW = C W, G = W^T C W: reused by the check and the trace
            new = _ritz(W, G)[1][:, :k]
            change = 1.0 if basis is None else _subspace_change(basis, new)
            basis = new
            if change < best:
                best, best_it = change, it
            converged = change < tol and (Ci.dtype == C.dtype or tol >= FLOAT32_FLOOR)
            if it % check_every == 0 or converged or it == max_iter:
                readout_change.append(change)
                Wd, Wd_new = W.to(C.dtype), W_new.to(C.dtype)
                if recorder is None:
                    trace["iteration"].append(n_warmup + it)
                    rec = trace_C - 2 * torch.sum(W_new * CW) + torch.sum(G * (W_new.T @ W_new))
                    trace["loss"].append(float(rec + lam * (W.square().sum() + W_new.square().sum())))
                    trace["transpose_distance"].append(
                        float(torch.linalg.norm(Wd_new - Wd) / torch.linalg.norm(Wd_new))
                    )
                else:
                    t1 = time.perf_counter()
                    recorder.record(n_warmup + it, Wd.T, Wd_new, lam)
                    trace_seconds += time.perf_counter() - t1
            bar.update(1)
            W = W_new
            if converged:
                break
            if Ci.dtype != C.dtype and (change < FLOAT32_FLOOR or it - best_it >= STALL_ITERATIONS):
                Ci, W = C, W.to(C.dtype)  # float32 has done its part: finish in C's precision
                best, best_it = np.inf, it
    readout = rayleigh_ritz_decoder(Cn, W.cpu().numpy().astype(np.float64), lam)[:, :k]
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


def _ritz(W: torch.Tensor, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz values (decreasing) and orthonormal Ritz vectors (m x kk, float64) of ``C`` in ``range(W)``.

    From ``G = W^T C W`` alone: with ``W = Q R`` (Cholesky QR, ``R^T R = W^T W``),
    ``Q^T C Q = R^-T G R^-1``, so no product with ``C`` is needed.
    """
    Wd, Gd = W.double(), G.double()
    R = torch.linalg.cholesky(Wd.T @ Wd, upper=True)
    Rinv = torch.linalg.solve_triangular(R, torch.eye(R.shape[0], dtype=R.dtype, device=R.device), upper=True)
    r, V = torch.linalg.eigh(Rinv.T @ ((Gd + Gd.T) / 2) @ Rinv)
    return r.flip(0), Wd @ (Rinv @ V.flip(1))


def _subspace_change(Qa: torch.Tensor, Qb: torch.Tensor) -> float:
    """Subspace distance ``1 - ||Qa^T Qb||_F^2 / k`` between two orthonormal m x k bases."""
    return float(max(0.0, 1.0 - torch.linalg.norm(Qa.T @ Qb) ** 2 / Qa.shape[1]))
