"""MineRL adapter (Minecraft): ``pov`` frames, an optional camera pose, a small discrete action set.

MineRL cannot run on embodimem's reference machines: building Minecraft (MCP-Reborn via Gradle) downloads from
hosts that are unreachable there, and minerl 0.4.4 pins gym 0.19, whose sdist no longer builds. ``embodimem
doctor`` says so. The env class runs where MineRL works; the conversions below are pure numpy and always tested.

Conventions converted (Minecraft / MineRL documentation):

- World: x east, y up, z south (right-handed), metres (1 block = 1 m). The player's eyes are 1.62 m above its
  feet position. Yaw in degrees: 0 = facing south (+z), 90 = west (-x), 180 = north, 270 = east. Pitch in
  degrees: positive looks down, +-90 straight down/up. The camera pose is available when the env reports
  ``location_stats`` (xpos, ypos, zpos, yaw, pitch); otherwise ``pose``/``intrinsics`` are omitted.
- Image: ``pov`` uint8 [H,W,3]; Minecraft's default vertical FOV is 70 degrees (square pixels). No depth.
- Actions: MineRL's dict action (forward/back/left/right/jump/sneak/sprint/attack buttons, ``camera`` =
  [pitch delta, yaw delta] degrees). :data:`MINERL_ACTIONS` maps Discrete(11) onto it.
- API: MineRL uses the old gym 4-tuple step API; it is converted to gymnasium's 5-tuple.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodimem.envs.adapters.common import (
    TEXT_SPACE,
    check_discrete_action,
    old_gym_reset,
    old_gym_step,
    pose_from_axes,
    require,
)

__all__ = ["MINERL_ACTIONS", "EYE_HEIGHT", "minecraft_camera_pose", "minerl_intrinsics", "discrete_to_minerl_action",
           "MineRLEnv"]

EYE_HEIGHT = 1.62
#: Discrete(11) -> (name, buttons pressed, camera delta as multiples of camera_step: (pitch, yaw)).
MINERL_ACTIONS: list[tuple[str, tuple[str, ...], tuple[int, int]]] = [
    ("noop", (), (0, 0)),
    ("forward", ("forward",), (0, 0)),
    ("back", ("back",), (0, 0)),
    ("left", ("left",), (0, 0)),
    ("right", ("right",), (0, 0)),
    ("jump_forward", ("forward", "jump"), (0, 0)),
    ("attack", ("attack",), (0, 0)),
    ("turn_left", (), (0, -1)),
    ("turn_right", (), (0, 1)),
    ("look_up", (), (-1, 0)),
    ("look_down", (), (1, 0)),
]
_WHY = ("Minecraft cannot be built on embodimem's reference machines: MineRL's Gradle build downloads from hosts "
        "that are unreachable there, and minerl 0.4.4 pins gym 0.19 whose sdist fails to build")
_HOW = "pip install --no-build-isolation gym==0.19.0 minerl==0.4.4  (needs JDK 8 and network access)"
# Success rules per env family: ("step_reward", r) = a single step rewarded >= r (Navigate's goal bonus);
# ("return", R) = episodic return >= R (Treechop: 64 logs).
_SUCCESS = {"MineRLNavigate": ("step_reward", 100.0), "MineRLTreechop": ("return", 64.0)}


def minecraft_camera_pose(x: float, y: float, z: float, yaw_deg: float, pitch_deg: float,
                          eye_height: float = EYE_HEIGHT) -> np.ndarray:
    """Player feet position (m) + yaw/pitch (degrees, Minecraft convention) -> OpenCV eye pose float32 [4,4]."""
    yaw, pitch = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    forward = np.array([-np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    right = np.array([-np.cos(yaw), 0.0, -np.sin(yaw)])  # facing south (+z), the right hand points west (-x)
    down = np.cross(forward, right)
    return pose_from_axes(right, down, forward, [x, y + eye_height, z]).astype(np.float32)


def minerl_intrinsics(height: int, width: int, fov_y_deg: float = 70.0) -> np.ndarray:
    """Pinhole K float32 [3,3] for a ``pov`` image with vertical FOV ``fov_y_deg`` (Minecraft default 70)."""
    if not 0 < fov_y_deg < 180:
        raise ValueError(f"fov_y_deg: expected (0, 180), got {fov_y_deg}")
    f = (height / 2.0) / np.tan(np.deg2rad(fov_y_deg) / 2.0)
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], dtype=np.float32)


def discrete_to_minerl_action(index: Any, noop: dict[str, Any], camera_step: float = 15.0) -> dict[str, Any]:
    """Discrete index (see :data:`MINERL_ACTIONS`) -> MineRL dict action, built on the env's ``noop`` dict."""
    i = check_discrete_action(index, len(MINERL_ACTIONS), "MineRL action", [a[0] for a in MINERL_ACTIONS])
    _, buttons, (dp, dy) = MINERL_ACTIONS[i]
    act = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in noop.items()}
    for b in buttons:
        if b not in act:
            raise ValueError(f"this MineRL env has no {b!r} button; its actions are {sorted(noop)}")
        act[b] = 1
    if dp or dy:
        if "camera" not in act:
            raise ValueError(f"this MineRL env has no camera action; its actions are {sorted(noop)}")
        act["camera"] = np.array([dp * camera_step, dy * camera_step], dtype=np.float32)
    return act


