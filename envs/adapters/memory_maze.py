"""Memory Maze adapter (dm_control + MuJoCo): RGB-D, camera pose and intrinsics, target colour as instruction.

Memory Maze ships a dm_env task (``memory_maze.tasks.memory_maze_9x9(...)``) and old-gym ids
(``gym.make('memory_maze:MemoryMaze-9x9-v0')``, 4-tuple ``step``). This wrapper builds the dm_env task, because it
exposes ``physics`` (needed for depth and the camera pose); :func:`~embodimem.envs.adapters.common.old_gym_step`
converts the old-gym API when the gym ids are used instead.

Conventions converted:

- Camera ``walker/egocentric``: MuJoCo/OpenGL frame (looks down -z, y up) -> OpenCV pose; K from ``cam_fovy``
  (80 degrees). ``physics.render(depth=True)`` gives metres along the optical axis; "sky" (nothing hit, the far
  plane) becomes 0 = no reading.
- dm_control's ``Camera.matrices()`` (image @ focal @ rotation @ translation, with a *negative* fx and pixel
  centres at integer coordinates) -> our K (pixel centres at +0.5) and pose: :func:`dm_camera_matrices_to_opencv`.
- Actions: Discrete(6) = noop, forward, turn left, turn right, forward+left, forward+right.
- Memory Maze episodes end only at the time limit (``truncated``); ``info["is_success"]`` is True on the steps
  where a target is reached (reward > 0), the task's unit of success.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodimem.envs.adapters.common import TEXT_SPACE, check_discrete_action, require
from embodimem.envs.metaworld.camera import gl_camera_to_opencv_pose

__all__ = ["MEMORY_MAZE_ACTIONS", "MAZE_SIZES", "dm_camera_matrices_to_opencv", "far_depth_to_zero",
           "MemoryMazeEnv"]

MEMORY_MAZE_ACTIONS = ["noop", "forward", "turn_left", "turn_right", "forward_left", "forward_right"]
MAZE_SIZES = ("9x9", "11x11", "13x13", "15x15")
_HOW = 'pip install memory-maze gym "mujoco==3.3.0" "dm-control==1.0.28"  (gym is needed just to import memory_maze)'
_CAMERA = "walker/egocentric"


def dm_camera_matrices_to_opencv(image: Any, focal: Any, rotation: Any,
                                 translation: Any) -> tuple[np.ndarray, np.ndarray]:
    """dm_control ``Camera.matrices()`` (image [3,3], focal [3,4], rotation [4,4], translation [4,4])
    -> (K float32 [3,3] with pixel centres at +0.5, OpenCV camera-to-world pose float32 [4,4] in metres)."""
    image, focal = np.asarray(image, np.float64), np.asarray(focal, np.float64)
    rotation, translation = np.asarray(rotation, np.float64), np.asarray(translation, np.float64)
    f = focal[1, 1]
    if not (f > 0 and np.isclose(focal[0, 0], -f)):
        raise ValueError(f"focal: expected diag(-f, f, 1) with f > 0, got {focal[:3, :3].diagonal().tolist()}")
    K = np.array([[f, 0, image[0, 2] + 0.5], [0, f, image[1, 2] + 0.5], [0, 0, 1]], dtype=np.float32)
    R_c2w = rotation[:3, :3].T  # rotation holds world -> GL-camera axes as rows
    pos = -translation[:3, 3]
    return K, gl_camera_to_opencv_pose(pos, R_c2w).astype(np.float32)


def far_depth_to_zero(depth: Any, far: float) -> np.ndarray:
    """MuJoCo depth [H,W] metres -> float32 [H,W] with far-plane values (nothing hit) set to 0 = no reading."""
    d = np.asarray(depth, dtype=np.float32)
    return np.where(np.isfinite(d) & (d > 0) & (d < far * (1.0 - 1e-4)), d, 0.0).astype(np.float32)


def _find_physics(env: Any, depth: int = 12) -> Any:
    """The dm_control Physics behind memory_maze's wrapper chain (wrappers keep the inner env in .env/._env)."""
    for _ in range(depth):
        try:
            phys = env.physics  # composer.Environment, or a wrapper forwarding attribute access
        except Exception:  # noqa: BLE001 - wrappers raise all sorts of errors for unknown attributes
            phys = None
        if phys is not None:
            return phys
        nxt = getattr(env, "env", None) or getattr(env, "_env", None)
        if nxt is None:
            break
        env = nxt
    raise RuntimeError("could not find dm_control physics inside the Memory Maze env")


