"""MiniWorld -> embodimem observation dicts: rgb, metric depth, OpenCV camera-to-world pose, intrinsics.

Conventions (proved by tests/envs/test_miniworld_adapter.py, which back-projects one frame's depth and
re-projects it into a later frame):

- World frame: MiniWorld's own, in metres: x and z span the floor, y is up (right-handed). ``agent_pos`` in
  ``info`` is the floor point (x, z); a heading ``dir`` (radians) walks along (cos dir, 0, -sin dir).
- Camera: MiniWorld renders with ``gluLookAt(cam_pos, cam_pos + cam_dir, up=+y)``, an OpenGL camera (x right,
  y up, z backward). Its camera-to-world rotation is [s, u, -f] with f = cam_dir, s = f x up, u = s x f; the
  OpenCV pose (x right, y down, z forward) is that pose times diag(1, -1, -1, 1) = [s, -u, f].
- Image: row 0 is the top (MiniWorld flips GL's bottom-up read-back); pixel (i, j) has its centre at
  (j + 0.5, i + 0.5). ``gluPerspective(fov_y, W/H)`` gives fx = fy = (H/2) / tan(fov_y/2), (cx, cy) = (W/2, H/2).
- Depth: z along the optical axis in metres, float32 [H, W], read from the same render as rgb (16-bit z-buffer,
  near 0.04 m, far 100 m: resolution ~ z^2 / 2600 m, about 3 mm at 3 m). Pixels at the far plane (sky) are 0,
  meaning "no reading".
"""

from __future__ import annotations

import contextlib
import io
import math
import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = [
    "INSTRUCTION_CHARSET", "MiniWorldAdapter", "NEAR", "FAR", "camera_intrinsics", "camera_pose_opencv",
    "make_miniworld", "observation_space", "read_depth",
]

NEAR, FAR = 0.04, 100.0  # MiniWorld's gluPerspective planes (metres)
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.:;'-()"
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def camera_pose_opencv(cam_pos, cam_dir, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV camera-to-world pose float32 [4,4] of a gluLookAt camera at cam_pos [3] looking along cam_dir [3]."""
    f = np.asarray(cam_dir, dtype=np.float64)
    f = f / np.linalg.norm(f)
    s = np.cross(f, np.asarray(up, dtype=np.float64))
    s = s / np.linalg.norm(s)
    u = np.cross(s, f)
    gl = np.eye(4)
    gl[:3, 0], gl[:3, 1], gl[:3, 2], gl[:3, 3] = s, u, -f, cam_pos  # OpenGL camera: x right, y up, z backward
    return (gl @ _GL_TO_CV).astype(np.float32)


def camera_intrinsics(fov_y_deg: float, height: int, width: int) -> np.ndarray:
    """Pinhole K float32 [3,3] of gluPerspective(fov_y_deg, width/height) rendered to height x width pixels."""
    f = (height / 2.0) / math.tan(math.radians(fov_y_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def read_depth(frame_buffer) -> np.ndarray:
    """Metric z-depth float32 [H,W] (metres, 0 = no reading) of the last render into a MiniWorld FrameBuffer."""
    d = frame_buffer.get_depth_map(NEAR, FAR)[..., 0]
    return np.where(d >= 0.999 * FAR, 0.0, d).astype(np.float32)


def observation_space(height: int, width: int, instruction: bool = True) -> spaces.Dict:
    """The observation space: rgb uint8 [H,W,3], depth float32 [H,W] m, pose [4,4], intrinsics [3,3], instruction."""
    d: dict[str, spaces.Space] = {
        "rgb": spaces.Box(0, 255, (height, width, 3), np.uint8),
        "depth": spaces.Box(0.0, FAR, (height, width), np.float32),
        "pose": spaces.Box(-np.inf, np.inf, (4, 4), np.float32),
        "intrinsics": spaces.Box(-np.inf, np.inf, (3, 3), np.float32),
    }
    if instruction:
        d["instruction"] = spaces.Text(max_length=128, min_length=0, charset=INSTRUCTION_CHARSET)
    return spaces.Dict(d)


def build_observation(env, rgb: np.ndarray, instruction: str | None) -> dict[str, Any]:
    """Observation dict of a MiniWorldEnv right after ``rgb`` was rendered into ``env.obs_fb``."""
    a = env.agent
    obs = {
        "rgb": rgb,
        "depth": read_depth(env.obs_fb),
        "pose": camera_pose_opencv(a.cam_pos, a.cam_dir),
        "intrinsics": camera_intrinsics(a.cam_fov_y, rgb.shape[0], rgb.shape[1]),
    }
    if instruction is not None:
        obs["instruction"] = instruction
    return obs


class MiniWorldAdapter(gym.Wrapper):
    """Wrap a stock MiniWorld env (``MiniWorld-*-v0``) to emit embodimem observation dicts.

    Keeps the wrapped env's actions. ``info`` gains ``is_success`` (terminated with positive reward: MiniWorld
    tasks end with a reward when solved), ``agent_pos`` float32 [2] (x, z) and ``agent_dir`` (radians).
    """

    def __init__(self, env: gym.Env, instruction: str = ""):
        super().__init__(env)
        u = env.unwrapped
        if not hasattr(u, "obs_fb") or not hasattr(u, "agent"):
            raise ValueError(f"MiniWorldAdapter: {type(u).__name__} is not a MiniWorld env")
        if any(c not in INSTRUCTION_CHARSET for c in instruction):
            raise ValueError(f"MiniWorldAdapter: instruction {instruction!r} has characters outside "
                             f"{INSTRUCTION_CHARSET!r}")
        self.instruction = instruction
        self.observation_space = observation_space(u.obs_fb.height, u.obs_fb.width)

    def _obs(self, rgb) -> dict[str, Any]:
        return build_observation(self.env.unwrapped, np.asarray(rgb["obs"] if isinstance(rgb, dict) else rgb),
                                 self.instruction)

    def _info(self, info: dict, success: bool) -> dict:
        a = self.env.unwrapped.agent
        return {**info, "is_success": bool(success), "agent_pos": np.array([a.pos[0], a.pos[2]], np.float32),
                "agent_dir": float(a.dir)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset; returns (observation dict, info)."""
        obs, info = self.env.reset(seed=seed, options=options)
        return self._obs(obs), self._info(info, False)

    def step(self, action):
        """Step; returns (observation dict, reward, terminated, truncated, info)."""
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is outside the action space {self.action_space}")
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._obs(obs), reward, terminated, truncated, self._info(info, terminated and reward > 0)


def make_miniworld(env_name: str = "MiniWorld-OneRoom-v0", obs_width: int = 64, obs_height: int = 64,
                   **kwargs: Any) -> MiniWorldAdapter:
    """A stock MiniWorld env (headless) wrapped by ``MiniWorldAdapter``; kwargs go to its constructor."""
    from embodimem.envs.miniworld.headless import import_miniworld

    import_miniworld()
    if env_name not in gym.registry or not env_name.startswith("MiniWorld-"):
        valid = sorted(k for k in gym.registry if k.startswith("MiniWorld-"))
        raise ValueError(f"unknown MiniWorld env {env_name!r}; valid: {', '.join(valid)}")
    with contextlib.redirect_stdout(io.StringIO()):  # MiniWorld prints its MSAA fallback per frame buffer
        env = gym.make(env_name, obs_width=obs_width, obs_height=obs_height, window_width=max(64, obs_width),
                       window_height=max(64, obs_height), disable_env_checker=True, **kwargs)
    return MiniWorldAdapter(env)