class MineRLEnv(gym.Env):
    """A MineRL env (old gym API) as a gymnasium env: obs rgb, instruction (+ pose, intrinsics with location_stats).

    ``info["is_success"]``: Navigate* -- the step that earns the goal bonus (reward >= 100); Treechop -- episodic
    return >= 64; other envs -- always False (MineRL defines no success for them).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, env_id: str = "MineRLNavigateDense-v0", *, camera_step: float = 15.0, fov_y: float = 70.0,
                 instruction: str | None = None) -> None:
        gym_old = require("gym", package="gym", how=_HOW, why_not_here=_WHY)
        require("minerl", package="minerl", how=_HOW, why_not_here=_WHY)  # registers the MineRL* ids
        self.env_id, self.camera_step, self.fov_y = env_id, float(camera_step), float(fov_y)
        self._env = gym_old.make(env_id)
        self._noop = self._env.action_space.noop()
        pov = self._env.observation_space["pov"]
        self.height, self.width = int(pov.shape[0]), int(pov.shape[1])
        self.instruction = instruction or env_id.replace("MineRL", "").split("-")[0].lower()
        self.action_space = spaces.Discrete(len(MINERL_ACTIONS))
        obs_space = {
            "rgb": spaces.Box(0, 255, (self.height, self.width, 3), np.uint8),
            "instruction": TEXT_SPACE,
        }
        if "location_stats" in getattr(self._env.observation_space, "spaces", {}):
            obs_space["pose"] = spaces.Box(-np.inf, np.inf, (4, 4), np.float32)
            obs_space["intrinsics"] = spaces.Box(-np.inf, np.inf, (3, 3), np.float32)
        self.observation_space = spaces.Dict(obs_space)
        self._rule = next((v for k, v in _SUCCESS.items() if env_id.startswith(k)), None)
        self._return = 0.0

    def _obs(self, raw: dict[str, Any]) -> dict[str, Any]:
        obs: dict[str, Any] = {"rgb": np.asarray(raw["pov"], np.uint8), "instruction": self.instruction}
        loc = raw.get("location_stats")
        if loc is not None:
            obs["pose"] = minecraft_camera_pose(float(loc["xpos"]), float(loc["ypos"]), float(loc["zpos"]),
                                                float(loc["yaw"]), float(loc["pitch"]))
            obs["intrinsics"] = minerl_intrinsics(self.height, self.width, self.fov_y)
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(int(seed))
        raw, info = old_gym_reset(self._env.reset())
        self._return = 0.0
        return self._obs(raw), {**info, "is_success": False}

    def step(self, action):
        act = discrete_to_minerl_action(action, self._noop, self.camera_step)
        raw, reward, terminated, truncated, info = old_gym_step(self._env.step(act))
        self._return += reward
        success = False
        if self._rule is not None:
            kind, thr = self._rule
            success = reward >= thr if kind == "step_reward" else (terminated or truncated) and self._return >= thr
        info["is_success"] = bool(success)
        return self._obs(raw), reward, terminated, truncated, info

    def close(self) -> None:
        self._env.close()
