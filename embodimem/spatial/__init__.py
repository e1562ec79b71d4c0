"""Geometry-indexed memory building blocks, batched over envs (leading dim B) in pure torch.

- ``morton``: 21-bit-per-axis Morton codes and ``MortonGrid`` (world metres <-> leaf cells, levels).
- ``voxel_store``: ``VoxelStore``, fixed-capacity sorted leaf slots with exact radius/kNN/box/frustum queries.
- ``topology``: ``TopologyGraph``, semantic place graph with traversal edges and shortest paths.
- ``stm``: ``ShortTermMemory``, keyed entries relative to graph nodes with LFU-recency eviction.
- ``open3d_io``: export of leaves to open3d point clouds / PLY / Octree / VoxelGrid (open3d optional).
The ``octree`` memory (embodimem.memory.octree) composes the first four.
"""

from embodimem.spatial.morton import MAX_BITS, MortonGrid
from embodimem.spatial.stm import ShortTermMemory
from embodimem.spatial.topology import TopologyGraph
from embodimem.spatial.voxel_store import VoxelStore

__all__ = ["MAX_BITS", "MortonGrid", "ShortTermMemory", "TopologyGraph", "VoxelStore"]
