"""ViZDoom adapter: RGB, approximate depth, camera pose from game variables, scenario-based success.

Conventions converted (ViZDoom / Doom documentation):

- World: Doom map units, x east, y north, z up (right-handed). We report metres with the common convention of
  32 map units per metre (the 56-unit-tall player is ~1.75 m); change ``units_per_metre`` if you prefer another.
- Camera: game variables ``CAMERA_POSITION_X/Y/Z`` (eye position) and ``CAMERA_ANGLE``/``CAMERA_PITCH`` (degrees;
  angle 0 = east, counter-clockwise, 90 = north; pitch > 0 looks down, Doom's sign), ``CAMERA_FOV`` (horizontal
  FOV, degrees, default 90). Without the camera variables (ViZDoom < 1.1.7) ``POSITION_*`` + 41 units (Doom's
  view height) and ``ANGLE``/``PITCH`` are used. Pixels are treated as square.
- Depth: ViZDoom's depth buffer is uint8 and *not metric*: larger = farther, saturating at 255. We convert it
  linearly with ``depth_units_per_level`` map units per level. The default 8.2 is an approximate calibration:
  ray-casting the horizon row against the blocking walls of ``health_gathering`` (vizdoom 1.3.2, 160x120, 600
  readings, levels 0-55) fits z = 8.2 * level - 1.8 map units with a 14% median relative error; in maps with
  steps and two-sided lines the relation is looser. ``obs['depth_raw']`` keeps the uint8 values; calibrate for
  your map before using depth metrically.
- Actions: Discrete(n) where action i presses the scenario's i-th available button (one-hot).
- Success, per scenario (``SUCCESS_RULES``): "goal" scenarios (my_way_home, basic, deadly_corridor,
  predict_position) succeed when the episode ends before the timeout with the player alive; "survive"
  scenarios (defend_the_center, defend_the_line, health_gathering(_supreme), take_cover) when the player is alive
  at the timeout. Others: never. The timeout is reported as ``truncated``.

ViZDoom writes ``_vizdoom.ini`` into the working directory; this wrapper points it at a temp folder instead.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodimem.envs.adapters.common import TEXT_SPACE, check_discrete_action, pose_from_axes, require

__all__ = ["UNITS_PER_METRE", "VIEW_HEIGHT_UNITS", "DEPTH_UNITS_PER_LEVEL", "SUCCESS_RULES", "doom_camera_pose",
           "doom_intrinsics", "vizdoom_depth_to_metres", "one_hot_buttons", "ViZDoomEnv"]

UNITS_PER_METRE = 32.0
VIEW_HEIGHT_UNITS = 41.0
DEPTH_UNITS_PER_LEVEL = 8.2
SUCCESS_RULES = {
    "my_way_home": "goal", "basic": "goal", "deadly_corridor": "goal", "predict_position": "goal",
    "defend_the_center": "survive", "defend_the_line": "survive", "health_gathering": "survive",
    "health_gathering_supreme": "survive", "take_cover": "survive",
}
_HOW = "pip install vizdoom  (the wheel bundles freedoom and the scenarios; no GL or X server needed)"


def doom_camera_pose(x: float, y: float, z: float, angle_deg: float, pitch_deg: float = 0.0,
                     units_per_metre: float = UNITS_PER_METRE) -> np.ndarray:
    """Doom eye position (map units) + angle/pitch (degrees) -> OpenCV camera-to-world pose float32 [4,4], metres."""
    a, p = np.deg2rad(angle_deg), np.deg2rad(pitch_deg)
    forward = np.array([np.cos(a) * np.cos(p), np.sin(a) * np.cos(p), -np.sin(p)])
    right = np.array([np.sin(a), -np.cos(a), 0.0])  # facing east (+x), the right hand points south (-y)
    down = np.cross(forward, right)
    pos = np.array([x, y, z], dtype=np.float64) / units_per_metre
    return pose_from_axes(right, down, forward, pos).astype(np.float32)


def doom_intrinsics(height: int, width: int, hfov_deg: float = 90.0) -> np.ndarray:
    """Pinhole K float32 [3,3] from ViZDoom's horizontal FOV (degrees), square pixels, centre (W/2, H/2)."""
    if not 0 < hfov_deg < 180:
        raise ValueError(f"hfov_deg: expected (0, 180), got {hfov_deg}")
    f = (width / 2.0) / np.tan(np.deg2rad(hfov_deg) / 2.0)
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], dtype=np.float32)


def vizdoom_depth_to_metres(depth: Any, depth_units_per_level: float = DEPTH_UNITS_PER_LEVEL,
                            units_per_metre: float = UNITS_PER_METRE) -> np.ndarray:
    """uint8 depth buffer [H,W] -> approximate float32 metres [H,W] (linear model; 0 stays 0; see module doc)."""
    d = np.asarray(depth)
    if d.dtype != np.uint8:
        raise ValueError(f"expected ViZDoom's uint8 depth buffer, got {d.dtype}")
    if depth_units_per_level <= 0 or units_per_metre <= 0:
        raise ValueError("depth_units_per_level and units_per_metre must be > 0")
    return (d.astype(np.float32) * np.float32(depth_units_per_level / units_per_metre)).astype(np.float32)


def one_hot_buttons(index: Any, n_buttons: int) -> list[int]:
    """Discrete action index in [0, n_buttons) -> ViZDoom button list with that one button pressed."""
    i = check_discrete_action(index, n_buttons, "ViZDoom action")
    return [int(k == i) for k in range(n_buttons)]


