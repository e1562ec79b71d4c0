"""Analytic scenes for tests and benchmarks: exact z-depth of a box room with box pillars, and camera paths.

World frame: right-handed, z up (metres). Cameras follow the OpenCV convention of ``embodimem.geometry``
(poses are camera-to-world; depth is z along the optical axis). A ray that hits nothing (a camera outside
the room looking away) gets depth 0, "no reading".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from embodimem.geometry import intrinsics_from_fov, look_at, pixel_grid, unproject

__all__ = ["Room", "example_stream", "explore_poses", "loop_poses", "render_depth"]

Box = tuple[tuple[float, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class Room:
    """The inside of the box [lo, hi] (metres) plus solid axis-aligned pillars ``boxes`` (each (lo, hi)).

    The default walls sit off round coordinates: a wall exactly on a voxel boundary splits its points
    between two voxel layers by float rounding, which no real scene does.
    """

    lo: tuple[float, float, float] = (-2.03, -1.97, -0.04)
    hi: tuple[float, float, float] = (2.07, 2.02, 2.47)
    boxes: Sequence[Box] = field(default_factory=tuple)


def render_depth(room: Room, pose: Tensor, intrinsics: Tensor, hw: tuple[int, int]) -> Tensor:
    """Exact z-depth [B,H,W] metres of ``room`` seen by cameras pose [B,4,4], K [B,3,3] (pixel centres at +0.5)."""
    B = pose.shape[0]
    H, W = hw
    dt, dev = pose.dtype, pose.device
    grid = pixel_grid(H, W, dtype=dt, device=dev).expand(B, H, W, 2)
    rays = unproject(grid, torch.ones(B, H, W, dtype=dt, device=dev), intrinsics.to(dt))  # z = 1: t is z-depth
    d = rays.reshape(B, -1, 3) @ pose[:, :3, :3].transpose(1, 2)
    o = pose[:, None, :3, 3].expand_as(d)
    inf = torch.full_like(d, math.inf)
    lo, hi = d.new_tensor(room.lo), d.new_tensor(room.hi)
    inside = ((o >= lo) & (o <= hi)).all(-1)
    t_wall = torch.where(d > 0, (hi - o) / d, torch.where(d < 0, (lo - o) / d, inf)).amin(-1)
    t = torch.where(inside, t_wall, torch.full_like(t_wall, math.inf))
    for blo, bhi in room.boxes:  # a handful of pillars: a loop over scene objects, not over points
        a, b = (d.new_tensor(blo) - o) / d, (d.new_tensor(bhi) - o) / d
        a, b = torch.nan_to_num(a, nan=-math.inf), torch.nan_to_num(b, nan=math.inf)
        t_near = torch.minimum(a, b).amax(-1)
        t_far = torch.maximum(a, b).amin(-1)
        hit = (t_near <= t_far) & (t_near > 0)
        t = torch.where(hit & (t_near < t), t_near, t)
    t = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
    return t.reshape(B, H, W)


def loop_poses(T: int, *, radius: float = 0.8, height: float = 1.2, step_rad: float = 2 * math.pi / 12,
               phase: float = 0.0, pitch: float = 0.0, center: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """Camera-to-world poses [T,4,4] on a horizontal circle, looking radially outward (z up), ``step_rad`` apart."""
    a = phase + step_rad * torch.arange(T, dtype=torch.float64)
    eye = torch.stack([center[0] + radius * a.cos(), center[1] + radius * a.sin(),
                       torch.full_like(a, height)], -1)
    look = torch.stack([a.cos(), a.sin(), torch.full_like(a, math.tan(pitch))], -1)
    return look_at(eye, eye + look, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).float()


def explore_poses(T: int, *, speed: float = 0.25, height: float = 1.2, y: float = 0.0,
                  sweep_rad: float = 1.0, sweep_period: int = 16, start_x: float = 0.5) -> Tensor:
    """Poses [T,4,4] moving along +x at ``speed`` m/step, yaw sweeping +-``sweep_rad`` around +x (a corridor walk)."""
    s = torch.arange(T, dtype=torch.float64)
    yaw = sweep_rad * torch.sin(2 * math.pi * s / sweep_period)
    eye = torch.stack([start_x + speed * s, torch.full_like(s, y), torch.full_like(s, height)], -1)
    look = torch.stack([yaw.cos(), yaw.sin(), torch.zeros_like(s)], -1)
    return look_at(eye, eye + look, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).float()


def example_stream(batch_size: int, steps: int, hw: tuple[int, int] = (8, 8), *, fov_deg: float = 90.0,
                   room: Room | None = None, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """A looping walk per env in a small room: (depth [B,T,H,W] metres, pose [B,T,4,4], intrinsics [B,T,3,3]).

    Each env gets a random start angle and a slightly different angular step (so laps do not repeat exactly).
    """
    room = room or Room(boxes=(((0.93, 0.88, -0.04), (1.31, 1.27, 2.47)),))
    u = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64)
    poses = torch.stack([loop_poses(steps, phase=float(2 * math.pi * u[b, 0]), pitch=-0.35,
                                    step_rad=2 * math.pi / (10 + 4 * float(u[b, 1])))
                         for b in range(batch_size)])  # setup only, not a hot path
    K = intrinsics_from_fov(hw[0], hw[1], fov_deg).expand(batch_size, steps, 3, 3).contiguous()
    depth = render_depth(room, poses.flatten(0, 1), K.flatten(0, 1), hw).reshape(batch_size, steps, *hw)
    return depth, poses, K
