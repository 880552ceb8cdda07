"""The noise floor of a scatter matrix, and training the autoencoder down to it.

With the sum loss, latent unit i survives only where its eigenvalue ``e_i`` is
above lambda (``s_i = sqrt(max(0, 1 - lambda / e_i))``). Setting lambda at the
largest eigenvalue that noise alone would give keeps exactly the components
above noise and shrinks each by ``1 - lambda / e_i``. This module estimates that
eigenvalue by Horn's parallel analysis (:func:`parallel_analysis`), gives the
Marchenko-Pastur edge (:func:`mp_edge`) and an elbow rule (:func:`elbow`) to
compare it with, and trains until the units collapse (:func:`fit_above_floor`).

All eigenvalues are in the units of ``C = X^T X`` (sums over cells).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.stats
import torch

from rlae_sc.lae.solvers import LAEFit, fit_tied_exact, ridge_decoder
from rlae_sc.lae.theory import sum_loss_optimum
from rlae_sc.lae.trace import TraceRecorder
from rlae_sc.params import TrainParams
from rlae_sc.products import scatter_matrix
from rlae_sc.rows import Rows, as_rows
from rlae_sc.settings import settings

AUTO = "auto"  # n_components chosen from the noise floor
PROBE_UNITS = 50  # units trained first when k is chosen from the noise floor; doubled while none collapses


@dataclass(frozen=True)
class PermutedRows(Rows):
    """Rows of ``rows`` with each gene's values permuted independently across the cells of each block.

    ``read(start, stop)`` returns the block's rows (dense, float32 or float64 as
    read), each column centred on its block mean and then shuffled by its own
    permutation, drawn from a generator seeded with ``(seed, start)``, so a block
    is the same whichever process reads it (Dask) and however often. Rows
    (:class:`~rlae_sc.rows.Rows`), picklable; memory is one block.

    Centring each block removes the between-block scatter, which a permutation
    within blocks would otherwise keep: a file sorted by cell type keeps its
    cell types in its block means. :func:`parallel_analysis` gives each gene
    its total sum of squares back.
    """

    rows: Rows
    seed: int
    permutation: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        block = self.rows.read(start, stop)
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        block = block.astype(np.result_type(block.dtype, np.float32), copy=True)
        block -= block.mean(axis=0, dtype=np.float64).astype(block.dtype)
        return np.random.default_rng([self.seed, self.permutation, start]).permuted(block, axis=0, out=block)

    def fingerprint(self) -> str:
        return f"permuted {self.seed} {self.permutation} {self.rows.fingerprint()}"


@dataclass(frozen=True)
class NoiseFloor:
    """A noise-floor estimate (units of ``C``).

    Attributes
    ----------
    value
        The ``quantile`` of a normal law fitted to ``samples``: the lambda that keeps the components above noise.
    samples
        Top eigenvalue of each permuted scatter matrix (n_permutations,).
    quantile, chunk_size
        The quantile taken and the rows per block within which cells were permuted.
    mp_edge
        The Marchenko-Pastur edge for the same matrix (:func:`mp_edge`), for comparison.
    """

    value: float
    samples: tuple[float, ...]
    quantile: float
    chunk_size: int
    mp_edge: float

    @property
    def spread(self) -> float:
        """Standard deviation of the samples (ddof=1; 0 for one sample)."""
        return float(np.std(self.samples, ddof=1)) if len(self.samples) > 1 else 0.0

    @property
    def rule(self) -> str:
        return (
            f"noise floor: {self.quantile:g} quantile (normal fit) of the top eigenvalue of C over {len(self.samples)} "
            f"permutations of each gene's values across cells (Horn's parallel analysis, within blocks of "
            f"{self.chunk_size} cells)"
        )

    def to_dict(self) -> dict:
        """JSON-ready numbers: ``noise_floor``, ``noise_floor_spread``, ``noise_floor_samples``, ``mp_edge``."""
        return {
            "noise_floor": self.value,
            "noise_floor_spread": self.spread,
            "noise_floor_samples": list(self.samples),
            "noise_floor_quantile": self.quantile,
            "mp_edge": self.mp_edge,
        }


def top_eigenvalue(C: np.ndarray) -> float:
    """The largest eigenvalue of the symmetric matrix ``C`` (m x m), by ``scipy.linalg.eigh``."""
    m = C.shape[0]
    return float(scipy.linalg.eigh(C, subset_by_index=[m - 1, m - 1], eigvals_only=True)[0])


def parallel_analysis(
    X,
    *,
    sum_squares: np.ndarray,
    n_permutations: int = TrainParams.n_permutations,
    quantile: float = TrainParams.noise_quantile,
    seed: int = TrainParams.seed,
    precision: str = TrainParams.scatter_precision,
    chunk_size: int | None = None,
    client=None,
    device: str = TrainParams.device,
) -> NoiseFloor:
    """Horn's parallel analysis: the top eigenvalue of ``C`` after permuting each gene's values across cells.

    Each permutation is one pass over the rows of ``X`` (n x m; an array or rows
    to read, as :func:`rlae_sc.products.scatter_matrix` takes them, streaming and
    on Dask alike): within each block of ``chunk_size`` cells, every gene's
    values are centred on the block's mean and permuted (:class:`PermutedRows`);
    the scatter matrix of those rows, ``C_p``, is rescaled so that each gene
    keeps its sum of squares, ``D C_p D`` with ``D = diag(sqrt(sum_squares /
    diag(C_p)))``, as a permutation of all cells would keep it. Its top
    eigenvalue is one sample of the noise floor. Permuting destroys the
    correlation between genes and keeps each gene's values (their spread and
    their tails), so the samples are the largest eigenvalue noise with the
    data's marginals gives.

    Parameters
    ----------
    X
        The centred matrix the autoencoder trains on (n x m).
    sum_squares
        Each gene's centred sum of squares over all cells (m,): the diagonal of
        ``C = X^T X``.
    n_permutations, quantile, seed
        The estimate is the ``quantile`` of a normal law fitted to the
        ``n_permutations`` samples (their mean plus ``z_quantile`` standard
        deviations: a few samples locate a high quantile better this way than
        by their order statistics); permutations are seeded by ``seed``.
    precision, chunk_size, client, device
        As :func:`rlae_sc.products.scatter_matrix`; ``chunk_size`` (``None``: ``rl.settings.block_size``) is
        also the block within which cells are permuted.

    Returns
    -------
    NoiseFloor
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    chunk_size = settings.block_size if chunk_size is None else chunk_size
    rows = as_rows(X)
    n, m = rows.shape
    samples = []
    for p in range(n_permutations):
        C_p = scatter_matrix(
            PermutedRows(rows, seed, p), precision=precision, chunk_size=chunk_size, client=client, device=device
        )
        d = np.sqrt(np.divide(sum_squares, np.diag(C_p), out=np.zeros(m), where=np.diag(C_p) > 0))
        samples.append(top_eigenvalue(d[:, None] * C_p * d[None, :]))
    spread = float(np.std(samples, ddof=1)) if n_permutations > 1 else 0.0
    return NoiseFloor(
        value=float(np.mean(samples) + scipy.stats.norm.ppf(quantile) * spread),
        samples=tuple(samples),
        quantile=quantile,
        chunk_size=chunk_size,
        mp_edge=mp_edge(n, m, variance=float(np.sum(sum_squares)) / (m * (n - 1))),
    )


