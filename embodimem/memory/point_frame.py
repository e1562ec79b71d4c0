"""``point_frame``: Memory Forcing's point-to-frame 3D cache (Huang et al., arXiv 2510.03198), batched in torch.

Every write takes ``depth`` [B,H,W] metres (0 = no reading), ``pose`` [B,4,4] camera-to-world (OpenCV) and
``intrinsics`` [B,3,3]. Per env the state holds a voxel-downsampled global cloud (one point per voxel, each
tagged with the keyframe slot it came from) and a keyframe store (tokens, camera, frame id).

Write (incremental reconstruction), all rows at once:
1. Back-project every ``pixel_stride``-th pixel. Readings beyond ``max_depth`` (if > 0) count as no reading;
   points outside the cube of half-width ``extent`` are ignored and counted in ``out_of_extent``.
2. Keyframe gate: novel = fraction of valid points whose voxel the cloud does not hold; voters = keyframes
   with >= ``min_votes`` visible points from this camera (the read rule below). The frame is a keyframe iff
   the store is empty, or novel > ``novel_threshold``, or (voters < ``tau_hist`` and novel >
   ``history_min_novel``). The last condition makes a keyframe own at least one voxel (default: > 0):
   with first-writer voxels a keyframe seeing only known voxels would get no votes, never be read, and
   leave the view under-covered forever, so keyframes would grow without bound on a loop.
3. Slot: the lowest free slot; if none, evict the keyframe owning the fewest points (ties: oldest frame id,
   then lowest slot) together with its points (counted in ``keyframes_evicted``).
4. Voxels: the keyframe's points in voxels not held by the cloud are downsampled to their centroid (one per
   voxel, as open3d's voxel_down_sample) and inserted with this keyframe as source. A held voxel keeps its
   point and source forever (first writer wins) until its keyframe is evicted. If the cloud is full, new
   voxels are inserted in ascending code order until it is and the rest are counted in ``points_dropped``
   (dropped voxels stay novel, so a full cloud keeps making keyframes: size ``max_points`` for the scene).
   Non-keyframes add no points; keyframes that vote for the view get ``kf_seen`` += 1 and ``kf_last`` = id.

Read (point-to-frame retrieval): project the cloud into the camera; a point votes for its keyframe if it is
in view (z > 1e-6 m, 0 <= u < W, 0 <= v < H) and, with ``occlusion``: "zbuffer" (default) its z is within
``zbuffer_tol`` of the nearest cloud point in its ``zbuffer_stride``-pixel cell; "depth": the read's depth map
has a reading there and z <= depth + tol; "none": no test. The top-k keyframes with >= ``min_votes`` votes
are returned, ordered by more votes, then newer frame id, then lower slot. Readout (K = k*N): tokens of the
keyframes, source_ids = time_span[...,0] = keyframe frame id, time_span[...,1] = ``kf_last``, weights =
votes / all visible votes, positions = keyframe camera centres; extras (per keyframe, [B,k,...]):
``rel_pose`` (keyframe camera -> query camera, relative_pose(query, kf); identity where empty), ``votes``,
``slot`` (-1 = empty), ``intrinsics``. ``plucker`` builds the Plücker ray embedding of the retrieved views.
Frame ids are the per-env step counter (reset on ``is_first``) unless write/step get ``t`` int64 [B].

State (fixed shapes): xyz [B,3,P] (coordinate-major: see ``camera_kernels.project``), keys [B,P] (ascending
voxel codes, SENTINEL-padded), src [B,P] slot, point_n [B,P] raw points averaged, valid [B,P]; kf_tokens
[B,KF,N,D], kf_pose, kf_K, kf_hw, kf_id, kf_last, kf_seen, kf_points (points owned), kf_valid; counters [B].
``forward`` steps (the gate is a sequential decision), so training sees exactly the rollout semantics.
Host syncs per step: input validation (one, skipped with check_finite=False), "any keyframe?" (skips the
insert), the base reset's "any is_first?". Standing exactly at a keyframe's pose retrieves it: the points it
owns are the nearest surface from there, so it fails only if it owns none (a full cloud) or top_k others
outvote it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from embodimem.geometry import plucker_rays
from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.state import State
from embodimem.spatial.camera_kernels import RIGID_ATOL, backproject, not_rigid, project, relative
from embodimem.spatial.voxel_hash import SENTINEL, check_extent, in_extent, lookup, voxel_downsample, voxel_keys

OCCLUSION = ("zbuffer", "depth", "none")
_ID_BITS = 40  # frame ids are clamped into 40 bits inside the eviction / ranking sort keys


@dataclass
class PointFrameConfig(MemoryConfig):
    voxel_size: float = 0.1  # metres, edge of a downsampling voxel
    extent: float = 100.0  # metres, half-width of the storable world cube around the origin
    max_points: int = 100_000  # P: cloud capacity per env
    max_keyframes: int = 64  # keyframe capacity per env
    top_k: int = 8  # keyframes read
    novel_threshold: float = 0.25  # keyframe if more than this fraction of valid points lands in new voxels
    tau_hist: int = 4  # ... or if fewer keyframes than this vote for the view (and novel > history_min_novel)
    history_min_novel: float = 0.0  # novelty the coverage clause still needs (> 0 fraction: owns >= 1 voxel)
    min_votes: int = 1  # visible points a keyframe needs to count as voting and to be read
    occlusion: str = "zbuffer"  # zbuffer | depth | none
    zbuffer_stride: int = 1  # z-buffer cell = stride x stride pixels (coarser cells let sparse clouds occlude)
    zbuffer_tol: float = 0.1  # metres a point may lie behind its cell's nearest point (or the depth) and vote
    max_depth: float = 0.0  # metres; > 0 treats farther readings as no reading
    pixel_stride: int = 1  # back-project every s-th pixel along each image axis

    def validate(self) -> None:
        super().validate()
        who = type(self).__name__
        for f in ("max_points", "max_keyframes", "top_k", "min_votes", "zbuffer_stride", "pixel_stride"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{who}.{f} must be > 0, got {getattr(self, f)}")
        if self.max_points >= 1 << 22:
            raise ValueError(f"{who}.max_points must be < 2^22 (vote counts share an int64 sort key), "
                             f"got {self.max_points}")
        if self.top_k > self.max_keyframes:
            raise ValueError(f"{who}.top_k={self.top_k} exceeds max_keyframes={self.max_keyframes}")
        if self.tau_hist < 0:
            raise ValueError(f"{who}.tau_hist must be >= 0, got {self.tau_hist}")
        for f in ("novel_threshold", "history_min_novel"):
            if not 0.0 <= getattr(self, f) <= 1.0:
                raise ValueError(f"{who}.{f} must be a fraction in [0, 1], got {getattr(self, f)}")
        if self.occlusion not in OCCLUSION:
            raise ValueError(f"{who}.occlusion must be one of {OCCLUSION}, got {self.occlusion!r}")
        if self.zbuffer_tol < 0 or self.max_depth < 0:
            raise ValueError(f"{who}.zbuffer_tol and max_depth must be >= 0 metres, "
                             f"got {self.zbuffer_tol}, {self.max_depth}")
        check_extent(self.extent, self.voxel_size, who=f"{who}.extent")

    @classmethod
    def example(cls) -> PointFrameConfig:
        return cls(dim=8, tokens_per_step=2, voxel_size=0.5, extent=8.0, max_points=256, max_keyframes=16,
                   top_k=3, tau_hist=2, zbuffer_tol=0.5)


@register_memory("point_frame")
class PointFrameMemory(Memory):
    """Voxel cloud xyz [B,3,P] with source keyframes + keyframe store [B,KF,N,D]; reads the top-k keyframes by votes."""

    config_class = PointFrameConfig
    config: PointFrameConfig

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c = self.config
        B, P, F, N, D = batch_size, c.max_points, c.max_keyframes, c.tokens_per_step, c.dim

        def z(*shape, dtype=torch.long, fill=0):
            return torch.full(shape, fill, dtype=dtype, device=device)

        return {
            "xyz": z(B, 3, P, dtype=torch.float32), "keys": z(B, P, fill=SENTINEL), "src": z(B, P, fill=-1),
            "point_n": z(B, P, dtype=torch.int32), "valid": z(B, P, dtype=torch.bool, fill=False),
            "kf_tokens": z(B, F, N, D, dtype=torch.float32), "kf_pose": z(B, F, 4, 4, dtype=torch.float32),
            "kf_K": z(B, F, 3, 3, dtype=torch.float32), "kf_hw": z(B, F, 2), "kf_id": z(B, F, fill=-1),
            "kf_last": z(B, F, fill=-1), "kf_seen": z(B, F), "kf_points": z(B, F),
            "kf_valid": z(B, F, dtype=torch.bool, fill=False),
            "step": z(B), "keyframes_made": z(B), "keyframes_evicted": z(B), "points_dropped": z(B),
            "out_of_extent": z(B),
        }

    # ----- inputs ---------------------------------------------------------------------------------------
    def example_inputs(self, batch_size: int, steps: int, generator: torch.Generator) -> tuple[Tensor, dict[str, Any]]:
        """Tokens [B,T,N,D] plus an 8x8 depth stream of a camera looping in a small room with a pillar."""
        from embodimem.spatial.analytic_room import example_stream

        c = self.config
        x = torch.randn(batch_size, steps, c.tokens_per_step, c.dim, generator=generator)
        depth, pose, K = example_stream(batch_size, steps, (8, 8), generator=generator)
        return x, {"depth": depth, "pose": pose, "intrinsics": K}

    def _camera(self, B: int, pose: Any, intrinsics: Any, depth: Any, hw: Any, need_depth: bool
                ) -> tuple[Tensor, Tensor, Tensor | None, tuple[int, int]]:
        """Validate the camera (and depth) of B rows -> float32 (pose, K, depth, hw); one host sync in all."""
        n = self.name
        missing = [k for k, v in (("depth", depth if need_depth else 0), ("pose", pose), ("intrinsics", intrinsics))
                   if v is None]
        if missing:
            raise ValueError(f"{n}: needs keyword arguments depth=[B,H,W] metres, pose=[B,4,4] camera-to-world and "
                             f"intrinsics=[B,3,3]; missing {missing}")
        for name, v, shape in (("pose", pose, (B, 4, 4)), ("intrinsics", intrinsics, (B, 3, 3))):
            if not isinstance(v, Tensor) or tuple(v.shape) != shape or not v.is_floating_point():
                got = getattr(v, "shape", type(v))
                raise ValueError(f"{n}: {name} must be a float tensor {list(shape)}, got {got}")
        if depth is not None:
            ok = isinstance(depth, Tensor) and depth.dim() == 3 and depth.shape[0] == B
            if not (ok and depth.is_floating_point()):
                got = getattr(depth, "shape", type(depth))
                raise ValueError(f"{n}: depth must be a float tensor [{B},H,W] in metres, got {got}")
            hw = (int(depth.shape[1]), int(depth.shape[2]))
            depth = depth.float()
        elif hw is None:
            raise ValueError(f"{n}: read needs depth=[B,H,W] or hw=(H, W) to know the image size")
        else:
            hw = (int(hw[0]), int(hw[1]))
        pose, K = pose.float(), intrinsics.float()
        if self.config.check_finite:
            flags = [not_rigid(pose), ~(torch.isfinite(K.sum((1, 2))) & (K[:, 0, 0] > 0) & (K[:, 1, 1] > 0))]
            if depth is not None:  # a sum is finite iff every term is (barring float overflow)
                flags += [~torch.isfinite(depth.sum((1, 2))), depth.amin((1, 2)) < 0]
            flags = torch.stack(flags)
            if bool(flags.any()):  # the one sync; diagnose only on failure
                msgs = ["pose is not a rigid camera-to-world transform (orthonormal R, det +1, last row [0,0,0,1], "
                        f"atol {RIGID_ATOL})", "intrinsics must be finite with fx, fy > 0",
                        "depth contains NaN or inf (use 0 for 'no reading')",
                        "depth has negative values (metres, 0 = no reading)"]
                for m, rows in zip(msgs, flags.tolist()):
                    if any(rows):
                        raise ValueError(f"{n}: {m}; bad rows {[i for i, r in enumerate(rows) if r]}")
        return pose, K, depth, hw

    # ----- write ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def write(self, state: State, item: Tensor, *, depth: Tensor | None = None, pose: Tensor | None = None,
              intrinsics: Tensor | None = None, t: Tensor | None = None, **_: Any) -> State:
        """Store a frame: item [B,N,D], depth [B,H,W] m, pose [B,4,4], intrinsics [B,3,3], optional t int64 [B]."""
        item = self.check_tokens(item, "item")
        return self._write(state, item, self._camera(item.shape[0], pose, intrinsics, depth, None, True), t)[0]

    def _write(self, state: State, item: Tensor, cam: tuple, t: Tensor | None) -> tuple[State, Tensor | None]:
        """Write with a validated camera; also returns the post-write votes of that camera when no row inserted."""
        c = self.config
        pose, K, depth, hw = cam
        B = item.shape[0]
        if state["step"].shape[0] != B:
            raise ValueError(f"{self.name}: item has B={B} rows, the state has {state['step'].shape[0]}")
        fid = state["step"] if t is None else t.to(torch.long)
        pts, ok = backproject(depth, pose, K, c.pixel_stride)  # [B,M,3], [B,M]
        if c.max_depth > 0:
            ok = ok & (depth[:, ::c.pixel_stride, ::c.pixel_stride].reshape(B, -1) <= c.max_depth)
        inside = in_extent(pts, c.extent)
        out_of_extent = state["out_of_extent"] + (ok & ~inside).sum(1)
        ok = ok & inside
        key = voxel_keys(pts, ok, c.voxel_size)
        # keyframe gate: novelty against the held voxels, coverage by the read rule's votes
        found, idx = lookup(state["keys"], key)
        novel = (ok & ~found).sum(1) / ok.sum(1).clamp(min=1)
        votes = self._votes(state, pose, K, hw, depth)
        voting = (votes >= c.min_votes) & state["kf_valid"]
        is_kf = (~state["kf_valid"].any(1) | (novel > c.novel_threshold)
                 | ((voting.sum(1) < c.tau_hist) & (novel > c.history_min_novel)))
        out = dict(state)
        out["kf_seen"] = state["kf_seen"] + voting.long()
        out["kf_last"] = torch.where(voting, fid[:, None], state["kf_last"])
        out["out_of_extent"] = out_of_extent
        out["step"] = state["step"] + 1
        if not bool(is_kf.any()):  # host branch: the cloud is unchanged, so are the votes
            return out, votes
        return self._insert(out, is_kf, item, pose, K, hw, fid, pts, key, found, idx), None

    def step(self, state: State, x_t: Tensor, *, is_first: Tensor, t: Tensor | None = None, **kw: Any
             ) -> tuple[Readout, State]:
        """Reset rows ``is_first``, write x_t [B,N,D] with depth/pose/intrinsics, read that camera (validated once)."""
        x_t = self.check_tokens(x_t)
        state = self.reset(state, self.check_mask(is_first, x_t.shape[0], "is_first"))
        cam = self._camera(x_t.shape[0], kw.get("pose"), kw.get("intrinsics"), kw.get("depth"), None, True)
        with torch.no_grad():
            state, votes = self._write(state, x_t.detach(), cam, t)
        return self._read(state, cam, votes), state

    def _insert(self, st: State, is_kf: Tensor, item: Tensor, pose: Tensor, K: Tensor, hw: tuple[int, int],
                fid: Tensor, pts: Tensor, key: Tensor, found: Tensor, idx: Tensor) -> State:
        """Make rows ``is_kf`` [B] keyframes: pick/evict a slot, insert their new voxels, store the keyframe."""
        c = self.config
        B, F, P = is_kf.shape[0], c.max_keyframes, c.max_points
        ar_f = torch.arange(F, device=is_kf.device)
        # slot: free slots score -1 (argmin takes the first); else fewest points, then oldest id, then lowest slot
        score = (st["kf_points"] << _ID_BITS) | st["kf_id"].clamp(0, (1 << _ID_BITS) - 1)
        slot = torch.where(st["kf_valid"], score, torch.full_like(score, -1)).argmin(1)  # [B]
        onehot = (ar_f[None] == slot[:, None]) & is_kf[:, None]  # [B,F]
        evict = (onehot & st["kf_valid"]).any(1)
        gone = st["valid"] & evict[:, None] & (st["src"] == slot[:, None])  # the evicted keyframe's points
        # candidates: valid points of keyframe rows whose voxel is not held by a surviving point
        held = found & ~gone.gather(1, idx)
        cand = is_kf[:, None] & (key != SENTINEL) & ~held
        ukey, cent, cnt, n_new = voxel_downsample(pts, cand, c.voxel_size)
        keys_old = st["keys"] | (gone.long() * SENTINEL)  # codes are >= 0, so OR-ing SENTINEL gives SENTINEL
        free = P - (keys_old != SENTINEL).sum(1)
        take = torch.minimum(n_new, free)
        M = ukey.shape[1]
        keep = torch.arange(M, device=ukey.device)[None] < take[:, None]  # ascending codes: smallest first
        ukey = torch.where(keep, ukey, torch.full_like(ukey, SENTINEL))
        # merge: one stable sort of [old ; new] codes, keep the first P (all valid ones fit by construction)
        allk = torch.cat([keys_old, ukey], 1)
        sk, order = torch.sort(allk, dim=1, stable=True)
        sk, order = sk[:, :P].contiguous(), order[:, :P]
        valid = sk != SENTINEL
        allp = torch.cat([st["xyz"], cent.transpose(1, 2).to(st["xyz"].dtype)], 2)
        alls = torch.cat([st["src"], slot[:, None].expand(B, M)], 1)
        alln = torch.cat([st["point_n"], cnt.to(torch.int32)], 1)
        out = dict(st)
        out["keys"], out["valid"] = sk, valid
        # empty slots hold zeros / src -1 (arithmetic masking: torch.where is slow on large CPU tensors)
        out["xyz"] = allp.gather(2, order[:, None].expand(B, 3, P)) * valid[:, None]
        out["src"] = (alls.gather(1, order) + 1) * valid - 1
        out["point_n"] = alln.gather(1, order) * valid
        out["kf_points"] = torch.zeros(B, F, dtype=torch.long, device=valid.device).scatter_add_(
            1, out["src"].clamp(min=0), valid.long())
        out["points_dropped"] = st["points_dropped"] + (n_new - take)
        out["keyframes_evicted"] = st["keyframes_evicted"] + evict.long()
        out["keyframes_made"] = st["keyframes_made"] + is_kf.long()
        oh = onehot
        out["kf_tokens"] = torch.where(oh[..., None, None], item[:, None].to(st["kf_tokens"].dtype), st["kf_tokens"])
        out["kf_pose"] = torch.where(oh[..., None, None], pose[:, None], st["kf_pose"])
        out["kf_K"] = torch.where(oh[..., None, None], K[:, None], st["kf_K"])
        out["kf_hw"] = torch.where(oh[..., None], torch.tensor(hw, device=oh.device), st["kf_hw"])
        out["kf_id"] = torch.where(oh, fid[:, None], st["kf_id"])
        out["kf_last"] = torch.where(oh, fid[:, None], st["kf_last"])
        out["kf_seen"] = torch.where(oh, 1, st["kf_seen"])
        out["kf_valid"] = st["kf_valid"] | oh
        return out

    # ----- read -----------------------------------------------------------------------------------------
    def _votes(self, state: State, pose: Tensor, K: Tensor, hw: tuple[int, int], depth: Tensor | None) -> Tensor:
        """Visible-point votes int64 [B,KF] per keyframe slot for cameras pose [B,4,4], K [B,3,3], image hw."""
        c = self.config
        B, F = pose.shape[0], c.max_keyframes
        u, v, z, vis = project(state["xyz"], pose, K, hw)
        vis = vis & state["valid"]
        # masks by arithmetic, not torch.where (which is ~50x slower than clamp/mul on large CPU tensors)
        if c.occlusion != "none":
            H, W = hw
            col = u.clamp(0, W - 1).long()  # exact pixel where in view; any valid index elsewhere
            row = v.clamp(0, H - 1).long()
            if c.occlusion == "zbuffer":
                s = c.zbuffer_stride
                wc = (W + s - 1) // s
                cell = row * wc + col if s == 1 else (row // s) * wc + col // s
                zv = z + (~vis) * 1e30  # points that are not in view never set a cell's nearest z
                zbuf = torch.full((B, ((H + s - 1) // s) * wc), 1e30, dtype=z.dtype, device=z.device)
                ref = zbuf.scatter_reduce(1, cell, zv, reduce="amin", include_self=True).gather(1, cell)
                vis = vis & (z <= ref + c.zbuffer_tol)
            else:
                if depth is None:
                    raise ValueError(f"{self.name}: occlusion='depth' needs depth=[B,H,W] at read time")
                d = depth.reshape(B, -1).gather(1, row * W + col)
                vis = vis & (d > 0) & (z <= d + c.zbuffer_tol)
        # invisible (and empty, src -1) points add 0 votes, to any slot
        votes = torch.zeros(B, F, dtype=torch.long, device=z.device)
        return votes.scatter_add_(1, state["src"].clamp(min=0), vis.long())

    def votes(self, state: State, *, pose: Tensor, intrinsics: Tensor, depth: Tensor | None = None,
              hw: tuple[int, int] | None = None) -> Tensor:
        """Vote histogram int64 [B,KF] (slot order) of the cloud seen by a camera; the read ranks these."""
        pose, K, depth, hw = self._camera(pose.shape[0], pose, intrinsics, depth, hw, False)
        return self._votes(state, pose, K, hw, depth)

    def read(self, state: State, query: Tensor | None = None, *, pose: Tensor | None = None,
             intrinsics: Tensor | None = None, depth: Tensor | None = None, hw: tuple[int, int] | None = None,
             **_: Any) -> Readout:
        """Top-k keyframes for camera pose [B,4,4], K [B,3,3], image size from depth [B,H,W] or hw; query unused."""
        return self._read(state, self._camera(state["step"].shape[0], pose, intrinsics, depth, hw, False))

    def _read(self, state: State, cam: tuple, votes: Tensor | None = None) -> Readout:
        c = self.config
        pose, K, depth, hw = cam
        if votes is None:
            votes = self._votes(state, pose, K, hw, depth)
        ok = (votes >= c.min_votes) & state["kf_valid"]
        # rank: more votes, then newer frame id, then lower slot (stable sort)
        score = (votes << (_ID_BITS + 1)) | (state["kf_id"].clamp(-1, (1 << _ID_BITS) - 2) + 1)
        score = torch.where(ok, score, -1)
        top, order = torch.sort(score, dim=1, descending=True, stable=True)
        return self._readout(state, order[:, : c.top_k], top[:, : c.top_k] >= 0, votes, pose)

    def _readout(self, st: State, order: Tensor, m: Tensor, votes: Tensor, pose: Tensor) -> Readout:
        """Gather keyframe slots ``order`` [B,k] (valid where m) into a Readout of K = k*N tokens."""
        c = self.config
        B, k, N = order.shape[0], order.shape[1], c.tokens_per_step

        def g(x: Tensor) -> Tensor:  # gather [B,F,...] -> [B,k,...]
            return x.gather(1, order.view(B, k, *([1] * (x.dim() - 2))).expand(B, k, *x.shape[2:]))

        def per_tok(x: Tensor) -> Tensor:  # [B,k,...] -> [B,k*N,...]
            return x.unsqueeze(2).expand(B, k, N, *x.shape[2:]).reshape(B, k * N, *x.shape[2:])

        m4 = m[..., None, None]
        kf_pose = g(st["kf_pose"])
        rel = torch.where(m4, relative(pose[:, None], kf_pose), torch.eye(4, device=pose.device))
        kf_K = torch.where(m4, g(st["kf_K"]), torch.eye(3, device=pose.device))
        v = votes.gather(1, order) * m
        ids = torch.where(m, g(st["kf_id"]), -1)
        last = torch.where(m, g(st["kf_last"]), -1)
        weights = v / votes.sum(1, keepdim=True).clamp(min=1)
        return Readout(
            tokens=(g(st["kf_tokens"]) * m[..., None, None]).reshape(B, k * N, -1),
            mask=per_tok(m),
            source_ids=per_tok(ids),
            weights=per_tok(weights),
            time_span=per_tok(torch.stack([ids, last], -1)),
            positions=per_tok(kf_pose[..., :3, 3] * m[..., None]),
            extras={"rel_pose": rel, "votes": v, "slot": torch.where(m, order, -1), "intrinsics": kf_K},
        )

    def plucker(self, readout: Readout, hw: tuple[int, int], stride: int = 1) -> Tensor:
        """Plücker rays [B,k,H//s,W//s,6] of each retrieved keyframe in the query camera's frame (0 where empty).

        Uses each keyframe's intrinsics at image size ``hw`` and ``extras['rel_pose']``; the query view's own rays
        are ``geometry.plucker_rays(K, eye(4), hw)``.
        """
        rel, K = readout.extras["rel_pose"], readout.extras["intrinsics"]
        B, k = rel.shape[:2]
        rays = plucker_rays(K.flatten(0, 1), rel.flatten(0, 1), hw, stride)
        rays = rays.reshape(B, k, *rays.shape[1:])
        return rays * (readout.extras["slot"] >= 0)[..., None, None, None].to(rays.dtype)

    def stats(self, state: State) -> dict[str, float]:
        """Base stats plus points/keyframes held, bytes actually used by them, drops, evictions, ignored points."""
        out = super().stats(state)
        P = self.config.max_points
        pt_bytes = sum(state[k][0].numel() // P * state[k].element_size()
                       for k in ("xyz", "keys", "src", "point_n", "valid"))
        kf_bytes = sum(state[k][0, 0].numel() * state[k].element_size() for k in state if k.startswith("kf_"))
        n_pts = state["valid"].sum(1).float()
        n_kf = state["kf_valid"].sum(1).float()
        out.update({
            "points_mean": float(n_pts.mean()), "keyframes_mean": float(n_kf.mean()),
            "used_bytes_per_env": float((n_pts * pt_bytes + n_kf * kf_bytes).mean()),
            **{k: float(state[k].sum())
               for k in ("points_dropped", "keyframes_evicted", "out_of_extent", "keyframes_made")},
        })
        return out
