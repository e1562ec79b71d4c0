"""Voxel hashing in pure torch: world points -> packed int64 voxel codes, batched downsampling and lookup.

Grid: voxels of edge ``voxel_size`` metres aligned to ``origin`` (default the world origin); the voxel of a
point p is ``ijk = floor((p - origin) / voxel_size)`` (computed in the points' dtype). A code packs the
three indices, each offset by 2^20 into 21 bits, as ``(i << 42) | (j << 21) | k`` -- a non-negative int64
that sorts lexicographically by (i, j, k). Indices must lie in [-2^20, 2^20 - 1) so that no code equals
``SENTINEL`` (int64 max), which marks empty slots and sorts after every real code.

The storable world is a cube of half-width ``extent`` metres around ``origin``: ``in_extent`` tests
``-extent <= p - origin < extent`` per axis, and ``check_extent`` rejects an extent the 21 bits cannot hold.
Callers decide what happens to points outside (the point-frame memory ignores and counts them).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BITS", "SENTINEL", "check_extent", "in_extent", "lookup", "pack", "unpack", "voxel_downsample",
           "voxel_index", "voxel_keys"]

BITS = 21  # bits per axis
_OFF = 1 << (BITS - 1)  # index offset: signed index i is stored as i + 2^20
_MASK = (1 << BITS) - 1
SENTINEL = torch.iinfo(torch.int64).max  # empty slot; never a valid code (the max index per axis is 2^21 - 2)
MAX_INDEX = _OFF - 1  # |index| bound implied by a valid extent


def check_extent(extent: float, voxel_size: float, who: str = "extent") -> None:
    """Raise ValueError unless voxel_size > 0 and extent / voxel_size <= 2^20 - 1 (the packable range)."""
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0 metres, got {voxel_size}")
    if not extent > 0:
        raise ValueError(f"{who} must be > 0 metres, got {extent}")
    if extent / voxel_size > MAX_INDEX:
        raise ValueError(f"{who}={extent} m is too large for voxel_size={voxel_size} m: at most {MAX_INDEX} voxels "
                         f"per half-axis fit the 21-bit code (extent <= {MAX_INDEX * voxel_size:g} m)")


def voxel_index(points: Tensor, voxel_size: float, origin: Tensor | None = None) -> Tensor:
    """Integer voxel indices int64 [...,3] = floor((points [...,3] - origin) / voxel_size)."""
    p = points if origin is None else points - origin.to(points)
    return torch.floor(p / voxel_size).long()


def pack(ijk: Tensor) -> Tensor:
    """Pack voxel indices int64 [...,3] (each in [-2^20, 2^20 - 1)) into codes int64 [...]."""
    u = ijk + _OFF
    return (u[..., 0] << (2 * BITS)) | (u[..., 1] << BITS) | u[..., 2]


def unpack(code: Tensor) -> Tensor:
    """Inverse of ``pack``: codes int64 [...] -> voxel indices int64 [...,3]."""
    return torch.stack([(code >> (2 * BITS)) & _MASK, (code >> BITS) & _MASK, code & _MASK], dim=-1) - _OFF


def in_extent(points: Tensor, extent: float, origin: Tensor | None = None) -> Tensor:
    """Bool [...]: every coordinate of points [...,3] (metres) satisfies -extent <= p - origin < extent."""
    p = points if origin is None else points - origin.to(points)
    return ((p >= -extent) & (p < extent)).all(-1)


def voxel_keys(points: Tensor, valid: Tensor, voxel_size: float, origin: Tensor | None = None) -> Tensor:
    """Codes int64 [...] of points [...,3]; ``SENTINEL`` where ``valid`` (bool [...]) is False."""
    ijk = voxel_index(torch.where(valid[..., None], points, torch.zeros_like(points)), voxel_size, origin)
    return torch.where(valid, pack(ijk), torch.full_like(valid, SENTINEL, dtype=torch.long))


def voxel_downsample(points: Tensor, valid: Tensor, voxel_size: float, origin: Tensor | None = None
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One point per occupied voxel, per row: points [B,M,3], valid bool [B,M] ->
    (codes int64 [B,M] ascending then SENTINEL, centroids [B,M,3] (mean of the voxel's points, 0 in empty
    slots), counts int64 [B,M] points averaged (0 in empty slots), n_voxels int64 [B]).

    The representative is the centroid, as in open3d's ``voxel_down_sample`` (tests/test_tsdf_open3d.py
    checks the two agree when the grids are aligned). No loop over rows or points: sort codes, mark runs,
    scatter-add.
    """
    if points.dim() != 3 or points.shape[-1] != 3 or valid.shape != points.shape[:2]:
        raise ValueError(f"voxel_downsample: expected points [B,M,3] and valid [B,M], got "
                         f"{tuple(points.shape)} and {tuple(valid.shape)}")
    B, M, _ = points.shape
    key = voxel_keys(points, valid, voxel_size, origin)
    skey, order = torch.sort(key, dim=1, stable=True)
    sp = points.gather(1, order[..., None].expand(B, M, 3))
    real = skey != SENTINEL
    start = torch.ones_like(real)
    start[:, 1:] = skey[:, 1:] != skey[:, :-1]
    seg = torch.cumsum(start & real, dim=1) - 1
    seg = torch.where(real, seg, torch.full_like(seg, M))  # padding goes to a spill column, dropped below
    sums = points.new_zeros(B, M + 1, 3).scatter_add_(1, seg[..., None].expand(B, M, 3), sp)
    counts = torch.zeros(B, M + 1, dtype=torch.long, device=points.device).scatter_add_(1, seg, real.long())
    codes = torch.full((B, M + 1), SENTINEL, dtype=torch.long, device=points.device).scatter_(1, seg, skey)
    counts = counts[:, :M]
    cent = sums[:, :M] / counts.clamp(min=1)[..., None].to(points.dtype)
    return codes[:, :M], cent, counts, (counts > 0).sum(1)


def lookup(sorted_codes: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    """Find codes in per-row ascending tables: sorted_codes int64 [B,P], query int64 [B,M] ->
    (found bool [B,M], index int64 [B,M] of the match, clamped into [0, P-1] where not found).
    ``SENTINEL`` queries are never found."""
    P = sorted_codes.shape[1]
    sorted_codes = sorted_codes.contiguous()  # a no-op for state tables; searchsorted copies otherwise
    idx = torch.searchsorted(sorted_codes, query.contiguous()).clamp_(max=P - 1)
    found = (sorted_codes.gather(1, idx) == query) & (query != SENTINEL)
    return found, idx
