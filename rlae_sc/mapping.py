"""Reference mapping: place query cells, embedded with a reference model, among the reference cells.

Both sides live in the reference model's coordinates (``obsm['X_rlae']``), so
labels are transferred there, by a kNN vote (:func:`transfer_labels`) or a
logistic regression on the embedding (:func:`logistic_labels`, as CellTypist
does on genes), and each query cell gets a position in the reference UMAP.

A query cell is left ``unassigned`` (:data:`UNASSIGNED`) when the mapping
cannot vouch for its label:

- it lies beyond the reference's own neighbour distances
  (:func:`beyond_reference`): its mean distance to its nearest reference cells
  exceeds the ``distance_quantile`` of the same distance measured for
  reference cells of the label its neighbourhood votes for (each to its
  nearest *other* reference cells). Distances are taken on the components
  weighted by their stability (``uns['rlae']['stability']``, the expected
  ``|cos|`` of each direction under resampling of the cells): components
  that are noise carry most of a cell's distance to its neighbours on all 50
  components, and hide how far a cell of a missing type lies;
- its vote is split: the winning label's share of the vote (kNN) or its
  probability (logistic) is below ``min_confidence``.

The reported confidence is that share or probability times the fraction of
the model's signal carried by genes the query has (:func:`signal_present`).

A batch new to a model trained with a ``batch_key`` is centred on its own mean when it is embedded
(:meth:`rlae_sc.model.RLAEModel.embed`), which assumes it holds its cell types in the reference's shares. A
sample of sorted cells, or of one tissue compartment, does not, and its cells land off their types. Before labels
are transferred, each new batch is therefore moved by the shift that puts its confidently labelled cells on the
reference means of their labels (:func:`composition_shift`): the same correction the reference's own batches get
from matched clusters, with the query's labels as the matches.
"""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd

from rlae_sc.errors import InputError
from rlae_sc.keys import DIRECTIONS_KEY, EMBEDDING_KEY, UNS_KEY
from rlae_sc.labels import kernel_votes, known_labels, labelled_mask, obs_column
from rlae_sc.neighbors import build_index, search
from rlae_sc.params import MappingParams

UNASSIGNED = "unassigned"  # the label of a query cell the mapping cannot vouch for
CALIBRATION_CELLS = 2_000  # reference cells per label whose neighbour distances set that label's threshold
LOGISTIC_MAX_CELLS = 50_000  # labelled reference cells the logistic regression is fitted on (a seeded sample above)
SEED = 0  # seed of the calibration and logistic-regression samples
SHIFT_ROUNDS = 5  # label-and-shift rounds of composition_shift, at most

log = logging.getLogger("rlae_sc")


def transfer_labels(
    reference: ad.AnnData,
    query: ad.AnnData,
    *,
    label_key: str,
    n_neighbors: int = MappingParams.n_neighbors,
    index=None,
    source: str = "reference",
) -> pd.DataFrame:
    """kNN label transfer from ``reference`` to ``query`` in ``obsm['X_rlae']`` (both n x k, same model).

    Each query cell takes the label with the largest summed weight among its
    ``n_neighbors`` nearest reference cells (Euclidean); weights are a Gaussian
    kernel of the distance, with the bandwidth the cell's median neighbour
    distance (:func:`rlae_sc.labels.kernel_votes`). Reference cells without a
    label (NaN, ``?``, ``unknown``, ...; see :data:`rlae_sc.labels.MISSING_LABELS`)
    are not used. ``index``: the reference's saved neighbour index
    (:func:`rlae_sc.neighbors.load_index`), searched when every reference cell is labelled;
    otherwise an index of the labelled cells is built here.

    Returns
    -------
    DataFrame indexed like ``query.obs`` with ``predicted`` (the label),
    ``confidence`` (its share of the weight, 0..1) and ``neighbor_distance``
    (mean distance to the neighbours, units of the embedding).
    """
    has, ref_labels = known_labels(reference.obs, label_key, source=source)
    ref_x, query_x = _embeddings(reference, query)
    if index is None or not has.all():
        index = build_index(ref_x[has])
    dist, idx = search(index, query_x, min(n_neighbors, len(ref_labels)))
    classes, codes = np.unique(ref_labels, return_inverse=True)
    votes = kernel_votes(dist, codes[idx], len(classes))
    best = votes.argmax(axis=1)
    return pd.DataFrame(
        {
            "predicted": pd.Categorical(classes[best], categories=classes),
            "confidence": votes[np.arange(len(best)), best] / votes.sum(axis=1),
            "neighbor_distance": dist.mean(axis=1),
        },
        index=query.obs_names,
    )


