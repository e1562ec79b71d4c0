"""A manipulation memory task: a coloured light says which of two goal markers to use, then goes out.

Scene (layout JSON in ``maps/metaworld/``, default ``cue_pick_place``): Meta-World's pick-place table with two
identical goal markers and a cue lamp. The lamp shows the colour of one goal for the first ``cue.steps``
observations (t = 0 .. steps-1) and is then removed from rendering (its geom group is switched off, so it vanishes
from RGB and depth alike). Nothing else in the observation depends on the cue: Meta-World's own goal site is never
rendered, the state's goal slot is zero, and the reward is sparse (1.0 on the success step, else 0.0) because
Meta-World's shaped reward would reveal the goal. So after the cue is gone a memoryless policy is at chance.

Success: the puck within ``success_radius`` metres of the cued goal (episode terminates). Taking the puck to the
other goal ends the episode as a failure (``info["wrong_goal"]``). ``reset(options={"cue": i})`` forces the cue;
otherwise it is drawn from the env's seeded generator, like the puck position. ``info["cue"]`` is privileged
(for analysis and tests, not for policies).
"""

from __future__ import annotations

import importlib.resources
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embodimem.envs.metaworld.adapter import MetaWorldEnv, metaworld_env_class

__all__ = ["CueLayout", "load_cue_layout", "read_cue", "MetaWorldCueEnv"]

_HIDDEN_GROUP = 5  # MuJoCo renders geom/site groups 0-2 by default; group 5 is never drawn


@dataclass(frozen=True)
class CueLayout:
    """A validated cue-task layout (metres, RGBA in [0, 1]); build it with :func:`load_cue_layout`."""

    name: str
    base_task: str
    instruction: str
    goals: np.ndarray  # [G,3]
    marker_radius: float
    marker_rgba: np.ndarray  # [4]
    cue_pos: np.ndarray  # [3]
    cue_radius: float
    cue_colors: np.ndarray  # [G,4], colour i means goal i
    cue_steps: int
    object_low: np.ndarray  # [3]
    object_high: np.ndarray  # [3]
    camera_name: str
    camera_eye: np.ndarray  # [3]
    camera_target: np.ndarray  # [3]
    camera_fovy: float
    success_radius: float
    max_episode_steps: int
    source: str = ""


def _get(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise ValueError(f"{where}: missing field {key!r}")
    return d[key]


def _vec(d: Any, key: str, where: str, shape: tuple[int, ...], lo: float = -math.inf,
         hi: float = math.inf) -> np.ndarray:
    raw = _get(d, key, where)
    try:
        a = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: field {key!r} must be numbers of shape {list(shape)}, got {raw!r}") from None
    if shape and shape[0] == -1:
        ok = a.ndim == len(shape) and a.shape[1:] == shape[1:] and a.shape[0] >= 2
    else:
        ok = a.shape == shape
    if not ok:
        raise ValueError(f"{where}: field {key!r} must have shape {list(shape)} (-1 = at least 2), got {list(a.shape)}")
    if not np.all(np.isfinite(a)) or np.any(a < lo) or np.any(a > hi):
        raise ValueError(f"{where}: field {key!r} must be finite and within [{lo}, {hi}], got {raw!r}")
    return a


def _num(d: Any, key: str, where: str, lo: float, hi: float = math.inf, integer: bool = False) -> float:
    raw = _get(d, key, where)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (integer and not float(raw).is_integer()):
        raise ValueError(f"{where}: field {key!r} must be {'an integer' if integer else 'a number'}, got {raw!r}")
    if not lo <= raw <= hi:
        raise ValueError(f"{where}: field {key!r} must be within [{lo}, {hi}], got {raw!r}")
    return int(raw) if integer else float(raw)


def _str(d: Any, key: str, where: str) -> str:
    raw = _get(d, key, where)
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"{where}: field {key!r} must be a non-empty string, got {raw!r}")
    return raw


