"""Oracle tests of ``point_frame`` (Memory Forcing's point-to-frame cache) and of its voxel hash."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embodimem import geometry as G
from embodimem.memory import make_memory
from embodimem.memory.point_frame import PointFrameConfig, PointFrameMemory
from embodimem.spatial import camera_kernels as ck
from embodimem.spatial.analytic_room import Room, loop_poses, render_depth
from embodimem.spatial.voxel_hash import SENTINEL, lookup, pack, unpack, voxel_downsample, voxel_keys

# walls off the 0.2 m voxel grid: a wall on a voxel boundary splits its points between two layers by rounding
ROOM = Room(lo=(-2.03, -1.97, -0.09), hi=(2.07, 2.02, 2.49),
            boxes=(((0.63, 0.58, -0.09), (1.11, 1.13, 2.49)), ((-1.43, 0.21, -0.09), (-1.01, 0.59, 1.37))))
HW = (24, 24)


def pts_of(state) -> torch.Tensor:
    """The cloud as [B,P,3] (the state stores it coordinate-major, xyz [B,3,P])."""
    return state["xyz"].transpose(1, 2)


def mk(**kw) -> PointFrameMemory:
    base = dict(dim=4, tokens_per_step=1, voxel_size=0.2, extent=10.0, max_points=4000, max_keyframes=32,
                top_k=5, novel_threshold=0.1, tau_hist=2, zbuffer_tol=0.2)
    return make_memory(PointFrameConfig(**{**base, **kw}))


def cam(n: int, hw=HW, fov=80.0) -> torch.Tensor:
    return G.intrinsics_from_fov(hw[0], hw[1], fov).expand(n, 3, 3).contiguous()


def random_poses(n: int, seed: int) -> torch.Tensor:
    """Cameras inside ROOM (clear of the pillars), random yaw, pitch in [-0.5, 0.3] rad."""
    g = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n:
        p = torch.rand(3, generator=g, dtype=torch.float64) * torch.tensor([3.2, 3.2, 1.4])
        p = p + torch.tensor([-1.6, -1.6, 0.5])
        if any(all(lo[i] - 0.1 <= p[i] <= hi[i] + 0.1 for i in range(3)) for lo, hi in ROOM.boxes):
            continue
        yaw, pitch = float(torch.rand(1, generator=g)) * 2 * math.pi, float(torch.rand(1, generator=g)) * 0.8 - 0.5
        look = torch.tensor([math.cos(yaw), math.sin(yaw), math.tan(pitch)], dtype=torch.float64)
        out.append(G.look_at(p, p + look, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).float())
    return torch.stack(out)


def feed(mem, poses: torch.Tensor, hw=HW, state=None, seed: int = 0):
    """Write one frame per pose into a single-env state (random tokens); returns the state."""
    K = cam(len(poses), hw)
    depth = render_depth(ROOM, poses, K, hw)
    g = torch.Generator().manual_seed(seed)
    state = mem.init_state(1) if state is None else state
    for i in range(len(poses)):
        x = torch.randn(1, 1, mem.config.dim, generator=g)
        state = mem.write(state, x, depth=depth[i:i + 1], pose=poses[i:i + 1], intrinsics=K[i:i + 1])
    return state


def oracle(state, pose, K, hw, mode: str, tol: float, stride: int = 1, depth=None, k: int = 5, min_votes: int = 1):
    """Brute force, one point at a time in float64: [(frame id, votes)] of the top-k keyframes."""
    H, W = hw
    pose, K = pose.double().numpy(), K.double().numpy()
    R, t = pose[:3, :3], pose[:3, 3]
    hits = []
    for p, valid, slot in zip(pts_of(state)[0].double().numpy(), state["valid"][0].tolist(), state["src"][0].tolist()):
        if not valid:
            continue
        c = R.T @ (p - t)
        if c[2] <= 1e-6:  # the memory's near plane
            continue
        u = (K[0, 0] * c[0] + K[0, 1] * c[1]) / c[2] + K[0, 2]
        v = K[1, 1] * c[1] / c[2] + K[1, 2]
        if 0 <= u < W and 0 <= v < H:
            hits.append((slot, int(math.floor(u)), int(math.floor(v)), c[2]))
    nearest: dict = {}
    for _, u, v, z in hits:
        cell = (u // stride, v // stride)
        nearest[cell] = min(nearest.get(cell, math.inf), z)
    counts: dict = {}
    for slot, u, v, z in hits:
        if mode == "zbuffer" and z > nearest[(u // stride, v // stride)] + tol:
            continue
        if mode == "depth" and not (depth[v, u] > 0 and z <= float(depth[v, u]) + tol):
            continue
        counts[slot] = counts.get(slot, 0) + 1
    ids = state["kf_id"][0].tolist()
    ranked = sorted(((ids[s], n) for s, n in counts.items() if n >= min_votes), key=lambda x: (-x[1], -x[0]))
    return ranked[:k]


@pytest.fixture(scope="module")
def scene():
    poses = random_poses(24, seed=1)
    out = {}
    for mode in ("zbuffer", "none", "depth"):
        mem = mk(occlusion=mode)
        out[mode] = (mem, feed(mem, poses))
    return out


# ----------------------------------------------------------------------------- voxel hash


def test_pack_unpack_round_trip_and_order():
    ijk = torch.randint(-(1 << 20), (1 << 20) - 1, (1000, 3))
    codes = pack(ijk)
    assert torch.equal(unpack(codes), ijk)
    assert bool((codes >= 0).all()) and bool((codes != SENTINEL).all())
    lex = sorted(range(1000), key=lambda i: tuple(ijk[i].tolist()))
    assert torch.equal(torch.argsort(codes), torch.tensor(lex))


def test_voxel_downsample_matches_bruteforce_groupby():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(2, 300, 3, generator=g, dtype=torch.float64) * 2 - 1
    valid = torch.rand(2, 300, generator=g) > 0.2
    codes, cent, cnt, n = voxel_downsample(pts, valid, 0.25)
    for b in range(2):
        groups: dict = {}
        for p, ok in zip(pts[b].tolist(), valid[b].tolist()):
            if ok:
                groups.setdefault(tuple(math.floor(c / 0.25) for c in p), []).append(p)
        keys = sorted(groups)
        assert int(n[b]) == len(keys)
        assert torch.equal(codes[b, : len(keys)], pack(torch.tensor(keys)))
        assert bool((codes[b, len(keys):] == SENTINEL).all()) and bool((cnt[b, len(keys):] == 0).all())
        for i, key in enumerate(keys):
            assert int(cnt[b, i]) == len(groups[key])
            torch.testing.assert_close(cent[b, i], torch.tensor(groups[key], dtype=torch.float64).mean(0))
    found, idx = lookup(codes, voxel_keys(pts, valid, 0.25))
    assert torch.equal(found, valid)


# ----------------------------------------------------------------------------- hot-path camera maths


def test_inlined_camera_maths_match_geometry():
    poses = random_poses(3, seed=5)
    K = cam(3)
    pts = torch.randn(3, 50, 3) * 2
    u, v, z, inview = ck.project(pts.transpose(1, 2).contiguous(), poses, K, HW)
    uv, z2, in2 = G.project_points(pts, K, poses, HW)
    torch.testing.assert_close(torch.stack([u, v], -1)[in2], uv[in2], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(z, z2, atol=1e-5, rtol=1e-5)
    assert torch.equal(inview, in2)
    depth = render_depth(ROOM, poses, K, HW)
    p1, ok1 = ck.backproject(depth, poses, K, 1)
    p2, ok2 = G.backproject_depth(depth, K, poses)
    torch.testing.assert_close(p1, p2.reshape(3, -1, 3), atol=1e-5, rtol=1e-5)
    assert torch.equal(ok1, ok2.reshape(3, -1))
    torch.testing.assert_close(ck.relative(poses[0], poses[1]), G.relative_pose(poses[0], poses[1]), atol=1e-5, rtol=0)
    bad = poses.clone()
    bad[0, :3, :3] *= 1.1  # scaled
    bad[1, :3, 0] *= -1  # reflection
    bad[2, 0, 0] = float("nan")
    assert torch.equal(ck.not_rigid(poses), ~G.is_rigid(poses, atol=1e-3))
    assert bool(ck.not_rigid(bad).all())


# ----------------------------------------------------------------------------- retrieval oracle


@pytest.mark.parametrize("mode", ["zbuffer", "none", "depth"])
def test_topk_equals_bruteforce_projection_oracle(scene, mode):
    mem, state = scene[mode]
    queries = random_poses(12, seed=2)
    K = cam(1)
    depth = render_depth(ROOM, queries, cam(12), HW)
    nontrivial = 0
    for i in range(len(queries)):
        r = mem.read(state, pose=queries[i:i + 1], intrinsics=K, depth=depth[i:i + 1])
        got = [(int(f), int(n)) for f, n, s in zip(r.source_ids[0].tolist(), r.extras["votes"][0].tolist(),
                                                   r.extras["slot"][0].tolist()) if s >= 0]
        want = oracle(state, queries[i], K[0], HW, mode, 0.2, depth=depth[i], k=5)
        assert got == want, f"query {i}"
        nontrivial += len(want) >= 3
    assert nontrivial >= 4, "the scene should give several multi-keyframe queries"


def test_zbuffer_stride_oracle(scene):
    _, state = scene["zbuffer"]
    mem = mk(occlusion="zbuffer", zbuffer_stride=3)
    for i, q in enumerate(random_poses(6, seed=9)):
        r = mem.read(state, pose=q[None], intrinsics=cam(1), hw=HW)
        got = [(int(f), int(n)) for f, n, s in zip(r.source_ids[0].tolist(), r.extras["votes"][0].tolist(),
                                                   r.extras["slot"][0].tolist()) if s >= 0]
        assert got == oracle(state, q, cam(1)[0], HW, "zbuffer", 0.2, stride=3), f"query {i}"


def test_occlusion_removes_votes_in_the_scene(scene):
    (m_z, s_z), (m_n, s_n) = scene["zbuffer"], scene["none"]
    assert torch.equal(s_z["keys"], s_n["keys"])  # same cloud: the gate does not depend on occlusion here
    fewer = 0
    for q in random_poses(12, seed=2):
        vz = m_z.votes(s_z, pose=q[None], intrinsics=cam(1), hw=HW)
        vn = m_n.votes(s_n, pose=q[None], intrinsics=cam(1), hw=HW)
        assert bool((vz <= vn).all())
        fewer += int(vz.sum() < vn.sum())
    assert fewer >= 3


def test_standing_at_a_keyframe_pose_retrieves_it(scene):
    mem, state = scene["zbuffer"]
    allk = mk(top_k=32)
    n = int(state["kf_valid"].sum())
    assert n >= 5
    for slot in range(n):
        assert int(state["kf_points"][0, slot]) > 0, "every keyframe owns at least one voxel"
        r = allk.read(state, pose=state["kf_pose"][:, slot], intrinsics=state["kf_K"][:, slot], hw=HW)
        assert int(state["kf_id"][0, slot]) in r.source_ids[0].tolist()
    # two keyframes facing opposite walls: each is the top-1 at its own pose
    poses = loop_poses(2, step_rad=math.pi, pitch=-0.2)
    m2 = mk(top_k=1)
    st = feed(m2, poses)
    for i in range(2):
        r = m2.read(st, pose=poses[i:i + 1], intrinsics=cam(1), hw=HW)
        assert r.source_ids[0, 0] == i


# ----------------------------------------------------------------------------- hand-built clouds


def manual_state(mem, pts, frame_ids):
    """One env holding points [M,3] (distinct voxels), point i owned by a keyframe with frame id frame_ids[i]."""
    st = mem.init_state(1)
    ids = sorted(set(frame_ids))
    slot = torch.tensor([ids.index(f) for f in frame_ids])
    pts = torch.tensor(pts, dtype=torch.float32)
    keys = voxel_keys(pts, torch.ones(len(pts), dtype=torch.bool), mem.config.voxel_size)
    assert len(set(keys.tolist())) == len(keys)
    o = torch.argsort(keys)
    M = len(pts)
    st["xyz"][0, :, :M], st["keys"][0, :M], st["src"][0, :M] = pts[o].T, keys[o], slot[o]
    st["valid"][0, :M], st["point_n"][0, :M] = True, 1
    st["kf_valid"][0, : len(ids)], st["kf_id"][0, : len(ids)] = True, torch.tensor(ids)
    st["kf_pose"][0, : len(ids)] = torch.eye(4)
    st["kf_points"][0, : len(ids)] = torch.bincount(slot, minlength=len(ids))
    return st


EYE = torch.eye(4)[None]
K10 = torch.tensor([[[10.0, 0, 5], [0, 10, 5], [0, 0, 1]]])  # 10x10 image, camera at the origin looking +z


@pytest.mark.parametrize("mode", ["zbuffer", "depth", "none"])
def test_points_behind_or_outside_the_frustum_never_vote(mode):
    mem = mk(occlusion=mode, voxel_size=0.05, top_k=8)
    pts = [(0, 0, 2), (0, 0, -2), (1.2, 0, 2), (0, -1.2, 2), (0.3, 0.3, 0.0), (1.0, 0.5, 2), (0.99, 0.5, 2),
           (-0.5, -0.5, -1.0), (0.2, 0.9, 2.0)]
    fids = [10, 11, 12, 13, 14, 15, 16, 17, 18]  # centre, behind, right, top, on the camera plane, u == W, u < W,
    st = manual_state(mem, pts, fids)            # behind-left, v = 9.5 (inside)
    depth = torch.full((1, 10, 10), 5.0)
    v = mem.votes(st, pose=EYE, intrinsics=K10, depth=depth)
    voted = {int(st["kf_id"][0, s]) for s in range(9) if v[0, s] > 0}
    assert voted == {10, 16, 18}


def test_occluded_points_do_not_vote():
    pts, fids = [(0, 0, 1.0), (0, 0, 3.0), (-0.15, 0.0, 3.0)], [1, 2, 3]  # 2 hides behind 1; 3: the pixel left
    for mode, kw, want in [("zbuffer", {}, {1, 3}), ("none", {}, {1, 2, 3}), ("depth", {}, {1}),
                           ("zbuffer", {"zbuffer_tol": 2.5}, {1, 2, 3}), ("zbuffer", {"zbuffer_stride": 2}, {1})]:
        mem = mk(occlusion=mode, voxel_size=0.05, **kw)
        st = manual_state(mem, pts, fids)
        v = mem.votes(st, pose=EYE, intrinsics=K10, depth=torch.full((1, 10, 10), 1.0))
        assert {int(st["kf_id"][0, s]) for s in range(3) if v[0, s] > 0} == want, (mode, kw)
    mem = mk(occlusion="depth", voxel_size=0.05)  # a pixel without a reading hides everything behind it
    st = manual_state(mem, pts, fids)
    assert int(mem.votes(st, pose=EYE, intrinsics=K10, depth=torch.zeros(1, 10, 10)).sum()) == 0
    with pytest.raises(ValueError, match="occlusion='depth' needs depth"):
        mem.votes(st, pose=EYE, intrinsics=K10, hw=(10, 10))


def test_ties_go_to_the_newer_frame_then_the_lower_slot():
    mem = mk(occlusion="none", voxel_size=0.05, top_k=3)
    st = manual_state(mem, [(0, 0, 2), (0.1, 0, 2), (0.2, 0, 2), (0.3, 0, 2), (-0.3, 0, 2)], [5, 5, 9, 9, 7])
    r = mem.read(st, pose=EYE, intrinsics=K10, hw=(10, 10))
    assert r.source_ids[0].tolist() == [9, 5, 7] and r.extras["votes"][0].tolist() == [2, 2, 1]
    st["kf_id"][0] = torch.where(st["kf_valid"][0], 4, -1)  # equal ids (a caller's t): lower slot first
    r = mem.read(st, pose=EYE, intrinsics=K10, hw=(10, 10))
    assert r.extras["slot"][0].tolist() == [0, 2, 1]


# ----------------------------------------------------------------------------- reconstruction


def test_loop_keyframe_count_plateaus_and_points_fit_voxels():
    mem = mk(max_keyframes=64)
    poses = loop_poses(200, step_rad=2 * math.pi / 17.3, pitch=-0.3)  # laps do not repeat poses exactly
    K = cam(200)
    depth = render_depth(ROOM, poses, K, HW)
    st, made, voxels = mem.init_state(1), [], set()
    for i in range(200):
        st = mem.write(st, torch.zeros(1, 1, 4), depth=depth[i:i + 1], pose=poses[i:i + 1], intrinsics=K[i:i + 1])
        made.append(int(st["keyframes_made"][0]))
        p, ok = G.backproject_depth(depth[i:i + 1], K[i:i + 1], poses[i:i + 1])
        voxels |= {tuple(x) for x in torch.floor(p[ok] / 0.2).long().tolist()}
    assert made[-1] == made[60] < 25, made  # stops growing after ~3 laps, far fewer keyframes than frames
    assert int(st["keyframes_evicted"][0]) == 0 and int(st["points_dropped"][0]) == 0
    n = int(st["valid"].sum())
    keys = st["keys"][0, :n]
    assert bool((keys[1:] > keys[:-1]).all()), "sorted, one point per voxel"
    assert bool((st["keys"][0, n:] == SENTINEL).all()) and not bool(st["valid"][0, n:].any())
    assert torch.equal(unpack(keys), torch.floor(pts_of(st)[0, :n] / 0.2).long()), "each point lies in its voxel"
    assert n <= len(voxels) and {tuple(x) for x in unpack(keys).tolist()} <= voxels
    assert torch.equal(st["kf_points"][0], torch.bincount(st["src"][0, :n], minlength=64))


def test_first_writer_keeps_the_voxel_and_representative_is_the_centroid():
    mem = mk(novel_threshold=0.0, tau_hist=0)  # every frame with a new voxel is a keyframe
    poses = loop_poses(2, step_rad=0.3, pitch=-0.3)
    K = cam(2)
    depth = render_depth(ROOM, poses, K, HW)
    st = feed(mem, poses[:1])
    before = {"keys": st["keys"].clone(), "points": pts_of(st).clone()}
    n0 = int(st["valid"].sum())
    p, ok = G.backproject_depth(depth[:1], K[:1], poses[:1])
    groups: dict = {}
    for x in p[ok].tolist():
        groups.setdefault(tuple(math.floor(c / 0.2) for c in x), []).append(x)
    for i in range(n0):
        cell = tuple(unpack(st["keys"][0, i]).tolist())
        torch.testing.assert_close(pts_of(st)[0, i], torch.tensor(groups[cell]).mean(0), atol=1e-5, rtol=0)
        assert int(st["point_n"][0, i]) == len(groups[cell])
    st2 = feed(mem, poses[1:], state=st)
    assert int(st2["kf_valid"].sum()) == 2
    old = st2["src"][0] == 0
    assert int(old.sum()) == n0
    assert torch.equal(pts_of(st2)[0][old], before["points"][0, :n0])
    assert torch.equal(st2["keys"][0][old], before["keys"][0, :n0])


def test_keyframe_gate_clauses():
    poses = loop_poses(1, pitch=-0.3)
    shifted = poses.clone()
    shifted[:, 1, 3] += 0.3  # sideways: ~11% of its points land in new voxels
    mem = mk(novel_threshold=0.5, tau_hist=2)
    st = feed(mem, poses)
    assert int(st["kf_valid"].sum()) == 1
    st = feed(mem, poses, state=st)  # same view: nothing new -> no keyframe even though only 1 < 2 voters
    assert int(st["kf_valid"].sum()) == 1 and int(st["kf_seen"][0, 0]) == 2
    st = feed(mem, shifted, state=st)  # a little new space (< 0.5) and too few voters -> keyframe
    assert int(st["kf_valid"].sum()) == 2
    st1 = feed(mk(novel_threshold=0.5, tau_hist=1), torch.cat([poses, shifted]))  # enough voters: no keyframe
    assert int(st1["kf_valid"].sum()) == 1


def test_capacity_overflow_rules():
    poses = loop_poses(3, step_rad=2 * math.pi / 3, pitch=-0.3)
    mem = mk(max_points=30, novel_threshold=0.0, tau_hist=0)
    K = cam(1)
    depth = render_depth(ROOM, poses[:1], K, HW)
    st = feed(mem, poses[:1])
    p, ok = G.backproject_depth(depth, K, poses[:1])
    cells = sorted(pack(torch.floor(p[ok] / 0.2).long()).unique().tolist())
    assert int(st["valid"].sum()) == 30 and int(st["points_dropped"][0]) == len(cells) - 30
    assert st["keys"][0].tolist() == cells[:30], "the smallest codes are kept"
    # keyframe overflow: evict the one owning the fewest points (ties: oldest), and its points with it
    mem = mk(max_keyframes=2, top_k=2, novel_threshold=0.0, tau_hist=0)
    st = feed(mem, poses[:2])
    owned = st["kf_points"][0].tolist()
    loser = 0 if owned[0] <= owned[1] else 1
    keeper = 1 - loser
    kept_pts = pts_of(st)[0][st["valid"][0] & (st["src"][0] == keeper)]
    st = feed(mem, poses[2:], state=st)
    assert int(st["keyframes_evicted"][0]) == 1 and st["kf_id"][0].tolist()[loser] == 2
    assert torch.equal(pts_of(st)[0][st["valid"][0] & (st["src"][0] == keeper)], kept_pts)
    assert torch.equal(st["kf_points"][0], torch.bincount(st["src"][0][st["valid"][0]], minlength=2))
    assert int(st["valid"].sum()) == int(st["kf_points"][0].sum())


# ----------------------------------------------------------------------------- readout, inputs, devices


def test_readout_provenance_and_relative_poses(scene):
    mem, state = scene["zbuffer"]
    q = random_poses(1, seed=3)
    r = mem.read(state, pose=q, intrinsics=cam(1), hw=HW)
    m = r.extras["slot"][0] >= 0
    slots = r.extras["slot"][0][m]
    torch.testing.assert_close(r.extras["rel_pose"][0][m], G.relative_pose(q[0], state["kf_pose"][0, slots]),
                               atol=1e-5, rtol=0)
    assert torch.equal(r.source_ids[0][r.mask[0]], state["kf_id"][0, slots])
    assert torch.equal(r.time_span[0][r.mask[0], 1], state["kf_last"][0, slots])
    assert bool((r.time_span[0][r.mask[0], 1] >= r.time_span[0][r.mask[0], 0]).all())
    assert float(r.weights.sum()) <= 1.0 + 1e-6
    rays = mem.plucker(r, HW, stride=4)
    assert rays.shape == (1, 5, 6, 6, 6)
    own = mem.read(state, pose=state["kf_pose"][:, 0], intrinsics=state["kf_K"][:, 0], hw=HW)
    j = own.source_ids[0].tolist().index(int(state["kf_id"][0, 0]))
    torch.testing.assert_close(mem.plucker(own, HW)[0, j], G.plucker_rays(cam(1), torch.eye(4)[None], HW)[0],
                               atol=1e-5, rtol=0)


def test_write_is_functional_and_t_sets_frame_ids():
    mem = mk()
    poses = random_poses(2, seed=4)
    st = feed(mem, poses[:1])
    snap = {k: v.clone() for k, v in st.items()}
    depth = render_depth(ROOM, poses[1:], cam(1), HW)
    out = mem.write(st, torch.ones(1, 1, 4), depth=depth, pose=poses[1:], intrinsics=cam(1), t=torch.tensor([77]))
    assert all(torch.equal(st[k], snap[k]) for k in st)
    assert 77 in out["kf_id"][0].tolist()


def test_bad_inputs_raise_or_are_counted():
    mem = mk()
    st = mem.init_state(1)
    x = torch.zeros(1, 1, 4)
    pose, K = random_poses(1, seed=6), cam(1)
    depth = render_depth(ROOM, pose, K, HW)
    for bad, what in [(depth.clone().fill_(float("nan")), "NaN"), (-depth, "negative")]:
        with pytest.raises(ValueError, match=what):
            mem.write(st, x, depth=bad, pose=pose, intrinsics=K)
    scaled = pose.clone()
    scaled[:, :3, :3] *= 1.01
    with pytest.raises(ValueError, match="rigid"):
        mem.write(st, x, depth=depth, pose=scaled, intrinsics=K)
    with pytest.raises(ValueError, match="fx, fy > 0"):
        mem.write(st, x, depth=depth, pose=pose, intrinsics=-K)
    with pytest.raises(ValueError, match=r"missing \['depth'\]"):
        mem.write(st, x, pose=pose, intrinsics=K)
    with pytest.raises(ValueError, match="pose must be"):
        mem.write(st, x, depth=depth, pose=pose[0], intrinsics=K)
    with pytest.raises(ValueError, match="hw"):
        mem.read(st, pose=pose, intrinsics=K)
    # points outside the declared extent are ignored and counted; readings beyond max_depth are no reading
    far = torch.full((1, 4, 4), 30.0)
    far[0, 0, :2] = 2.0
    s2 = mk(extent=10.0).write(st, x, depth=far, pose=torch.eye(4)[None], intrinsics=cam(1, (4, 4)))
    assert int(s2["out_of_extent"][0]) == 14 and int(s2["valid"].sum()) >= 1
    s3 = mk(max_depth=5.0).write(st, x, depth=far, pose=torch.eye(4)[None], intrinsics=cam(1, (4, 4)))
    assert int(s3["out_of_extent"][0]) == 0 and int(s3["valid"].sum()) == int(s2["valid"].sum())
    with pytest.raises(ValueError, match="extent"):
        PointFrameConfig(voxel_size=1e-6, extent=100.0).validate()
    with pytest.raises(ValueError, match="occlusion"):
        PointFrameConfig(occlusion="maybe").validate()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    mem = mk()
    g = torch.Generator().manual_seed(0)
    x, kw = mem.example_inputs(2, 30, g)
    first = torch.zeros(2, 30, dtype=torch.bool)
    first[:, 0] = True
    r_cpu, s_cpu = mem(mem.init_state(2), x, is_first=first, **kw)
    dev = torch.device("cuda")
    kw_gpu = {k: v.to(dev) for k, v in kw.items()}
    r_gpu, s_gpu = mem(mem.init_state(2, dev), x.to(dev), is_first=first.to(dev), **kw_gpu)
    assert torch.equal(r_cpu.source_ids, r_gpu.source_ids.cpu())
    assert torch.equal(r_cpu.extras["votes"], r_gpu.extras["votes"].cpu())
    assert torch.equal(s_cpu["keys"], s_gpu["keys"].cpu())


def test_bench_rows_smoke():
    from embodimem.bench import spatial_point_frame as bench

    lat = bench.latency_rows(3000, [16], reps=2, dev=torch.device("cpu"))
    assert [r["occlusion"] for r in lat] == ["zbuffer", "none"] and all(r["cached_points"] == 3000 for r in lat)
    rows = bench.bytes_rows([4, 8], hw=8, dev=torch.device("cpu"))
    assert {r["trajectory"] for r in rows} == {"loop", "explore", "out_and_back"}
    assert all(r["points"] <= r["observed_voxels"] for r in rows)
    table = bench.format_table({"rows": lat + rows})
    assert "retrieval" in table and "out_and_back" in table


def test_pixel_stride_back_projects_every_sth_pixel():
    poses = random_poses(1, seed=8)
    K = cam(1)
    depth = render_depth(ROOM, poses, K, HW)
    a = mk(pixel_stride=2).write(mk().init_state(1), torch.zeros(1, 1, 4), depth=depth, pose=poses, intrinsics=K)
    # the same pixels as a half-size image: pixel i there has centre i + 0.5 = (2i + 0.5 + 0.5) / 2
    K2 = K.clone()
    K2[:, :2, :2] /= 2
    K2[:, :2, 2] = (K[:, :2, 2] + 0.5) / 2
    b = mk().write(mk().init_state(1), torch.zeros(1, 1, 4), depth=depth[:, ::2, ::2].contiguous(), pose=poses,
                   intrinsics=K2)
    assert torch.equal(a["keys"], b["keys"])
    torch.testing.assert_close(a["xyz"], b["xyz"], atol=1e-5, rtol=0)
