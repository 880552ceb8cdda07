"""Solvers that train the sum-regularized linear autoencoder from ``C = X^T X``.

Each solver is a function ``(C, k, ...) -> LAEFit``. ``C`` is the m x m scatter
matrix (a sum over cells) as a float64 torch tensor on any device; lambda is in
the units of ``C``. Nothing here knows about AnnData.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from rlae_sc.lae.theory import alignment, rayleigh_ritz_decoder
from rlae_sc.lae.trace import TraceRecorder
from rlae_sc.params import SOLVER, TrainParams
from rlae_sc.progress import progress

FLOAT32_FLOOR = 1e-8  # read-out change below which float32 iterations stop improving
STALL_ITERATIONS = 10  # float32 iterations without a smaller read-out change before switching to float64
WARMUP_ITERATIONS = 20  # tied steps with lambda 0 before lambda is chosen from their Ritz values
# the largest growth, top direction over the kk-th, that one Chebyshev round may give before its iterate is
# orthonormalised: Cholesky QR (float64) keeps orthogonality to rounding while the condition number is below ~1e7
CHEBYSHEV_GROWTH = 1e6
CHEBYSHEV_MARGIN = 100.0  # the filter aims at squared sines this far below tol, so that the first check stops


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


@contextmanager
def one_thread():
    """Torch and BLAS on one CPU thread inside the block (restored after).

    LAPACK's factorisations, triangular solves and eigensolvers split their sums by the number of threads at
    some shapes, so their last bits, and from them the directions', would follow it. The solver runs its small
    algebra (kk x kk, and m x kk solves) in this block, so that its results are the same bytes with any number
    of threads; the products with ``C``, whose sums MKL and OpenBLAS keep in one order, run outside it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _blas().limit(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


@cache
def _blas() -> ThreadpoolController:
    """The BLAS libraries loaded (numpy's and scipy's), found once."""
    return ThreadpoolController()


def ridge_decoder(C: torch.Tensor, W1: torch.Tensor, lam: float) -> torch.Tensor:
    """Exact minimiser of the sum loss over the decoder for a fixed encoder.

    ``W2 = C W1^T (W1 C W1^T + lam I)^{-1}`` (m x k).
    """
    CW = C @ W1.T
    with one_thread():
        A = W1 @ CW + lam * torch.eye(W1.shape[0], dtype=C.dtype, device=C.device)
        return torch.linalg.solve(A, CW.T).T


def fit_tied_exact(
    C: torch.Tensor,
    k: int,
    *,
    lam: float | None = TrainParams.lam,
    lambda_frac: float = TrainParams.lambda_frac,
    oversample: int = TrainParams.oversample,
    max_iter: int = TrainParams.max_iter,
    tol: float = TrainParams.tol,
    check_every: int = TrainParams.trace_every,
    seed: int = TrainParams.seed,
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
        The read-out, its check and the warm-up's Ritz values use the host
        for their kk x kk algebra, the device for products with ``C``.
    oversample
        Extra latent units p trained and dropped (clipped to ``m - k``).
    max_iter, tol, check_every
        Every ``check_every`` iterations (and at the last) the top-k read-out
        (Rayleigh-Ritz in the trained units' span, from ``W^T C W``, which the
        step computes anyway) is compared with the one ``check_every``
        iterations earlier; training stops when their subspace distance (mean
        squared sine of the principal angles) is below ``tol``. The trace
        records at these checks. Between checks the iterations run on ``C``'s
        device without waiting for it (launch-light on a GPU).
    seed
        Seed of the random start, drawn on the CPU (a seeded CPU generator)
        and moved to ``C``'s device, so that lambda and the directions do
        not depend on the device.
    iteration_dtype
        Precision of the training iterations after the warm-up (which runs in
        ``C``'s precision, so that lambda does not depend on the device's
        rounding); float32 by default: about 1.6x faster. When ``tol`` is below ``FLOAT32_FLOOR`` and the read-out
        moves less than that floor, or float32 stops improving for
        ``STALL_ITERATIONS`` iterations, training continues in the precision
        of ``C`` (float64) until it moves less than ``tol``. The final
        read-out, lambda and the final decoder always use ``C``.
    recorder
        When given, each check records the metrics of docs/theory.rst of the trained
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
    W, ritz_values, S = _warm_up(C, kk, seed, iteration_dtype)
    estimate = f"e_{kk} estimate (smallest Ritz value after {WARMUP_ITERATIONS} warm-up iterations)"
    lam, rule = select_lambda(lam, lambda_frac, float(ritz_values[-1]), estimate)
    _check_lambda(lam, ritz_values, k)
    W, products = chebyshev_filter(C, W, ritz_values, k, tol=tol, dtype=iteration_dtype)
    if products:
        S = ritz(W, W.T @ (C @ W))[1]
    run = _iterate(
        C, W.to(iteration_dtype), S[:, :k], lam, max_iter=max_iter, tol=tol, check_every=check_every, recorder=recorder
    )
    encoder, decoder, raw_cos = _read_out(C, run.W, k, lam)
    trace = {**(recorder.rows if recorder is not None else run.trace), "readout_change": run.readout_change}
    return LAEFit(
        encoder=encoder,
        decoder=decoder,
        lam=float(lam),
        lambda_rule=rule,
        solver=SOLVER,
        n_iter=WARMUP_ITERATIONS + products + run.n_iter,
        converged=run.converged,
        trace=trace,
        seconds=time.perf_counter() - t0 - run.trace_seconds,
        diagnostics={
            "n_trained_units": kk,
            "chebyshev_products": products,
            "trace_seconds": run.trace_seconds,
            "raw_decoder_min_abs_cos_top10": raw_cos,
        },
    )


def chebyshev_filter(
    C: torch.Tensor, W: torch.Tensor, ritz_values: np.ndarray, k: int, *, tol: float, dtype: torch.dtype
) -> tuple[torch.Tensor, int]:
    """The span of ``W`` (m x kk, ``C``'s precision and device) moved towards C's top-k eigenvectors by Chebyshev
    polynomials of ``C``, and the number of products with ``C`` that took (in ``dtype``; each round's
    orthonormalisation in ``C``'s precision).

    Tied steps multiply by ``C`` once per step, so the sine of the angle to the top-k subspace shrinks by
    ``e_{kk+1} / e_k`` per product. A Chebyshev polynomial of degree d that is at most 1 in absolute value on
    ``[0, b]``, with ``b`` the smallest of ``ritz_values`` (kk,, decreasing: the warm-up's estimates of the
    top eigenvalues), grows like ``g^d`` at ``e_k``, ``g = x + sqrt(x^2 - 1)`` with ``x = 2 e_k / b - 1``: for
    close eigenvalues, many times faster (at ``e_k / b = 1.15``, ``g = 2.1`` against ``1.15``). The polynomial
    is applied by its three-term recurrence in rounds of as many products as keep the growth of the top
    direction over the kk-th below :data:`CHEBYSHEV_GROWTH`, each round's result orthonormalised
    (:func:`cholesky_qr`); rounds continue until ``g`` to the products taken reaches
    ``sqrt(CHEBYSHEV_MARGIN / tol)`` (squared sines :data:`CHEBYSHEV_MARGIN` times below ``tol``, from a start
    far from the subspace). The tied steps that follow check convergence as before, so this only shortens
    them. Returns ``W`` unchanged (0 products) when the Ritz values show no gap at k.
    """
    b = float(ritz_values[-1])
    x_k, x_1 = 2.0 * float(ritz_values[k - 1]) / b - 1.0, 2.0 * float(ritz_values[0]) / b - 1.0
    if not b > 0 or x_k <= 1.0:
        return W, 0
    products = int(np.ceil(np.log(CHEBYSHEV_MARGIN / tol) / (2.0 * np.arccosh(x_k))))  # arccosh(x) = log(g)
    degree = max(1, int(np.arccosh(CHEBYSHEV_GROWTH) // np.arccosh(x_1)))
    Ci, done = C.to(dtype), 0
    while done < products:
        Q = cholesky_qr(W.to(C.dtype))[0].to(dtype)
        previous, W = Q, (2.0 / b) * (Ci @ Q) - Q  # T_1 of L = (2 / b) C - I, which maps [0, b] onto [-1, 1]
        for _ in range(degree - 1):
            previous, W = W, 2.0 * ((2.0 / b) * (Ci @ W) - W) - previous
        done += degree
    return cholesky_qr(W.to(C.dtype))[0], done


def select_lambda(lam: float | None, lambda_frac: float, estimate: float, of: str) -> tuple[float, str]:
    """Lambda (units of ``C``) and the rule that chose it: ``lam`` when given (``"given"``), else
    ``lambda_frac`` times ``estimate``, an eigenvalue of ``C`` the trained units see, which ``of`` describes
    (e.g. ``"exact e_50"``). The one place lambda is chosen from ``lambda_frac``: by :func:`fit_tied_exact`
    and by :func:`rlae_sc.train.fit_scatter` for the learning rules."""
    if lam is not None:
        return lam, "given"
    return lambda_frac * estimate, f"{lambda_frac:g} x {of}"


def _warm_up(C: torch.Tensor, kk: int, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """``WARMUP_ITERATIONS`` tied steps with lambda 0 from a seeded random start of ``kk`` units, in ``dtype``
    on ``C``'s device: the subspace sequence does not depend on lambda, so they are not wasted.

    Returns the iterate ``W`` (m x kk, in ``C``'s precision) and its Ritz values (kk,, decreasing, float64
    numpy, units of ``C``) and coefficients (kk x kk; see :func:`ritz`), computed with ``C`` itself.
    """
    m = C.shape[0]
    # a Gaussian start drawn on the CPU (numpy: lambda and directions do not depend on the device), columns of
    # unit length on average; the warm-up's first step orthogonalises it in effect, so no QR is needed
    start = np.random.default_rng(seed).standard_normal((m, kk)) / np.sqrt(m)
    Ci = C.to(dtype)
    W = torch.from_numpy(start).to(device=C.device, dtype=dtype)
    for _ in range(WARMUP_ITERATIONS):
        W = tied_step(Ci, W, 0.0)[0]
    W = W.to(C.dtype)
    values, S = ritz(W, W.T @ (C @ W))
    return W, values, S


def _check_lambda(lam: float, ritz_values: np.ndarray, k: int) -> None:
    """A ``ValueError`` unless lambda is positive and below the estimated eigenvalues (Ritz values, kk,) of
    the k units kept, which would otherwise collapse to zero."""
    if not lam > 0:
        raise ValueError(f"lambda must be positive, got {lam}")
    collapsed = np.flatnonzero(ritz_values[:k] <= lam)
    if collapsed.size:
        raise ValueError(
            f"lambda = {lam:.4g} is not below the eigenvalues of latent units {collapsed[0] + 1}..{k} "
            f"(estimated e_{collapsed[0] + 1} = {ritz_values[collapsed[0]]:.4g}): those units would collapse to "
            f"zero. Choose lambda below {ritz_values[k - 1]:.4g} or fewer components."
        )


@dataclass
class _Iterations:
    """What :func:`_iterate` leaves: the last iterate ``W`` (m x kk), the iterations run, whether the read-out
    converged, the trace of the solver's own metrics (when no recorder was given), the read-out's change at
    each check and the seconds spent recording the trace."""

    W: torch.Tensor
    n_iter: int
    converged: bool
    trace: dict[str, list[float]]
    readout_change: list[float]
    trace_seconds: float


def _iterate(
    C: torch.Tensor,
    W: torch.Tensor,
    S: torch.Tensor,
    lam: float,
    *,
    max_iter: int,
    tol: float,
    check_every: int,
    recorder: TraceRecorder | None,
) -> _Iterations:
    """Tied steps with lambda from the warmed-up ``W`` (m x kk, in the iterations' precision) until the top-k
    read-out (Ritz coefficients ``S``, kk x k, of the last check) moves less than ``tol``, or ``max_iter``
    steps; see :func:`fit_tied_exact` (its ``iteration_dtype``, the checks and the trace)."""
    Ci = C.to(W.dtype)
    reference = (W, S)  # the last checked iterate and its top-k Ritz coefficients
    k = S.shape[1]
    trace_C = float(torch.trace(C))
    trace: dict[str, list[float]] = {"iteration": [], "loss": [], "transpose_distance": []}
    readout_change: list[float] = []
    trace_seconds = 0.0
    best, best_it = np.inf, 0  # smallest change so far, to notice when float32 stops improving
    it, converged = 0, False
    with progress(total=max_iter, desc="train (tied exact)") as bar:
        for it in range(1, max_iter + 1):
            W_new, CW, G = tied_step(Ci, W, lam)  # on the device, without waiting for it
            bar.update(1)
            if it % check_every and it != max_iter:
                W = W_new
                continue
            if not bool(torch.isfinite(W_new).all()):
                raise ValueError("training diverged: W^T C W + lambda I is not positive definite")
            S = ritz(W, G)[1][:, :k]
            change = _subspace_change(*reference, W, S)
            reference = (W, S)
            if change < best:
                best, best_it = change, it
            converged = change < tol and (Ci.dtype == C.dtype or tol >= FLOAT32_FLOOR)
            readout_change.append(change)
            Wd, Wd_new = W.to(C.dtype), W_new.to(C.dtype)
            if recorder is None:
                trace["iteration"].append(WARMUP_ITERATIONS + it)
                rec = trace_C - 2 * torch.sum(W_new * CW) + torch.sum(G * (W_new.T @ W_new))
                trace["loss"].append(float(rec + lam * (W.square().sum() + W_new.square().sum())))
                trace["transpose_distance"].append(float(torch.linalg.norm(Wd_new - Wd) / torch.linalg.norm(Wd_new)))
            else:
                t1 = time.perf_counter()
                recorder.record(WARMUP_ITERATIONS + it, Wd.T, Wd_new, lam)
                trace_seconds += time.perf_counter() - t1
            W = W_new
            if converged:
                break
            if Ci.dtype != C.dtype and (change < FLOAT32_FLOOR or it - best_it >= STALL_ITERATIONS):
                Ci, W = C, W.to(C.dtype)  # float32 has done its part: finish in C's precision
                best, best_it = np.inf, it
    return _Iterations(W, it, converged, trace, readout_change, trace_seconds)


def _read_out(C: torch.Tensor, W: torch.Tensor, k: int, lam: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The k-unit minimiser of the sum loss within the span of the trained units ``W`` (m x kk), in ``C``'s
    precision: its encoder (k x m, the transposed Rayleigh-Ritz read-out), the exact ridge decoder for that
    encoder (m x k), both float64 numpy, and how well the raw decoder's own top-10 singular vectors already
    matched the read-out's (their smallest ``|cos|``)."""
    kk = W.shape[1]
    Q, R = cholesky_qr(W.to(C.dtype))  # on the device; only k x k and m x k matrices travel to the host
    QCQ = (Q.T @ (C @ Q)).cpu().numpy()
    with one_thread():
        readout = (Q @ torch.from_numpy(rayleigh_ritz_decoder(QCQ, np.eye(kk), lam)[:, :k]).to(C.device)).cpu().numpy()
    W1 = readout.T.copy()
    W2 = ridge_decoder(C, torch.from_numpy(W1).to(C.device), lam).cpu().numpy()
    with one_thread():
        raw_P = (Q @ torch.from_numpy(np.linalg.svd(R.cpu().numpy())[0][:, :10]).to(C.device)).cpu().numpy()  # W = QR
        ritz_P = np.linalg.svd(readout[:, :10], full_matrices=False)[0]
    return W1, W2, float(np.min(alignment(raw_P, ritz_P)))


def cholesky_qr(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W = Q R`` (``W``: m x kk of full column rank; ``Q``: m x kk with orthonormal columns; ``R``: kk x kk,
    upper triangular) by Cholesky QR applied twice, on ``W``'s device in its precision.

    Built from products, a Cholesky factorisation and triangular solves, whose results do not depend on the
    number of threads, unlike LAPACK's Householder QR (``torch.linalg.qr`` splits its sums by thread count); the
    second pass restores orthogonality to rounding for condition numbers of ``W`` up to about 1e7 (float64).
    """
    Q, R = W, torch.eye(W.shape[1], dtype=W.dtype, device=W.device)
    with one_thread():
        for _ in range(2):
            upper = torch.linalg.cholesky(Q.T @ Q).mT
            Q = torch.linalg.solve_triangular(upper, Q, upper=True, left=False)
            R = upper @ R
    return Q, R


def tied_step(C: torch.Tensor, W: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One tied exact step ``W_new = C W (W^T C W + lam I)^{-1}`` on ``C``'s device, launch-light: six kernels
    (two products, a diagonal shift, a Cholesky factorisation without its error check, two triangular solves)
    and no wait for the device; :func:`fit_tied_exact` checks the iterate for non-finite values when it checks
    convergence.

    ``C`` (m x m) and ``W`` (m x kk) share a device and precision; lambda is in the units of ``C``.
    Returns ``W_new``, ``C W`` (m x kk) and ``G = W^T C W`` (kk x kk), all on the device.
    """
    CW = C @ W
    with one_thread():
        G = W.T @ CW
        A = G.clone()
        A.diagonal().add_(lam)
        L = torch.linalg.cholesky_ex(A)[0]  # A = L L^T, so W_new = CW L^-T L^-1
        W_new = torch.linalg.solve_triangular(
            L, torch.linalg.solve_triangular(L.mT, CW, upper=True, left=False), upper=False, left=False
        )
    return W_new, CW, G


def ritz(W: torch.Tensor, G: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Ritz values (kk,, decreasing, float64 numpy) and coefficients S (kk x kk, float64, on ``W``'s device) of
    ``C`` in ``range(W)``: the orthonormal Ritz vectors are ``W S``.

    From ``G = W^T C W`` (kk x kk) alone, on the host (kk x kk algebra is faster there than a device's
    launches): with ``W = Q R`` (Cholesky QR, ``R^T R = W^T W``), ``Q^T C Q = R^-T G R^-1``, so no second
    product with ``C`` is needed.
    """
    with one_thread():
        Wd = W.double()
        G, H = torch.stack([G.double(), Wd.T @ Wd]).cpu().numpy()
        Rinv = np.linalg.inv(np.linalg.cholesky(H).T)
        r, V = np.linalg.eigh(Rinv.T @ ((G + G.T) / 2) @ Rinv)
        return r[::-1].copy(), torch.from_numpy(Rinv @ V[:, ::-1]).to(W.device)


def _subspace_change(W_a: torch.Tensor, S_a: torch.Tensor, W_b: torch.Tensor, S_b: torch.Tensor) -> float:
    """Subspace distance ``1 - ||Qa^T Qb||_F^2 / k`` between the orthonormal m x k bases ``Qa = W_a S_a`` and
    ``Qb = W_b S_b`` (``W``: m x kk, ``S``: kk x k, one device), from ``W_a^T W_b`` (no m x k product)."""
    with one_thread():
        M = S_a.T @ (W_a.double().T @ W_b.double()) @ S_b
        return float(max(0.0, 1.0 - torch.linalg.norm(M) ** 2 / S_a.shape[1]))
