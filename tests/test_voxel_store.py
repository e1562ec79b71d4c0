"""VoxelStore against a Python dict oracle: inserts, merges, capacity eviction, out-of-cube points, and every query
(radius both ways, kNN, box, frustum, lookup, coarsen) on random and adversarial data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_morton import ref_encode, ref_quantize

from embodimem.geometry import look_at
from embodimem.spatial.morton import MortonGrid
from embodimem.spatial.voxel_store import VoxelStore

F = 3


class RefStore:
    """One env as research code would write it: a dict from Morton code to a leaf record."""

    def __init__(self, grid: MortonGrid, cap: int):
        self.grid, self.cap, self.leaves, self.evicted, self.dropped = grid, cap, {}, 0, 0

    def center(self, code: int) -> list[float]:
        ijk = [sum(((code >> (3 * b + a)) & 1) << b for b in range(21)) for a in range(3)]
        return [o + (i + 0.5) * self.grid.leaf_size for o, i in zip(self.grid.origin, ijk)]

    def insert(self, pts, feats, mask, step: int) -> None:
        for p, f, m in zip(pts, feats, mask):
            if not m:
                continue
            ijk, inside = ref_quantize(p, self.grid)
            if not inside:
                self.dropped += 1
                continue
            code = ref_encode(*ijk)
            leaf = self.leaves.setdefault(code, {"count": 0, "f": [0.0] * len(f), "first": step, "last": step})
            leaf["count"] += 1
            leaf["f"] = [a + b for a, b in zip(leaf["f"], f)]
            leaf["last"] = step
        if len(self.leaves) > self.cap:  # keep the latest seen, then the most points, then the lower code
            order = sorted(self.leaves, key=lambda c: (-self.leaves[c]["last"], -self.leaves[c]["count"], c))
            self.evicted += len(order) - self.cap
            self.leaves = {c: self.leaves[c] for c in order[: self.cap]}

    def d2(self, code: int, q) -> float:
        c = self.center(code)
        dx, dy, dz = c[0] - q[0], c[1] - q[1], c[2] - q[2]
        return dx * dx + dy * dy + dz * dz


def assert_store_equals(store: VoxelStore, st: dict, refs: list[RefStore]) -> None:
    for b, ref in enumerate(refs):
        codes = sorted(ref.leaves)
        n = len(codes)
        row = st["leaf_code"][b]
        assert row[: store.capacity - n].eq(-1).all() and row[store.capacity - n:].tolist() == codes
        assert st["valid"][b].sum() == n
        sl = slice(store.capacity - n, store.capacity)
        assert st["leaf_count"][b, sl].tolist() == [ref.leaves[c]["count"] for c in codes]
        assert st["leaf_first"][b, sl].tolist() == [ref.leaves[c]["first"] for c in codes]
        assert st["leaf_last"][b, sl].tolist() == [ref.leaves[c]["last"] for c in codes]
        Fd = st["leaf_feat"].shape[-1]
        mean = torch.tensor([[x / ref.leaves[c]["count"] for x in ref.leaves[c]["f"]] for c in codes]).reshape(n, Fd)
        torch.testing.assert_close(st["leaf_feat"][b, sl], mean, atol=1e-5, rtol=1e-5)
        assert int(st["leaf_evicted"][b]) == ref.evicted and int(st["dropped_outside"][b]) == ref.dropped


def random_stream(grid: MortonGrid, B: int, P: int, T: int, seed: int, spread: float):
    """Points clustered so leaves repeat across steps, some outside the cube, some masked out."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(grid.origin, dtype=torch.float64) + grid.extent / 2
    for t in range(T):
        pts = base + (torch.rand(B, P, 3, generator=g, dtype=torch.float64) - 0.5) * spread
        pts[:, :3] = base + torch.tensor([grid.extent, 0.0, 0.0], dtype=torch.float64)  # outside: dropped
        feats = torch.randn(B, P, F, generator=g)
        mask = torch.rand(B, P, generator=g) < 0.9
        yield pts, feats, mask, torch.full((B,), t, dtype=torch.long)


