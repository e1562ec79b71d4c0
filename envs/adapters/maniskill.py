"""ManiSkill3 adapter: one sensor camera's RGB-D with its pose and intrinsics, the flattened robot state.

Conventions converted (ManiSkill3 documentation, ``obs_mode="rgbd"``):

- ``obs["sensor_data"][cam]["rgb"]`` uint8 [B,H,W,3]; ``["depth"]`` int16 [B,H,W,1] in millimetres (0 = none).
- ``obs["sensor_param"][cam]["intrinsic_cv"]`` [B,3,3] (OpenCV K); ``["extrinsic_cv"]`` [B,3,4] world-to-camera
  in OpenCV axes; ``["cam2world_gl"]`` [B,4,4] camera-to-world in OpenGL axes (x right, y up, z back). We return
  the OpenCV camera-to-world pose; the two routes agree (tested).
- Everything is a torch tensor with a leading batch dim (here ``num_envs=1``); ``info["success"]`` is a bool
  tensor. State: ``obs["agent"]`` and ``obs["extra"]`` leaves concatenated in sorted-key order.

Rendering on CPU needs a Vulkan driver SAPIEN accepts: Debian 12's lavapipe (Mesa 22.3) is too old; Mesa >= 25
lavapipe from bookworm-backports works (see /work/shared/notes/simulators.md), or run on a GPU machine.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodimem.envs.adapters.common import TEXT_SPACE, require

__all__ = ["maniskill_depth_to_metres", "extrinsic_cv_to_pose", "cam2world_gl_to_opencv", "flatten_state",
           "to_numpy", "ManiSkillEnv"]

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
_HOW = ("pip install torch==2.13.0 mani-skill  (then, for CPU rendering, a Mesa >= 25 lavapipe Vulkan ICD: "
        "VK_ICD_FILENAMES=.../lvp_icd.json)")


def to_numpy(x: Any) -> np.ndarray:
    """torch tensor (any device) or array -> numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def maniskill_depth_to_metres(depth: Any) -> np.ndarray:
    """ManiSkill depth [...,H,W,1] or [...,H,W] int16 millimetres -> float32 [...,H,W] metres (<= 0 -> 0)."""
    d = to_numpy(depth)
    if not np.issubdtype(d.dtype, np.integer):
        raise ValueError(f"expected ManiSkill's integer millimetre depth, got {d.dtype}")
    if d.shape[-1] == 1:
        d = d[..., 0]
    return np.where(d > 0, d.astype(np.float32) / 1000.0, 0.0).astype(np.float32)


def extrinsic_cv_to_pose(extrinsic: Any) -> np.ndarray:
    """World-to-camera OpenCV extrinsics [...,3,4] -> OpenCV camera-to-world pose float32 [...,4,4]."""
    E = to_numpy(extrinsic).astype(np.float64)
    if E.shape[-2:] != (3, 4):
        raise ValueError(f"extrinsic: expected [...,3,4], got {E.shape}")
    R, t = E[..., :3, :3], E[..., :3, 3:]
    Rt = np.swapaxes(R, -1, -2)
    pose = np.zeros(E.shape[:-2] + (4, 4))
    pose[..., :3, :3] = Rt
    pose[..., :3, 3] = -(Rt @ t)[..., 0]
    pose[..., 3, 3] = 1.0
    return pose.astype(np.float32)


def cam2world_gl_to_opencv(cam2world_gl: Any) -> np.ndarray:
    """OpenGL camera-to-world [...,4,4] -> OpenCV camera-to-world float32 [...,4,4] (flip the camera's y and z)."""
    P = to_numpy(cam2world_gl).astype(np.float64)
    if P.shape[-2:] != (4, 4):
        raise ValueError(f"cam2world_gl: expected [...,4,4], got {P.shape}")
    return (P @ _GL_TO_CV).astype(np.float32)


def flatten_state(obs: dict[str, Any], keys: tuple[str, ...] = ("agent", "extra")) -> np.ndarray:
    """Concatenate every leaf of obs[k] for k in keys (sorted, depth-first) -> float32 [B, D]."""
    leaves: list[np.ndarray] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k in sorted(x):
                walk(x[k])
        else:
            a = to_numpy(x).astype(np.float32)
            leaves.append(a.reshape(a.shape[0], -1) if a.ndim >= 1 else a.reshape(1, 1))

    for k in keys:
        if k in obs:
            walk(obs[k])
    if not leaves:
        return np.zeros((1, 0), np.float32)
    return np.concatenate(leaves, axis=-1)


