"""Traces of the metrics of docs/theory.rst during training, against exact PCA of the full scatter matrix."""

from __future__ import annotations

import numpy as np
import torch

from rlae_sc.lae import theory
from rlae_sc.lae.losses import regularized_loss


class TraceRecorder:
    """Rows of the metrics of docs/theory.rst against exact PCA of the full ``C``, one per stride.

    Columns: ``iteration``, ``loss`` (on the full ``C``), ``transpose_distance``,
    ``subspace_distance``, ``axis_alignment``, ``singular_value_error``,
    ``min_abs_cos``, ``cos_1..cos_k`` (the decoder's top-k left singular
    vectors, ordered by singular value, against ``u_1..u_k``) and
    ``strength_1..strength_k`` (``u_i^T W2 W1 u_i``, see
    :func:`rlae_sc.lae.theory.mode_strengths`). Rules that send the error back
    through a feedback matrix ``B`` (k x m) in place of ``W2^T`` add
    ``feedback_distance`` = ``||B - W2^T||_F / ||W2||_F``. The decoder may
    have more than k columns (oversampled training).
    """

    def __init__(
        self, C: torch.Tensor, k: int, loss: str = "sum", *, reference: tuple[np.ndarray, np.ndarray] | None = None
    ) -> None:
        """``reference``: exact PCA of ``C`` already computed (``(e, U)`` with at least k pairs, as from
        :func:`rlae_sc.lae.theory.exact_pca`); its top k are used instead of computing them again."""
        self.C = C
        self.loss = loss
        e, U = theory.exact_pca(C.cpu().numpy(), k) if reference is None else reference
        self.e, self.U = e[:k], U[:, :k]
        self.rows: dict[str, list[float]] = {}

    def record(self, it: int, W1: torch.Tensor, W2: torch.Tensor, lam, B: torch.Tensor | None = None) -> None:
        """Append one row at step ``it``: encoder ``W1`` (k x m), decoder ``W2`` (m x k), feedback ``B`` (k x m)."""
        w1, w2 = W1.detach().cpu().numpy(), W2.detach().cpu().numpy()
        P, s, _ = np.linalg.svd(w2, full_matrices=False)
        cos = theory.alignment(P, self.U)
        lam_t = torch.as_tensor(lam, dtype=W1.dtype, device=W1.device)
        row = {
            "iteration": it,
            "loss": float(regularized_loss(W1.detach(), W2.detach(), lam_t, self.loss, scatter=self.C)),
            "transpose_distance": theory.transpose_distance(w1, w2),
            "subspace_distance": theory.subspace_distance(w2, self.U),
            "axis_alignment": theory.axis_alignment(self.U, w2),
            "singular_value_error": (
                theory.singular_value_error(s[: len(self.e)], self.e, np.asarray(lam, dtype=np.float64))
                if self.loss in ("sum", "nonuniform")
                else float("nan")
            ),
            "min_abs_cos": float(cos.min()),
            **{f"cos_{i + 1}": float(c) for i, c in enumerate(cos)},
            **{f"strength_{i + 1}": float(u) for i, u in enumerate(theory.mode_strengths(w1, w2, self.U))},
        }
        if B is not None:
            row["feedback_distance"] = theory.transpose_distance(B.detach().cpu().numpy(), w2)
        for key, value in row.items():
            self.rows.setdefault(key, []).append(float(value))