def _parse_layout(d: Any, where: str) -> CueLayout:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object at the top level, got {type(d).__name__}")
    goals = _vec(d, "goals", where, (-1, 3))
    marker, cue, cam = _get(d, "goal_marker", where), _get(d, "cue", where), _get(d, "camera", where)
    colors = _vec(cue, "colors", f"{where} (cue)", (-1, 4), 0.0, 1.0)
    if len(colors) != len(goals):
        raise ValueError(f"{where}: field 'cue.colors' has {len(colors)} colours for {len(goals)} goals")
    if len({tuple(c) for c in colors.round(3)}) != len(colors):
        raise ValueError(f"{where}: field 'cue.colors' must hold distinct colours")
    lo, hi = _vec(d, "object_low", where, (3,)), _vec(d, "object_high", where, (3,))
    if np.any(lo > hi):
        raise ValueError(f"{where}: field 'object_low' must be <= 'object_high' elementwise")
    # Meta-World's pick-place reset resamples until the goal is >= 0.15 m (xy) from the puck: a frozen placement
    # closer than that would loop forever, so reject it here.
    nearest = np.clip(goals[:, :2], lo[:2], hi[:2])
    if np.min(np.linalg.norm(goals[:, :2] - nearest, axis=1)) < 0.15 + 1e-9:
        raise ValueError(f"{where}: field 'goals' must be at least 0.15 m (xy) from the object box")
    layout = CueLayout(
        name=_str(d, "name", where),
        base_task=_str(d, "base_task", where),
        instruction=_str(d, "instruction", where),
        goals=goals,
        marker_radius=_num(marker, "radius", f"{where} (goal_marker)", 1e-3, 0.5),
        marker_rgba=_vec(marker, "rgba", f"{where} (goal_marker)", (4,), 0.0, 1.0),
        cue_pos=_vec(cue, "pos", f"{where} (cue)", (3,)),
        cue_radius=_num(cue, "radius", f"{where} (cue)", 1e-3, 0.5),
        cue_colors=colors,
        cue_steps=_num(cue, "steps", f"{where} (cue)", 1, 10_000, integer=True),
        object_low=lo,
        object_high=hi,
        camera_name=_str(cam, "name", f"{where} (camera)"),
        camera_eye=_vec(cam, "eye", f"{where} (camera)", (3,)),
        camera_target=_vec(cam, "target", f"{where} (camera)", (3,)),
        camera_fovy=_num(cam, "fovy", f"{where} (camera)", 1.0, 179.0),
        success_radius=_num(d, "success_radius", where, 1e-3, 1.0),
        max_episode_steps=_num(d, "max_episode_steps", where, 1, 500, integer=True),
        source=where,
    )
    if layout.base_task != "pick-place-v3":
        raise ValueError(f"{where}: field 'base_task' must be 'pick-place-v3' (the only base task implemented)")
    if np.linalg.norm(layout.camera_eye - layout.camera_target) < 1e-6:
        raise ValueError(f"{where}: fields 'camera.eye' and 'camera.target' coincide")
    return layout


def load_cue_layout(name_or_path: str | Path = "cue_pick_place") -> CueLayout:
    """Load and validate a layout: a name in ``maps/metaworld/`` or a JSON path; bad files raise ValueError."""
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        where, text = str(p), p.read_text()
    else:
        res = importlib.resources.files("embodimem.maps") / "metaworld" / f"{name_or_path}.json"
        if not res.is_file():
            names = sorted(f.name[:-5] for f in (importlib.resources.files("embodimem.maps") / "metaworld").iterdir()
                           if f.name.endswith(".json"))
            raise ValueError(
                f"unknown cue layout {str(name_or_path)!r}; valid names: {', '.join(names)} (or a .json path)")
        where, text = f"maps/metaworld/{name_or_path}.json", res.read_text()
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    return _parse_layout(d, where)


def read_cue(obs: dict[str, Any], layout: CueLayout, window: int = 1) -> int:
    """Goal index the cue lamp shows in obs (rgb [H,W,3], pose [4,4], intrinsics [3,3]); ValueError if unseen."""
    rgb = np.asarray(obs["rgb"])
    pose, K = np.asarray(obs["pose"], np.float64), np.asarray(obs["intrinsics"], np.float64)
    H, W = rgb.shape[:2]
    p_cam = np.linalg.inv(pose) @ np.append(layout.cue_pos, 1.0)
    if p_cam[2] <= 0:
        raise ValueError("read_cue: the cue lamp is behind this camera")
    u, v = (K @ (p_cam[:3] / p_cam[2]))[:2]
    j, i = int(np.floor(u)), int(np.floor(v))
    if not (0 <= i < H and 0 <= j < W):
        raise ValueError(f"read_cue: the cue lamp projects to pixel ({u:.1f}, {v:.1f}), outside the {W}x{H} image")
    patch = rgb[max(i - window, 0): i + window + 1, max(j - window, 0): j + window + 1].reshape(-1, 3) / 255.0
    colors = layout.cue_colors[:, :3]
    dist = np.linalg.norm(patch[:, None, :] - colors[None], axis=-1).min(0)  # best pixel per colour
    best = int(np.argmin(dist))
    if dist[best] > 0.35:
        raise ValueError(f"read_cue: no cue colour near pixel ({u:.1f}, {v:.1f}) (closest distance {dist[best]:.2f})")
    return best


