"""Frame-id rules, cached index constants and a row copy shared by the video banks (``pyramid``, ``merge``,
``cognitive``).

A bank writes one frame per row per call. Its id is ``t`` [B] when given, else the row's previous id + 1, so
with no ``t`` the ids count steps since the row's last reset (a reset sets ``last_id`` to -1). Explicit ids
must be >= 0 and strictly increase within an episode; anything else raises, so no id is ever held twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["cached_constants", "copy_rows_", "next_frame_ids"]


def cached_constants(cache: dict[Any, dict[str, Any]], device: torch.device, B: int,
                     build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Index constants per (device, B), built once; the cache is emptied past 16 keys so it stays bounded."""
    key = (device, B)
    if key not in cache:
        if len(cache) > 16:
            cache.clear()
        cache[key] = build()
    return cache[key]


def copy_rows_(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``dst.index_copy_(0, index, src)`` for row tables dst [R,C], src [len(index),C], bit for bit.

    ``index_copy_`` moves one element at a time; viewing big copies' rows as 16-byte elements (complex128, only
    moved, never computed with) moves four float32 per step, about 3x faster on CPU. Small copies skip the views,
    which cost more than they save there."""
    size = dst.element_size()
    if (src.numel() >= 1 << 15 and src.dtype == dst.dtype and dst.is_contiguous() and src.is_contiguous()
            and (dst.shape[-1] * size) % 16 == 0 and (dst.storage_offset() * size) % 16 == 0
            and (src.storage_offset() * size) % 16 == 0):
        dst.view(torch.complex128).index_copy_(0, index, src.view(torch.complex128))
    else:
        dst.index_copy_(0, index, src)
    return dst


def next_frame_ids(name: str, last_id: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """Frame ids int64 [B] for the next write: ``t`` or ``last_id + 1``; explicit ids must be >= 0 and strictly
    increase per row since its last reset (``last_id`` = -1 after a reset), else ValueError naming the row."""
    if t is None:
        return last_id + 1
    if not isinstance(t, torch.Tensor) or t.shape != last_id.shape or t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{name}: t must be an integer tensor [B]={last_id.shape[0]}, got "
                         f"{getattr(t, 'dtype', type(t))} {tuple(getattr(t, 'shape', ()))}")
    ids = t.to(device=last_id.device, dtype=torch.long)
    bad = (ids <= last_id) | (ids < 0)
    if bool(bad.any()):
        b = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name}: frame ids must be >= 0 and strictly increase within an episode; row {b} got "
                         f"t={int(ids[b])} after {int(last_id[b])} (reset the row with is_first)")
    return ids