class ViZDoomEnv(gym.Env):
    """A ViZDoom scenario (e.g. 'my_way_home') with obs rgb, depth (approx. m), depth_raw, pose, intrinsics."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, scenario: str = "my_way_home", *, frame_skip: int = 4, resolution: str = "RES_160X120",
                 depth_units_per_level: float = DEPTH_UNITS_PER_LEVEL, units_per_metre: float = UNITS_PER_METRE,
                 instruction: str | None = None) -> None:
        vzd = require("vizdoom", package="vizdoom", how=_HOW)
        self._vzd = vzd
        cfg = os.path.join(vzd.scenarios_path, f"{scenario}.cfg")
        if not os.path.isfile(cfg):
            names = sorted(f[:-4] for f in os.listdir(vzd.scenarios_path) if f.endswith(".cfg"))
            raise ValueError(f"unknown ViZDoom scenario {scenario!r}; valid scenarios: {', '.join(names)}")
        if not hasattr(vzd.ScreenResolution, resolution):
            raise ValueError(f"unknown ViZDoom resolution {resolution!r} (e.g. RES_160X120, RES_320X240)")
        self.scenario, self.frame_skip = scenario, int(frame_skip)
        self.depth_units_per_level, self.units_per_metre = float(depth_units_per_level), float(units_per_metre)
        self._tmp = tempfile.TemporaryDirectory(prefix="vizdoom_")
        g = vzd.DoomGame()
        g.load_config(cfg)
        g.set_doom_config_path(os.path.join(self._tmp.name, "_vizdoom.ini"))
        g.set_window_visible(False)
        g.set_screen_resolution(getattr(vzd.ScreenResolution, resolution))
        g.set_screen_format(vzd.ScreenFormat.RGB24)
        g.set_depth_buffer_enabled(True)
        g.set_mode(vzd.Mode.PLAYER)
        g.init()
        self._game = g
        self._n = len(g.get_available_buttons())
        self._cam_vars = hasattr(vzd.GameVariable, "CAMERA_POSITION_X")
        h, w = g.get_screen_height(), g.get_screen_width()
        self.height, self.width = int(h), int(w)
        self.instruction = instruction or scenario.replace("_", " ")
        self.action_space = spaces.Discrete(self._n)
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (h, w, 3), np.uint8),
            "depth": spaces.Box(0.0, np.inf, (h, w), np.float32),
            "depth_raw": spaces.Box(0, 255, (h, w), np.uint8),
            "pose": spaces.Box(-np.inf, np.inf, (4, 4), np.float32),
            "intrinsics": spaces.Box(-np.inf, np.inf, (3, 3), np.float32),
            "instruction": TEXT_SPACE,
        })
        self._last: dict[str, Any] | None = None

    def _var(self, name: str) -> float:
        return float(self._game.get_game_variable(getattr(self._vzd.GameVariable, name)))

    def _pose_and_k(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cam_vars:
            x, y, z = (self._var(f"CAMERA_POSITION_{c}") for c in "XYZ")
            ang, pitch, fov = self._var("CAMERA_ANGLE"), self._var("CAMERA_PITCH"), self._var("CAMERA_FOV")
        else:
            x, y, z = self._var("POSITION_X"), self._var("POSITION_Y"), self._var("POSITION_Z") + VIEW_HEIGHT_UNITS
            ang, pitch, fov = self._var("ANGLE"), self._var("PITCH"), 90.0
        pose = doom_camera_pose(x, y, z, ang, pitch, self.units_per_metre)
        return pose, doom_intrinsics(self.height, self.width, fov if 0 < fov < 180 else 90.0)

    def _obs(self) -> dict[str, Any]:
        st = self._game.get_state()
        if st is None:  # after the episode ended ViZDoom has no state: repeat the last frame
            return dict(self._last)
        raw_depth = np.asarray(st.depth_buffer, np.uint8)
        pose, K = self._pose_and_k()
        self._last = {
            "rgb": np.asarray(st.screen_buffer, np.uint8),
            "depth": vizdoom_depth_to_metres(raw_depth, self.depth_units_per_level, self.units_per_metre),
            "depth_raw": raw_depth,
            "pose": pose,
            "intrinsics": K,
            "instruction": self.instruction,
        }
        return self._last

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._game.set_seed(int(self.np_random.integers(2**31 - 1)))
        self._game.new_episode()
        return self._obs(), {"is_success": False}

    def step(self, action):
        if self._last is None:
            raise RuntimeError("ViZDoomEnv.step called before reset")
        g = self._game
        reward = float(g.make_action(one_hot_buttons(action, self._n), self.frame_skip))
        finished = bool(g.is_episode_finished())
        timeout = g.get_episode_timeout()
        timed_out = finished and timeout > 0 and g.get_episode_time() >= timeout - 1
        dead = bool(g.is_player_dead())
        rule = SUCCESS_RULES.get(self.scenario)
        success = finished and not dead and ((rule == "goal" and not timed_out) or (rule == "survive" and timed_out))
        obs = self._obs()
        info = {"is_success": bool(success), "dead": dead}
        return obs, reward, finished and not timed_out, timed_out, info

    def close(self) -> None:
        if getattr(self, "_game", None) is not None:
            self._game.close()
            self._game = None
            self._tmp.cleanup()
