"""octree memory: leaves equal a dict oracle fed by geometry.backproject_depth, the read layout (STM hit, long-term
fallback, nearest leaves) equals brute force, bad input fails loudly, bytes plateau on a loop, open3d export."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_voxel_store import RefStore, assert_store_equals

from embodimem.geometry import backproject_depth, intrinsics_from_fov, make_pose
from embodimem.memory import make_memory, memory_config_class
from embodimem.spatial.analytic_room import Room, explore_poses, loop_poses, render_depth


def octree(**kw):
    cfg = dataclasses.replace(memory_config_class("octree").example(), **kw)
    return make_memory(cfg).eval()


def stream(mem, B: int, T: int, seed: int = 0):
    x, kw = mem.example_inputs(B, T, torch.Generator().manual_seed(seed))
    return x, kw


def run(mem, x, kw, state=None):
    B, T = x.shape[:2]
    state = mem.init_state(B) if state is None else state
    first = torch.zeros(B, dtype=torch.bool)
    r = None
    for t in range(T):
        r, state = mem.step(state, x[:, t], is_first=first, **{k: v[:, t] for k, v in kw.items()})
    return r, state


def test_backproject_matches_geometry():
    mem = octree()
    _, kw = stream(mem, 2, 3)
    d, K, P = kw["depth"][:, 1], kw["intrinsics"][:, 1], kw["pose"][:, 1]
    ref, _ = backproject_depth(d.double(), K.double(), P.double())
    torch.testing.assert_close(mem.backproject(d, K, P), ref.reshape(2, -1, 3))


def test_token_grid_assigns_pixels_row_major():
    mem = octree()  # 4 tokens -> 2 x 2 grid
    assert mem.token_index(8, 8, torch.device("cpu")).view(8, 8)[::4, ::4].tolist() == [[0, 1], [2, 3]]
    m = octree(tokens_per_step=6, token_grid=(2, 3))
    idx = m.token_index(5, 7, torch.device("cpu")).view(5, 7)
    assert idx[:, 0].tolist() == [0, 0, 0, 3, 3] and idx[0].tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert octree(tokens_per_step=2).config.grid_shape() == (1, 2)
    with pytest.raises(ValueError, match="token_grid"):
        octree(tokens_per_step=6, token_grid=(2, 2))


SMALL_CUBE = dict(leaf_size=0.25, bits=4, center=(0.0, 0.0, 1.0))  # [-2,2)x[-2,2)x[-1,3): three walls fall outside


@pytest.mark.parametrize("capacity,cube", [(4096, {}), (64, {}), (4096, SMALL_CUBE)])
def test_leaves_equal_dict_oracle(capacity, cube):
    mem = octree(capacity=capacity, **cube)
    B, T = 2, 12
    x, kw = stream(mem, B, T)
    refs = [RefStore(mem.grid, capacity) for _ in range(B)]
    tok = mem.token_index(8, 8, torch.device("cpu"))
    state = mem.init_state(B)
    for t in range(T):
        kt = {k: v[:, t] for k, v in kw.items()}
        state = mem.write(state, x[:, t], **kt)
        pts, valid = backproject_depth(kt["depth"].double(), kt["intrinsics"].double(), kt["pose"].double())
        for b in range(B):
            refs[b].insert(pts[b].reshape(-1, 3).tolist(), x[b, t][tok].tolist(), valid[b].reshape(-1).tolist(), t)
    assert_store_equals(mem.store, state, refs)
    assert (capacity == 64) == bool((state["leaf_evicted"] > 0).all())


def test_read_falls_back_to_long_term_memory_below_tau():
    mem = octree(tau=1.5)  # cosine never reaches 1.5: every read is answered by leaves and nodes
    x, kw = stream(mem, 2, 10)
    r, state = run(mem, x, kw)
    q = F.normalize(x[:, -1].mean(1), dim=-1)
    k, C = mem.config.read_k, mem.config.capacity
    assert not bool(r.extras["stm_hit"].any())
    for b in range(2):
        pool = [(float(F.cosine_similarity(state["leaf_feat"][b, s], q[b], dim=0)), 0, s)
                for s in range(C) if state["valid"][b, s]]
        pool += [(float(F.cosine_similarity(state["node_emb"][b, n], q[b], dim=0)), 1, n)
                 for n in range(mem.config.max_nodes) if state["node_valid"][b, n]]
        top = sorted(pool, key=lambda e: (-e[0], e[1], e[2]))[:k]  # ties: leaves first, then lower slot
        assert r.extras["kind"][b, :k].tolist() == [1 + e[1] for e in top]
        for j, (cos, is_node, s) in enumerate(top):
            src = state["node_emb"] if is_node else state["leaf_feat"]
            first = state["node_first"] if is_node else state["leaf_first"]
            torch.testing.assert_close(r.tokens[b, j], src[b, s])
            assert r.weights[b, j].item() == pytest.approx(cos, abs=1e-5)
            assert r.source_ids[b, j] == first[b, s]


def test_read_uses_stm_when_similar_and_nearest_leaves_match_oracle():
    mem = octree(tau=-1.0, stm_radius=100.0)  # any in-range entry is a hit
    x, kw = stream(mem, 2, 10)
    r, state = run(mem, x, kw)
    k, L = mem.config.read_k, mem.config.read_leaves
    assert bool(r.extras["stm_hit"].all()) and bool((r.extras["kind"][:, :k] == 0).all())
    q = F.normalize(x[:, -1].mean(1), dim=-1)
    cam = kw["pose"][:, -1, :3, 3].double()
    centroid = mem.store.centroids(state)
    for b in range(2):
        cos = [(float(F.cosine_similarity(state["stm_emb"][b, s], q[b], dim=0)), s)
               for s in range(mem.config.stm_size) if state["stm_valid"][b, s]]
        top = sorted(cos, key=lambda e: (-e[0], e[1]))[:k]
        torch.testing.assert_close(r.tokens[b, :k], state["stm_emb"][b, [s for _, s in top]])
        assert r.extras["count"][b, :k].tolist() == state["stm_freq"][b, [s for _, s in top]].tolist()
        ctr = mem.store.centers(state)[b]
        near = sorted((float(((ctr[s] - cam[b]) ** 2).sum()), int(state["leaf_code"][b, s]), s)
                      for s in range(mem.config.capacity) if state["valid"][b, s])[:L]
        slots = [s for _, _, s in near]
        assert bool((r.extras["kind"][b, k:] == 3).all())
        torch.testing.assert_close(r.tokens[b, k:], state["leaf_feat"][b, slots])
        torch.testing.assert_close(r.positions[b, k:], centroid[b, slots].float())
        assert r.time_span[b, k:].tolist() == [[int(state["leaf_first"][b, s]), int(state["leaf_last"][b, s])]
                                               for s in slots]
        torch.testing.assert_close(r.weights[b, k:], torch.tensor([1 / (1 + math.sqrt(d)) for d, _, _ in near]))


def test_writing_the_same_place_twice_accumulates():
    mem = octree(dim=2, tokens_per_step=1)
    K = intrinsics_from_fov(4, 4, 60.0)[None]
    pose = make_pose(torch.eye(3), torch.zeros(3))[None]
    depth = torch.full((1, 4, 4), 1.1)
    state = mem.write(mem.init_state(1), torch.tensor([[[1.0, 0.0]]]), depth=depth, pose=pose, intrinsics=K)
    before = {k: v.clone() for k, v in state.items()}
    state2 = mem.write(state, torch.tensor([[[1.0, 0.2]]]), depth=depth, pose=pose, intrinsics=K)
    assert all(torch.equal(before[k], state[k]) for k in state)  # write is functional
    v = state2["valid"][0]
    assert torch.equal(state2["leaf_count"][0, v], 2 * state["leaf_count"][0, v])
    torch.testing.assert_close(state2["leaf_feat"][0, v], torch.tensor([1.0, 0.1]).expand(int(v.sum()), 2))
    assert int(state2["stm_freq"][0].max()) == 2 and int(state2["node_count"][0, 0]) == 2


def test_bad_geometry_raises_clear_errors():
    mem = octree()
    x, kw = stream(mem, 2, 1)
    kt = {k: v[:, 0] for k, v in kw.items()}
    st = mem.init_state(2)
    ok = torch.zeros(2, dtype=torch.bool)

    def step(**over):
        return mem.step(st, x[:, 0], is_first=ok, **{**kt, **over})

    for bad, msg in ((float("nan"), "depth row 1"), (-0.5, "depth row 1"), (float("inf"), "depth row 1")):
        d = kt["depth"].clone()
        d[1, 3, 3] = bad
        with pytest.raises(ValueError, match=msg):
            step(depth=d)
    scaled = kt["pose"].clone()
    scaled[0, :3, :3] *= 1.1
    mirrored = kt["pose"].clone()
    mirrored[1, :3, 0] *= -1  # det -1: a reflection is not a camera pose
    for p in (scaled, mirrored):
        with pytest.raises(ValueError, match="pose row .* not a rigid"):
            step(pose=p)
    K = kt["intrinsics"].clone()
    K[0, 0, 0] = 0.0
    with pytest.raises(ValueError, match="intrinsics row 0"):
        step(intrinsics=K)
    with pytest.raises(ValueError, match="write needs depth"):
        mem.step(st, x[:, 0], is_first=ok)
    with pytest.raises(ValueError, match="depth must be"):
        step(depth=kt["depth"][:, None])
    with pytest.raises(ValueError, match="cost"):
        step(cost=torch.tensor([1.0, -1.0]))


def test_points_outside_the_cube_are_counted_or_raise():
    mem = octree(**SMALL_CUBE)  # what is kept equals the oracle: test_leaves_equal_dict_oracle
    x, kw = stream(mem, 2, 4)
    _, state = run(mem, x, kw)
    assert bool((state["dropped_outside"] > 0).all()) and bool(state["valid"].any(1).all())
    assert mem.stats(state)["points_dropped_outside"] == float(state["dropped_outside"].sum())
    with pytest.raises(ValueError, match="outside the world cube"):
        run(octree(**SMALL_CUBE, outside="error"), x, kw)
    # a camera outside the cube with no in-cube reading writes no STM entry (and raises in "error" mode)
    far = make_pose(torch.eye(3), torch.tensor([50.0, 0.0, 0.0]))[None].expand(2, 4, 4)
    st = mem.write(mem.init_state(2), x[:, 0], depth=kw["depth"][:, 0], pose=far, intrinsics=kw["intrinsics"][:, 0])
    assert not bool(st["stm_valid"].any()) and not bool(st["valid"].any()) and bool(st["node_valid"].any())


def room_episode(poses: torch.Tensor, room: Room, dim: int = 8):
    """x [1,T,4,dim] tokens depending on the pose, and depth/pose/intrinsics [1,T,...] rendered in ``room``."""
    T = poses.shape[0]
    K = intrinsics_from_fov(16, 16, 90.0).expand(T, 3, 3).contiguous()
    depth = render_depth(room, poses, K, (16, 16))
    proj = torch.randn(3, dim, generator=torch.Generator().manual_seed(0))
    x = torch.sin(poses[:, :3, 3] @ proj)[:, None].expand(T, 4, dim)
    return x[None], {"depth": depth[None], "pose": poses[None], "intrinsics": K[None]}


def test_bytes_plateau_on_a_loop_and_grow_with_explored_area():
    mem = octree(capacity=20000, max_nodes=32, leaf_size=0.1)
    loop = room_episode(loop_poses(96, step_rad=2 * math.pi / 24), Room())  # the same 24 poses, four laps
    used = []
    state = mem.init_state(1)
    for lap in range(4):
        _, state = run(mem, loop[0][:, 24 * lap: 24 * (lap + 1)],
                       {k: v[:, 24 * lap: 24 * (lap + 1)] for k, v in loop[1].items()}, state)
        used.append(mem.stats(state)["bytes_used_per_env"])
    assert used[0] > 0 and used[1] == used[2] == used[3]  # revisits add no leaves, nodes or STM entries
    corridor = Room(lo=(-1.03, -1.52, -0.04), hi=(40.07, 1.49, 2.47))
    ex = room_episode(explore_poses(96, speed=0.25), corridor)
    grown, state = [], mem.init_state(1)
    for part in range(4):
        sl = slice(24 * part, 24 * (part + 1))
        _, state = run(mem, ex[0][:, sl], {k: v[:, sl] for k, v in ex[1].items()}, state)
        grown.append(mem.stats(state)["leaves_mean"])
    gains = [b - a for a, b in zip(grown, grown[1:])]
    assert all(g > 0 for g in gains) and max(gains) < 1.5 * min(gains)  # ~linear in distance walked
    assert int(state["leaf_evicted"].sum()) == 0


def test_state_is_fixed_shape_contiguous_and_stats_agree():
    mem = octree()
    x, kw = stream(mem, 2, 6)
    empty = mem.init_state(2)
    _, state = run(mem, x, kw)
    for k, v in state.items():
        assert v.shape == empty[k].shape and v.dtype == empty[k].dtype, k
        assert v.is_contiguous() and v.untyped_storage().nbytes() == v.numel() * v.element_size(), k
    s = mem.stats(state)
    assert s["leaves_mean"] == float(state["valid"].sum(1).double().mean())
    assert s["nodes_mean"] >= 1 and s["stm_entries_mean"] >= 1
    assert 0 < s["bytes_used_per_env"] < s["bytes_per_env"] == mem.bound_bytes(2) / 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    mem = octree()
    x, kw = stream(mem, 2, 6)
    r_cpu, s_cpu = run(mem, x, kw)
    r_gpu, s_gpu = run(mem.cuda(), x.cuda(), {k: v.cuda() for k, v in kw.items()}, mem.init_state(2, "cuda"))
    for k in s_cpu:
        torch.testing.assert_close(s_gpu[k].cpu(), s_cpu[k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r_gpu.tokens.cpu(), r_cpu.tokens, atol=1e-5, rtol=1e-5)


def test_open3d_export_round_trips(tmp_path):
    o3d = pytest.importorskip("open3d", reason="open3d (the [3d] extra) is not installed")
    from embodimem.spatial import open3d_io

    mem = octree(leaf_size=0.1, capacity=4096)
    x, kw = stream(mem, 2, 6)
    _, state = run(mem, x, kw)
    store = mem.store
    pcd = open3d_io.leaves_to_pointcloud(store, state, row=1)
    want = store.centroids(state)[1, state["valid"][1]]
    torch.testing.assert_close(torch.from_numpy(np.asarray(pcd.points)), want)
    colors = torch.rand(store.capacity, 3)
    path = open3d_io.write_leaves_ply(tmp_path / "leaves.ply", store, state, row=1, colors=colors, ascii=True)
    back = o3d.io.read_point_cloud(str(path))
    torch.testing.assert_close(torch.from_numpy(np.asarray(back.points)), want, atol=1e-5, rtol=0)
    assert len(back.colors) == len(want)
    # an open3d VoxelGrid with our leaf size has exactly our leaves as voxels
    vg = open3d_io.leaves_to_voxel_grid(store, state, row=1)
    ours = mem.grid.quantize(store.centers(state)[1, state["valid"][1]])[0]
    theirs = torch.from_numpy(np.array([v.grid_index for v in vg.get_voxels()]))
    assert sorted((ours - ours.min(0).values).tolist()) == sorted(theirs.tolist())
    octree_o3d = open3d_io.leaves_to_octree(store, state, row=1)  # built over the leaf centres
    centres = store.centers(state)[1, state["valid"][1]].numpy()
    assert all(octree_o3d.locate_leaf_node(c)[0] is not None for c in centres)
    with pytest.raises(ValueError, match="ply"):
        open3d_io.write_leaves_ply(tmp_path / "x.txt", store, state)


def test_bench_spatial_quick_writes_json_and_plot(tmp_path):
    pytest.importorskip("open3d", reason="open3d (the [3d] extra) is not installed")
    import json

    from embodimem.bench import spatial

    cfg = spatial.Config(quick=True, traj_capacity=16384, bytes_hw=16, repeats=1, single_reps=5, octree_queries=3,
                         frame_points=1000, point_frame=False, out=tmp_path)
    res = spatial.run(cfg, command="test")
    data = json.loads((tmp_path / "spatial.json").read_text())
    assert (tmp_path / "spatial.png").stat().st_size > 1000 and data["store"] == res["store"]
    row = data["store"][0]
    assert row["counts_agree_kdtree"] and row["counts_agree_octree"] and row["leaves"] > 0
    by = {(r["trajectory"], r["T"]): r for r in data["bytes"]}
    assert by["loop", 60]["used_bytes_per_env"] == by["loop", 40]["used_bytes_per_env"]  # a loop plateaus
    assert by["explore", 60]["used_bytes_per_env"] > by["explore", 40]["used_bytes_per_env"]
    assert all(r["leaves_evicted"] == 0 for r in data["bytes"])
    assert "N" in spatial.format_table(res)