@pytest.mark.parametrize("cap", [512, 40])  # 40 overflows: the eviction rule is exercised every step
def test_inserts_match_dict_oracle(cap):
    grid = MortonGrid.centered((0.0, 0.0, 0.0), 0.25, bits=21)
    store = VoxelStore(grid, cap, F)
    B = 3
    st = store.init_state(B)
    refs = [RefStore(grid, cap) for _ in range(B)]
    for pts, feats, mask, step in random_stream(grid, B, 50, 12, seed=0, spread=3.0):
        st = store.insert(st, pts, feats, mask, step)
        for b in range(B):
            refs[b].insert(pts[b].tolist(), feats[b].tolist(), mask[b].tolist(), int(step[b]))
        assert_store_equals(store, st, refs)
    if cap == 40:
        assert all(r.evicted > 0 for r in refs)


def test_second_write_to_a_leaf_moves_its_mean_and_count():
    grid = MortonGrid.centered((0.0, 0.0, 0.0), 1.0, bits=8)
    store = VoxelStore(grid, 4, 2)
    st = store.init_state(1)
    p = torch.tensor([[[0.2, 0.3, 0.4]]], dtype=torch.float64)
    one = torch.ones(1, 1, dtype=torch.bool)
    st = store.insert(st, p, torch.tensor([[[1.0, 0.0]]]), one, torch.tensor([0]))
    st = store.insert(st, p + 0.5, torch.tensor([[[0.0, 3.0]]]), one, torch.tensor([5]))
    s = store.capacity - 1
    assert st["valid"].sum() == 1 and st["leaf_count"][0, s] == 2
    torch.testing.assert_close(st["leaf_feat"][0, s], torch.tensor([0.5, 1.5]))  # accumulated, not overwritten
    assert st["leaf_first"][0, s] == 0 and st["leaf_last"][0, s] == 5
    torch.testing.assert_close(store.centroids(st)[0, s], torch.tensor([0.45, 0.55, 0.65], dtype=torch.float64))


def test_insert_is_functional_and_rows_are_isolated():
    grid = MortonGrid.centered((0.0, 0.0, 0.0), 0.5)
    store = VoxelStore(grid, 64, F)
    st = store.init_state(3)
    stream = list(random_stream(grid, 3, 30, 4, seed=1, spread=4.0))
    for pts, feats, mask, step in stream:
        before = {k: v.clone() for k, v in st.items()}
        new = store.insert(st, pts, feats, mask, step)
        assert all(torch.equal(before[k], st[k]) for k in st), "insert mutated its input state"
        for k, v in new.items():  # no views into a larger packed buffer (the byte count would understate)
            assert v.is_contiguous() and v.untyped_storage().nbytes() == v.numel() * v.element_size(), k
        st = new
    for b in range(3):
        one = store.init_state(1)
        for pts, feats, mask, step in stream:
            one = store.insert(one, pts[b:b + 1], feats[b:b + 1], mask[b:b + 1], step[b:b + 1])
        for k in st:
            torch.testing.assert_close(st[k][b:b + 1], one[k])


