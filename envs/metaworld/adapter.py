"""Meta-World 3.x tasks as gymnasium envs with embodimem's observation convention (RGB-D, pose, intrinsics).

Observation dict (primary camera = ``cameras[0]``):

- ``rgb`` uint8 [H,W,3]; ``depth`` float32 [H,W] metres along the optical axis (0 = nothing hit), absent when
  ``depth=False``; ``pose`` float32 [4,4] OpenCV camera-to-world (metres); ``intrinsics`` float32 [3,3] pixels;
- ``instruction`` str (see :mod:`.instructions`); ``state`` float32 [39], Meta-World's proprioceptive + object
  state (hand xyz, gripper opening, two objects' xyz + quaternion, the previous step's 18 values, goal xyz -- the
  goal is zeros when ``goal_observable=False``);
- ``cameras`` (only with more than one camera): {name: {rgb, depth, pose, intrinsics}} for every camera.

Actions: float32 [4] in [-1, 1] (end-effector xyz delta, gripper effort); anything else raises ValueError.
Reward: Meta-World's shaped reward in [0, 10]. ``info["is_success"]`` is Meta-World's ``info["success"]`` at this
step; ``terminate_on_success`` ends the episode on the first success. Episodes are truncated after
``max_episode_steps`` (Meta-World's horizon is 500).
Seeding: ``reset(seed=s)`` reseeds Meta-World's own generator, so object and goal placement is a function of s;
later resets without a seed continue that stream.

Vector envs: the GL context is created at the first render, so ``AsyncVectorEnv`` (which builds one env in the
parent before forking) works with the default fork context. A process that has already rendered must use
``context="spawn"`` or ``"forkserver"``: EGL state does not survive ``fork``.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodimem.envs.adapters.common import TEXT_SPACE
from embodimem.envs.metaworld.camera import RGBDRenderer, camera_id
from embodimem.envs.metaworld.instructions import instruction_for

__all__ = ["MetaWorldEnv", "STATE_DIM", "check_action", "metaworld_env_class"]

STATE_DIM = 39
META_WORLD_HORIZON = 500


def metaworld_env_class(task: str) -> type:
    """The Meta-World v3 env class for a task name; unknown names raise ValueError listing the valid ones."""
    try:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    except ImportError as e:  # pragma: no cover - metaworld is installed in CI
        raise ImportError("Meta-World is not installed: pip install 'metaworld>=3' (brings mujoco 3.3.0)") from e
    if task not in ALL_V3_ENVIRONMENTS:
        raise ValueError(f"unknown Meta-World task {task!r}; valid tasks: {', '.join(sorted(ALL_V3_ENVIRONMENTS))}")
    return ALL_V3_ENVIRONMENTS[task]


def check_action(action: Any, space: spaces.Box, who: str) -> np.ndarray:
    """Validate an action against a Box space -> float32 array; wrong shape, NaN or out of bounds raise ValueError."""
    a = np.asarray(action, dtype=np.float32)
    if a.shape != space.shape:
        raise ValueError(f"{who}: action has shape {a.shape}, the action space is {space} (shape {space.shape})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{who}: action {a.tolist()} has non-finite values")
    if np.any(a < space.low - 1e-6) or np.any(a > space.high + 1e-6):
        raise ValueError(f"{who}: action {a.tolist()} is outside the action space {space}; clip it to [-1, 1]")
    return a


def _camera_space(h: int, w: int, depth: bool) -> spaces.Dict:
    d = {
        "rgb": spaces.Box(0, 255, (h, w, 3), np.uint8),
        "pose": spaces.Box(-np.inf, np.inf, (4, 4), np.float32),
        "intrinsics": spaces.Box(-np.inf, np.inf, (3, 3), np.float32),
    }
    if depth:
        d["depth"] = spaces.Box(0.0, np.inf, (h, w), np.float32)
    return spaces.Dict(d)


class MetaWorldEnv(gym.Env):
    """A Meta-World v3 task with RGB-D, camera pose and intrinsics from MuJoCo (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}  # frame_skip 5 x 2.5 ms physics step

    def __init__(
        self,
        task: str = "pick-place-v3",
        *,
        cameras: tuple[str, ...] | list[str] | str = ("corner4",),
        height: int = 64,
        width: int = 64,
        depth: bool = True,
        upright: bool = True,
        goal_observable: bool = True,
        max_episode_steps: int = META_WORLD_HORIZON,
        terminate_on_success: bool = False,
        instruction: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(cameras, str):
            cameras = (cameras,)
        self.cameras = tuple(cameras)
        if not self.cameras:
            raise ValueError("cameras: need at least one camera name")
        if not (isinstance(max_episode_steps, int) and 0 < max_episode_steps <= META_WORLD_HORIZON):
            raise ValueError(
                f"max_episode_steps: expected an int in [1, {META_WORLD_HORIZON}], got {max_episode_steps!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        self.task = task
        self.height, self.width = int(height), int(width)
        self.use_depth = bool(depth)
        self.max_episode_steps = max_episode_steps
        self.terminate_on_success = bool(terminate_on_success)
        self.render_mode = render_mode
        self.instruction = instruction if instruction is not None else self._default_instruction(task)

        self._mw = self._make_sim(task)
        mw = self._mw
        mw._partially_observable = not goal_observable
        try:  # a cached_property that depends on _partially_observable; absent until first used
            del mw.sawyer_observation_space
        except AttributeError:
            pass
        mw._set_task_called = True  # we drive placement through Meta-World's seeded random vector instead
        mw._freeze_rand_vec = False
        mw.seeded_rand_vec = True
        mw.max_path_length = max_episode_steps

        self.upright = bool(upright)
        # The GL context is created on first use, not here: EGL is not fork-safe, and AsyncVectorEnv builds one
        # env in the parent process (to read its spaces) before forking the workers.
        self._renderer_obj: RGBDRenderer | None = None
        for cam in self.cameras:
            camera_id(mw.model, cam)  # unknown camera -> ValueError now, not at the first reset

        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        cam_space = _camera_space(self.height, self.width, self.use_depth)
        obs = dict(cam_space.spaces)
        obs["instruction"] = TEXT_SPACE
        obs["state"] = spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
        if len(self.cameras) > 1:
            obs["cameras"] = spaces.Dict(
                {c: _camera_space(self.height, self.width, self.use_depth) for c in self.cameras})
        self.observation_space = spaces.Dict(obs)
        self._steps = 0
        self._seeded = False
        self._last_obs: dict[str, Any] | None = None

    # ----------------------------------------------------------------- hooks for subclasses

    def _default_instruction(self, task: str) -> str:
        return instruction_for(task)

    def _make_sim(self, task: str):
        """Construct the underlying Meta-World env (subclasses may edit the model)."""
        return metaworld_env_class(task)(width=self.width, height=self.height)

    def _extra_info(self) -> dict[str, Any]:
        return {}

    # ----------------------------------------------------------------- gymnasium API

    @property
    def _renderer(self) -> RGBDRenderer:
        if self._renderer_obj is None:
            self._renderer_obj = RGBDRenderer(self._mw.model, self.height, self.width, upright=self.upright)
        return self._renderer_obj

    @property
    def sim(self):
        """The wrapped Meta-World env (``.model``, ``.data`` for MuJoCo access)."""
        return self._mw

    def camera_obs(self, camera: str) -> dict[str, np.ndarray]:
        """{rgb uint8 [H,W,3], depth float32 [H,W] m (if enabled), pose float32 [4,4], intrinsics float32 [3,3]}."""
        r, d = self._renderer, self._mw.data
        rgb, depth = r.render(d, camera, depth=self.use_depth)
        out = {"rgb": rgb, "pose": r.pose(d, camera), "intrinsics": r.intrinsics(camera)}
        if self.use_depth:
            out["depth"] = depth
        return out

    def _obs(self, state: np.ndarray) -> dict[str, Any]:
        views = {c: self.camera_obs(c) for c in self.cameras}
        obs: dict[str, Any] = dict(views[self.cameras[0]])
        obs["instruction"] = self.instruction
        obs["state"] = np.asarray(state, dtype=np.float32)
        if len(self.cameras) > 1:
            obs["cameras"] = views
        self._last_obs = obs
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            # Meta-World samples object/goal placement from its own np_random: derive it from ours.
            self._mw.seed(int(self.np_random.integers(2**31 - 1)) if seed is None else int(seed))
            self._seeded = True
        self._steps = 0
        state, _ = self._mw.reset()
        info = {"is_success": False, "task": self.task, **self._extra_info()}
        return self._obs(state), info

    def step(self, action):
        if self._last_obs is None:
            raise RuntimeError(f"{type(self).__name__}.step called before reset")
        a = check_action(action, self.action_space, f"{type(self).__name__}.step")
        if self._steps >= self.max_episode_steps:
            raise RuntimeError(f"{type(self).__name__}.step: episode already truncated; call reset()")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state, reward, _, _, mw_info = self._mw.step(a)
        self._steps += 1
        success = bool(mw_info.get("success", 0.0))
        info = {k: float(v) for k, v in mw_info.items()}
        info.update(is_success=success, task=self.task, **self._extra_info())
        terminated = success and self.terminate_on_success
        truncated = self._steps >= self.max_episode_steps and not terminated
        return self._obs(state), float(reward), terminated, truncated, info

    def render(self):
        """RGB uint8 [H,W,3] from the primary camera (render_mode 'rgb_array')."""
        if self._last_obs is None:
            raise RuntimeError("render called before reset")
        return self._last_obs["rgb"]

    def close(self) -> None:
        if getattr(self, "_renderer_obj", None) is not None:
            self._renderer_obj.close()
            self._renderer_obj = None
        if getattr(self, "_mw", None) is not None:
            self._mw.close()
            self._mw = None
