"""A batched sparse voxel (octree leaf) store: per env, a fixed number of leaf slots sorted by Morton code.

State (every tensor has leading dim B; ``cap`` slots per env):
  leaf_code int64 [B,cap]     Morton code of the leaf; rows sorted ascending with empty slots (-1) first, so
                              the occupied leaves are a right-aligned suffix and lookups are searchsorted.
  valid bool [B,cap]          leaf_code >= 0.
  leaf_count int64 [B,cap]    points merged into the leaf (a merge count, rule 7).
  leaf_feat float [B,cap,F]   running mean of the points' features (count-weighted: a second write moves it).
  leaf_offset float [B,cap,3] running mean of (point - leaf centre), metres: centroid = centre + offset.
  leaf_first/leaf_last int64 [B,cap]  first / last step a point landed in the leaf (provenance, time span).
  leaf_evicted int64 [B]      leaves evicted by the capacity rule this episode.
  dropped_outside int64 [B]   points outside the declared world cube this episode (never clipped).

Capacity rule: when the occupied leaves after an insert exceed ``cap``, the store keeps the ``cap`` leaves
with the latest ``last`` step, then the larger count, then the lower Morton code; the rest are evicted and
counted in ``leaf_evicted``. Points outside the world cube are dropped and counted (``outside="count"``) or
raise ValueError (``outside="error"``). Queries are exact and use leaf *centres*; ties between equally
distant leaves go to the lower Morton code. Distances are float64, computed as dx*dx + dy*dy + dz*dz.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from embodimem.geometry import project_points
from embodimem.spatial.morton import MortonGrid, _interleave, encode

State = dict[str, Tensor]
_I64_MIN = torch.iinfo(torch.int64).min
_I64_MAX = torch.iinfo(torch.int64).max

__all__ = ["VoxelStore"]


def _run_starts(key: Tensor, ok: Tensor) -> Tensor:
    """Runs of equal keys among the valid entries (a suffix of each sorted row) -> int64 [B,N]: the index where
    run s starts, at position s; N for positions with no run."""
    B, N = key.shape
    start = ok & (key != torch.nn.functional.pad(key[:, :-1], (1, 0), value=-1))
    run = start.long().cumsum(1) - 1  # 0-based run of each valid entry
    out = torch.full((B, N + 1), N, dtype=torch.int64, device=key.device)
    idx = torch.arange(N, device=key.device).expand(B, N)
    return out.scatter_reduce_(1, torch.where(start, run, N), idx, "amin")[:, :N]


def _run_sums(v: Tensor, first: Tensor) -> Tensor:
    """Per-run sums [B,N,W] of v [B,N,W] for runs starting at ``first`` (see _run_starts) and each ending where
    the next begins (the last at N - 1). Prefix-sum differences, so the result is deterministic on every
    device (a float scatter-add on CUDA is not)."""
    B, N, W = v.shape
    cs = torch.nn.functional.pad(v.cumsum(1), (0, 0, 1, 0))  # cs[i] = sum of v[:i]
    nxt = torch.nn.functional.pad(first[:, 1:], (0, 1), value=N)  # where run s + 1 starts = where run s ends
    return cs.gather(1, nxt[..., None].expand(B, N, W)) - cs.gather(1, first[..., None].expand(B, N, W))


def _sq_dist(c: Tensor, q: Tensor) -> Tensor:
    """Squared distance float64 [...] between points [...,3]: dx*dx + dy*dy + dz*dz (a fixed summation order)."""
    d = c - q
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]


class VoxelStore:
    """Static description (grid, capacity, feature width) plus functional ops on a leaf-state dict."""

    KEYS = ("leaf_code", "valid", "leaf_count", "leaf_feat", "leaf_offset", "leaf_first", "leaf_last",
            "leaf_evicted", "dropped_outside")

    def __init__(self, grid: MortonGrid, capacity: int, feat_dim: int, *, outside: str = "count",
                 dtype: torch.dtype = torch.float32):
        if capacity <= 0:
            raise ValueError(f"VoxelStore.capacity must be > 0 leaves, got {capacity}")
        if feat_dim < 0:
            raise ValueError(f"VoxelStore.feat_dim must be >= 0, got {feat_dim}")
        if outside not in ("count", "error"):
            raise ValueError(f"VoxelStore.outside must be 'count' or 'error', got {outside!r}")
        self.grid, self.capacity, self.feat_dim, self.outside, self.dtype = grid, capacity, feat_dim, outside, dtype

    # ----- state -----------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Empty store for ``batch_size`` envs."""
        B, C = batch_size, self.capacity
        i64 = dict(dtype=torch.int64, device=device)
        return {
            "leaf_code": torch.full((B, C), -1, **i64),
            "valid": torch.zeros(B, C, dtype=torch.bool, device=device),
            "leaf_count": torch.zeros(B, C, **i64),
            "leaf_feat": torch.zeros(B, C, self.feat_dim, dtype=self.dtype, device=device),
            "leaf_offset": torch.zeros(B, C, 3, dtype=self.dtype, device=device),
            "leaf_first": torch.full((B, C), -1, **i64),
            "leaf_last": torch.full((B, C), -1, **i64),
            "leaf_evicted": torch.zeros(B, **i64),
            "dropped_outside": torch.zeros(B, **i64),
        }

    def locate(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Points [...,3] metres -> (leaf codes int64 [...], inside bool [...], offset from the leaf centre [...,3])."""
        ijk, inside, off = self.grid.locate(points)
        return _interleave(ijk), inside, off

    @staticmethod
    def view(state: State) -> State:
        """The store's own entries of a larger state dict."""
        return {k: state[k] for k in VoxelStore.KEYS}

    def centers(self, state: State) -> Tensor:
        """Leaf centres float64 [B,cap,3] metres (empty slots hold the centre of code 0; mask with ``valid``)."""
        return self.grid.cell_center(state["leaf_code"].clamp(min=0))

    def centroids(self, state: State) -> Tensor:
        """Mean position float64 [B,cap,3] metres of the points merged into each leaf."""
        return self.centers(state) + state["leaf_offset"].to(torch.float64)

    # ----- insert ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def insert(self, state: State, points: Tensor, feats: Tensor | None, mask: Tensor, step: Tensor,
               located: tuple[Tensor, Tensor, Tensor] | None = None) -> State:
        """Merge points [B,P,3] (metres) with features [B,P,F] where mask [B,P]; step int64 [B] -> new state.

        ``located`` = ``self.locate(points)`` if the caller has it. Cost: a sort of the P new points, binary
        searches, and O(cap) copies of the held leaves (no sort of the held leaves unless a row overflows).
        """
        B, P = mask.shape
        C, F = self.capacity, self.feat_dim
        dev = points.device
        code, inside, off = self.locate(points) if located is None else located
        outside = mask & ~inside
        if self.outside == "error" and bool(outside.any()):
            b = int(outside.any(1).nonzero()[0, 0])
            p = points[b][outside[b]][0].tolist()
            raise ValueError(f"octree: point {p} of row {b} is outside the world cube [{self.grid.origin}, "
                             f"+{self.grid.extent} m) (set outside='count' to drop and count such points)")
        keep = mask & inside
        rows = torch.arange(B, device=dev)[:, None]
        # 1. the new points -> per-row unique codes u [B,P] (ascending, padded with int64 max) with their sums
        skey, order = torch.sort(torch.where(keep, code, -1), dim=1, stable=True)  # kept points: a suffix
        ok = skey >= 0
        first = _run_starts(skey, ok)  # [B,P]: index of run s's first point, P where there is no run s
        n_new = (first < P).sum(1)
        u_ok = torch.arange(P, device=dev) < n_new[:, None]
        u = torch.where(u_ok, skey.gather(1, first.clamp(max=P - 1)), _I64_MAX)  # ascending unique codes
        parts = [torch.ones(B, P, 1, dtype=torch.float64, device=dev), off]
        if F:
            parts.append(torch.zeros(B, P, F, dtype=torch.float64, device=dev) if feats is None
                         else feats.to(torch.float64))
        vals = torch.cat(parts, -1).gather(1, order[..., None].expand(B, P, 4 + F))
        sums = _run_sums(vals, first)  # [B,P,4+F]: count, offset sum, feature sum per run
        # 2. match against the held leaves (sorted, -1 first) by binary search
        held = state["leaf_code"]
        n_held = state["valid"].sum(1)
        pos = torch.searchsorted(held, u)  # held codes (and empties) below each u
        hidx = pos.clamp(max=C - 1)
        matched = u_ok & (held.gather(1, hidx) == u)
        unm = u_ok & ~matched
        cum0 = torch.nn.functional.pad(unm.long().cumsum(1), (1, 0))  # [B,P+1]: unmatched among the first k u's
        total = n_held + cum0[:, -1]
        # 3. merged layout of L = C + P slots, right-aligned like the state; slot L of each row is a dump.
        #    Rows of flattened [B*(L+1), ...] buffers are filled with index_copy_ (fresh tensors: the input
        #    state is never written to).
        L = C + P
        base = L - total[:, None]
        ar_c = torch.arange(C, device=dev)
        slot_h = torch.where(state["valid"], base + ar_c - (C - n_held)[:, None]
                             + cum0.gather(1, torch.searchsorted(u, held)), L)
        slot_n = torch.where(unm, base + pos - (C - n_held)[:, None] + cum0[:, :-1], L)
        fh, fn = (rows * (L + 1) + slot_h).reshape(-1), (rows * (L + 1) + slot_n).reshape(-1)
        cnt_new = sums[..., 0].round().long()
        s_b = step[:, None].expand(B, P)
        mean_new = (sums[..., 1:] / sums[..., :1].clamp(min=1)).to(self.dtype)
        held_f = {"leaf_offset": state["leaf_offset"], "leaf_feat": state["leaf_feat"]}
        new_f = {"leaf_offset": mean_new[..., :3], "leaf_feat": mean_new[..., 3:]}
        out = {}
        for k, h, n, fill in (("leaf_code", held, u, -1), ("leaf_count", state["leaf_count"], cnt_new, 0),
                              ("leaf_first", state["leaf_first"], s_b, -1), ("leaf_last", state["leaf_last"], s_b, -1),
                              ("leaf_offset", held_f["leaf_offset"], new_f["leaf_offset"], 0),
                              ("leaf_feat", held_f["leaf_feat"], new_f["leaf_feat"], 0)):
            buf = torch.full((B * (L + 1), *h.shape[2:]), fill, dtype=h.dtype, device=dev)
            buf.index_copy_(0, fh, h.reshape(B * C, *h.shape[2:]))
            buf.index_copy_(0, fn, n.reshape(B * P, *h.shape[2:]))
            out[k] = buf
        # matched codes: count-weighted merge into the held leaf at its new slot (float64, then stored)
        fm = (rows * (L + 1) + torch.where(matched, slot_h.gather(1, hidx), L)).reshape(-1)
        c_old = state["leaf_count"].gather(1, hidx)
        w_old = c_old.to(torch.float64)[..., None]
        f_old = torch.cat([state["leaf_offset"].gather(1, hidx[..., None].expand(B, P, 3)),
                           state["leaf_feat"].gather(1, hidx[..., None].expand(B, P, F))], -1)
        merged = ((f_old.to(torch.float64) * w_old + sums[..., 1:]) / (w_old + sums[..., :1])).to(self.dtype)
        out["leaf_offset"].index_copy_(0, fm, merged[..., :3].reshape(B * P, 3))
        out["leaf_feat"].index_copy_(0, fm, merged[..., 3:].reshape(B * P, F))
        out["leaf_count"].index_copy_(0, fm, (c_old + cnt_new).reshape(-1))
        out["leaf_last"].index_copy_(0, fm, s_b.reshape(-1))
        out = {k: v.view(B, L + 1, *v.shape[1:])[:, :L] for k, v in out.items()}
        # 4. capacity: keep the last C slots, or rank by (last desc, count desc, code asc) where a row overflows
        overflow = total > C
        n_kept = total.clamp(max=C)
        if bool(overflow.any()):
            occ = torch.arange(L, device=dev) >= base
            o1 = torch.sort(torch.where(occ, out["leaf_count"], -1), dim=1, descending=True, stable=True).indices
            lst = torch.where(occ, out["leaf_last"], _I64_MIN).gather(1, o1)
            o2 = torch.sort(lst, dim=1, descending=True, stable=True).indices
            kept = torch.sort(o1.gather(1, o2)[:, :C], dim=1).values  # back to code order
            src = torch.where(overflow[:, None], kept, ar_c + P)
            out = {k: v.gather(1, src.view(B, C, *([1] * (v.dim() - 2))).expand(B, C, *v.shape[2:]))
                   for k, v in out.items()}
        else:
            out = {k: v[:, P:] for k, v in out.items()}
        out = {k: v.contiguous() for k, v in out.items()}  # no view may keep the larger buffer alive
        out.update(valid=ar_c >= (C - n_kept)[:, None], leaf_evicted=state["leaf_evicted"] + (total - n_kept),
                   dropped_outside=state["dropped_outside"] + outside.sum(1))
        return out

    # ----- lookups and queries (exact; over leaf centres) -------------------------------------------------
    def lookup(self, state: State, points: Tensor) -> Tensor:
        """Slot int64 [B,P] of the leaf holding each point [B,P,3] (metres); -1 if unoccupied or outside."""
        codes = state["leaf_code"]
        code, inside = self.grid.codes(points)
        idx = torch.searchsorted(codes, code).clamp(max=self.capacity - 1)
        hit = inside & (codes.gather(1, idx) == code)
        return torch.where(hit, idx, torch.full_like(idx, -1))

    def _chunks(self, state: State, Q: int) -> list[slice]:
        per = max(1, (1 << 24) // max(1, state["leaf_code"].numel()))  # bound [B,q,cap] temporaries
        return [slice(i, min(Q, i + per)) for i in range(0, Q, per)]

    @staticmethod
    def _ranked(slot: Tensor, d2: Tensor, hit: Tensor, m: int) -> tuple[Tensor, Tensor]:
        """The first m hits by (distance, candidate order): (slots int64 [...,m] or -1, dist float64 [...,m] or inf)."""
        key = torch.where(hit, d2, torch.full_like(d2, math.inf))
        if key.shape[-1] < m:
            pad = m - key.shape[-1]
            key = torch.nn.functional.pad(key, (0, pad), value=math.inf)
            slot = torch.nn.functional.pad(slot.expand(key.shape[:-1] + (slot.shape[-1],)), (0, pad), value=-1)
        s, o = torch.sort(key, dim=-1, stable=True)
        s, o = s[..., :m], o[..., :m]
        found = torch.isfinite(s)
        idx = slot.expand(key.shape).gather(-1, o)
        return torch.where(found, idx, torch.full_like(idx, -1)), s.sqrt()

    def radius(self, state: State, center: Tensor, radius: float, *, max_results: int | None = None,
               method: str = "morton") -> tuple[Tensor, Tensor, Tensor]:
        """Occupied leaves whose centre is within ``radius`` metres (inclusive) of centres [B,Q,3].

        Returns (slots int64 [B,Q,M] nearest first, -1 padded; dist float64 [B,Q,M], inf padded; count int64
        [B,Q] of all hits). M = ``max_results`` or the largest count. ``method``: "morton" scans only the
        code ranges of the <= 64 cells covering the query box (see ``_radius_cover``); "brute" scans all slots.
        Both are exact and return the same result.
        """
        if not (math.isfinite(radius) and radius >= 0):
            raise ValueError(f"radius must be a finite number >= 0 metres, got {radius}")
        if method not in ("morton", "brute"):
            raise ValueError(f"radius: method must be 'morton' or 'brute', got {method!r}")
        q = center.to(torch.float64)
        level, n_ax = self._radius_cover(radius)
        if method == "brute" or level >= self.grid.bits:
            slot, d2, hit = self._brute_candidates(state, q, radius)
        else:
            slot, d2, hit = self._morton_candidates(state, q, radius, level, n_ax)
        count = hit.sum(-1)
        m = int(count.max()) if max_results is None and count.numel() else int(max_results or 0)
        idx, dist = self._ranked(slot, d2, hit, m)
        return idx, dist, count

    def _radius_cover(self, radius: float) -> tuple[int, int]:
        """(level, n): the query box is covered by n^3 level cells starting at its lowest corner's cell.

        level = the smallest whose cells are >= radius, so n = ceil((2r + leaf) / cell) + 1 <= 4. The extra leaf
        of margin makes the cover exact under float rounding: a rounded-off corner cell is off by one only when
        the box edge is within rounding of a cell face, where no leaf centre lies (centres sit half a leaf in).
        """
        level = 0
        while level < self.grid.bits and self.grid.cell_size(level) < radius:
            level += 1
        return level, math.ceil((2 * radius + self.grid.leaf_size) / self.grid.cell_size(level)) + 1

    def _brute_candidates(self, state: State, q: Tensor, radius: float) -> tuple[Tensor, Tensor, Tensor]:
        ctr, valid = self.centers(state), state["valid"]
        d2 = _sq_dist(ctr[:, None], q[:, :, None])  # [B,Q,cap]
        hit = valid[:, None] & (d2 <= radius * radius)
        return torch.arange(self.capacity, device=q.device), d2, hit

    def _morton_candidates(self, state: State, q: Tensor, radius: float, level: int,
                           n_ax: int) -> tuple[Tensor, Tensor, Tensor]:
        g, codes = self.grid, state["leaf_code"]
        B, Q, _ = q.shape
        dev = q.device
        s = g.cell_size(level)
        n = 1 << (g.bits - level)
        a = torch.floor((q - radius - g._origin(dev)) / s)  # the cell of the box's lowest corner, per axis
        r = torch.arange(n_ax, dtype=torch.float64, device=dev)
        offs = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)  # [R,3], R = n_ax^3
        R = offs.shape[0]
        cell = a[:, :, None, :] + offs  # [B,Q,R,3]
        ok = ((cell >= 0) & (cell < n)).all(-1)
        cc = torch.where(ok[..., None], cell, torch.zeros_like(cell)).to(torch.int64)
        lo = torch.where(ok, encode(cc) << (3 * level), -1)
        lo, _ = torch.sort(lo, dim=-1)  # ascending, disjoint ranges -> candidates come out in code order
        live = lo >= 0
        hi = lo + ((1 << (3 * level)) - 1)  # inclusive last code of the cell (see morton.range_of)
        start = torch.searchsorted(codes, lo.reshape(B, -1)).view(B, Q, R)
        end = torch.searchsorted(codes, hi.reshape(B, -1), right=True).view(B, Q, R)
        cnt = torch.where(live, end - start, torch.zeros_like(start))
        cum = cnt.cumsum(-1)
        mc = int(cum[..., -1].max()) if cum.numel() else 0
        j = torch.arange(max(mc, 1), device=dev).expand(B, Q, max(mc, 1)).contiguous()
        rid = torch.searchsorted(cum, j, right=True).clamp(max=R - 1)
        slot = (start.gather(-1, rid) + j - (cum - cnt).gather(-1, rid)).clamp(0, self.capacity - 1)
        inrange = j < cum[..., -1:]
        ctr = g.cell_center(codes.gather(1, slot.view(B, -1)).clamp(min=0)).view(B, Q, -1, 3)
        d2 = _sq_dist(ctr, q[:, :, None])
        hit = inrange & state["valid"].gather(1, slot.view(B, -1)).view(B, Q, -1) & (d2 <= radius * radius)
        return slot, d2, hit

    def knn(self, state: State, center: Tensor, k: int, *, centers: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """k nearest occupied leaves to centres [B,Q,3]: (slots int64 [B,Q,k], -1 if fewer; dist float64, inf).

        Ties go to the lower Morton code (the lower slot). Exact brute force over the row's slots.
        ``centers`` = ``self.centers(state)`` if the caller has it already.
        """
        if k <= 0:
            raise ValueError(f"knn: k must be > 0, got {k}")
        q = center.to(torch.float64)
        ctr, valid = self.centers(state) if centers is None else centers, state["valid"]
        ar = torch.arange(self.capacity, device=q.device)
        outs = []
        for sl in self._chunks(state, q.shape[1]):
            d2 = _sq_dist(ctr[:, None], q[:, sl, None])
            outs.append(self._ranked(ar, d2, valid[:, None].expand_as(d2), k))
        return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)

    def box(self, state: State, lo: Tensor, hi: Tensor) -> Tensor:
        """Bool [B,cap]: occupied leaves whose centre lies in the closed box [lo, hi] (each [B,3], metres)."""
        ctr = self.centers(state)
        lo, hi = lo.to(torch.float64)[:, None], hi.to(torch.float64)[:, None]
        return state["valid"] & ((ctr >= lo) & (ctr <= hi)).all(-1)

    def frustum(self, state: State, pose: Tensor, intrinsics: Tensor, hw: Sequence[int], near: float = 0.0,
                far: float = math.inf) -> Tensor:
        """Bool [B,cap]: occupied leaves whose centre projects into the (H, W) image of camera (pose [B,4,4]
        camera-to-world, K [B,3,3]) with 0 <= u < W, 0 <= v < H and near <= z <= far (z > 0 always)."""
        ctr = self.centers(state)
        _, z, in_view = project_points(ctr, intrinsics.to(torch.float64), pose.to(torch.float64), hw)
        return state["valid"] & in_view & (z >= near) & (z <= far)

    def coarsen(self, state: State, level: int) -> State:
        """Occupied cells at ``level`` (0 = leaves), same layout as the leaves: code [B,cap] (sorted, -1 first),
        valid, count (sum), feat (count-weighted mean), first (min), last (max)."""
        if not 0 <= level <= self.grid.bits:
            raise ValueError(f"coarsen: level must be in [0, {self.grid.bits}], got {level}")
        B, C = state["leaf_code"].shape
        valid = state["valid"]
        cc = torch.where(valid, state["leaf_code"] >> (3 * level), -1)
        prev = torch.cat([torch.full_like(cc[:, :1], -1), cc[:, :-1]], 1)
        seg = (valid & (cc != prev)).long().cumsum(1)
        n = seg[:, -1:]
        slot = torch.where(valid, C - n + seg - 1, C)  # right-aligned; column C collects empties

        def red(v: Tensor, how: str, init: float | int) -> Tensor:
            idx = slot.view(B, C, *([1] * (v.dim() - 2))).expand_as(v)
            out = torch.full((B, C + 1, *v.shape[2:]), init, dtype=v.dtype, device=v.device)
            return out.scatter_reduce(1, idx, v, how, include_self=True)[:, :C]

        cnt = red(state["leaf_count"], "sum", 0)  # integer sums: exact in any order
        # float sums by prefix differences over the (contiguous) runs, so they are deterministic on CUDA too
        first_run = _run_starts(cc, valid)
        wsum = _run_sums(state["leaf_feat"].to(torch.float64) * state["leaf_count"][..., None], first_run)
        src = (torch.arange(C, device=cc.device) - (C - n)).clamp(min=0)  # right-align the runs
        feat = wsum.gather(1, src[..., None].expand_as(wsum)) / cnt.clamp(min=1)[..., None]
        ok = torch.arange(C, device=cc.device) >= C - n
        first = red(torch.where(valid, state["leaf_first"], torch.iinfo(torch.int64).max), "amin",
                    torch.iinfo(torch.int64).max)
        return {"code": red(cc, "amax", -1), "valid": ok, "count": cnt, "feat": (feat * ok[..., None]).to(self.dtype),
                "first": torch.where(ok, first, -1), "last": red(state["leaf_last"], "amax", -1)}

    def stats(self, state: State) -> dict[str, float]:
        """Occupied leaves (mean over envs), bytes those leaves use, evictions and dropped points (sums)."""
        per_leaf = sum(state[k][0, 0].numel() * state[k].element_size() for k in
                       ("leaf_code", "valid", "leaf_count", "leaf_feat", "leaf_offset", "leaf_first", "leaf_last"))
        leaves = state["valid"].sum(1).double()
        return {"leaves_mean": float(leaves.mean()), "leaf_bytes_used_per_env": float(leaves.mean()) * per_leaf,
                "bytes_per_leaf": float(per_leaf), "leaves_evicted": float(state["leaf_evicted"].sum()),
                "points_dropped_outside": float(state["dropped_outside"].sum())}