class MemoryMazeEnv(gym.Env):
    """Memory Maze (``size`` 9x9 ... 15x15) with obs rgb, depth, pose, intrinsics, instruction, target_color.

    ``reset(seed=s)`` rebuilds the task with ``seed=s`` (a new layout; memory-maze 1.0.3 API); later resets without a
    seed continue its stream. ``control_freq`` 4 Hz is the benchmark's setting (40 = the HiFreq variant).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, size: str = "9x9", *, resolution: int = 64, depth: bool = True, control_freq: float = 4.0,
                 good_visibility: bool = False) -> None:
        if size not in MAZE_SIZES:
            raise ValueError(f"unknown Memory Maze size {size!r}; valid sizes: {', '.join(MAZE_SIZES)}")
        self._tasks = require("memory_maze.tasks", package="memory-maze", how=_HOW)
        self.size, self.resolution, self.use_depth = size, int(resolution), bool(depth)
        self._kw = {"control_freq": control_freq, "good_visibility": good_visibility, "global_observables": True,
                    "target_color_in_image": False, "image_only_obs": False, "discrete_actions": True,
                    "camera_resolution": self.resolution}
        self._env = None
        r = self.resolution
        self.action_space = spaces.Discrete(len(MEMORY_MAZE_ACTIONS))
        obs = {
            "rgb": spaces.Box(0, 255, (r, r, 3), np.uint8),
            "pose": spaces.Box(-np.inf, np.inf, (4, 4), np.float32),
            "intrinsics": spaces.Box(-np.inf, np.inf, (3, 3), np.float32),
            "target_color": spaces.Box(0.0, 1.0, (3,), np.float32),
            "instruction": TEXT_SPACE,
        }
        if self.use_depth:
            obs["depth"] = spaces.Box(0.0, np.inf, (r, r), np.float32)
        self.observation_space = spaces.Dict(obs)

    def _build(self, seed: int) -> None:
        if self._env is not None:
            self._env.close()
        make = getattr(self._tasks, f"memory_maze_{self.size}")
        self._env = make(seed=seed, **self._kw)  # memory-maze 1.0.3 API
        self._phys = None

    def _obs(self, ts: Any) -> dict[str, Any]:
        if self._phys is None:
            self._phys = _find_physics(self._env)
            self._cam = self._phys.model.name2id(_CAMERA, "camera")
        p, cid, r = self._phys, self._cam, self.resolution
        raw = ts.observation
        color = np.asarray(raw["target_color"], np.float32).reshape(3)
        fovy = float(p.model.cam_fovy[cid])
        f = (r / 2.0) / np.tan(np.deg2rad(fovy) / 2.0)
        obs: dict[str, Any] = {
            "rgb": np.asarray(raw["image"], np.uint8),
            "pose": gl_camera_to_opencv_pose(p.data.cam_xpos[cid], p.data.cam_xmat[cid]).astype(np.float32),
            "intrinsics": np.array([[f, 0, r / 2.0], [0, f, r / 2.0], [0, 0, 1]], dtype=np.float32),
            "target_color": np.clip(color, 0.0, 1.0),
            "instruction": "go to the target of colour rgb({:.2f}, {:.2f}, {:.2f})".format(*color),
        }
        if self.use_depth:
            far = float(p.model.vis.map.zfar) * float(p.model.stat.extent)
            obs["depth"] = far_depth_to_zero(p.render(r, r, camera_id=cid, depth=True), far)
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._env is None or seed is not None:
            self._build(int(self.np_random.integers(2**31 - 1)) if seed is None else int(seed))
        ts = self._env.reset()
        self._phys = None  # composer recompiles the physics for every new maze: look it up again
        return self._obs(ts), {"is_success": False, "agent_pos": np.asarray(ts.observation["agent_pos"])}

    def step(self, action):
        if self._env is None:
            raise RuntimeError("MemoryMazeEnv.step called before reset")
        a = check_discrete_action(action, len(MEMORY_MAZE_ACTIONS), "MemoryMazeEnv.step", MEMORY_MAZE_ACTIONS)
        ts = self._env.step(a)
        reward = float(ts.reward or 0.0)
        last = bool(ts.last())
        terminated = last and float(ts.discount) == 0.0
        info = {"is_success": reward > 0, "agent_pos": np.asarray(ts.observation["agent_pos"])}
        return self._obs(ts), reward, terminated, last and not terminated, info

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
