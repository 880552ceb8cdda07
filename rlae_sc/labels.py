"""Known labels and other named columns of ``obs``: the one check that a column exists, which cells carry a
label, the neighbours' votes for a label, and the agreement of a partition with known labels (ARI/NMI).

A label is missing when it is NaN or one of :data:`MISSING_LABELS`; such cells are left out of every score
and never vote.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlae_sc.errors import InputError

MISSING_LABELS = ("", "?", "nan", "NaN", "unknown", "Unknown", "NA")


def obs_column(obs: pd.DataFrame, key: str, *, what: str, source) -> pd.Series:
    """``obs[key]`` (cells,), or an :class:`~rlae_sc.errors.InputError` naming the columns there are; ``what``
    names the column's role in the message (``label``, ``batch``, ``sample``, ...: the option ``<what>_key``)."""
    if key not in obs:
        raise InputError(
            source,
            f"has no {what} column {key!r} (columns: {', '.join(map(str, obs.columns)) or 'none'})",
            f"Set {what}_key to an existing obs column, or leave it unset.",
        )
    return obs[key]


def labelled_mask(values: pd.Series) -> np.ndarray:
    """True where a label is present (cells,): not NaN and not one of ``MISSING_LABELS``."""
    return values.notna().to_numpy() & ~values.astype(str).isin(MISSING_LABELS).to_numpy()


def known_labels(obs: pd.DataFrame, key: str, *, what: str = "label", source) -> tuple[np.ndarray, np.ndarray]:
    """The mask of the cells labelled in ``obs[key]`` (cells,) and their labels as strings (labelled cells,);
    an :class:`~rlae_sc.errors.InputError` when the column is missing (:func:`obs_column`) or labels no cell."""
    values = obs_column(obs, key, what=what, source=source)
    has = labelled_mask(values)
    if not has.any():
        raise InputError(source, f"has no labelled cells in {key!r}", "Name a column with labels.")
    return has, values[has].astype(str).to_numpy()


def kernel_votes(dist: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Votes (m x n_classes) of each row's neighbours, ``codes`` (m x k) their classes and ``dist`` (m x k)
    their distances: a Gaussian kernel of distance, bandwidth the row's median neighbour distance."""
    bandwidth = np.median(dist, axis=1, keepdims=True)
    bandwidth[bandwidth == 0] = 1.0
    weights = np.exp(-((dist / bandwidth) ** 2))
    votes = np.zeros((len(dist), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(dist)), dist.shape[1]), codes.ravel()), weights.ravel())
    return votes


def partition_scores(labels: pd.Series, clusters: pd.Series) -> dict:
    """The agreement of a partition ``clusters`` (cells,) with the known ``labels`` (cells,) over the labelled
    cells: ``ari`` (adjusted Rand index) and ``nmi`` (normalised mutual information), both at most 1, and
    ``n_labelled``, the cells scored."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    has = labelled_mask(labels)
    # integer codes: the scores depend only on the partitions, and sklearn sorts strings far more slowly
    truth, pred = (pd.factorize(values.astype(str)[has])[0] for values in (labels, clusters))
    return {
        "ari": float(adjusted_rand_score(truth, pred)),
        "nmi": float(normalized_mutual_info_score(truth, pred)),
        "n_labelled": int(has.sum()),
    }