def _look_at_xyaxes(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """MuJoCo ``xyaxes`` (camera x and y axes, GL convention, image-up toward world +z) looking from eye to target."""
    back = eye - target
    back /= np.linalg.norm(back)
    x = np.cross([0.0, 0.0, 1.0], back)
    if np.linalg.norm(x) < 1e-6:
        raise ValueError("camera looks straight up or down; pick another eye/target")
    x /= np.linalg.norm(x)
    return np.concatenate([x, np.cross(back, x)])


def _cue_sim_class(layout: CueLayout) -> type:
    """A subclass of the base Meta-World env whose model carries the markers, the lamp and the cue camera."""
    import mujoco

    base = metaworld_env_class(layout.base_task)

    def _initialize_simulation(self):
        spec = mujoco.MjSpec.from_file(self.fullpath)
        wb = spec.worldbody
        for g, goal in enumerate(layout.goals):
            s = wb.add_site()
            s.name, s.type = f"cue_goal_{g}", mujoco.mjtGeom.mjGEOM_CYLINDER
            s.size = [layout.marker_radius, 0.002, 0.0]
            s.pos, s.rgba = [goal[0], goal[1], 0.002], layout.marker_rgba
        lamp = wb.add_site()
        lamp.name, lamp.type = "cue_lamp", mujoco.mjtGeom.mjGEOM_SPHERE
        lamp.size, lamp.pos, lamp.rgba = [layout.cue_radius, 0.0, 0.0], layout.cue_pos, layout.cue_colors[0]
        cam = wb.add_camera()
        cam.name, cam.pos, cam.fovy = layout.camera_name, layout.camera_eye, layout.camera_fovy
        cam.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
        cam.alt.xyaxes = _look_at_xyaxes(layout.camera_eye, layout.camera_target)
        model = spec.compile()
        return model, mujoco.MjData(model)

    return type(f"{base.__name__}Cue", (base,), {"_initialize_simulation": _initialize_simulation})


class MetaWorldCueEnv(MetaWorldEnv):
    """The cue memory task (see the module docstring); observation/action conventions as :class:`MetaWorldEnv`."""

    def __init__(
        self,
        layout: str | Path | CueLayout = "cue_pick_place",
        *,
        cue_steps: int | None = None,
        cameras: tuple[str, ...] | list[str] | str | None = None,
        max_episode_steps: int | None = None,
        height: int = 64,
        width: int = 64,
        depth: bool = True,
        render_mode: str | None = None,
    ) -> None:
        self.layout = layout if isinstance(layout, CueLayout) else load_cue_layout(layout)
        lay = self.layout
        if cue_steps is not None and (not isinstance(cue_steps, int) or cue_steps < 1):
            raise ValueError(f"cue_steps: expected an int >= 1, got {cue_steps!r}")
        self.cue_steps = lay.cue_steps if cue_steps is None else cue_steps
        self.cue: int | None = None
        self._wrong = False
        super().__init__(
            lay.base_task,
            cameras=(lay.camera_name,) if cameras is None else cameras,
            height=height,
            width=width,
            depth=depth,
            goal_observable=False,
            max_episode_steps=lay.max_episode_steps if max_episode_steps is None else max_episode_steps,
            terminate_on_success=True,
            instruction=lay.instruction,
            render_mode=render_mode,
        )
        m = self._mw.model
        self._lamp = m.site("cue_lamp").id
        m.site_group[m.site("goal").id] = _HIDDEN_GROUP  # Meta-World's goal marker would give the answer away

    def _make_sim(self, task: str):
        return _cue_sim_class(self.layout)(width=self.width, height=self.height)

    def _extra_info(self) -> dict[str, Any]:
        return {"cue": self.cue, "cue_visible": self._steps < self.cue_steps, "wrong_goal": self._wrong}

    def _obs(self, state: np.ndarray) -> dict[str, Any]:
        m = self._mw.model
        m.site_group[self._lamp] = 0 if self._steps < self.cue_steps else _HIDDEN_GROUP
        return super()._obs(state)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        gym_reset = super(MetaWorldEnv, self).reset  # gymnasium.Env.reset: seeds self.np_random
        gym_reset(seed=seed)
        lay, rng = self.layout, self.np_random
        n = len(lay.goals)
        cue = (options or {}).get("cue")
        obj = rng.uniform(lay.object_low, lay.object_high)
        drawn = int(rng.integers(n))  # always drawn, so forcing the cue leaves the puck placement unchanged
        if cue is None:
            cue = drawn
        if isinstance(cue, bool) or not isinstance(cue, (int, np.integer)) or not 0 <= int(cue) < n:
            raise ValueError(f"options['cue']: expected an int in [0, {n}), got {cue!r}")
        self.cue, self._wrong, self._steps = int(cue), False, 0
        mw = self._mw
        mw._freeze_rand_vec = True
        mw._last_rand_vec = np.concatenate([obj, lay.goals[self.cue]])
        self._mw.model.site_rgba[self._lamp] = lay.cue_colors[self.cue]
        state, _ = mw.reset()
        info = {"is_success": False, "task": lay.name, **self._extra_info()}
        return self._obs(state), info

    def step(self, action):
        obs, _, _, _, mw_info = super().step(action)
        obj = obs["state"][4:7].astype(np.float64)
        d = np.linalg.norm(self.layout.goals - obj, axis=1)
        success = bool(d[self.cue] <= self.layout.success_radius)
        self._wrong = bool(np.any(np.delete(d, self.cue) <= self.layout.success_radius))
        # Keep only Meta-World's goal-independent diagnostics: the rest (distances, shaped rewards) encode the goal.
        info = {k: mw_info[k] for k in ("near_object", "grasp_success") if k in mw_info}
        info.update(is_success=success, task=self.layout.name, **self._extra_info())
        terminated = success or self._wrong
        truncated = self._steps >= self.max_episode_steps and not terminated
        return obs, float(success), terminated, truncated, info
