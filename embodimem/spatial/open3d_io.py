"""open3d interoperation for octree leaves: point clouds, PLY files, open3d Octree / VoxelGrid.

open3d is optional (``pip install 'embodimem[3d]'``: open3d-cpu 0.20, which needs the Debian package
libusb-1.0-0). Importing this module never needs it; each function imports it and raises ImportError with
the reason if it is missing -- there is no fallback. One env (``row``) is exported at a time; the points are
the leaf centroids (mean of the merged points, default) or the leaf centres, in metres (float64).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embodimem.spatial.voxel_store import State, VoxelStore

__all__ = ["leaf_points", "leaves_to_octree", "leaves_to_pointcloud", "leaves_to_voxel_grid", "require_open3d",
           "write_leaves_ply"]


def require_open3d() -> Any:
    """The ``open3d`` module, or ImportError saying why it cannot be used and how to install it."""
    try:
        import open3d
    except (ImportError, OSError) as e:  # OSError: a missing shared library such as libusb
        raise ImportError(f"open3d is needed for this export but cannot be imported ({e}); install it with "
                          "pip install 'embodimem[3d]' (open3d-cpu==0.20.0, needs apt package libusb-1.0-0)") from e
    return open3d


def leaf_points(store: VoxelStore, state: State, row: int = 0,
                where: str = "centroid") -> tuple[np.ndarray, np.ndarray]:
    """Occupied leaves of env ``row``: (points float64 [n,3] metres, slot indices int64 [n]) in Morton order."""
    if where not in ("centroid", "center"):
        raise ValueError(f"leaf_points: where must be 'centroid' or 'center', got {where!r}")
    B = state["valid"].shape[0]
    if not 0 <= row < B:
        raise ValueError(f"leaf_points: row {row} out of range for B={B}")
    pts = store.centroids(state) if where == "centroid" else store.centers(state)
    slots = state["valid"][row].nonzero()[:, 0]
    return pts[row, slots].detach().cpu().numpy(), slots.cpu().numpy()


def leaves_to_pointcloud(store: VoxelStore, state: State, row: int = 0, *, where: str = "centroid",
                         colors: torch.Tensor | np.ndarray | None = None) -> Any:
    """open3d PointCloud of env ``row``'s leaves; ``colors`` [cap,3] in [0,1] per slot (optional)."""
    o3d = require_open3d()
    pts, slots = leaf_points(store, state, row, where)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    if colors is not None:
        col = colors.detach().cpu().numpy() if isinstance(colors, torch.Tensor) else np.asarray(colors)
        if col.shape != (store.capacity, 3):
            raise ValueError(f"leaves_to_pointcloud: colors must be [capacity={store.capacity}, 3], got {col.shape}")
        if not (np.isfinite(col).all() and col.min(initial=0) >= 0 and col.max(initial=0) <= 1):
            raise ValueError("leaves_to_pointcloud: colors must be finite values in [0, 1]")
        pcd.colors = o3d.utility.Vector3dVector(col[slots].astype(np.float64))
    return pcd


def write_leaves_ply(path: str | os.PathLike[str], store: VoxelStore, state: State, row: int = 0, *,
                     where: str = "centroid", colors: torch.Tensor | np.ndarray | None = None,
                     ascii: bool = False) -> Path:
    """Write env ``row``'s leaves as a PLY point cloud, atomically (temp file + rename); returns the path.

    Binary PLY stores float32 coordinates (about 1 cm resolution 100 km from the origin); ``ascii=True``
    keeps more digits.
    """
    o3d = require_open3d()
    path = Path(path)
    if path.suffix.lower() != ".ply":
        raise ValueError(f"write_leaves_ply: path must end in .ply, got {path}")
    pcd = leaves_to_pointcloud(store, state, row, where=where, colors=colors)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".ply")
    os.close(fd)
    try:
        if not o3d.io.write_point_cloud(tmp, pcd, write_ascii=ascii):
            raise OSError(f"open3d could not write {tmp}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def leaves_to_octree(store: VoxelStore, state: State, row: int = 0, *, max_depth: int | None = None,
                     where: str = "center") -> Any:
    """open3d Octree over env ``row``'s leaf points; ``max_depth`` defaults to the depth whose leaves match
    ours over the points' bounding cube (capped at 21)."""
    o3d = require_open3d()
    pts, _ = leaf_points(store, state, row, where)
    if len(pts) == 0:
        raise ValueError(f"leaves_to_octree: env {row} holds no leaves")
    if max_depth is None:
        span = float((pts.max(0) - pts.min(0)).max()) + store.grid.leaf_size
        max_depth = min(21, max(1, int(np.ceil(np.log2(span / store.grid.leaf_size)))))
    octree = o3d.geometry.Octree(max_depth=max_depth)
    octree.convert_from_point_cloud(o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts)), size_expand=0.01)
    return octree


def leaves_to_voxel_grid(store: VoxelStore, state: State, row: int = 0) -> Any:
    """open3d VoxelGrid with our leaf size whose voxels are exactly env ``row``'s occupied leaves.

    The grid origin is the leaf-aligned corner just below the leaves, so open3d's voxel (i, j, k) is our leaf
    grid index minus that corner's index.
    """
    o3d = require_open3d()
    pts, _ = leaf_points(store, state, row, "center")
    if len(pts) == 0:
        raise ValueError(f"leaves_to_voxel_grid: env {row} holds no leaves")
    g = store.grid
    lo_idx = np.floor((pts.min(0) - np.asarray(g.origin)) / g.leaf_size)
    lo = np.asarray(g.origin) + lo_idx * g.leaf_size
    hi = lo + (np.floor((pts.max(0) - lo) / g.leaf_size) + 1) * g.leaf_size
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    return o3d.geometry.VoxelGrid.create_from_point_cloud_within_bounds(pcd, g.leaf_size, lo, hi)