def logistic_classifier(reference: ad.AnnData, *, label_key: str, source: str = "reference"):
    """A multinomial logistic regression on the reference's embedding, as CellTypist fits one on genes.

    The classifier (scikit-learn's ``LogisticRegression``: L2 penalty, ``C = 1``,
    lbfgs) is fitted on the labelled reference cells' ``obsm['X_rlae']``
    (the components the reference's neighbours were found on), each component
    standardised by its reference mean and standard deviation; above
    :data:`LOGISTIC_MAX_CELLS` labelled cells, on a seeded sample of that many.

    Returns
    -------
    A function of query scores (n_query x k, the model's coordinates) that returns a DataFrame with
    ``predicted`` (the most probable label) and ``confidence`` (its probability, 0..1), one row per cell.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    has, ref_labels = known_labels(reference.obs, label_key, source=source)
    ref_x = _embeddings(reference, reference)[0]
    n_dims = ref_x.shape[1]
    ref_x = np.asarray(ref_x[has], dtype=np.float64)
    classes = np.unique(ref_labels)
    model = None
    if len(classes) > 1:  # with one label, every cell takes it, with certainty
        rows = _sample(len(ref_x), LOGISTIC_MAX_CELLS)
        mean, std = ref_x.mean(axis=0), ref_x.std(axis=0)
        std[std == 0] = 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # lbfgs's last digits; the labels are settled
            model = LogisticRegression(C=1.0, max_iter=1000).fit((ref_x[rows] - mean) / std, ref_labels[rows])
        classes = model.classes_

    def predict(query_x: np.ndarray) -> pd.DataFrame:
        query_x = np.asarray(query_x, dtype=np.float64)[:, :n_dims]
        proba = np.ones((len(query_x), 1)) if model is None else model.predict_proba((query_x - mean) / std)
        best = proba.argmax(axis=1)
        return pd.DataFrame(
            {
                "predicted": pd.Categorical(classes[best], categories=classes),
                "confidence": proba[np.arange(len(best)), best],
            }
        )

    return predict


def logistic_labels(
    reference: ad.AnnData, query: ad.AnnData, *, label_key: str, source: str = "reference"
) -> pd.DataFrame:
    """Label transfer by :func:`logistic_classifier` on ``query.obsm['X_rlae']``; a DataFrame indexed like
    ``query.obs`` with ``predicted`` and ``confidence``."""
    result = logistic_classifier(reference, label_key=label_key, source=source)(query.obsm[EMBEDDING_KEY])
    result.index = query.obs_names
    return result


def _sample(n: int, most: int) -> np.ndarray:
    """All of ``range(n)``, or a seeded sorted sample of ``most`` of them."""
    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(SEED).choice(n, most, replace=False))


def component_weights(reference: ad.AnnData) -> np.ndarray:
    """Each component's weight (n_dims,) in the distances of :func:`beyond_reference`: its stability
    (``uns['rlae']['stability']``, 0..1), or 1 for every component when the reference has none."""
    n_dims = _embeddings(reference, reference)[0].shape[1]
    stability = reference.uns.get(UNS_KEY, {}).get("stability")
    if stability is None:
        log.info("mapping: the reference has no component stability; distances weigh every component equally")
        return np.ones(n_dims)
    return np.asarray(stability, dtype=np.float64)[:n_dims]


def beyond_reference(
    reference: ad.AnnData,
    query: ad.AnnData,
    *,
    label_key: str,
    n_neighbors: int = MappingParams.n_neighbors,
    quantile: float = MappingParams.distance_quantile,
    source: str = "reference",
) -> pd.DataFrame:
    """Which query cells lie beyond the reference's own neighbour distances.

    Distances are Euclidean on the components weighted by
    :func:`component_weights` (units of the embedding). For each reference
    label, up to :data:`CALIBRATION_CELLS` of its cells (a seeded sample) are
    measured: the mean distance to their ``n_neighbors`` nearest *other*
    labelled reference cells; the label's threshold is the ``quantile`` of
    those distances. A query cell's distance is its mean distance to its
    ``n_neighbors`` nearest labelled reference cells, and it is compared with
    the threshold of the label those neighbours vote for (kernel-weighted, as
    :func:`transfer_labels` in this space).

    Returns
    -------
    DataFrame indexed like ``query.obs`` with ``distance`` (n_query,),
    ``threshold`` (n_query,, the threshold it was compared with) and
    ``beyond`` (bool: ``distance > threshold``).
    """
    if not 0 < quantile <= 1:
        raise InputError(source, f"distance_quantile {quantile} is not in (0, 1]", "Use e.g. 0.99.")
    has, ref_labels = known_labels(reference.obs, label_key, source=source)
    weights = component_weights(reference)
    ref_x, query_x = _embeddings(reference, query)
    ref_x, query_x = ref_x[has] * weights, query_x * weights
    classes, codes = np.unique(ref_labels, return_inverse=True)
    index = build_index(ref_x, seed=SEED)
    thresholds = _label_thresholds(index, ref_x, codes, n_neighbors=n_neighbors, quantile=quantile)
    dist, idx = search(index, query_x, min(n_neighbors, len(ref_x)))
    vote = kernel_votes(dist, codes[idx], len(classes)).argmax(axis=1)
    distance = dist.mean(axis=1).astype(np.float64)
    threshold = thresholds[vote]
    return pd.DataFrame(
        {"distance": distance, "threshold": threshold, "beyond": distance > threshold}, index=query.obs_names
    )


def _label_thresholds(index, ref_x: np.ndarray, codes: np.ndarray, *, n_neighbors: int, quantile: float) -> np.ndarray:
    """Per label (n_labels,): the ``quantile`` of its cells' mean distance to their nearest other cells."""
    k = min(n_neighbors, len(ref_x) - 1)
    if k < 1:  # a single reference cell: nothing to measure against
        return np.full(codes.max() + 1, np.inf)
    rng = np.random.default_rng(SEED)
    thresholds = np.empty(codes.max() + 1)
    for label in range(len(thresholds)):
        cells = np.flatnonzero(codes == label)
        if len(cells) > CALIBRATION_CELLS:
            cells = np.sort(rng.choice(cells, CALIBRATION_CELLS, replace=False))
        thresholds[label] = np.quantile(_distance_to_others(index, ref_x, cells, k).mean(axis=1), quantile)
    return thresholds


