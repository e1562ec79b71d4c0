"""Resampling of token grids kept as [..., h*w, D] (row-major tokens, features last).

The grid is handed to torch's pooling / interpolation kernels as a channels-last view (a permute, no copy),
which CPU kernels handle fast, and the channels-last result permutes back to [..., h'*w', D] for free.
``grid_avg_pool`` is ``F.adaptive_avg_pool2d`` (``F.avg_pool2d`` with kernel = stride when the sizes divide,
the same numbers); ``grid_bilinear`` is ``F.interpolate(mode="bilinear", align_corners=False)``, no antialias
(equal up to float rounding; tests/test_memory_pyramid.py checks both against torch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["grid_avg_pool", "grid_bilinear"]


def _apply(x: torch.Tensor, src: tuple[int, int], fn) -> torch.Tensor:
    """Run a [N,D,h,w] op on x [..., h*w, D] through a channels-last view; returns [..., h'*w', D]."""
    lead, D = x.shape[:-2], x.shape[-1]
    y = fn(x.reshape(-1, src[0], src[1], D).permute(0, 3, 1, 2))
    return y.permute(0, 2, 3, 1).reshape(*lead, -1, D)


def grid_avg_pool(x: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling of tokens x [..., h*w, D] from grid ``src`` to ``dst`` -> [..., gh*gw, D]."""
    src, dst = tuple(src), tuple(dst)
    if src == dst:
        return x
    if src[0] % dst[0] == 0 and src[1] % dst[1] == 0:
        k = (src[0] // dst[0], src[1] // dst[1])
        return _apply(x, src, lambda t: F.avg_pool2d(t, kernel_size=k, stride=k))
    return _apply(x, src, lambda t: F.adaptive_avg_pool2d(t, dst))


def grid_bilinear(x: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False, no antialias) of x [..., h*w, D] from ``src`` to ``dst``.

    Shrinking by integer factors f: output pixel i samples source coordinate f*i + (f-1)/2, i.e. the centre
    pixel of each f x f block (f odd) or the mean of its 2 x 2 centre pixels (f even) -- an ``avg_pool2d`` over
    a shifted view, without ``F.interpolate``'s Python overhead. Other sizes use ``F.interpolate``.
    """
    src, dst = tuple(src), tuple(dst)
    if src == dst:
        return x
    if src[0] % dst[0] == 0 and src[1] % dst[1] == 0:
        f = (src[0] // dst[0], src[1] // dst[1])
        k = tuple(2 - v % 2 for v in f)  # 1 for an odd factor, 2 for an even one
        o = tuple((v - 1) // 2 for v in f)  # first centre pixel of a block

        def centre(t: torch.Tensor) -> torch.Tensor:
            t = t[:, :, o[0]:o[0] + f[0] * (dst[0] - 1) + k[0], o[1]:o[1] + f[1] * (dst[1] - 1) + k[1]]
            return F.avg_pool2d(t, kernel_size=k, stride=f)

        return _apply(x, src, centre)
    return _apply(x, src, lambda t: F.interpolate(t, size=dst, mode="bilinear", align_corners=False))
