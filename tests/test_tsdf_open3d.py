"""open3d interoperation of the point-frame cache: cloud/PLY export, VoxelBlockGrid TSDF mesh, downsampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("open3d", reason="open3d is optional (pip install 'embodimem[3d]'); these tests need it")

from embodimem.geometry import intrinsics_from_fov  # noqa: E402
from embodimem.memory import make_memory  # noqa: E402
from embodimem.memory.point_frame import PointFrameConfig  # noqa: E402
from embodimem.spatial import tsdf  # noqa: E402
from embodimem.spatial.analytic_room import Room, loop_poses, render_depth  # noqa: E402

ROOM = Room()


def room_frames(T: int = 12, hw=(48, 48)):
    poses = loop_poses(T, step_rad=2 * math.pi / T, pitch=-0.3)
    K = intrinsics_from_fov(hw[0], hw[1], 90.0).expand(T, 3, 3).contiguous()
    return render_depth(ROOM, poses, K, hw), poses, K


def wall_distance(v: np.ndarray) -> np.ndarray:
    """Distance (m) of points [M,3] to the nearest wall/floor/ceiling plane of ROOM."""
    lo, hi = np.array(ROOM.lo), np.array(ROOM.hi)
    return np.minimum(np.abs(v - lo), np.abs(v - hi)).min(1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_voxel_downsample_agrees_with_open3d(dtype):
    g = torch.Generator().manual_seed(0)
    pts = (torch.rand(4000, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0]) - 1.3).to(dtype)
    for voxel in (0.05, 0.1, 0.37):
        res = tsdf.downsample_agreement(pts, voxel)
        assert res["n_ours"] == res["n_open3d"] > 0
        assert res["max_abs_diff"] < 1e-9


def test_cloud_export_and_ply_round_trip(tmp_path):
    depth, poses, K = room_frames()
    mem = make_memory(PointFrameConfig(dim=4, tokens_per_step=1, voxel_size=0.1, extent=10.0, max_points=20_000))
    st = mem.init_state(1)
    for i in range(len(poses)):
        st = mem.write(st, torch.zeros(1, 1, 4), depth=depth[i:i + 1], pose=poses[i:i + 1], intrinsics=K[i:i + 1])
    pts, ids = tsdf.cloud_from_state(st, 0)
    assert len(pts) == int(st["valid"].sum()) > 100
    assert set(ids.tolist()) <= set(st["kf_id"][0][st["kf_valid"][0]].tolist())
    pcd = tsdf.to_open3d_cloud(pts, tsdf.colors_for_ids(ids))
    assert len(pcd.points) == len(pts) and pcd.has_colors()
    assert np.median(wall_distance(np.asarray(pcd.points))) < 0.05  # the cloud lies on the room's surfaces
    path = tsdf.write_ply(tmp_path / "sub" / "cloud.ply", pts, tsdf.colors_for_ids(ids))
    assert [p.name for p in path.parent.iterdir()] == ["cloud.ply"], "no temp file left behind"
    back = tsdf.require_open3d().io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(back.points), pts.double().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="colors"):
        tsdf.to_open3d_cloud(pts, np.zeros((3, 3)))


def test_tsdf_mesh_of_the_same_frames_lies_on_the_walls():
    depth, poses, K = room_frames()
    mesh = tsdf.tsdf_mesh(depth, poses, K, voxel_size=0.05)
    v = np.asarray(mesh.vertices)
    assert len(v) > 1000 and len(mesh.triangles) > 1000
    d = wall_distance(v)
    # our pixel-centre convention matches open3d's (no half-pixel shift): mm-level median error
    assert np.median(d) < 0.005 and np.percentile(d, 95) < 0.025
    with pytest.raises(ValueError, match="depth"):
        tsdf.tsdf_mesh(depth[0], poses, K)
