"""habitat-sim adapter: PointNav and ObjectNav with RGB-D and camera pose, in embodimem's conventions.

habitat-sim cannot be installed on embodimem's reference machines (PyPI has no Linux wheel for Python 3.11; it
ships through conda or a source build), so the env class is exercised only where it is installed; the conversion
functions below are pure numpy and tested everywhere.

Conventions converted (habitat-sim documentation):

- World: y up, right-handed, metres. A sensor's state (``agent.get_state().sensor_states[uuid]``) has a position
  [3] and a rotation quaternion (w, x, y, z); the sensor frame is OpenGL-style (x right, y up, looking down -z).
  Our pose is OpenCV camera-to-world: ``[R, p] @ diag(1, -1, -1, 1)``.
- Intrinsics: habitat cameras are specified by the *horizontal* field of view ``hfov`` with square pixels:
  ``fx = fy = (W / 2) / tan(hfov / 2)``, principal point (W/2, H/2).
- Depth: habitat-sim's depth sensor returns float32 metres along the optical axis (0 where the mesh has holes);
  habitat-lab can normalise it to [0, 1] between ``min_depth`` and ``max_depth`` -- undone by
  :func:`habitat_depth_to_metres`.
- Actions: Discrete(4) in habitat-lab's order 0 = stop, 1 = move_forward, 2 = turn_left, 3 = turn_right.
- PointGoal: habitat-lab's polar format (rho metres, phi radians, phi > 0 when the goal is to the agent's left).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodimem.envs.adapters.common import TEXT_SPACE, check_discrete_action, quat_wxyz_to_matrix, require

__all__ = [
    "HABITAT_ACTIONS",
    "as_wxyz",
    "habitat_sensor_pose",
    "habitat_intrinsics",
    "habitat_depth_to_metres",
    "pointgoal_polar",
    "yaw_quaternion",
    "HabitatNavEnv",
]

HABITAT_ACTIONS = ["stop", "move_forward", "turn_left", "turn_right"]
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
_WHY = ("habitat-sim has no pip wheel for Linux / Python 3.11 on PyPI, so it cannot be installed on embodimem's "
        "reference machines; use a conda env (see `embodimem doctor`)")
_HOW = "conda install habitat-sim headless -c conda-forge -c aihabitat  (or build it from source)"


def as_wxyz(rotation: Any) -> np.ndarray:
    """A quaternion as float64 [4] (w, x, y, z) from an array or a numpy-quaternion / magnum-like object."""
    if all(hasattr(rotation, k) for k in ("w", "x", "y", "z")):
        return np.array([rotation.w, rotation.x, rotation.y, rotation.z], dtype=np.float64)
    if hasattr(rotation, "scalar") and hasattr(rotation, "vector"):  # magnum.Quaternion
        v = rotation.vector
        return np.array([rotation.scalar, v[0], v[1], v[2]], dtype=np.float64)
    q = np.asarray(rotation, dtype=np.float64)
    if q.shape != (4,):
        raise ValueError(f"expected a quaternion (w, x, y, z) of shape (4,), got shape {q.shape}")
    return q


def habitat_sensor_pose(position: Any, rotation: Any) -> np.ndarray:
    """habitat sensor position [3] (m) + rotation (w, x, y, z) of its GL frame -> OpenCV pose float32 [4,4]."""
    pose = np.eye(4)
    pose[:3, :3] = quat_wxyz_to_matrix(as_wxyz(rotation))
    pose[:3, 3] = np.asarray(position, dtype=np.float64).reshape(3)
    return (pose @ _GL_TO_CV).astype(np.float32)


def habitat_intrinsics(hfov_deg: float, height: int, width: int) -> np.ndarray:
    """Pinhole K float32 [3,3] (pixels) of a habitat camera with horizontal FOV ``hfov_deg`` and square pixels."""
    if not 0 < hfov_deg < 180:
        raise ValueError(f"hfov_deg: expected (0, 180) degrees, got {hfov_deg}")
    f = (width / 2.0) / np.tan(np.deg2rad(hfov_deg) / 2.0)
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], dtype=np.float32)


def habitat_depth_to_metres(depth: Any, *, normalized: bool = False, min_depth: float = 0.0,
                            max_depth: float = 10.0) -> np.ndarray:
    """Depth [H,W] or [H,W,1] (metres, or habitat-lab's [0,1]-normalised) -> float32 [H,W] metres, 0 = no reading."""
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"depth: expected [H,W] or [H,W,1], got shape {d.shape}")
    if normalized:
        if not max_depth > min_depth >= 0:
            raise ValueError(f"need max_depth > min_depth >= 0, got {min_depth}, {max_depth}")
        valid = d > 0
        d = np.where(valid, min_depth + np.clip(d, 0, 1) * (max_depth - min_depth), 0.0).astype(np.float32)
    return np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)


