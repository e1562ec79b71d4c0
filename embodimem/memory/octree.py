"""``octree``: Mem4Nav-style spatial memory -- sparse octree leaves + semantic topology graph + short-term memory.

Each write takes the step's tokens x_t [B,N,D] with ``depth`` [B,H,W] (metres, z along the optical axis, 0 = no
reading), ``pose`` [B,4,4] (camera-to-world, OpenCV) and ``intrinsics`` [B,3,3]; optional ``cost`` [B] >= 0
(instruction cost of the traversal edge) and ``t`` int64 [B] (source step id; default: the step within the
episode). Then:

1. Leaves. Every pixel with a reading is back-projected (float64) and merged into the leaf holding it
   (``VoxelStore``): count += 1, feature = running mean, last step = now. A pixel's feature is the token of the
   cell it falls in on a gh x gw token grid over the image (N = gh*gw, row-major: pixel (i, j) takes token
   (i*gh // H)*gw + j*gw // W). Points outside the world cube are dropped and counted (``outside="count"``)
   or raise (``"error"``); over-capacity evicts the least recently seen leaves (see voxel_store).
2. Graph. v_t = L2-normalised mean of the N tokens, at the camera centre, updates the topology graph.
3. STM. One entry per step: embedding v_t at the centroid of the step's in-cube points (the camera centre if
   there are none), keyed by that position's Morton cell ``stm_level`` levels above the leaves, anchored to
   the current graph node. A position outside the cube writes no STM entry (or raises with "error").

Read (query tokens [B,Q,D] -> q = normalised mean; position = ``position`` [B,3] or the camera centre of
``pose``, else the last written camera centre). K = read_k + read_leaves slots:
- slots [0, read_k): STM entries within ``stm_radius`` of the position, top read_k by cosine to q; if the best
  cosine is below ``tau`` (or none is in range) the long-term memory answers instead: exact top read_k by
  cosine over all leaf tokens and node tokens (ties: leaves before nodes, lower slot first).
- slots [read_k, K): the ``read_leaves`` occupied leaves nearest to the position (ties: lower Morton code).
Tokens are D wide (leaf feature means, node / STM embedding means). positions = leaf centroids, node or STM
positions (metres). source_ids / time_span = first / [first, last] step; weights = cosine similarity for the
retrieval slots and 1/(1 + distance in metres) for the nearest-leaf slots. extras: ``kind`` [B,K] (0 STM,
1 leaf, 2 node, 3 nearby leaf, -1 empty), ``count`` [B,K] (merge count), ``stm_hit`` [B].
Bad input raises ValueError: NaN/inf/negative depth, non-rigid pose, bad intrinsics, wrong shapes.
``forward`` steps (each write depends on the previous state), so training sees inference semantics exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from embodimem.geometry import intrinsics_from_fov, look_at
from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.state import State, state_nbytes
from embodimem.spatial.morton import MAX_BITS, MortonGrid
from embodimem.spatial.stm import ShortTermMemory, _gather_rows
from embodimem.spatial.topology import TopologyGraph
from embodimem.spatial.voxel_store import VoxelStore

POSE_ATOL = 1e-3  # as Frame.POSE_ATOL: float32 simulator poses drift ~1e-6, scaled/sheared matrices fail


@dataclass
class OctreeConfig(MemoryConfig):
    leaf_size: float = 0.1  # metres, edge of a leaf cell
    bits: int = MAX_BITS  # levels per axis; world cube edge = leaf_size * 2^bits (21 bits: 0.1 m -> 210 km)
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)  # metres; the cube is center +- leaf_size * 2^(bits-1)
    capacity: int = 4096  # leaves held per env
    outside: str = "count"  # points outside the cube: "count" (dropped, counted) or "error"
    max_depth: float = 0.0  # metres; readings farther than this are ignored (0 = no limit)
    token_grid: tuple[int, int] = (0, 0)  # (gh, gw) token layout over the image; (0, 0) = auto from N
    max_nodes: int = 64  # topology graph nodes per env
    delta: float = 0.5  # a new node when |v - node emb| > delta for every node (v is unit-norm)
    alpha: float = 1.0  # edge weight = alpha * distance (metres) + beta * cost
    beta: float = 0.5
    stm_size: int = 32  # K short-term entries per env
    stm_lambda: float = 0.5  # eviction score lambda*freq - (1-lambda)*age
    stm_level: int = 2  # STM key = Morton cell this many levels above the leaves
    stm_radius: float = 3.0  # metres, STM read radius
    read_k: int = 3  # retrieval slots (STM top-k or long-term fallback)
    tau: float = 0.7  # cosine threshold below which the read falls back to long-term memory
    read_leaves: int = 8  # nearest occupied leaves appended to the readout (0 = none)

    def __post_init__(self) -> None:
        self.center = tuple(float(c) for c in self.center)
        self.token_grid = tuple(int(c) for c in self.token_grid)

    def validate(self) -> None:
        super().validate()
        who = type(self).__name__
        if not (math.isfinite(self.leaf_size) and self.leaf_size > 0):
            raise ValueError(f"{who}.leaf_size must be a finite number > 0 metres, got {self.leaf_size}")
        if not 1 <= self.bits <= MAX_BITS:
            raise ValueError(f"{who}.bits must be in [1, {MAX_BITS}], got {self.bits}")
        if len(self.center) != 3 or not all(math.isfinite(c) for c in self.center):
            raise ValueError(f"{who}.center must be 3 finite floats (metres), got {self.center}")
        for f in ("capacity", "max_nodes", "stm_size", "read_k"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{who}.{f} must be > 0, got {getattr(self, f)}")
        if self.read_k > self.stm_size:
            raise ValueError(f"{who}.read_k={self.read_k} exceeds stm_size={self.stm_size}")
        if self.read_leaves < 0 or self.read_leaves > self.capacity:
            raise ValueError(f"{who}.read_leaves must be in [0, capacity={self.capacity}], got {self.read_leaves}")
        if self.outside not in ("count", "error"):
            raise ValueError(f"{who}.outside must be 'count' or 'error', got {self.outside!r}")
        if not self.max_depth >= 0:
            raise ValueError(f"{who}.max_depth must be >= 0 metres (0 = no limit), got {self.max_depth}")
        for f in ("delta", "alpha", "beta", "stm_radius"):
            if not getattr(self, f) >= 0:
                raise ValueError(f"{who}.{f} must be >= 0, got {getattr(self, f)}")
        if not math.isfinite(self.tau):
            raise ValueError(f"{who}.tau must be finite (a cosine threshold; > 1 always falls back), got {self.tau}")
        if not 0 <= self.stm_lambda <= 1:
            raise ValueError(f"{who}.stm_lambda must be in [0, 1], got {self.stm_lambda}")
        if not 0 <= self.stm_level <= self.bits:
            raise ValueError(f"{who}.stm_level must be in [0, bits={self.bits}], got {self.stm_level}")
        gh, gw = self.grid_shape()
        if gh * gw != self.tokens_per_step:
            raise ValueError(f"{who}.token_grid={self.token_grid} has {gh * gw} cells, tokens_per_step="
                             f"{self.tokens_per_step}")

    def grid_shape(self) -> tuple[int, int]:
        """(gh, gw): ``token_grid`` or, when (0, 0), the most square factorisation of N with gh <= gw."""
        if len(self.token_grid) != 2 or min(self.token_grid) < 0:
            raise ValueError(f"{type(self).__name__}.token_grid must be two ints >= 0, got {self.token_grid}")
        if self.token_grid != (0, 0):
            return self.token_grid
        n = self.tokens_per_step
        gh = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
        return gh, n // gh

    @classmethod
    def example(cls) -> OctreeConfig:
        return cls(dim=8, tokens_per_step=4, leaf_size=0.25, capacity=256, max_nodes=8, stm_size=6, read_k=2,
                   read_leaves=4, stm_level=1, stm_radius=2.0)


@register_memory("octree")
class OctreeMemory(Memory):
    """Sparse octree leaves [B,cap] + topology graph [B,M] + STM [B,K]; reads K = read_k + read_leaves tokens."""

    config_class = OctreeConfig
    config: OctreeConfig

    def __init__(self, config: OctreeConfig):
        super().__init__(config)
        c = config
        self.grid = MortonGrid.centered(c.center, c.leaf_size, c.bits)
        self.store = VoxelStore(self.grid, c.capacity, c.dim, outside=c.outside)
        self.graph = TopologyGraph(c.max_nodes, c.dim, c.delta, c.alpha, c.beta)
        self.stm = ShortTermMemory(c.stm_size, c.dim, c.stm_lambda, c.stm_radius, c.read_k, c.tau)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        B = batch_size
        return {
            **self.store.init_state(B, device),
            **self.graph.init_state(B, device),
            **self.stm.init_state(B, device),
            "step": torch.zeros(B, dtype=torch.int64, device=device),  # next step id within the episode
            "last_pos": torch.zeros(B, 3, dtype=torch.float64, device=device),  # latest camera centre (metres)
            "last_emb": torch.zeros(B, self.config.dim, device=device),  # v_t of the latest write
        }

    # ----- input checks (rule 6) ---------------------------------------------------------------------------
    def check_geometry(self, B: int, depth: Any, pose: Any, intrinsics: Any) -> None:
        """Raise ValueError naming the argument when depth/pose/intrinsics are missing, misshapen or invalid."""
        if depth is None or pose is None or intrinsics is None:
            raise ValueError("octree: write needs depth=[B,H,W] metres, pose=[B,4,4] camera-to-world and "
                             "intrinsics=[B,3,3]")
        for name, v, tail in (("depth", depth, None), ("pose", pose, (4, 4)), ("intrinsics", intrinsics, (3, 3))):
            if (not isinstance(v, torch.Tensor) or not v.is_floating_point() or v.dim() != 3 or v.shape[0] != B
                    or (tail is not None and tuple(v.shape[1:]) != tail)):
                want = "[B,H,W]" if tail is None else f"[B,{tail[0]},{tail[1]}]"
                raise ValueError(f"octree: {name} must be a float tensor {want} with B={B}, got "
                                 f"{getattr(v, 'dtype', type(v))} {tuple(getattr(v, 'shape', ()))}")
        # every comparison is False on NaN, so "not ok" also flags NaN/inf; one device sync for all checks
        bad_depth = ~((depth >= 0) & (depth < math.inf)).flatten(1).all(1)
        R = pose[:, :3, :3]
        ortho = (R.transpose(1, 2) @ R - self._eye3(pose)).abs().flatten(1).amax(1) <= POSE_ATOL
        bottom = (pose[:, 3] - self._e4(pose)).abs().amax(1) <= POSE_ATOL
        det = (torch.linalg.cross(R[:, :, 0], R[:, :, 1]) * R[:, :, 2]).sum(-1)  # det R = (c0 x c1) . c2
        bad_pose = ~(ortho & bottom & (det > 0))
        K = intrinsics
        form = (K[:, 1, 0] == 0) & (K[:, 2] == self._e4(K)[1:]).all(1) & torch.isfinite(K).flatten(1).all(1)
        bad_k = ~(form & (K[:, 0, 0] > 0) & (K[:, 1, 1] > 0))
        bad = torch.stack([bad_depth, bad_pose, bad_k])
        if not bool(bad.any()):
            return
        for flag, msg in ((bad_depth, "depth row {} has NaN/inf or negative values (0 means 'no reading')"),
                          (bad_pose, "pose row {} is not a rigid camera-to-world transform (orthonormal rotation "
                                     f"with det +1, last row [0,0,0,1], atol={POSE_ATOL})"),
                          (bad_k, "intrinsics row {} is not [[fx,s,cx],[0,fy,cy],[0,0,1]] with finite fx, fy > 0")):
            if bool(flag.any()):
                raise ValueError("octree: " + msg.format(int(flag.nonzero()[0, 0])))

    def _const(self, key: tuple, make) -> torch.Tensor:
        """A small constant tensor cached per (what, device, dtype); never part of the state."""
        cache = self.__dict__.setdefault("_consts", {})
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def _eye3(self, like: torch.Tensor) -> torch.Tensor:
        return self._const(("eye3", like.device, like.dtype),
                           lambda: torch.eye(3, dtype=like.dtype, device=like.device))

    def _e4(self, like: torch.Tensor) -> torch.Tensor:
        return self._const(("e4", like.device, like.dtype),
                           lambda: torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=like.dtype, device=like.device))

    def token_index(self, H: int, W: int, device: torch.device) -> torch.Tensor:
        """Token id int64 [H*W] of every pixel on the gh x gw token grid (row-major)."""
        def make() -> torch.Tensor:
            gh, gw = self.config.grid_shape()
            r = torch.arange(H, device=device) * gh // H
            c = torch.arange(W, device=device) * gw // W
            return (r[:, None] * gw + c[None, :]).reshape(-1)
        return self._const(("tok", H, W, device), make)

    def backproject(self, depth: torch.Tensor, intrinsics: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """World points float64 [B,H*W,3] of every pixel centre (j + 0.5, i + 0.5) at its depth (metres)."""
        B, H, W = depth.shape
        dev = depth.device

        def make() -> torch.Tensor:
            v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64, device=dev) + 0.5,
                                  torch.arange(W, dtype=torch.float64, device=dev) + 0.5, indexing="ij")
            return torch.stack([u.reshape(-1), v.reshape(-1)])  # [2,H*W]

        uv = self._const(("uv", H, W, dev), make)
        K = intrinsics.to(torch.float64)
        y = (uv[1] - K[:, 1, 2, None]) / K[:, 1, 1, None]  # [B,H*W]
        x = (uv[0] - K[:, 0, 2, None] - K[:, 0, 1, None] * y) / K[:, 0, 0, None]
        ray = torch.stack([x, y, torch.ones_like(x)], -1) * depth.reshape(B, H * W, 1).to(torch.float64)
        P = pose.to(torch.float64)
        return ray @ P[:, :3, :3].transpose(1, 2) + P[:, None, :3, 3]

    # ----- write -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def write(self, state: State, item: torch.Tensor, *, depth: torch.Tensor | None = None,
              pose: torch.Tensor | None = None, intrinsics: torch.Tensor | None = None,
              cost: torch.Tensor | None = None, t: torch.Tensor | None = None, **_: Any) -> State:
        """Store tokens item [B,N,D] seen with depth [B,H,W] m, pose [B,4,4], intrinsics [B,3,3]; cost [B] >= 0."""
        c = self.config
        x = self.check_tokens(item, "item").detach()
        B = x.shape[0]
        self.check_geometry(B, depth, pose, intrinsics)
        if cost is not None and (cost.shape != (B,) or not bool((cost >= 0).all())):
            raise ValueError(f"octree: cost must be [B] finite values >= 0, got shape {tuple(cost.shape)}")
        step = state["step"] if t is None else t.to(torch.int64)
        H, W = depth.shape[1:]
        pts = self.backproject(depth, intrinsics, pose)
        d = depth.reshape(B, H * W)
        valid = (d > 0) & (d <= c.max_depth) if c.max_depth > 0 else d > 0
        feats = x.index_select(1, self.token_index(H, W, x.device))  # [B,H*W,D]
        located = self.store.locate(pts)
        new = self.store.insert(state, pts, feats, valid, step, located=located)
        # graph: pooled observation at the camera centre
        v = F.normalize(x.mean(1), dim=-1)
        cam = pose[:, :3, 3].to(torch.float64)
        graph = self.graph.update(state, v, cam, step, cost)
        # STM: one entry at the centroid of the in-cube points (camera centre when there are none)
        use = (valid & located[1]).unsqueeze(-1)
        n = use.sum(1)
        spos = torch.where(n > 0, (pts * use).sum(1) / n.clamp(min=1), cam)
        scode, sin = self.grid.codes(spos)
        if c.outside == "error" and not bool(sin.all()):
            raise ValueError(f"octree: camera centre {cam[~sin][0].tolist()} is outside the world cube and the "
                             "step has no in-cube depth reading")
        key = torch.where(sin, scode >> (3 * c.stm_level), -1)
        stm = self.stm.update(state, key, v, spos, graph["node_current"], graph["node_pos"], step)
        return {**new, **graph, **stm, "step": step + 1, "last_pos": cam.to(state["last_pos"].dtype),
                "last_emb": v.to(state["last_emb"].dtype)}

    # ----- read --------------------------------------------------------------------------------------------
    def read(self, state: State, query: torch.Tensor | None = None, *, pose: torch.Tensor | None = None,
             position: torch.Tensor | None = None, **_: Any) -> Readout:
        """Retrieval (STM, else long-term) + nearest leaves around the position: tokens [B,read_k+read_leaves,D]."""
        c = self.config
        q = state["last_emb"] if query is None else F.normalize(self.check_query(query).mean(1), dim=-1)
        if position is not None:
            qpos = position.to(torch.float64)
        elif pose is not None:
            qpos = pose[:, :3, 3].to(torch.float64)
        else:
            qpos = state["last_pos"].to(torch.float64)
        if (position is not None or pose is not None) and not bool(torch.isfinite(qpos).all()):
            raise ValueError("octree: read position (or pose translation) contains NaN/inf")
        S, C = c.stm_size, c.capacity
        node_pos = state["node_pos"]
        ctr = self.store.centers(state)
        # one pool of candidates [STM | leaves | nodes]; every pick below is an index into it
        pool_tok = torch.cat([state["stm_emb"], state["leaf_feat"], state["node_emb"]], 1)
        pool_pos = torch.cat([self.stm.positions(state, node_pos), (ctr + state["leaf_offset"]).to(node_pos.dtype),
                              node_pos], 1)
        pool_int = torch.cat([torch.stack([state[f"{p}_first"], state[f"{p}_last"], state[n]], -1)
                              for p, n in (("stm", "stm_freq"), ("leaf", "leaf_count"), ("node", "node_count"))], 1)
        cos = F.cosine_similarity(pool_tok, q[:, None].to(pool_tok.dtype), dim=-1)  # [B,S+C+M]
        s_slot, s_sim, s_ok, hit = self.stm.rank(state, cos[:, :S], qpos, node_pos)
        ltm_ok = torch.cat([state["valid"], state["node_valid"]], 1)
        ls, lo = torch.sort(cos[:, S:].masked_fill(~ltm_ok, -math.inf), dim=1, descending=True, stable=True)
        ls, lo = ls[:, :c.read_k], lo[:, :c.read_k]
        h = hit[:, None]
        idx = torch.where(h, s_slot, S + lo)
        ok = torch.where(h, s_ok, ls > -math.inf)
        w = torch.where(h, s_sim, ls.clamp(min=-1.0))
        kind = torch.where(h, 0, 1 + (lo >= C).long())
        if c.read_leaves > 0:  # nearest occupied leaves around the position
            n_slot, n_dist = self.store.knn(state, qpos[:, None], c.read_leaves, centers=ctr)
            n_ok = n_slot[:, 0] >= 0
            idx = torch.cat([idx, S + n_slot[:, 0]], 1)
            ok = torch.cat([ok, n_ok], 1)
            w = torch.cat([w, (1.0 / (1.0 + n_dist[:, 0])).to(w.dtype)], 1)
            kind = torch.cat([kind, torch.full_like(n_slot[:, 0], 3)], 1)
        idx = idx.masked_fill(~ok, 0)
        tok = _gather_rows(pool_tok, idx) * ok[..., None]
        ints = _gather_rows(pool_int, idx).masked_fill(~ok[..., None], -1)
        return Readout(
            tokens=tok,
            mask=ok,
            source_ids=ints[..., 0],
            weights=w.masked_fill(~ok, 0.0).to(tok.dtype),
            time_span=ints[..., :2],
            positions=_gather_rows(pool_pos, idx) * ok[..., None],
            extras={"kind": kind.masked_fill(~ok, -1), "count": ints[..., 2].clamp(min=0), "stm_hit": hit},
        )

    # ----- helpers -----------------------------------------------------------------------------------------
    def stats(self, state: State) -> dict[str, float]:
        """Base stats + leaves / nodes / STM entries held, bytes those use, evictions, dropped points."""
        out = {**super().stats(state), **self.store.stats(state)}
        B = state["step"].shape[0]
        nodes = state["node_valid"].sum(1).double().mean()
        stm = state["stm_valid"].sum(1).double().mean()
        M = self.config.max_nodes
        node_bytes = sum(state[k][0, 0].numel() * state[k].element_size() for k in
                         ("node_emb", "node_pos", "node_count", "node_valid", "node_first", "node_last"))
        edge_bytes = state["edge_w"].element_size() + state["edge_n"].element_size()
        stm_bytes = sum(state[k][0, 0].numel() * state[k].element_size() for k in self.stm.KEYS[:-1])
        edges = (state["edge_n"] > 0).sum((1, 2)).double().mean()
        used = out["leaf_bytes_used_per_env"] + float(nodes) * node_bytes + float(edges) * edge_bytes \
            + float(stm) * stm_bytes
        out.update({"nodes_mean": float(nodes), "edges_mean": float(edges) / 2, "stm_entries_mean": float(stm),
                    "bytes_used_per_env": used, "node_overflow": float(state["node_overflow"].sum()),
                    "stm_evicted": float(state["stm_evicted"].sum()), "max_nodes": float(M),
                    "state_bytes_per_env": state_nbytes(state) / B})
        return out

    def example_inputs(self, batch_size: int, steps: int,
                       generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        """A camera circling inside a ~4 x 4 x 2.5 m room (8x8 depth, 90 deg FOV, 5% holes); tokens depend on the
        camera position, so revisits look alike."""
        from embodimem.spatial.analytic_room import Room, render_depth

        c = self.config
        B, T = batch_size, steps
        phase = torch.rand(B, 1, generator=generator) * 2 * math.pi
        speed = 0.15 + 0.1 * torch.rand(B, 1, generator=generator)
        ang = phase + speed * torch.arange(T)[None]  # [B,T] radians
        eye = torch.stack([ang.cos(), ang.sin(), torch.full_like(ang, 1.2)], -1)
        target = eye + torch.stack([-ang.sin(), ang.cos(), torch.full_like(ang, -0.2)], -1)  # along the path
        pose = look_at(eye, target, torch.tensor([0.0, 0.0, 1.0]))
        K = intrinsics_from_fov(8, 8, 90.0).expand(B, T, 3, 3).contiguous()
        depth = render_depth(Room(), pose.flatten(0, 1), K.flatten(0, 1), (8, 8)).reshape(B, T, 8, 8)
        depth = torch.where(torch.rand(depth.shape, generator=generator) < 0.05, torch.zeros_like(depth), depth)
        proj = torch.randn(3, c.dim, generator=generator)
        noise = torch.randn(B, T, c.tokens_per_step, c.dim, generator=generator)
        x = torch.sin(eye @ proj)[:, :, None, :] + 0.3 * noise
        return x, {"depth": depth, "pose": pose, "intrinsics": K}
