"""Training: the sum-regularized linear autoencoder fitted to a preprocessed AnnData or to a scatter matrix.

:func:`fit` builds ``C = X^T X`` (m x m, a sum over cells) in one pass over the cells and hands it to
:func:`fit_scatter`, which the federated coordinator calls on the sum of the sites' statistics. The solver is
chosen by name from :data:`TRAINERS`; ``n_components="auto"`` trains down to the noise floor instead
(:func:`rlae_sc.noise_floor.fit_above_floor`). The result is an :class:`~rlae_sc.model.RLAEModel`, which
needs no torch to be saved, loaded or to embed cells.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch

from rlae_sc.errors import InputError
from rlae_sc.lae.certificate import certify
from rlae_sc.lae.rules import train_rule
from rlae_sc.lae.solvers import LAEFit, fit_tied_exact, select_lambda
from rlae_sc.lae.theory import exact_pca
from rlae_sc.lae.trace import TraceRecorder
from rlae_sc.model import RLAEModel
from rlae_sc.noise_floor import AUTO, fit_above_floor
from rlae_sc.params import RULES, SOLVER, TrainParams
from rlae_sc.preprocess import trained_rows
from rlae_sc.products import scatter_matrix, torch_device
from rlae_sc.recipe import Recipe


def fit(
    pre: ad.AnnData,
    *,
    checkpoint: str | Path | None = None,
    client=None,
    source: str = "preprocessed input",
    **params,
) -> RLAEModel:
    """Train the sum-regularized linear autoencoder on a preprocessed AnnData.

    Parameters
    ----------
    pre
        Output of :func:`rlae_sc.preprocess.preprocess`: ``X`` (n x m) is the
        centred matrix, ``uns['rlae_recipe']`` the recipe as JSON. When ``pre``
        is backed (``anndata.read_h5ad(path, backed="r")``), the pass that
        builds ``C`` reads ``X`` from the file block by block; the mini-batch
        rules load it.
    checkpoint
        A file to checkpoint to and resume from: the learning rules' state
        (see :func:`rlae_sc.lae.rules.train_rule`), and, when ``pre`` is
        backed, the pass that builds ``C`` (every 30 s, to
        :func:`scatter_checkpoint_path`). The default solver's iterations on
        ``C`` take seconds and are not checkpointed.
    client
        A ``dask.distributed.Client`` to run the pass that builds ``C`` on
        (``pre`` must then be backed); ``None``: in this process.
    source
        Names the input in error messages.
    **params
        The training parameters, fields of :class:`rlae_sc.params.TrainParams`
        (``n_components``, ``solver``, ``lambda_frac``, ``lam``, ...); those
        not given take their defaults. Lambda is always in the units of
        ``C = X^T X`` (a sum over cells), also with mini-batches; the trace
        metrics are computed against ``scipy.linalg.eigh`` and not counted in
        the fit time.

    Returns
    -------
    RLAEModel
    """
    p = TrainParams.of(params, source=source)
    n, m = pre.shape
    check_components(p, n, m, source=source)  # before the pass over the cells
    t0 = time.perf_counter()
    matrix = trained_rows(pre)
    scatter_checkpoint = scatter_checkpoint_path(checkpoint) if pre.isbacked and checkpoint else None
    C_np = scatter_matrix(
        matrix, precision=p.scatter_precision, client=client, checkpoint=scatter_checkpoint, device=p.device
    )
    return fit_scatter(
        C_np,
        n_cells=n,
        recipe=Recipe.from_dict(json.loads(pre.uns["rlae_recipe"])),
        params=p,
        scatter_seconds=time.perf_counter() - t0,
        X=np.asarray(matrix.read(0, n), dtype=np.float64) if p.batch_size and p.solver != SOLVER else None,
        rows=matrix,
        client=client,
        checkpoint=checkpoint,
        source=source,
    )


def check_components(p: TrainParams, n_cells: int, n_genes: int, *, source: str) -> None:
    """An :class:`~rlae_sc.errors.InputError` unless ``p.n_components`` fits the data: ``"auto"`` (with the
    default solver only) or a number k with ``k + 1`` at most the cells and the genes. The one size check of
    training, for :func:`fit` (before its pass over the cells) and :func:`fit_scatter` (pooled or federated)."""
    if p.n_components == AUTO:
        if p.solver != SOLVER:
            raise InputError(source, f"n_components auto needs the {SOLVER} solver", f"Use solver {SOLVER}.")
    elif not isinstance(p.n_components, int):
        raise InputError(source, f"n_components {p.n_components!r} is neither a number nor auto", "Give k or auto.")
    elif p.n_components + 1 > min(n_cells, n_genes):
        raise InputError(
            source,
            f"{n_cells} cells x {n_genes} genes is too small for n_components={p.n_components}",
            f"Use n_components at most {min(n_cells, n_genes) - 1}, or give more cells/genes.",
        )


def fit_scatter(
    C_np: np.ndarray,
    *,
    n_cells: int,
    recipe: Recipe,
    params: TrainParams,
    scatter_seconds: float = 0.0,
    X: np.ndarray | None = None,
    rows=None,
    client=None,
    checkpoint: str | Path | None = None,
    source: str = "preprocessed input",
) -> RLAEModel:
    """Train on a centred scatter matrix ``C_np`` (m x m, float64, a sum over ``n_cells`` cells): :func:`fit`
    after its pass over the cells, and the federated coordinator on the sum of the sites' statistics.

    ``recipe`` is stored in the model; ``scatter_seconds`` (the time taken to
    build ``C``) is counted in ``fit_seconds``; ``X`` (n x m, float64) is needed
    only by the mini-batch rules (``batch_size``); ``rows`` (the cells' rows, see
    :func:`rlae_sc.products.scatter_matrix`; on Dask with ``client``) only by
    ``n_components="auto"``, whose noise floor permutes them
    (:func:`rlae_sc.noise_floor.fit_above_floor`). ``checkpoint`` and ``source``
    are :func:`fit`'s. Returns an :class:`~rlae_sc.model.RLAEModel`.
    """
    p = params
    check_components(p, n_cells, C_np.shape[0], source=source)
    auto = p.n_components == AUTO
    if auto and rows is None:
        raise InputError(source, "n_components auto permutes the cells, not only C", "Give n_components a number.")
    if p.batch_size and p.solver != SOLVER and X is None:
        raise InputError(source, "mini-batch training needs the cells, not only C", "Set batch_size to none.")
    dev = torch_device(p.device)
    C = torch.from_numpy(C_np).to(dev)
    rank = min(C_np.shape[0], n_cells - max(len(recipe.batches), 1))  # C's rank at most: one mean per batch
    oversample = p.oversample if auto else min(p.oversample, max(rank - p.n_components, 0))
    t1 = time.perf_counter()
    tracing = not auto and (p.trace_metrics or p.solver != SOLVER)
    # exact PCA of the same C (one more eigenpair for the last gap), asked for or needed by the trace
    exact = exact_pca(C_np, min(p.n_components + 1, C_np.shape[0])) if tracing or p.exact_check and not auto else None
    recorder = TraceRecorder(C, p.n_components, reference=exact) if tracing else None
    reference_seconds = time.perf_counter() - t1
    noise: dict = {}
    try:
        if auto:
            result, floor, rounds = fit_above_floor(C, rows, params=p, client=client)
            noise = {**floor.to_dict(), "noise_floor_rounds": rounds}
        else:
            train = TRAINERS[p.solver]
            result = train(C, p, oversample=oversample, recorder=recorder, X=X, checkpoint=checkpoint)
    except ValueError as exc:
        raise InputError(source, str(exc), "Adjust the training parameters.") from None
    t2 = time.perf_counter()
    if exact is None and auto and p.exact_check:  # auto: k is known only now
        exact = exact_pca(C_np, min(result.encoder.shape[0] + 1, C_np.shape[0]))
    reference_seconds += time.perf_counter() - t2
    model = RLAEModel(
        recipe=recipe,
        encoder=result.encoder,
        decoder=result.decoder,
        lam=result.lam,
        total_scatter=float(np.trace(C_np)),
        n_cells=n_cells,
        trace=result.trace,
    )
    t3 = time.perf_counter()
    model.reference = certify(C_np, model.directions, model.eigenvalues, seed=p.seed)
    seconds = {
        "scatter": scatter_seconds,
        "certificate": time.perf_counter() - t3,
        "reference": reference_seconds if exact is not None else None,
    }
    if exact is not None:
        model.reference.update(eigenvalues=exact[0], directions=exact[1])
    model.params = _record(result, p, oversample=oversample, device=dev, seconds=seconds, auto=auto, noise=noise)
    return model


def _record(
    result: LAEFit, p: TrainParams, *, oversample: int, device: torch.device, seconds: dict, auto: bool, noise: dict
) -> dict:
    """The model's ``params``: the training parameters as applied (``oversample`` after clipping to C's rank,
    the ``device`` trained on), how lambda and k were chosen, the iterations and convergence, the seconds of
    the solver, of the whole fit (with ``seconds['scatter']``, the pass that built ``C``), of the certificate
    (``seconds['certificate']``) and of the exact reference (``seconds['reference']``, ``None`` when the eigh
    did not run), the noise floor's numbers (``noise``, with ``auto``) and the solver's diagnostics."""
    return {
        "solver": result.solver,
        "lambda_rule": result.lambda_rule,
        "lambda_frac": p.lambda_frac,
        "oversample": oversample,
        "max_iter": p.max_iter,
        "tol": p.tol,
        "scatter_precision": p.scatter_precision,
        "batch_size": p.batch_size or 0,
        "seed": p.seed,
        "device": str(device),
        "n_iter": result.n_iter,
        "converged": result.converged,
        "solver_seconds": result.seconds,
        "fit_seconds": seconds["scatter"] + result.seconds,
        "certificate_seconds": seconds["certificate"],
        **({"exact_reference_seconds": seconds["reference"]} if seconds["reference"] is not None else {}),
        "n_components_rule": "auto" if auto else "given",
        **noise,
        **{key: val for key, val in result.diagnostics.items() if val is not None},
    }


def _tied_exact(
    C: torch.Tensor,
    p: TrainParams,
    *,
    oversample: int,
    recorder: TraceRecorder | None,
    X: np.ndarray | None,
    checkpoint: str | Path | None,
) -> LAEFit:
    """The default solver (:func:`rlae_sc.lae.solvers.fit_tied_exact`) on ``C`` (m x m, on the training
    device), with ``oversample`` extra units; it chooses lambda itself from its warm-up. ``X`` and
    ``checkpoint`` are not used: it trains on ``C`` alone, in seconds."""
    return fit_tied_exact(
        C,
        p.n_components,
        lam=p.lam,
        lambda_frac=p.lambda_frac,
        oversample=oversample,
        max_iter=p.max_iter,
        tol=p.tol,
        check_every=p.trace_every,
        seed=p.seed,
        recorder=recorder,
    )


def _learning_rule(
    C: torch.Tensor,
    p: TrainParams,
    *,
    oversample: int,
    recorder: TraceRecorder,
    X: np.ndarray | None,
    checkpoint: str | Path | None,
) -> LAEFit:
    """The learning rule ``p.solver`` (:func:`rlae_sc.lae.rules.train_rule`) on ``C`` (m x m), or on
    mini-batches of the rows ``X`` (n x m, float64) with ``p.batch_size``, checkpointed to ``checkpoint``; lambda
    from the exact ``e_k`` the trace ``recorder`` holds. ``oversample`` is not used: a rule trains k units."""
    lam, rule = select_lambda(p.lam, p.lambda_frac, float(recorder.e[-1]), f"exact e_{p.n_components}")
    result = train_rule(
        p.solver,
        k=p.n_components,
        lam=lam,
        C=C,
        X=torch.from_numpy(X).to(C.device) if p.batch_size else None,
        lr=p.lr,
        n_iter=p.max_iter,
        batch_size=p.batch_size,
        trace_every=p.trace_every,
        seed=p.seed,
        recorder=recorder,
        checkpoint=checkpoint,
    )
    result.lambda_rule = rule
    return result


TRAINERS = {SOLVER: _tied_exact, **dict.fromkeys(RULES, _learning_rule)}  # the solver's training, by its name


def scatter_checkpoint_path(checkpoint: str | Path) -> Path:
    """Where :func:`fit` checkpoints the pass that builds ``C``, beside the training checkpoint."""
    return Path(f"{checkpoint}.scatter")
