"""Hot-path camera kernels of the point-frame memory: ``embodimem.geometry`` without argument checks and tuned
for small per-step inputs and 10^5-point clouds on CPU (tests/test_memory_point_frame.py checks them against
``embodimem.geometry``). Same conventions: OpenCV cameras, camera-to-world poses, pixel centres at +0.5.

Two CPU facts shape them: ``torch.where`` on large tensors is ~50x slower than ``clamp``/``mul`` here, and a
batched matmul wakes the intra-op thread pool, which on a loaded machine costs milliseconds even for tiny
inputs -- so tiny products are broadcast multiplies and masks are arithmetic.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["NEAR", "RIGID_ATOL", "backproject", "mm3", "not_rigid", "project", "relative"]

RIGID_ATOL = 1e-3  # the tolerance of Frame.validate: float32 simulator poses drift by ~1e-6
NEAR = 1e-6  # metres: points with z <= NEAR (behind or on the camera plane) are never in view


def mm3(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for tiny [...,3,3] matrices as a broadcast product: no intra-op thread pool, whose wake-up on a
    loaded CPU costs milliseconds (a batched matmul can take ~10 ms here with 2 threads)."""
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)


def not_rigid(pose: Tensor) -> Tensor:
    """Bool [B]: pose [B,4,4] is not rigid (R^T R != I, det R <= 0, last row != [0,0,0,1] or non-finite)."""
    R = pose[:, :3, :3]
    orth = (mm3(R.transpose(1, 2), R) - torch.eye(3, device=pose.device)).abs().amax((1, 2))
    last = (pose[:, 3] - pose.new_tensor([0.0, 0.0, 0.0, 1.0])).abs().amax(1)
    det = (torch.linalg.cross(R[..., 0], R[..., 1], dim=-1) * R[..., 2]).sum(-1)
    return ~((orth <= RIGID_ATOL) & (last <= RIGID_ATOL) & (det > 0))  # NaN compares False -> not rigid


def project(xyz: Tensor, pose: Tensor, K: Tensor, hw: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """World points xyz [B,3,P] -> (u, v pixels, z metres, in_view) [B,P]; pose [B,4,4] camera-to-world, K [B,3,3].

    Points are stored coordinate-major ([B,3,P]): the projection is one [3,3]x[3,P] matmul per env and every
    later op reads contiguous rows, ~5x faster on 10^5 points than the [B,P,3] layout on CPU.
    """
    M = mm3(K, pose[:, :3, :3].transpose(1, 2))  # K R^T: (u z, v z, z) = K R^T (p - t); K's last row is [0,0,1]
    p = xyz - pose[:, :3, 3:]
    if p.shape[2] * 9 < 32768:  # below the intra-op grain: a broadcast product (one thread, no pool wake-up)
        uvz = (M.unsqueeze(-1) * p.unsqueeze(1)).sum(2)
    else:
        uvz = torch.bmm(M, p)
    z = uvz[:, 2]
    zs = z.clamp(min=NEAR)  # keeps u, v finite behind the camera (torch.where is ~50x slower than clamp here)
    u, v = uvz[:, 0] / zs, uvz[:, 1] / zs
    return u, v, z, (z > NEAR) & (u >= 0) & (u < hw[1]) & (v >= 0) & (v < hw[0])


def backproject(depth: Tensor, pose: Tensor, K: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """Every stride-th pixel of depth [B,H,W] (centres at +0.5) -> world points [B,M,3], valid (depth>0) [B,M]."""
    B, H, W = depth.shape
    d = depth[:, ::stride, ::stride]
    u = torch.arange(0, W, stride, device=depth.device, dtype=depth.dtype) + 0.5
    v = torch.arange(0, H, stride, device=depth.device, dtype=depth.dtype) + 0.5
    y = (v[None, :, None] - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None]  # [B,H',1]
    x = (u[None, None, :] - K[:, 0, 2, None, None] - K[:, 0, 1, None, None] * y) / K[:, 0, 0, None, None]
    cam = torch.stack([x * d, y * d, d], -1).reshape(B, -1, 3)
    world = (cam.unsqueeze(-1) * pose[:, None, :3, :3].transpose(-1, -2)).sum(-2)  # R cam, broadcast (no pool)
    return world + pose[:, None, :3, 3], (d > 0).reshape(B, -1)


def relative(pose: Tensor, other: Tensor) -> Tensor:
    """inverse(pose) @ other for rigid poses [...,4,4]: ``other``'s camera in ``pose``'s camera frame."""
    Rt = pose[..., :3, :3].transpose(-1, -2)
    dt = (Rt * (other[..., None, :3, 3] - pose[..., None, :3, 3])).sum(-1, keepdim=True)  # R^T (t_o - t)
    top = torch.cat([mm3(Rt, other[..., :3, :3]), dt], -1)
    return torch.cat([top, other[..., 3:, :]], -2)
