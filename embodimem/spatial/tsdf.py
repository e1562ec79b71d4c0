"""open3d interoperation for the point-frame cache: cloud export (open3d / PLY), a TSDF mesh of the same frames
with open3d's VoxelBlockGrid, and the voxel-downsampling agreement check against ``voxel_down_sample``.

open3d is optional (``pip install embodimem[3d]``: open3d-cpu 0.20, which needs the Debian package
libusb-1.0-0); every function imports it on call and fails with an ImportError that says so. open3d 0.20's
ScalableTSDFVolume returns empty meshes, hence the tensor VoxelBlockGrid here.

Conventions: points and poses are world-frame metres, poses camera-to-world (OpenCV). open3d's integration
casts voxel centres to pixel (floor(u), floor(v)) -- the same pixel-centre-at-+0.5 convention as
``embodimem.geometry`` -- so intrinsics pass through unchanged; extrinsics are world-to-camera.
"""

from __future__ import annotations

import colorsys
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from embodimem.spatial.voxel_hash import voxel_downsample

__all__ = ["cloud_from_state", "colors_for_ids", "downsample_agreement", "open3d_voxel_down_sample",
           "require_open3d", "to_open3d_cloud", "tsdf_mesh", "write_ply"]


def require_open3d() -> Any:
    """Import open3d or raise an ImportError explaining how to install it."""
    try:
        import open3d
    except (ImportError, OSError) as e:  # OSError: a missing shared library such as libusb
        raise ImportError("embodimem.spatial.tsdf needs open3d: pip install 'embodimem[3d]' (open3d-cpu 0.20; on "
                          f"Debian/Ubuntu also apt-get install libusb-1.0-0). Import failed with: {e}") from e
    return open3d


def _np(x: Tensor | np.ndarray, dtype=np.float64) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)).astype(dtype, copy=False)


def cloud_from_state(state: dict[str, Tensor], row: int = 0) -> tuple[Tensor, Tensor]:
    """The held cloud of env ``row`` of a ``point_frame`` state: (points [M,3] metres, source frame ids int64 [M])."""
    valid = state["valid"][row]
    src = state["src"][row][valid]
    return state["xyz"][row][:, valid].T, state["kf_id"][row].gather(0, src)


def colors_for_ids(ids: Tensor | np.ndarray) -> np.ndarray:
    """A deterministic colour per integer id (golden-ratio hue walk) -> float64 [M,3] in [0, 1]."""
    ids = _np(ids, np.int64)
    return np.array([colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95) for i in ids.tolist()]
                    ).reshape(-1, 3)


def to_open3d_cloud(points: Tensor | np.ndarray, colors: Tensor | np.ndarray | None = None) -> Any:
    """An ``open3d.geometry.PointCloud`` of points [M,3] (metres), optional colours [M,3] in [0, 1]."""
    o3d = require_open3d()
    pts = _np(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"to_open3d_cloud: points must be [M,3], got {pts.shape}")
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    if colors is not None:
        col = _np(colors)
        if col.shape != pts.shape:
            raise ValueError(f"to_open3d_cloud: colors must be [M,3] like points {pts.shape}, got {col.shape}")
        pcd.colors = o3d.utility.Vector3dVector(col)
    return pcd


def write_ply(path: str | os.PathLike[str], points: Tensor | np.ndarray,
              colors: Tensor | np.ndarray | None = None) -> Path:
    """Write points [M,3] (+ colours) as a binary PLY atomically (temp file in the same folder, then rename)."""
    o3d = require_open3d()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".ply")
    os.close(fd)
    try:
        if not o3d.io.write_point_cloud(tmp, to_open3d_cloud(points, colors), write_ascii=False):
            raise OSError(f"open3d could not write {path}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def open3d_voxel_down_sample(points: Tensor | np.ndarray, voxel_size: float) -> np.ndarray:
    """open3d's ``voxel_down_sample`` centroids float64 [U,3] (its grid starts at min_bound - voxel_size / 2)."""
    return np.asarray(to_open3d_cloud(points).voxel_down_sample(voxel_size).points)


def downsample_agreement(points: Tensor, voxel_size: float) -> dict[str, float]:
    """Compare ``voxel_hash.voxel_downsample`` with open3d on points [M,3], on open3d's grid (same origin).

    Returns counts of both and the largest centroid difference (metres) after sorting both lexicographically.
    """
    pts = points.detach().to(torch.float64).cpu()
    origin = pts.amin(0) - voxel_size / 2  # open3d's voxel grid origin
    _, cent, _, n = voxel_downsample(pts[None], torch.ones(1, pts.shape[0], dtype=torch.bool), voxel_size, origin)
    ours = cent[0, : int(n[0])].numpy()
    theirs = open3d_voxel_down_sample(pts, voxel_size)
    out = {"n_ours": float(len(ours)), "n_open3d": float(len(theirs)), "max_abs_diff": float("inf")}
    if len(ours) == len(theirs):
        a = ours[np.lexsort(ours.T[::-1])]
        b = theirs[np.lexsort(theirs.T[::-1])]
        out["max_abs_diff"] = float(np.abs(a - b).max()) if len(a) else 0.0
    return out


def tsdf_mesh(depth: Tensor, pose: Tensor, intrinsics: Tensor, *, voxel_size: float = 0.05,
              trunc_voxels: float = 4.0, depth_max: float = 10.0, weight_threshold: float = 1.0,
              block_resolution: int = 8, block_count: int = 20_000) -> Any:
    """Fuse depth [T,H,W] (metres, 0 = none) seen from poses [T,4,4] (camera-to-world) with intrinsics [T,3,3]
    (or one [3,3]) into a TSDF (open3d VoxelBlockGrid) and return its ``open3d.geometry.TriangleMesh``."""
    o3d = require_open3d()
    o3c = o3d.core
    if depth.dim() != 3 or pose.shape != (depth.shape[0], 4, 4):
        raise ValueError(f"tsdf_mesh: expected depth [T,H,W] and pose [T,4,4], "
                         f"got {tuple(depth.shape)}, {tuple(pose.shape)}")
    K = intrinsics.expand(depth.shape[0], 3, 3) if intrinsics.dim() == 2 else intrinsics
    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight"), attr_dtypes=(o3c.float32, o3c.float32), attr_channels=((1,), (1,)),
        voxel_size=voxel_size, block_resolution=block_resolution, block_count=block_count)
    extr = torch.linalg.inv(pose.detach().to(torch.float64).cpu())  # world-to-camera
    for i in range(depth.shape[0]):  # frames are fused one by one (open3d's API), off the hot path
        img = o3d.t.geometry.Image(o3c.Tensor(_np(depth[i], np.float32)))
        k = o3c.Tensor(_np(K[i]))
        e = o3c.Tensor(extr[i].numpy())
        blocks = vbg.compute_unique_block_coordinates(img, k, e, 1.0, depth_max, trunc_voxels)
        vbg.integrate(blocks, img, k, e, 1.0, depth_max, trunc_voxels)
    return vbg.extract_triangle_mesh(weight_threshold=weight_threshold).to_legacy()