class ManiSkillEnv(gym.Env):
    """A ManiSkill3 task (e.g. 'PickCube-v1') with obs rgb, depth (m), pose, intrinsics, state, instruction."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str = "PickCube-v1", *, camera: str = "base_camera", height: int = 64, width: int = 64,
                 control_mode: str = "pd_ee_delta_pos", sim_backend: str = "physx_cpu", render_backend: str = "cpu",
                 instruction: str | None = None) -> None:
        require("mani_skill.envs", package="mani-skill", how=_HOW)  # registers the ManiSkill ids
        if task not in gym.registry:
            ms = sorted(k for k, v in gym.registry.items() if "mani_skill" in str(v.entry_point))
            raise ValueError(f"unknown ManiSkill task {task!r}; registered: {', '.join(ms) or '(none)'}")
        try:
            self._env = gym.make(task, obs_mode="rgbd", control_mode=control_mode, num_envs=1,
                                 sim_backend=sim_backend, render_backend=render_backend,
                                 sensor_configs=dict(width=width, height=height))
        except RuntimeError as e:
            raise RuntimeError(f"ManiSkill could not create {task!r} ({e}). On CPU this usually means no usable "
                               f"Vulkan device: install a Mesa >= 25 lavapipe ICD ({_HOW})") from e
        self.task, self.camera, self.height, self.width = task, camera, int(height), int(width)
        self.instruction = instruction or task.split("-")[0]
        u = self._env.unwrapped
        act = getattr(u, "single_action_space", self._env.action_space)
        self.action_space = spaces.Box(act.low.astype(np.float32), act.high.astype(np.float32), dtype=np.float32)
        self._state_dim: int | None = None
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (self.height, self.width, 3), np.uint8),
            "depth": spaces.Box(0.0, np.inf, (self.height, self.width), np.float32),
            "pose": spaces.Box(-np.inf, np.inf, (4, 4), np.float32),
            "intrinsics": spaces.Box(-np.inf, np.inf, (3, 3), np.float32),
            "state": spaces.Box(-np.inf, np.inf, (0,), np.float32),  # resized on the first reset
            "instruction": TEXT_SPACE,
        })

    def _obs(self, raw: dict[str, Any]) -> dict[str, Any]:
        sd, sp = raw["sensor_data"], raw["sensor_param"]
        if self.camera not in sd:
            raise ValueError(f"unknown camera {self.camera!r}; this task has: {', '.join(sd)}")
        state = flatten_state(raw)[0]
        if self._state_dim is None:
            self._state_dim = state.shape[0]
            self.observation_space.spaces["state"] = spaces.Box(-np.inf, np.inf, state.shape, np.float32)
        return {
            "rgb": to_numpy(sd[self.camera]["rgb"])[0].astype(np.uint8),
            "depth": maniskill_depth_to_metres(sd[self.camera]["depth"])[0],
            "pose": extrinsic_cv_to_pose(sp[self.camera]["extrinsic_cv"])[0],
            "intrinsics": to_numpy(sp[self.camera]["intrinsic_cv"])[0].astype(np.float32),
            "state": state,
            "instruction": self.instruction,
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        raw, info = self._env.reset(seed=seed, options=options)
        return self._obs(raw), {"is_success": bool(to_numpy(info.get("success", False)).reshape(-1)[0])}

    def step(self, action):
        a = np.asarray(action, dtype=np.float32)
        if a.shape != self.action_space.shape or not np.all(np.isfinite(a)) or not self.action_space.contains(a):
            raise ValueError(f"ManiSkillEnv.step: action {a.tolist()} is outside the action space {self.action_space}")
        raw, reward, terminated, truncated, info = self._env.step(a[None])
        out = {k: (to_numpy(v).reshape(-1)[0] if hasattr(v, "shape") and np.size(to_numpy(v)) == 1 else v)
               for k, v in info.items()}
        out["is_success"] = bool(to_numpy(info.get("success", False)).reshape(-1)[0])
        return (self._obs(raw), float(to_numpy(reward).reshape(-1)[0]), bool(to_numpy(terminated).reshape(-1)[0]),
                bool(to_numpy(truncated).reshape(-1)[0]), out)

    def close(self) -> None:
        self._env.close()
