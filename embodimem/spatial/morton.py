"""Morton (Z-order) codes in pure torch: 21 bits per axis interleaved into one non-negative int64.

Bit layout: bit ``3*i + a`` of a code is bit ``i`` of the integer grid index along axis ``a`` (x=0, y=1,
z=2), so x holds the lowest bit of every triple. Codes of a ``bits``-bit grid lie in [0, 2^(3*bits)), the
top bit of int64 is never used, so codes sort as plain signed integers.

Levels: level 0 is a leaf cell; the level-l ancestor of a leaf code is ``code >> 3*l`` (``parent`` is
``code >> 3``), its cell has edge ``leaf_size * 2^l``, and the leaves below a level-l code c are exactly the
contiguous code range [c << 3l, (c << 3l) + 2^(3l) - 1] -- why range queries over sorted codes are cheap.

World coordinates map to grid indices through a ``MortonGrid``: a cube with minimum corner ``origin``
(metres, any sign) and edge ``leaf_size * 2^bits``. Quantization is done in float64:
``index = floor((p - origin) / leaf_size)``; a point is inside iff every index is in [0, 2^bits). Points
outside are reported by the ``inside`` mask (never clipped onto boundary cells).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_BITS = 21  # 3 * 21 = 63 bits: the largest interleaving that fits a non-negative int64

_LOW21 = (1 << MAX_BITS) - 1
# Magic numbers moving 21 bits to every third bit, one (shift, mask) per stage; compacting runs them backwards.
_SPREAD = ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F),
           (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249))
_COMPACT = ((2, 0x10C30C30C30C30C3), (4, 0x100F00F00F00F00F), (8, 0x1F0000FF0000FF),
            (16, 0x1F00000000FFFF), (32, _LOW21))

__all__ = ["MAX_BITS", "MortonGrid", "ancestor", "children", "decode", "encode", "parent", "part1by2",
           "compact1by2", "range_of"]


def part1by2(x: Tensor) -> Tensor:
    """Spread the low 21 bits of int64 x [...] so bit i moves to bit 3i (the other bits become 0)."""
    x = x & _LOW21
    for shift, mask in _SPREAD:
        x = (x | (x << shift)) & mask
    return x


def compact1by2(x: Tensor) -> Tensor:
    """Inverse of ``part1by2``: gather bits 0, 3, 6, ... of int64 x [...] into the low 21 bits."""
    x = x & _SPREAD[-1][1]
    for shift, mask in _COMPACT:
        x = (x ^ (x >> shift)) & mask
    return x


def _check_index(ijk: Tensor) -> Tensor:
    if ijk.dtype != torch.int64 or ijk.shape[-1:] != (3,):
        raise ValueError(f"morton: grid indices must be int64 [...,3], got {ijk.dtype} {tuple(ijk.shape)}")
    return ijk


def encode(ijk: Tensor) -> Tensor:
    """Grid indices int64 [...,3] in [0, 2^21) -> Morton codes int64 [...]. Out-of-range indices raise."""
    ijk = _check_index(ijk)
    if ijk.numel() and bool(((ijk < 0) | (ijk > _LOW21)).any()):
        raise ValueError(f"morton.encode: grid indices must be in [0, 2^{MAX_BITS}); mask points outside "
                         "the grid first (MortonGrid.quantize returns an `inside` mask)")
    return _interleave(ijk)


def _interleave(ijk: Tensor) -> Tensor:
    """Interleave in-range indices int64 [...,3] (no checks): the spread bits of x, y, z never overlap, so a sum
    of the shifted spreads equals their bitwise or."""
    shifts = torch.arange(3, dtype=torch.int64, device=ijk.device)
    return (part1by2(ijk) << shifts).sum(-1)


def decode(code: Tensor) -> Tensor:
    """Morton codes int64 [...] -> grid indices int64 [...,3] (exact inverse of ``encode``)."""
    if code.dtype != torch.int64:
        raise ValueError(f"morton.decode: codes must be int64, got {code.dtype}")
    shifts = torch.arange(3, dtype=torch.int64, device=code.device)
    return compact1by2(code[..., None] >> shifts)  # one pass over all three axes


def parent(code: Tensor) -> Tensor:
    """Parent cell code (one level coarser): code >> 3."""
    return code >> 3


def ancestor(code: Tensor, levels: int) -> Tensor:
    """Ancestor ``levels`` levels up: code >> 3*levels."""
    if levels < 0:
        raise ValueError(f"morton.ancestor: levels must be >= 0, got {levels}")
    return code >> (3 * levels)


def children(code: Tensor) -> Tensor:
    """The 8 child codes [...,8] of each cell, in Z order: (code << 3) | octant."""
    return (code[..., None] << 3) | torch.arange(8, dtype=torch.int64, device=code.device)


def range_of(code: Tensor, levels: int) -> tuple[Tensor, Tensor]:
    """Leaf codes (first, last), both inclusive int64 [...], under a cell ``levels`` above the leaves.

    Inclusive because the exclusive end (code + 1) << 3*levels overflows int64 for the last top-level cell.
    """
    first = code << (3 * levels)
    return first, first + ((1 << (3 * levels)) - 1)


@dataclass(frozen=True)
class MortonGrid:
    """A cube of 2^bits leaf cells per axis: min corner ``origin`` (metres), edge ``leaf_size * 2^bits``."""

    origin: tuple[float, float, float]
    leaf_size: float
    bits: int = MAX_BITS

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 1 <= self.bits <= MAX_BITS):
            raise ValueError(f"MortonGrid.bits must be an int in [1, {MAX_BITS}], got {self.bits!r}")
        if not (math.isfinite(self.leaf_size) and self.leaf_size > 0):
            raise ValueError(f"MortonGrid.leaf_size must be a finite number > 0 metres, got {self.leaf_size!r}")
        if len(self.origin) != 3 or not all(math.isfinite(float(o)) for o in self.origin):
            raise ValueError(f"MortonGrid.origin must be 3 finite floats (metres), got {self.origin!r}")
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))

    @classmethod
    def centered(cls, center: tuple[float, float, float], leaf_size: float, bits: int = MAX_BITS) -> MortonGrid:
        """The grid whose cube is centred on ``center``: origin = center - leaf_size * 2^(bits-1)."""
        half = leaf_size * 2.0 ** (bits - 1)
        return cls(tuple(float(c) - half for c in center), leaf_size, bits)

    @property
    def cells(self) -> int:
        """Leaf cells per axis, 2^bits."""
        return 1 << self.bits

    @property
    def extent(self) -> float:
        """Edge of the world cube in metres."""
        return self.leaf_size * self.cells

    def cell_size(self, level: int = 0) -> float:
        """Edge in metres of a level-``level`` cell."""
        return self.leaf_size * 2.0 ** level

    def _origin(self, device: torch.device) -> Tensor:
        cache = self.__dict__.setdefault("_origin_cache", {})  # one small tensor per device, not per call
        if device not in cache:
            cache[device] = torch.tensor(self.origin, dtype=torch.float64, device=device)
        return cache[device]

    def quantize(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Points [...,3] metres -> (grid indices int64 [...,3], inside bool [...]); where a point is outside
        (or NaN) its indices are clamped into the grid, so always mask with ``inside``."""
        ijk, inside, _ = self.locate(points)
        return ijk, inside

    def locate(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``quantize`` plus each point's offset float64 [...,3] (metres) from the centre of its leaf cell."""
        q = (points.to(torch.float64) - self._origin(points.device)) / self.leaf_size
        f = torch.floor(q)
        fc = f.clamp(0, self.cells - 1)
        inside = (f == fc).all(-1)  # NaN != NaN, so NaN is outside
        return fc.nan_to_num(0.0).to(torch.int64), inside, (q - f - 0.5) * self.leaf_size

    def codes(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Points [...,3] metres -> (leaf codes int64 [...], inside bool [...]); mask codes with ``inside``."""
        ijk, inside, _ = self.locate(points)
        return _interleave(ijk), inside  # locate clamps into the grid, so no range check is needed

    def cell_min(self, code: Tensor, level: int = 0) -> Tensor:
        """Min corner float64 [...,3] (metres) of the level-``level`` cell with code ``code``."""
        return self._origin(code.device) + decode(code).to(torch.float64) * self.cell_size(level)

    def cell_center(self, code: Tensor, level: int = 0) -> Tensor:
        """Centre float64 [...,3] (metres) of the level-``level`` cell: origin + (index + 0.5) * size."""
        return self._origin(code.device) + (decode(code).to(torch.float64) + 0.5) * self.cell_size(level)