def mp_edge(n: int, m: int, *, variance: float = 1.0) -> float:
    """The Marchenko-Pastur edge: the largest eigenvalue of ``C`` for iid noise of ``variance`` per entry.

    ``variance * (sqrt(n - 1) + sqrt(m))^2`` for n cells (one degree of
    freedom spent on centring) and m genes, in the units of ``C``.
    """
    return variance * (np.sqrt(n - 1) + np.sqrt(m)) ** 2


def elbow(eigenvalues: np.ndarray) -> int:
    """The elbow of a scree plot: the number of components before the bend.

    On ``log(e_i)`` against i (eigenvalues in decreasing order), the point
    farthest below the chord from the first to the last eigenvalue; returns
    its index i (1-based), so that components 1..i are kept.
    """
    y = np.log(np.asarray(eigenvalues, dtype=np.float64))
    x = np.arange(1, len(y) + 1, dtype=np.float64)
    chord = y[0] + (y[-1] - y[0]) * (x - 1) / (x[-1] - 1)
    return int(np.argmax(chord - y)) + 1


@dataclass(frozen=True)
class DeflatedRows(Rows):
    """Rows of ``rows`` with the directions ``U`` (m x k, orthonormal columns) projected out: ``x - (x U) U^T``.

    Rows (:class:`~rlae_sc.rows.Rows`: dense blocks, in ``U``'s precision), picklable.
    """

    rows: Rows
    U: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        block = self.rows.read(start, stop)
        block = np.asarray(block.toarray() if hasattr(block, "toarray") else block, dtype=self.U.dtype)
        return block - (block @ self.U) @ self.U.T

    def fingerprint(self) -> str:
        return f"deflated {self.U.shape[1]} {self.rows.fingerprint()}"


MAX_ROUNDS = 2  # parallel analyses: the plain one, then one with the components above it projected out