def _distance_to_others(index, ref_x: np.ndarray, cells: np.ndarray, k: int) -> np.ndarray:
    """Distances (len(cells) x k) from indexed ``cells`` to their ``k`` nearest other indexed cells.

    Searches ``k + 1`` and drops the cell itself; where an approximate index
    missed it, the farthest of the ``k + 1`` is dropped instead."""
    dist, idx = search(index, ref_x[cells], k + 1)
    own = idx == cells[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(len(cells)), drop] = False
    return dist[keep].reshape(len(cells), k)


def gene_overlap(reference: ad.AnnData, genes) -> float:
    """The fraction of the model's genes (``var['rlae_used']`` of the reference) among ``genes``."""
    used = _used_genes(reference)
    return float(reference.var_names[used].isin(pd.Index(genes)).mean())


def signal_present(reference: ad.AnnData, genes) -> float:
    """The share of the model's signal carried by genes present in ``genes`` (the query's names), 0..1.

    The model's signal on gene g is ``sum_i e_i P_gi^2`` over the components
    the reference's neighbours were found on, ``P`` the directions
    (``varm['rlae_directions']``, unit columns) and ``e`` their eigenvalues
    (``uns['rlae']['eigenvalues']``): the share of the variance of the cells'
    scores that gene g's values feed. A gene the query lacks is embedded as zero
    expression, so its share of the scores is lost. 1.0 when the reference
    has no directions to weigh.
    """
    if DIRECTIONS_KEY not in reference.varm or "eigenvalues" not in reference.uns.get(UNS_KEY, {}):
        return 1.0
    n_dims = _embeddings(reference, reference)[0].shape[1]
    P = np.asarray(reference.varm[DIRECTIONS_KEY], dtype=np.float64)[:, :n_dims]
    e = np.asarray(reference.uns[UNS_KEY]["eigenvalues"], dtype=np.float64)[:n_dims]
    per_gene = np.square(P) @ e
    used = _used_genes(reference)
    present = reference.var_names.isin(pd.Index(genes))
    return float(per_gene[used & present].sum() / per_gene[used].sum())