def yaw_quaternion(yaw_rad: float) -> np.ndarray:
    """(w, x, y, z) [4] of a rotation by ``yaw_rad`` about habitat's +y (up) axis (counter-clockwise from above)."""
    return np.array([np.cos(yaw_rad / 2), 0.0, np.sin(yaw_rad / 2), 0.0])


def pointgoal_polar(agent_position: Any, agent_rotation: Any, goal_position: Any) -> np.ndarray:
    """habitat-lab's PointGoal (POLAR, 2D) -> float32 [2]: (rho metres, phi radians; phi > 0 = goal to the left)."""
    R = quat_wxyz_to_matrix(as_wxyz(agent_rotation))
    d = R.T @ (np.asarray(goal_position, np.float64) - np.asarray(agent_position, np.float64))  # agent frame
    forward, right = -d[2], d[0]  # the agent looks down its -z axis
    return np.array([np.hypot(forward, right), -np.arctan2(right, forward)], dtype=np.float32)


class HabitatNavEnv(gym.Env):
    """PointNav / ObjectNav in a habitat-sim scene with obs rgb, depth (m), pose, intrinsics, instruction, goal.

    ``task='pointnav'``: a navigable goal 1-30 m (geodesic) away; ``obs['pointgoal']`` = (rho, phi) from the
    current pose. Success: STOP within ``success_distance`` (default 0.2 m, habitat's) geodesic metres.
    ``task='objectnav'``: goals are the navigable points nearest to every object of a category in the scene's
    semantic annotations (needs a scene dataset with semantics); ``obs['instruction']`` names the category.
    Success: STOP within ``success_distance`` (default 1.0 m; a stand-in for habitat's view-point criterion).
    ``info`` has ``distance_to_goal``, ``spl`` (S * d0 / max(d0, path length)) and ``collided``.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, scene: str, *, task: str = "pointnav", height: int = 64, width: int = 64, hfov: float = 90.0,
                 sensor_height: float = 1.25, forward_step: float = 0.25, turn_angle: float = 10.0,
                 success_distance: float | None = None, max_episode_steps: int = 500,
                 object_category: str | None = None, scene_dataset_config: str | None = None,
                 gpu_device_id: int = 0) -> None:
        if task not in ("pointnav", "objectnav"):
            raise ValueError(f"task: expected 'pointnav' or 'objectnav', got {task!r}")
        hs = require("habitat_sim", package="habitat-sim", how=_HOW, why_not_here=_WHY)
        mn = require("magnum", package="magnum (comes with habitat-sim)", how=_HOW, why_not_here=_WHY)
        self._hs = hs
        self._quat_from_coeffs = require("habitat_sim.utils.common", package="habitat-sim", how=_HOW,
                                         why_not_here=_WHY).quat_from_coeffs  # takes (x, y, z, w)
        self.task, self.height, self.width, self.hfov = task, int(height), int(width), float(hfov)
        default_success = 0.2 if task == "pointnav" else 1.0
        self.success_distance = default_success if success_distance is None else float(success_distance)
        self.max_episode_steps, self.object_category = int(max_episode_steps), object_category

        sim_cfg = hs.SimulatorConfiguration()
        sim_cfg.scene_id = scene
        sim_cfg.gpu_device_id = gpu_device_id
        sim_cfg.enable_physics = False
        if scene_dataset_config:
            sim_cfg.scene_dataset_config_file = scene_dataset_config
        specs = []
        for uuid, kind in (("rgb", hs.SensorType.COLOR), ("depth", hs.SensorType.DEPTH)):
            s = hs.CameraSensorSpec()
            s.uuid, s.sensor_type, s.resolution = uuid, kind, [self.height, self.width]
            s.position, s.hfov = [0.0, sensor_height, 0.0], mn.Deg(self.hfov)
            specs.append(s)
        agent_cfg = hs.agent.AgentConfiguration()
        agent_cfg.sensor_specifications = specs
        agent_cfg.action_space = {
            "move_forward": hs.agent.ActionSpec("move_forward", hs.agent.ActuationSpec(amount=forward_step)),
            "turn_left": hs.agent.ActionSpec("turn_left", hs.agent.ActuationSpec(amount=turn_angle)),
            "turn_right": hs.agent.ActionSpec("turn_right", hs.agent.ActuationSpec(amount=turn_angle)),
        }
        self.sim = hs.Simulator(hs.Configuration(sim_cfg, [agent_cfg]))
        self._agent = self.sim.initialize_agent(0)
        self._K = habitat_intrinsics(self.hfov, self.height, self.width)
        self.action_space = spaces.Discrete(4)
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (self.height, self.width, 3), np.uint8),
            "depth": spaces.Box(0.0, np.inf, (self.height, self.width), np.float32),
            "pose": spaces.Box(-np.inf, np.inf, (4, 4), np.float32),
            "intrinsics": spaces.Box(-np.inf, np.inf, (3, 3), np.float32),
            "pointgoal": spaces.Box(-np.inf, np.inf, (2,), np.float32),
            "instruction": TEXT_SPACE,
        })
        self._goals: list[np.ndarray] = []
        self._instruction = ""
        self.object_category_now: str | None = None

    # ------------------------------------------------------------------ goals and distances

    def _geodesic(self, a: np.ndarray) -> float:
        path = self._hs.MultiGoalShortestPath()
        path.requested_start = a
        path.requested_ends = self._goals
        return float(path.geodesic_distance) if self.sim.pathfinder.find_path(path) else float("inf")

    def _sample_goals(self, start: np.ndarray) -> str:
        pf = self.sim.pathfinder
        if self.task == "pointnav":
            for _ in range(200):
                g = np.asarray(pf.get_random_navigable_point(), np.float64)
                self._goals = [g]
                if 1.0 <= self._geodesic(start) <= 30.0 and abs(g[1] - start[1]) < 0.5:
                    return "go to the point goal"
            raise RuntimeError("could not sample a PointNav goal 1-30 m away; is the scene navmesh loaded?")
        objs = [o for o in self.sim.semantic_scene.objects if o is not None and o.category is not None]
        cats = sorted({o.category.name() for o in objs})
        if not cats:
            raise RuntimeError("objectnav needs a scene with semantic annotations (scene_dataset_config)")
        cat = self.object_category or cats[int(self.np_random.integers(len(cats)))]
        if cat not in cats:
            raise ValueError(f"object_category {cat!r} is not in this scene; it has: {', '.join(cats)}")
        self._goals = [np.asarray(pf.snap_point(o.aabb.center), np.float64) for o in objs if o.category.name() == cat]
        self.object_category_now = cat
        return f"find a {cat}"

    # ------------------------------------------------------------------ gymnasium API

    def _obs(self, raw: dict[str, Any]) -> dict[str, Any]:
        st = self._agent.get_state()
        sensor = st.sensor_states["rgb"]
        goal = self._goals[0] if self._goals else st.position
        return {
            "rgb": np.asarray(raw["rgb"])[..., :3].astype(np.uint8),
            "depth": habitat_depth_to_metres(raw["depth"]),
            "pose": habitat_sensor_pose(sensor.position, sensor.rotation),
            "intrinsics": self._K.copy(),
            "pointgoal": pointgoal_polar(st.position, st.rotation, goal),
            "instruction": self._instruction,
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        pf = self.sim.pathfinder
        pf.seed(int(self.np_random.integers(2**31 - 1)))
        start = np.asarray(pf.get_random_navigable_point(), np.float64)
        state = self._hs.AgentState()
        state.position = start
        q = yaw_quaternion(float(self.np_random.uniform(0, 2 * np.pi)))
        state.rotation = self._quat_from_coeffs([q[1], q[2], q[3], q[0]])
        self._agent.set_state(state)
        self._instruction = self._sample_goals(start)
        self._d0, self._path, self._steps, self._prev = self._geodesic(start), 0.0, 0, start
        return self._obs(self.sim.get_sensor_observations()), {"is_success": False, "distance_to_goal": self._d0}

    def step(self, action):
        a = check_discrete_action(action, 4, "HabitatNavEnv.step", HABITAT_ACTIONS)
        self._steps += 1
        raw = self.sim.get_sensor_observations() if a == 0 else self.sim.step(HABITAT_ACTIONS[a])
        pos = np.asarray(self._agent.get_state().position, np.float64)
        self._path += float(np.linalg.norm(pos - self._prev))
        self._prev = pos
        dist = self._geodesic(pos)
        stopped = a == 0
        success = stopped and dist <= self.success_distance
        spl = float(success) * self._d0 / max(self._d0, self._path, 1e-9)
        truncated = not stopped and self._steps >= self.max_episode_steps
        info = {"is_success": success, "distance_to_goal": dist, "spl": spl,
                "collided": bool(getattr(self.sim, "previous_step_collided", False))}
        return self._obs(raw), float(success), stopped, truncated, info

    def close(self) -> None:
        if getattr(self, "sim", None) is not None:
            self.sim.close()
            self.sim = None