def fit_above_floor(
    C: torch.Tensor, X, *, params: TrainParams = TrainParams(), chunk_size: int | None = None, client=None
) -> tuple[LAEFit, NoiseFloor, list[dict]]:
    """Train with lambda at the noise floor and keep the units that survive: k is chosen by the data.

    1. Trains ``PROBE_UNITS`` latent units (tied exact updates,
       :func:`rlae_sc.lae.solvers.fit_tied_exact`, with the solver's own
       lambda: the subspace sequence does not depend on it), and takes their
       Rayleigh-Ritz eigenvalue estimates ``e_i``.
    2. Estimates the noise floor by :func:`parallel_analysis` of ``X``; k is the
       number of ``e_i`` above it. Where no unit is at or below it, the number of
       units trained doubles (up to m - 1) and step 1 runs again.
    3. The signal inflates each gene's variance and with it the plain estimate
       (strong components hide weaker ones). So the analysis runs again on ``X``
       with the k directions projected out (:class:`DeflatedRows`, each gene's
       residual sum of squares from ``C``), and k is recounted against that
       floor, until k stops changing (at most ``MAX_ROUNDS`` analyses).
    4. The model is the minimiser of the sum loss with ``lambda`` = the last
       floor within the trained units' span (Rayleigh-Ritz): units whose
       eigenvalue is at or below it are zero there (collapsed) and dropped, the
       k others are kept, each shrunk by ``1 - lambda / e_i``.

    Parameters
    ----------
    C
        Centred scatter matrix of ``X`` (m x m), float64 torch tensor on any device, a sum over cells.
    X
        The matrix itself (n x m; an array or rows to read), for the permutation passes.
    params
        Training parameters: ``n_permutations``, ``noise_quantile``, ``seed``, ``scatter_precision`` and
        ``device`` as :func:`parallel_analysis` takes them (``seed`` also seeds training); ``oversample``,
        ``max_iter``, ``tol`` and ``trace_every`` (its ``check_every``) as
        :func:`rlae_sc.lae.solvers.fit_tied_exact`; ``trace_metrics`` traces the metrics of the theory page
        (docs/theory.rst) of the trained units against exact PCA. The others are not used.
    chunk_size, client
        As :func:`parallel_analysis`.

    Returns
    -------
    fit
        k units (encoder k x m, decoder its exact ridge decoder); ``lam`` is the
        floor; ``diagnostics`` hold ``n_probe_units`` and ``probe_lambda``.
    floor
        The last noise-floor estimate (the lambda).
    rounds
        One list per quantity, an entry per analysis: ``deflated`` (directions projected out), ``noise_floor``,
        ``k`` (lists, so that AnnData can store them in ``uns``).
    A ``ValueError`` when no eigenvalue is above the floor.
    """
    t0 = time.perf_counter()
    m = C.shape[0]
    C_np = C.cpu().numpy()
    p = params
    passes = {"n_permutations": p.n_permutations, "quantile": p.noise_quantile, "seed": p.seed}
    passes |= {"precision": p.scatter_precision, "chunk_size": chunk_size, "client": client, "device": p.device}
    rows = as_rows(X)
    probe, trained = min(PROBE_UNITS, m - 1), None
    rounds: list[dict] = []
    deflate, sum_squares = 0, np.diag(C_np).copy()
    while True:
        if trained is None:
            recorder = TraceRecorder(C, probe) if p.trace_metrics else None
            trained = fit_tied_exact(
                C, probe, oversample=p.oversample, max_iter=p.max_iter, tol=p.tol, check_every=p.trace_every,
                seed=p.seed, recorder=recorder,
            )  # fmt: skip
            Q = np.linalg.qr(trained.encoder.T)[0]
            r, V = np.linalg.eigh(Q.T @ C_np @ Q)
            r, U = r[::-1], Q @ V[:, ::-1]
        if not rounds or rounds[-1]["deflated"] != deflate:
            source = rows if deflate == 0 else DeflatedRows(rows, U[:, :deflate].astype(p.scatter_precision))
            floor = parallel_analysis(source, sum_squares=sum_squares, **passes)
            rounds.append({"deflated": deflate, "noise_floor": floor.value, "k": 0})
        k = int(np.sum(r > floor.value))
        rounds[-1]["k"] = k
        if k == probe and probe < m - 1:
            probe, trained = min(2 * probe, m - 1), None  # no unit collapsed: train more
            continue
        if k == deflate or k == 0 or len(rounds) == MAX_ROUNDS:
            break
        deflate = k
        Uk = U[:, :k]
        CU = C_np @ Uk
        residual = np.diag(C_np) - 2 * np.sum(Uk * CU, axis=1) + np.sum((Uk @ (Uk.T @ CU)) * Uk, axis=1)
        sum_squares = residual * m / (m - k)  # the k directions projected out held their share of the noise too
    if k == 0:
        raise ValueError(
            f"no eigenvalue of C is above the noise floor {floor.value:.4g} (largest {r[0]:.4g}): "
            "the data look like noise"
        )
    W1 = sum_loss_optimum(r[:k], U[:, :k], floor.value).T.copy()
    W2 = ridge_decoder(C, torch.from_numpy(W1).to(C.device), floor.value).cpu().numpy()
    fit = LAEFit(
        encoder=W1,
        decoder=W2,
        lam=floor.value,
        lambda_rule=floor.rule + (f", after projecting out the {deflate} components above it" if deflate else ""),
        solver="tied_exact",
        n_iter=trained.n_iter,
        converged=trained.converged,
        trace=trained.trace,
        seconds=time.perf_counter() - t0 - trained.diagnostics.get("trace_seconds", 0.0),
        diagnostics={**trained.diagnostics, "n_probe_units": probe, "probe_lambda": trained.lam},
    )
    return fit, floor, {key: [r[key] for r in rounds] for key in ("deflated", "noise_floor", "k")}