def _used_genes(reference: ad.AnnData) -> np.ndarray:
    """The model's genes among the reference's (n_genes,), bool: ``var['rlae_used']``, or all."""
    if "rlae_used" in reference.var:
        return reference.var["rlae_used"].to_numpy(dtype=bool)
    return np.ones(reference.n_vars, dtype=bool)


def place_in_umap(
    reference: ad.AnnData, query: ad.AnnData, *, n_neighbors: int = MappingParams.n_neighbors, index=None
) -> np.ndarray:
    """Query positions (n_query x 2) in the reference UMAP: the mean UMAP position of each cell's
    ``n_neighbors`` nearest reference cells in ``obsm['X_rlae']`` (through ``index``, the reference's
    saved neighbour index, when given). The reference UMAP is not recomputed."""
    ref_x, query_x = _embeddings(reference, query)
    _, idx = search(index if index is not None else build_index(ref_x), query_x, min(n_neighbors, reference.n_obs))
    return reference.obsm["X_umap"][idx].mean(axis=1)


def _embeddings(reference: ad.AnnData, query: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
    """Both embeddings, restricted to the components the reference's neighbours were found on."""
    n_dims = reference.uns.get("rlae_cluster", {}).get("n_dims") or reference.obsm[EMBEDDING_KEY].shape[1]
    return reference.obsm[EMBEDDING_KEY][:, :n_dims], query.obsm[EMBEDDING_KEY][:, :n_dims]


def assign(
    predicted: pd.Series, share: np.ndarray, beyond: np.ndarray, *, min_confidence: float
) -> tuple[pd.Categorical, pd.Categorical]:
    """The final labels and why a cell is unassigned.

    Parameters
    ----------
    predicted
        The classifier's label per query cell (n_query,, categorical).
    share
        Its vote share or probability (n_query,, 0..1).
    beyond
        Cells beyond the reference's neighbour distances (n_query,, bool).
    min_confidence
        Cells whose ``share`` is below this are unassigned (a split vote).

    Returns
    -------
    labels
        ``predicted`` with :data:`UNASSIGNED` (the last category) where a cell is unassigned.
    reason
        ``assigned``, ``beyond_reference`` (takes precedence) or ``split_vote``, per cell.
    """
    split = np.asarray(share) < min_confidence
    beyond = np.asarray(beyond, dtype=bool)
    reason = np.where(beyond, "beyond_reference", np.where(split, "split_vote", "assigned"))
    categories = [c for c in predicted.cat.categories if c != UNASSIGNED] + [UNASSIGNED]
    labels = pd.Categorical(np.where(reason == "assigned", predicted.astype(str), UNASSIGNED), categories=categories)
    return labels, pd.Categorical(reason, categories=["assigned", "beyond_reference", "split_vote"])


def mapping_scores(truth: pd.Series, labels: pd.Series, *, reference_labels) -> dict:
    """Agreement of transferred ``labels`` with known ``truth`` (both n_query,), unassigned cells counted as wrong.

    Cells without a true label (NaN, ``?``, ...) are left out. ``accuracy`` is
    over the ``n_scored`` cells whose true label is a reference label (the
    cells the mapping could get right); ``accuracy_assigned`` over those of
    them that were assigned. ``macro_f1`` is the mean F1 over the reference
    labels present in the truth, over every labelled cell: an unassigned cell
    is a miss for its true label, and a cell of a type the reference lacks
    that receives a label is a false positive for that label.
    ``unassigned_known`` and ``unassigned_novel``: the share of unassigned
    cells among the labelled cells whose type the reference has, and among
    those whose type it lacks (``n_novel`` of them; absent when none).
    """
    from sklearn.metrics import f1_score

    labelled = labelled_mask(truth)
    truth, labels = truth.astype(str).to_numpy()[labelled], labels.astype(str).to_numpy()[labelled]
    known = np.isin(truth, np.asarray(list(reference_labels), dtype=str))
    unassigned = labels == UNASSIGNED
    scores = {
        "accuracy": float((truth[known] == labels[known]).mean()) if known.any() else float("nan"),
        "accuracy_assigned": (
            float((truth[known & ~unassigned] == labels[known & ~unassigned]).mean())
            if (known & ~unassigned).any()
            else float("nan")
        ),
        "macro_f1": (
            float(f1_score(truth, labels, labels=np.unique(truth[known]), average="macro", zero_division=0))
            if known.any()
            else float("nan")
        ),
        "n_scored": int(known.sum()),
        "unassigned_known": float(unassigned[known].mean()) if known.any() else float("nan"),
    }
    if (~known).any():
        scores.update(n_novel=int((~known).sum()), unassigned_novel=float(unassigned[~known].mean()))
    return scores


def composition_shift(
    reference: ad.AnnData, query_x: np.ndarray, classify, *, label_key: str, min_confidence: float
) -> np.ndarray:
    """The shift (n_components,) that puts a new batch's cells on the reference means of their labels.

    Alternates, for at most :data:`SHIFT_ROUNDS` rounds or until the shift moves by less than 0.1% of its
    length: label the batch's cells shifted by the current estimate (``classify``: scores of cells x
    n_components -> DataFrame with ``predicted`` and ``confidence``), then set the shift to the mean, over the
    cells whose confidence is at least ``min_confidence``, of each cell's scores minus the reference mean of its
    label (over the reference's labelled cells, ``obsm['X_rlae']``). Units: those of the embedding.

    Parameters
    ----------
    reference
        The reference cells, with ``obsm['X_rlae']`` (n_ref x k) and ``obs[label_key]``.
    query_x
        The new batch's scores as embedded (n_batch x k).
    """
    has, labels = known_labels(reference.obs, label_key, source="reference")
    ref_x = np.asarray(reference.obsm[EMBEDDING_KEY], dtype=np.float64)[has]
    classes, codes = np.unique(labels, return_inverse=True)
    means = np.zeros((len(classes), ref_x.shape[1]))
    np.add.at(means, codes, ref_x)
    means /= np.bincount(codes)[:, None]
    by_name = pd.Series(np.arange(len(classes)), index=classes)
    query_x = np.asarray(query_x, dtype=np.float64)
    shift = np.zeros(query_x.shape[1])
    for _ in range(SHIFT_ROUNDS):
        result = classify(query_x - shift)
        sure = result["confidence"].to_numpy() >= min_confidence
        if not sure.any():
            break
        rows = by_name[result["predicted"].astype(str).to_numpy()[sure]].to_numpy()
        new = (query_x[sure] - means[rows]).mean(axis=0)
        moved = np.linalg.norm(new - shift)
        shift = new
        if moved <= 1e-3 * np.linalg.norm(shift):
            break
    return shift


def _new_batch_cells(reference: ad.AnnData, query: ad.AnnData) -> dict[str, np.ndarray]:
    """The query cells (row indices) of each batch new to the model, by name (``uns['rlae_embed']``)."""
    new = list(query.uns.get("rlae_embed", {}).get("new_batches", []))
    if not new:
        return {}
    key = reference.uns.get(UNS_KEY, {}).get("batch_key") or ""
    values = query.obs[key].astype(str) if key in query.obs else pd.Series("query", index=query.obs_names)
    return {name: np.flatnonzero(values.to_numpy() == name) for name in new}


def map_query(
    reference: ad.AnnData,
    query: ad.AnnData,
    *,
    label_key: str | None = None,
    n_neighbors: int = MappingParams.n_neighbors,
    classifier: str = MappingParams.classifier,
    min_confidence: float = MappingParams.min_confidence,
    distance_quantile: float | None = MappingParams.distance_quantile,
    truth_key: str | None = None,
    index=None,
    source: str = "reference",
) -> dict:
    """Label transfer, unassigned cells and UMAP placement, in place on ``query``; returns summary numbers.

    Uses the reference's ``label_key`` (its Leiden clusters when ``None``),
    transferred by ``classifier`` (``knn``: :func:`transfer_labels`;
    ``logistic``: :func:`logistic_labels`). A cell is :data:`UNASSIGNED` when
    it lies beyond the reference (:func:`beyond_reference` at
    ``distance_quantile``; ``None``: not checked) or its vote share or
    probability is below ``min_confidence`` (see :func:`assign`).

    Fills ``query.obs``: ``rlae_label`` (the label, or ``unassigned``),
    ``rlae_label_best`` (the classifier's label before that), ``rlae_label_confidence``
    (vote share or probability times :func:`signal_present`, 0..1),
    ``rlae_reference_distance`` (weighted distance to the nearest reference cells, units of the
    embedding) and ``rlae_unassigned`` (why: ``assigned``, ``beyond_reference``, ``split_vote``);
    ``obsm['X_umap']`` (reference UMAP coordinates) and ``uns['rlae_mapping']``
    (the summary less its per-label counts). The cells of each batch new to the model are first moved by
    :func:`composition_shift` (their ``obsm['X_rlae']`` is replaced by the moved scores; the summary's
    ``batch_shifts`` gives each shift's length, units of the embedding).
    With ``truth_key`` (a query obs column), the summary adds :func:`mapping_scores`.
    """
    key = label_key or "leiden"
    if classifier not in ("knn", "logistic"):
        raise InputError(source, f"unknown classifier {classifier!r}", "Use knn or logistic.")
    if truth_key is not None:
        obs_column(query.obs, truth_key, what="truth", source="query")
    if classifier == "knn":

        def classify(scores: np.ndarray) -> pd.DataFrame:
            cells = ad.AnnData(obs=pd.DataFrame(index=np.arange(len(scores)).astype(str)), obsm={EMBEDDING_KEY: scores})
            return transfer_labels(reference, cells, label_key=key, n_neighbors=n_neighbors, index=index, source=source)
    else:
        classify = logistic_classifier(reference, label_key=key, source=source)
    shifts = {}
    new_batches = _new_batch_cells(reference, query)
    if new_batches:
        x = np.asarray(query.obsm[EMBEDDING_KEY], dtype=np.float64)
        for name, cells in new_batches.items():
            shifts[name] = composition_shift(
                reference, x[cells], classify, label_key=key, min_confidence=min_confidence
            )
            x[cells] -= shifts[name]
        query.obsm[EMBEDDING_KEY] = x.astype(np.float32)
    result = classify(query.obsm[EMBEDDING_KEY])
    result.index = query.obs_names
    if distance_quantile is None:
        far = pd.DataFrame({"distance": np.nan, "beyond": False}, index=query.obs_names)
    else:
        far = beyond_reference(
            reference, query, label_key=key, n_neighbors=n_neighbors, quantile=distance_quantile, source=source
        )
    share = result["confidence"].to_numpy()
    labels, reason = assign(result["predicted"], share, far["beyond"].to_numpy(), min_confidence=min_confidence)
    signal = signal_present(reference, query.var_names)
    query.obs["rlae_label"] = labels
    query.obs["rlae_label_best"] = result["predicted"]
    query.obs["rlae_label_confidence"] = share * signal
    query.obs["rlae_reference_distance"] = far["distance"].to_numpy()
    query.obs["rlae_unassigned"] = reason
    query.obsm["X_umap"] = place_in_umap(reference, query, n_neighbors=n_neighbors, index=index)
    summary = {
        "n_query_cells": int(query.n_obs),
        "label_key": key,
        "classifier": classifier,
        "n_neighbors": n_neighbors,
        "min_confidence": min_confidence,
        "distance_quantile": distance_quantile,
        "gene_overlap": gene_overlap(reference, query.var_names),
        "signal_present": signal,
        "batch_shifts": {name: float(np.linalg.norm(shift)) for name, shift in shifts.items()},
        "median_confidence": float(query.obs["rlae_label_confidence"].median()),
        "n_unassigned": int((reason != "assigned").sum()),
        "n_beyond_reference": int((reason == "beyond_reference").sum()),
        "n_split_vote": int((reason == "split_vote").sum()),
        "unassigned_fraction": float((reason != "assigned").mean()),
        "predicted_counts": {str(k): int(v) for k, v in pd.Series(labels).value_counts().items()},
    }
    if truth_key is not None:
        classes = result["predicted"].cat.categories
        summary.update(mapping_scores(query.obs[truth_key], query.obs["rlae_label"], reference_labels=classes))
    query.uns["rlae_mapping"] = {k: v for k, v in summary.items() if k != "predicted_counts" and v is not None}
    return summary
