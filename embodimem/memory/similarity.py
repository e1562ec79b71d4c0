"""Adjacent-pair cosine similarity and argmax with a documented tie rule, shared by the video banks.

Tie rule (every bank that uses these helpers inherits it): among equal maxima the **smallest index**
wins, i.e. the earliest adjacent pair in time order. ``torch.max(dim)`` documents that it returns the
first maximal index; ``first_argmax`` relies on it and masks invalid entries to -inf first.
"""

from __future__ import annotations

import torch

__all__ = ["EPS", "adjacent_cosine", "cosine_to", "first_argmax", "normalize", "normalize_", "paired_cosine"]

EPS = 1e-8  # norm floor: a zero vector has cosine 0 with everything


def normalize(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """x / max(||x||, eps) over the last axis (a zero vector stays zero)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


def normalize_(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``normalize`` in place (same bits). ``(normalize(a) * normalize(b)).sum(-1)`` is ``F.cosine_similarity(a, b,
    dim=-1)`` bit for bit: it too divides each vector by its clamped norm before the product."""
    return x.div_(torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(eps))


def adjacent_cosine(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """cos(x[j], x[j+1]) along ``dim`` over the last (feature) axis: x [..., S, ..., D] -> [..., S-1, ...].

    dot(a, b) / (max(|a|, 1e-8) * max(|b|, 1e-8)), so zero vectors give 0. Agrees with ``F.cosine_similarity``
    up to float rounding; exactly equal pairs give exactly equal scores (what the tie rule needs).
    """
    n = x.shape[dim]
    norm = torch.linalg.vector_norm(x, dim=-1).clamp_min(EPS)
    later, earlier = x.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1)
    return torch.linalg.vecdot(later, earlier) / (norm.narrow(dim, 1, n - 1) * norm.narrow(dim, 0, n - 1))


def paired_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a, b) over the last axis for matching rows: a, b [..., D] -> [...]; the formula of
    ``adjacent_cosine`` (``paired_cosine(x[j+1], x[j])`` equals its entry j bit for bit), so cached pair
    scores and recomputed ones agree exactly."""
    na = torch.linalg.vector_norm(a, dim=-1).clamp_min(EPS)
    nb = torch.linalg.vector_norm(b, dim=-1).clamp_min(EPS)
    return torch.linalg.vecdot(a, b) / (na * nb)


def first_argmax(scores: torch.Tensor, valid: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """Index of the maximum along ``dim`` (ties -> smallest index; invalid entries never win unless all are).

    scores float [...]; valid bool, same shape (None = all valid). Returns int64 with ``dim`` removed; a
    slice with no valid entry returns 0 (callers mask such rows out).
    """
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    return scores.max(dim=dim).indices  # documented: the first maximal index; much faster than argmax off the last dim


def cosine_to(keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Cosine of every key with one query per row: keys [B,S,D], query [B,D] -> [B,S] (same eps rule)."""
    return (normalize(keys) * normalize(query).unsqueeze(1)).sum(-1)
