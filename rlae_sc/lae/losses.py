"""The losses of the linear autoencoder, from a scatter matrix or from rows of data.

Shapes: ``X`` is n x m (cells x genes), the encoder ``W1`` is k x m and the
decoder ``W2`` is m x k. Every loss is a **sum over cells** and lambda is in
the units of ``C = X^T X``; see :mod:`rlae_sc.lae.theory`.
"""

from __future__ import annotations

import torch

LOSSES = ("unregularized", "product", "sum", "nonuniform")


def reconstruction_from_scatter(W1: torch.Tensor, W2: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``||X - X W1^T W2^T||_F^2 = tr(C) - 2 tr(W2 W1 C) + tr(W1 C W1^T W2^T W2)``."""
    CW1t = C @ W1.T
    return torch.trace(C) - 2 * torch.sum(W2 * CW1t) + torch.sum((W1 @ CW1t) * (W2.T @ W2))


def regularized_loss(
    W1: torch.Tensor,
    W2: torch.Tensor,
    lam: float | torch.Tensor,
    kind: str,
    *,
    scatter: torch.Tensor | None = None,
    batch: torch.Tensor | None = None,
) -> torch.Tensor:
    """One of the four losses of ``LOSSES``, from a scatter matrix or a batch of rows.

    ``unregularized``: reconstruction only; ``product``: ``+ lam ||W2 W1||^2``;
    ``sum``: ``+ lam (||W1||^2 + ||W2||^2)``; ``nonuniform``: ``lam`` is a vector
    (k,) and the penalty is ``sum_i lam_i (||row_i W1||^2 + ||col_i W2||^2)``.
    """
    if (scatter is None) == (batch is None):
        raise ValueError("give exactly one of scatter= or batch=")
    if scatter is not None:
        rec = reconstruction_from_scatter(W1, W2, scatter)
    else:
        rec = torch.sum((batch - batch @ W1.T @ W2.T) ** 2)
    if kind == "unregularized":
        return rec
    if kind == "product":
        return rec + lam * torch.sum((W2 @ W1) ** 2)
    if kind == "sum":
        return rec + lam * (torch.sum(W1**2) + torch.sum(W2**2))
    if kind == "nonuniform":
        lam = torch.as_tensor(lam, dtype=W1.dtype, device=W1.device)
        return rec + torch.sum(lam * (torch.sum(W1**2, dim=1) + torch.sum(W2**2, dim=0)))
    raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
