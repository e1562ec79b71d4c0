"""Morton codes against a bit-by-bit Python reference: encode/decode, injectivity, levels, world quantization."""

from __future__ import annotations

import math
import random

import pytest
import torch

from embodimem.spatial import morton
from embodimem.spatial.morton import MAX_BITS, MortonGrid

TOP = (1 << MAX_BITS) - 1


def ref_encode(i: int, j: int, k: int) -> int:
    """Bit b of x goes to bit 3b, of y to 3b+1, of z to 3b+2 (one bit at a time)."""
    c = 0
    for b in range(MAX_BITS):
        c |= ((i >> b) & 1) << (3 * b) | ((j >> b) & 1) << (3 * b + 1) | ((k >> b) & 1) << (3 * b + 2)
    return c


def adversarial_indices() -> list[tuple[int, int, int]]:
    """Boundaries: 0, the top index, powers of two and their neighbours, on every axis combination."""
    vals = sorted({0, 1, 2, TOP, TOP - 1} | {1 << b for b in range(MAX_BITS)}
                  | {(1 << b) - 1 for b in range(1, MAX_BITS + 1)})
    rng = random.Random(0)
    out = [(v, v, v) for v in vals] + [(v, 0, 0) for v in vals] + [(0, v, 0) for v in vals] + [(0, 0, v) for v in vals]
    out += [(rng.choice(vals), rng.choice(vals), rng.choice(vals)) for _ in range(500)]
    return out


def test_encode_matches_bitwise_reference_and_decode_is_exact():
    g = torch.Generator().manual_seed(0)
    ijk = torch.cat([torch.randint(0, TOP + 1, (3000, 3), generator=g), torch.tensor(adversarial_indices())])
    codes = morton.encode(ijk)
    assert codes.dtype == torch.int64
    assert codes.tolist() == [ref_encode(*t) for t in ijk.tolist()]
    assert torch.equal(morton.decode(codes), ijk)
    assert int(morton.encode(torch.tensor([[TOP, TOP, TOP]]))) == (1 << 63) - 1  # the top bit is never set
    assert bool((codes >= 0).all())


def test_encode_is_injective_and_low_bits_all_distinct():
    # every index of a 32^3 block (15 bits of code) maps to a different code: the Mem4Nav encoder mapped all to 0
    r = torch.arange(32)
    ijk = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    codes = morton.encode(ijk)
    assert sorted(codes.tolist()) == list(range(32 ** 3))
    g = torch.Generator().manual_seed(1)
    big = torch.randint(0, TOP + 1, (20000, 3), generator=g)
    assert morton.encode(big).unique().numel() == big.unique(dim=0).shape[0]


def test_parent_ancestor_children_ranges_keep_octant_containment():
    g = torch.Generator().manual_seed(2)
    ijk = torch.randint(0, TOP + 1, (2000, 3), generator=g)
    c = morton.encode(ijk)
    assert torch.equal(morton.parent(c), c >> 3)
    for level in (1, 2, 5, 13, 21):
        anc = morton.ancestor(c, level)
        assert torch.equal(anc, morton.encode(ijk >> level))  # the ancestor cell holds the leaf
        lo, hi = morton.range_of(anc, level)
        assert bool(((lo <= c) & (c <= hi)).all())  # leaves of a cell are one contiguous code range
        assert bool((hi - lo == (1 << (3 * level)) - 1).all())
    kids = morton.children(c[:50] >> 3)
    assert bool((morton.parent(kids) == (c[:50] >> 3)[:, None]).all())
    assert bool((kids == c[:50, None]).any(1).all())
    # children decode to 2*parent + octant bits (x lowest)
    p_ijk = morton.decode(c[:50] >> 3)
    oct_bits = torch.tensor([[o & 1, (o >> 1) & 1, o >> 2] for o in range(8)])
    assert torch.equal(morton.decode(kids), 2 * p_ijk[:, None] + oct_bits)
    # same ancestor iff same coarse indices, in both directions
    a, b = ijk[:1000], ijk[1000:]
    for level in (3, 18):
        same_code = morton.ancestor(morton.encode(a), level) == morton.ancestor(morton.encode(b), level)
        same_idx = ((a >> level) == (b >> level)).all(-1)
        assert torch.equal(same_code, same_idx)