def test_outside_points_count_or_raise():
    grid = MortonGrid.centered((0.0, 0.0, 0.0), 0.5, bits=4)  # cube [-4, 4)
    pts = torch.tensor([[[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [-4.01, 0, 0], [float("nan"), 0, 0]]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    store = VoxelStore(grid, 8, 0)
    st = store.insert(store.init_state(1), pts, None, mask, torch.tensor([0]))
    assert st["valid"].sum() == 1 and st["dropped_outside"].item() == 3  # never clipped onto a border leaf
    with pytest.raises(ValueError, match="outside the world cube"):
        VoxelStore(grid, 8, 0, outside="error").insert(store.init_state(1), pts, None, mask, torch.tensor([0]))
    with pytest.raises(ValueError, match="capacity"):
        VoxelStore(grid, 0, 0)


# ----------------------------------------------------------------------------------------------- queries
def filled_store(grid: MortonGrid, B: int = 2, n: int = 300, seed: int = 0, cap: int = 512, extra=None):
    """A store whose leaves are n random lattice cells around the cube centre (+ extra points per row)."""
    g = torch.Generator().manual_seed(seed)
    store = VoxelStore(grid, cap, F)
    c = torch.tensor(grid.origin, dtype=torch.float64) + grid.extent / 2
    pts = c + (torch.randint(-12, 12, (B, n, 3), generator=g).double() + 0.5) * grid.leaf_size
    if extra is not None:
        pts = torch.cat([pts, extra.expand(B, -1, 3)], 1)
    st = store.insert(store.init_state(B), pts, torch.randn(B, pts.shape[1], F, generator=g),
                      torch.ones(B, pts.shape[1], dtype=torch.bool), torch.zeros(B, dtype=torch.long))
    refs = []
    for b in range(B):
        r = RefStore(grid, cap)
        r.leaves = {int(code): {} for code, v in zip(st["leaf_code"][b], st["valid"][b]) if v}
        refs.append(r)
    return store, st, refs


def slot_codes(st, b, slots):
    return [int(st["leaf_code"][b, s]) for s in slots if s >= 0]


GRIDS = [MortonGrid.centered((0.0, 0.0, 0.0), 0.25), MortonGrid.centered((-3.0, 7.0, 1e5), 0.1),
         MortonGrid((-2.0, -2.0, -2.0), 0.25, bits=4)]  # the last cube is tiny: queries cross its faces


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("method", ["morton", "brute"])
def test_radius_matches_bruteforce_oracle(grid, method):
    s = grid.leaf_size
    edge = torch.tensor(grid.origin, dtype=torch.float64) + grid.extent - s / 2  # the last leaf centre of the cube
    store, st, refs = filled_store(grid, extra=torch.stack([edge, edge - s, edge - 2 * s]))
    g = torch.Generator().manual_seed(5)
    c = torch.tensor(grid.origin, dtype=torch.float64) + grid.extent / 2
    q = c + (torch.rand(2, 16, 3, generator=g, dtype=torch.float64) - 0.5) * 8 * s
    on_centres = c + (torch.randint(-12, 12, (2, 10, 3), generator=g).double() + 0.5) * s  # exact-distance ties
    outside = torch.stack([edge + s, edge + 1.5 * s, c - grid.extent]).expand(2, 3, 3)  # beyond the faces
    q = torch.cat([q, on_centres, outside], 1)
    for r in (0.0, s, 2 * s, 3.3 * s, 40 * s, 1e9):
        idx, dist, count = store.radius(st, q, r, method=method)
        for b in range(2):
            for j in range(q.shape[1]):
                qj = q[b, j].tolist()
                hits = sorted((refs[b].d2(code, qj), code) for code in refs[b].leaves if refs[b].d2(code, qj) <= r * r)
                assert int(count[b, j]) == len(hits), (r, qj)
                assert slot_codes(st, b, idx[b, j].tolist()) == [h[1] for h in hits]
                np.testing.assert_allclose(dist[b, j, :len(hits)].numpy(), [math.sqrt(h[0]) for h in hits])
                assert bool((dist[b, j, len(hits):] == math.inf).all())
    # max_results keeps the nearest, count still reports all hits
    idx3, _, count3 = store.radius(st, q, 3.3 * s, max_results=3, method=method)
    assert idx3.shape[-1] == 3 and torch.equal(count3, store.radius(st, q, 3.3 * s)[2])


@pytest.mark.parametrize("grid", GRIDS)
def test_knn_matches_oracle_with_ties_to_the_lower_code(grid):
    store, st, refs = filled_store(grid, n=150)
    s = grid.leaf_size
    c = torch.tensor(grid.origin, dtype=torch.float64) + grid.extent / 2
    g = torch.Generator().manual_seed(6)
    q = torch.cat([c + (torch.rand(2, 20, 3, generator=g, dtype=torch.float64) - 0.5) * 10 * s,
                   c.expand(2, 1, 3), (c + 1e3 * grid.extent).expand(2, 1, 3)], 1)  # centre corner: 8-way ties
    for k in (1, 8, 500):
        idx, dist = store.knn(st, q, k)
        for b in range(2):
            for j in range(q.shape[1]):
                order = sorted((refs[b].d2(code, q[b, j].tolist()), code) for code in refs[b].leaves)[:k]
                assert slot_codes(st, b, idx[b, j].tolist()) == [o[1] for o in order]
                assert int((idx[b, j] >= 0).sum()) == min(k, len(refs[b].leaves))


@pytest.mark.parametrize("grid", GRIDS)
def test_box_and_lookup_match_oracle(grid):
    store, st, refs = filled_store(grid)
    s = grid.leaf_size
    c = torch.tensor(grid.origin, dtype=torch.float64) + grid.extent / 2
    boxes = [(c - 3 * s, c + 2.5 * s), (c - 1.5 * s, c + 1.5 * s),  # faces exactly on leaf centres (closed box)
             (c + 100 * s, c + 200 * s), (c - 1e9, c + 1e9), (c + s, c - s)]  # empty, everything, inverted
    for lo, hi in boxes:
        m = store.box(st, lo.expand(2, 3), hi.expand(2, 3))
        for b in range(2):
            want = sorted(code for code in refs[b].leaves
                          if all(lo[a] <= refs[b].center(code)[a] <= hi[a] for a in range(3)))
            assert slot_codes(st, b, m[b].nonzero()[:, 0].tolist()) == want
    # lookup: held leaves find their slot, empty cells and outside points give -1
    probe = torch.stack([store.centers(st)[:, -1], store.centers(st)[:, -2],
                         (c + 1e3 * grid.extent).expand(2, 3), (c + 100 * s).expand(2, 3)], 1)
    slots = store.lookup(st, probe)
    C = store.capacity
    assert slots[:, :2].tolist() == [[C - 1, C - 2]] * 2 and bool((slots[:, 2:] == -1).all())


@pytest.mark.parametrize("grid", GRIDS)
def test_frustum_matches_numpy_projection(grid):
    store, st, refs = filled_store(grid, n=400)
    c = torch.tensor(grid.origin, dtype=torch.float64) + grid.extent / 2  # the leaves surround the cube centre
    K = torch.tensor([[[20.0, 0.5, 16.0], [0.0, 18.0, 12.0], [0.0, 0.0, 1.0]]], dtype=torch.float64).expand(2, 3, 3)
    eye = c + torch.tensor([[0.3, -4.0, 0.2], [2.0, 1.0, -5.0]], dtype=torch.float64) * grid.leaf_size * 4
    pose = look_at(eye, c.expand(2, 3), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    H, W = 24, 32
    for near, far in ((0.0, math.inf), (12 * grid.leaf_size, 20 * grid.leaf_size)):
        m = store.frustum(st, pose, K, (H, W), near, far)
        for b in range(2):
            Rm, tv, Km = pose[b, :3, :3].numpy(), pose[b, :3, 3].numpy(), K[b].numpy()
            want = []
            for code in sorted(refs[b].leaves):
                pc = Rm.T @ (np.array(refs[b].center(code)) - tv)
                z = pc[2]
                if z <= 0:
                    continue
                u = Km[0, 0] * pc[0] / z + Km[0, 1] * pc[1] / z + Km[0, 2]
                v = Km[1, 1] * pc[1] / z + Km[1, 2]
                if 0 <= u < W and 0 <= v < H and near <= z <= far:
                    want.append(code)
            got = slot_codes(st, b, m[b].nonzero()[:, 0].tolist())
            assert got == want and (near > 0 or len(want) > 10)


def test_coarsen_aggregates_levels():
    grid = MortonGrid.centered((0.0, 0.0, 0.0), 0.25)
    store, st, refs = filled_store(grid)
    for level in (0, 1, 3, 21):
        co = store.coarsen(st, level)
        for b in range(2):
            groups: dict[int, list[int]] = {}
            for s in st["valid"][b].nonzero()[:, 0].tolist():
                groups.setdefault(int(st["leaf_code"][b, s]) >> (3 * level), []).append(s)
            keys = sorted(groups)
            n = len(keys)
            assert co["code"][b, store.capacity - n:].tolist() == keys and co["valid"][b].sum() == n
            cnt = [int(st["leaf_count"][b, groups[k]].sum()) for k in keys]
            assert co["count"][b, store.capacity - n:].tolist() == cnt
            feat = torch.stack([(st["leaf_feat"][b, groups[k]] * st["leaf_count"][b, groups[k], None]).sum(0) / c
                                for k, c in zip(keys, cnt)])
            torch.testing.assert_close(co["feat"][b, store.capacity - n:], feat)
