"""Scripted revisit trajectories: leave a place and come back, with depth and poses, for spatial memories.

``generate_revisit(seed)`` runs the privileged solver of ``embodimem/Revisit-v0``: a full look-around at the
start, the walk to the marker in the far room (the start room out of sight), another look-around, the walk
back and a last look-around at the start. It returns the frames with their depth, OpenCV camera-to-world pose
and intrinsics, and the revisit pairs: (early step, late step) with cameras within ``max_dist`` metres and
``max_angle_deg`` degrees of each other, separated by at least ``min_gap`` steps. ``covisibility(traj, i, j)``
measures how much of frame i's surface frame j sees again (by back-projecting depth), which is what a spatial
memory should retrieve at step j.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from embodimem import geometry as G
from embodimem.types import Frame

__all__ = ["RevisitTrajectory", "covisibility", "generate_revisit", "revisit_pairs"]


@dataclass
class RevisitTrajectory:
    """One scripted episode, stacked over time T (step 0 is the reset observation)."""

    rgb: np.ndarray  # uint8 [T,H,W,3]
    depth: np.ndarray  # float32 [T,H,W] metres (0 = no reading)
    pose: np.ndarray  # float32 [T,4,4] OpenCV camera-to-world
    intrinsics: np.ndarray  # float32 [T,3,3]
    actions: np.ndarray  # int64 [T]: the action that led to step t (-1 at t = 0)
    agent_pos: np.ndarray  # float32 [T,2] floor (x, z) metres
    phase: np.ndarray  # int64 [T]: 0 before the marker is touched, 1 after
    revisits: np.ndarray  # int64 [K,2]: (early step, late step) pairs seeing the same place again
    seed: int
    success: bool
    instruction: str

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def frames(self, device: torch.device | str | None = None) -> Iterator[Frame]:
        """One ``Frame`` (B=1) per step, ``is_first`` at step 0, ready for a memory's ``step``."""
        for t in range(len(self)):
            obs = {"rgb": self.rgb[t], "depth": self.depth[t], "pose": self.pose[t],
                   "intrinsics": self.intrinsics[t], "instruction": self.instruction}
            yield Frame.from_obs(obs, t=t, is_first=t == 0, device=device)


def revisit_pairs(pose: np.ndarray, min_gap: int = 30, max_dist: float = 0.3,
                  max_angle_deg: float = 20.0) -> np.ndarray:
    """(i, j) pairs int64 [K,2], i < j - min_gap, of camera poses [T,4,4] within max_dist m and max_angle_deg."""
    p = torch.as_tensor(np.asarray(pose), dtype=torch.float64)
    if p.ndim != 3 or p.shape[1:] != (4, 4):
        raise ValueError(f"revisit_pairs: pose must be [T,4,4], got {tuple(p.shape)}")
    T = p.shape[0]
    i, j = torch.triu_indices(T, T, offset=min_gap + 1)
    trans, ang = G.pose_distance(p[i], p[j])
    keep = (trans <= max_dist) & (ang <= max_angle_deg)
    return torch.stack([i[keep], j[keep]], 1).numpy().astype(np.int64)


def covisibility(traj: RevisitTrajectory, i: int, j: int, tol: float = 0.05) -> float:
    """Fraction of frame i's valid depth pixels that frame j sees again (in view, not occluded within tol m)."""
    d = torch.as_tensor(traj.depth[[i]])
    K = torch.as_tensor(traj.intrinsics[[i]])
    pts, valid = G.backproject_depth(d, K, torch.as_tensor(traj.pose[[i]]))
    pts = pts.reshape(1, -1, 3)[:, valid.reshape(-1)]
    if pts.shape[1] == 0:
        return 0.0
    H, W = traj.depth.shape[1:]
    vis = G.zbuffer_visibility(pts, torch.as_tensor(traj.intrinsics[[j]]), torch.as_tensor(traj.pose[[j]]),
                               (H, W), depth=torch.as_tensor(traj.depth[[j]]), tol=tol)
    return float(vis.float().mean())


def generate_revisit(seed: int = 0, *, env: gym.Env | None = None, look_around: bool = True,
                     obs_size: int = 64, min_gap: int = 30, max_dist: float = 0.3,
                     max_angle_deg: float = 20.0) -> RevisitTrajectory:
    """Run the scripted revisit tour with ``seed`` (in ``env``, default a new Revisit-v0 of obs_size^2 pixels)."""
    from embodimem.envs.miniworld.solvers import run_solver

    own = env is None
    if env is None:
        import embodimem.envs  # noqa: F401

        env = gym.make("embodimem/Revisit-v0", obs_width=obs_size, obs_height=obs_size)
    try:
        ro = run_solver(env, seed=seed, plan_kwargs={"look_around": look_around})
    finally:
        if own:
            env.close()
    obs = ro.observations
    pose = np.stack([o["pose"] for o in obs])
    return RevisitTrajectory(
        rgb=np.stack([o["rgb"] for o in obs]), depth=np.stack([o["depth"] for o in obs]), pose=pose,
        intrinsics=np.stack([o["intrinsics"] for o in obs]),
        actions=np.array([-1, *ro.actions], dtype=np.int64),
        agent_pos=np.stack([i["agent_pos"] for i in ro.infos]).astype(np.float32),
        phase=np.array([i["phase"] for i in ro.infos], dtype=np.int64),
        revisits=revisit_pairs(pose, min_gap, max_dist, max_angle_deg), seed=int(seed), success=ro.success,
        instruction=str(obs[0].get("instruction", "")))