def test_encode_rejects_out_of_range_and_bad_dtypes():
    with pytest.raises(ValueError, match="2\\^21"):
        morton.encode(torch.tensor([[TOP + 1, 0, 0]]))
    with pytest.raises(ValueError, match="2\\^21"):
        morton.encode(torch.tensor([[-1, 0, 0]]))
    with pytest.raises(ValueError, match="int64"):
        morton.encode(torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="int64"):
        morton.decode(torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="levels"):
        morton.ancestor(torch.zeros(1, dtype=torch.long), -1)


def ref_quantize(p: tuple[float, float, float], grid: MortonGrid) -> tuple[tuple[int, int, int], bool]:
    f = [math.floor((x - o) / grid.leaf_size) if math.isfinite(x) else -1 for x, o in zip(p, grid.origin)]
    inside = all(0 <= v < grid.cells for v in f)
    return tuple(f), inside


@pytest.mark.parametrize("grid", [MortonGrid.centered((0.0, 0.0, 0.0), 0.1),
                                  MortonGrid((-3.25, 10.0, -1e4), 0.25, bits=6),
                                  MortonGrid.centered((1e5, -2e5, 3.5), 0.05)])
def test_world_quantization_matches_reference_incl_boundaries(grid):
    g = torch.Generator().manual_seed(3)
    o = torch.tensor(grid.origin, dtype=torch.float64)
    E, s = grid.extent, grid.leaf_size
    rand = o + (torch.rand(2000, 3, generator=g, dtype=torch.float64) * 1.2 - 0.1) * E  # 1/6 fall outside
    edges = torch.tensor([[0.0, 0.0, 0.0], [E, 0, 0], [E - s, E - s, E - s], [E - 1e-9 * E, 0, 0], [-1e-12, 0, 0],
                          [s, 2 * s, 3 * s], [s * 0.5, E / 2, E / 2], [-E, -E, -E], [1e3 * E, 0, 0]],
                         dtype=torch.float64) + o
    far = torch.tensor([[1e30, 0, 0], [-1e30, 0, 0], [float("nan"), 0, 0], [float("inf"), 0, 0]], dtype=torch.float64)
    pts = torch.cat([rand, edges, far])
    ijk, inside = grid.quantize(pts)
    code, inside2 = grid.codes(pts)
    assert torch.equal(inside, inside2)
    for n, p in enumerate(pts.tolist()):
        r_ijk, r_in = ref_quantize(p, grid)
        assert bool(inside[n]) == r_in, p
        if r_in:
            assert tuple(ijk[n].tolist()) == r_ijk, p
            assert int(code[n]) == ref_encode(*r_ijk)
    assert bool(inside[len(rand)])  # the min corner is inside
    if (grid.origin[0] + E) - grid.origin[0] == E:  # exactly representable: the max corner is outside
        assert not bool(inside[len(rand) + 1])
    # the centre of a leaf quantizes back to that leaf; cell_min/centre agree with the index
    centres = grid.cell_center(code[inside])
    assert torch.equal(grid.codes(centres)[0], code[inside])
    torch.testing.assert_close(grid.cell_min(code[inside]) + s / 2, centres)


def test_locate_offsets_and_levels():
    grid = MortonGrid.centered((0.0, 0.0, 0.0), 0.5, bits=4)  # cube [-4, 4)
    pts = torch.tensor([[0.1, -0.3, 3.99], [-4.0, -4.0, -4.0]], dtype=torch.float64)
    ijk, inside, off = grid.locate(pts)
    assert ijk.tolist() == [[8, 7, 15], [0, 0, 0]] and inside.all()
    torch.testing.assert_close(grid.cell_center(morton.encode(ijk)) + off, pts)
    assert grid.cell_size(2) == 2.0 and grid.extent == 8.0 and grid.cells == 16
    c = morton.encode(ijk)
    torch.testing.assert_close(grid.cell_min(c >> 6, level=2), torch.tensor([[0.0, -2.0, 2.0], [-4.0, -4.0, -4.0]],
                                                                            dtype=torch.float64))


def test_grid_validation_names_the_field():
    with pytest.raises(ValueError, match="bits"):
        MortonGrid((0, 0, 0), 0.1, bits=22)
    with pytest.raises(ValueError, match="leaf_size"):
        MortonGrid((0, 0, 0), 0.0)
    with pytest.raises(ValueError, match="origin"):
        MortonGrid((0, float("nan"), 0), 0.1)
