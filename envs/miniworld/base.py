"""``NavTaskEnv``: the base of embodimem's MiniWorld memory tasks (a world built from a layout in maps/miniworld).

Actions (``Discrete(4)``): 0 turn_left (+turn_step degrees), 1 turn_right, 2 move_forward (forward_step metres,
blocked by walls and objects), 3 stop (ends the episode; success only if the task's goal is reached).
``stop_action=False`` drops stop (``Discrete(3)``) for tasks whose goal regions end the episode by themselves
(T-maze): a policy learning from scratch then cannot end every episode at once for nothing.
Observations: see ``embodimem.envs.miniworld.adapter`` (rgb, depth, pose, intrinsics, instruction).
Reward: 1 on the step that solves the task, else 0. Episodes end by themselves: success, failure, stop, or
the task's step budget ``max_steps`` (truncation). gymnasium's own ``gym.make(..., max_episode_steps=N)`` adds
a TimeLimit wrapper on top, whose truncation the env cannot see: it then carries no ``info["metrics"]``, so
prefer ``max_steps=N``.

``info`` on every step: ``is_success`` (bool), ``agent_pos`` float32 [2] (x, z metres), ``agent_dir`` (radians),
``goal_pos`` float32 [2] (the current target), ``distance_to_goal`` (straight line, metres), ``path_length``
(metres walked), ``phase`` (task phase, int), ``step``. On the last step of an episode, ``info["metrics"]``
holds success, SPL, soft-SPL, the geodesic start and final distances (computed on the layout's map) and nDTW /
SDTW against the shortest route (threshold = the task's success radius).

Subclasses implement ``_setup_task`` (place objects and the agent, draw the cue from ``self.np_random``; reset
options override it), ``_task_step`` and ``scripted_plan`` (the legs a privileged solver walks).
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from gymnasium import spaces

from embodimem.envs import metrics as M
from embodimem.envs.miniworld.adapter import INSTRUCTION_CHARSET, build_observation, observation_space
from embodimem.envs.miniworld.headless import import_miniworld
from embodimem.envs.miniworld.layout import Layout, load_layout

import_miniworld()
from miniworld.entity import COLOR_NAMES, Ball, Box, Entity  # noqa: E402
from miniworld.miniworld import MiniWorldEnv  # noqa: E402
from miniworld.params import DEFAULT_PARAMS  # noqa: E402

__all__ = ["ACTIONS", "Leg", "NavTaskEnv"]

ACTIONS = ("turn_left", "turn_right", "move_forward", "stop")
_POTENTIAL_CACHES: dict[tuple, dict[tuple[int, int, int], float]] = {}  # per task and world geometry
TURN_LEFT, TURN_RIGHT, FORWARD, STOP = range(4)


@dataclass(frozen=True)
class Leg:
    """One leg of a scripted route: walk to ``target`` (x, z) until ``done(env)``, then turn left ``spin`` times
    (and stop if ``stop_after``).

    ``decision``: after this leg the agent stands at the task's decision point. ``target_entity``: the object
    walked into to touch it (left out of the solver's obstacle map).
    """

    target: tuple[float, float]
    done: Callable[[Any], bool]
    decision: bool = False
    target_entity: Any = None
    spin: int = 0
    stop_after: bool = False


def _pos2(ent: Entity) -> np.ndarray:
    return np.array([ent.pos[0], ent.pos[2]], dtype=np.float64)


class NavTaskEnv(MiniWorldEnv):
    """A MiniWorld task built from a layout; see the module docstring for actions, observations and info."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    TASK = "NavTask"
    DEFAULT_LAYOUT = ""
    OPTIONS: frozenset[str] = frozenset()  # reset(options=...) keys this task accepts

    def __init__(self, layout: str | Layout | None = None, *, obs_width: int = 64, obs_height: int = 64,
                 max_steps: int = 500, forward_step: float = 0.15, turn_step: float = 15.0,
                 start_jitter: bool = True, render_mode: str | None = None, progress_reward: float = 0.0,
                 stop_action: bool = True):
        for name, v, hi in (("obs_width", obs_width, 1024), ("obs_height", obs_height, 1024),
                            ("max_steps", max_steps, 10**7)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= hi:
                raise ValueError(f"{self.TASK}: {name} must be an int in [1, {hi}], got {v!r}")
        if not (0 < forward_step <= 1.0) or not (0 < turn_step <= 90):
            raise ValueError(f"{self.TASK}: forward_step must be in (0, 1] m and turn_step in (0, 90] degrees, "
                             f"got {forward_step!r}, {turn_step!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"{self.TASK}: render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not (isinstance(progress_reward, (int, float)) and 0.0 <= progress_reward <= 10.0):
            raise ValueError(f"{self.TASK}: progress_reward must be a number in [0, 10], got {progress_reward!r}")
        self.progress_reward = float(progress_reward)
        self.stop_action = bool(stop_action)
        self._fwd, self._turn = float(forward_step), float(turn_step)
        base = layout if isinstance(layout, Layout) else load_layout(layout or self.DEFAULT_LAYOUT)
        self.layout = self._prepare_layout(base)
        self.start_jitter = bool(start_jitter)
        self._opts: dict[str, Any] = {}
        self.option_sizes: dict[str, int] = {}  # each reset option's number of values, known after a reset
        self.instruction = ""
        self._grid: M.OccupancyGrid | None = None
        params = DEFAULT_PARAMS.no_random()
        params.set("forward_step", self._fwd)
        params.set("turn_step", self._turn)
        with contextlib.redirect_stdout(io.StringIO()):  # MiniWorld prints its MSAA fallback per frame buffer
            MiniWorldEnv.__init__(self, max_episode_steps=int(max_steps), obs_width=int(obs_width),
                                  obs_height=int(obs_height), window_width=max(64, int(obs_width)),
                                  window_height=max(64, int(obs_height)), params=params, domain_rand=False,
                                  render_mode=render_mode)
        self.action_space = spaces.Discrete(len(ACTIONS) if self.stop_action else len(ACTIONS) - 1)

        self.observation_space = observation_space(int(obs_height), int(obs_width))

    # ------------------------------------------------------------------ hooks for tasks

    def _shaping_targets(self) -> tuple[list[np.ndarray], float]:
        """Cue-independent ``progress_reward`` targets for the current phase: (points [2], extra metres).

        The potential is minus (the geodesic metres to the nearest point + the extra metres still to walk after
        it). Every candidate goal counts, never only the cued one, so shaping reveals nothing a memory should
        hold (T-maze: both arm ends). Default: no shaping.
        """
        return [], 0.0

    @property
    def _potential_cache(self) -> dict[tuple[int, int, int], float]:
        """(phase, row, col) -> metres still to walk (to the nearest target + its extra), shared by a process's envs
        on one world."""
        cache = self.__dict__.get("_shared_potentials")
        if cache is None:
            L = self.layout
            world = (type(self).__name__, L.rooms, L.openings, tuple(sorted((k, p.pos) for k, p in L.places.items())),
                     float(self.agent.radius))
            cache = self._shared_potentials = _POTENTIAL_CACHES.setdefault(world, {})
        return cache

    def _potential(self) -> float:
        """Shaping potential of the agent's grid cell in the current phase, memoised per (phase, cell).

        The targets are fixed per phase and world, so shaping costs shortest paths once per new cell for all the
        envs of a process on the same world, not per step.
        """
        cell = tuple(int(v) for v in self.grid.cells(self.agent_pos))
        key = (self.phase, *cell)
        d = self._potential_cache.get(key)
        if d is None:  # the targets are only built on a miss
            targets, extra = self._shaping_targets()
            if not targets:
                return 0.0
            centre = np.asarray(self.grid.origin) + (np.array([cell[1], cell[0]]) + 0.5) * self.grid.resolution
            d = self._potential_cache[key] = extra + min(M.shortest_path(self.grid, centre, np.asarray(t))[0]
                                                         for t in targets)
        return -d

    def _prepare_layout(self, layout: Layout) -> Layout:
        """Adjust the layout once at construction (e.g. stretch it); default: unchanged."""
        return layout

    def _setup_task(self) -> None:
        raise NotImplementedError

    def _task_step(self, action: int) -> tuple[bool, bool]:
        """(terminated, success) after ``action`` moved the agent; default: stop ends, success if at the goal."""
        if action == STOP:
            return True, self._near_goal()
        return False, False

    def scripted_plan(self) -> list[Leg]:
        """The legs a privileged solver walks (uses hidden state: the cue)."""
        raise NotImplementedError

    def task_state(self) -> dict[str, Any]:
        """Privileged task state (cue, phase, goal) for solvers and tests."""
        return {"phase": self.phase, "goal_pos": self.goal_pos}

    # ------------------------------------------------------------------ helpers for tasks

    def _place_start(self, place: str = "start") -> None:
        p = self.layout.place(place)
        x, z = p.pos
        d = math.radians(p.dir_deg or 0.0)
        if self.start_jitter:
            jm = float(self.layout.params.get("start_jitter_m", 0.2))
            jd = float(self.layout.params.get("start_jitter_deg", 10.0))
            x, z = x + self.np_random.uniform(-jm, jm), z + self.np_random.uniform(-jm, jm)
            d += math.radians(self.np_random.uniform(-jd, jd))
        self.place_agent(pos=np.array([x, 0.0, z]), dir=d)

    def _add_object(self, kind: str, color: str, pos, size: Any = 0.6, where: str = "params") -> Entity:
        """Place a box or ball of ``color`` at floor point pos (x, z); size: metres, or [sx, sy, sz] for a box."""
        if color not in COLOR_NAMES:
            raise ValueError(f"{self.layout.source}: {where}: unknown colour {color!r}; valid: {COLOR_NAMES}")
        sz = np.asarray(size, dtype=np.float64)
        if sz.shape not in ((), (3,)) or not np.isfinite(sz).all() or (sz <= 0).any() or (kind != "box" and sz.ndim):
            raise ValueError(f"{self.layout.source}: {where}: object size must be > 0 metres (or [sx, sy, sz] for "
                             f"a box), got {size!r}")
        if kind == "box":
            ent = Box(color=color, size=sz.tolist() if sz.ndim else float(sz))
        elif kind == "ball":
            ent = Ball(color=color, size=float(sz))
        else:
            raise ValueError(f"{self.layout.source}: {where}: unknown object kind {kind!r}; valid: box, ball")
        return self.place_entity(ent, pos=np.array([pos[0], 0.0, pos[1]]), dir=0.0)

    def _add_decor(self) -> None:
        """Static landmark objects listed in the layout's ``params.decor`` ([{kind, color, pos, size}])."""
        for i, d in enumerate(self.layout.params.get("decor", [])):
            if not isinstance(d, dict) or "pos" not in d:
                raise ValueError(f"{self.layout.source}: params.decor[{i}]: expected {{kind, color, pos, size}}")
            self._add_object(d.get("kind", "box"), d.get("color", "grey"), d["pos"], d.get("size", 0.6),
                             where=f"params.decor[{i}]")

    def _option(self, name: str, n: int) -> int:
        """The cue: ``options[name]`` if given (checked to be in [0, n)), else drawn uniformly from np_random."""
        drawn = int(self.np_random.integers(n))  # always drawn, so an override leaves the rest of the episode equal
        self.option_sizes[name] = n
        if name not in self._opts:
            return drawn
        v = self._opts[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < n:
            raise ValueError(f"{self.TASK}: reset option {name!r} must be an int in [0, {n}), got {v!r}")
        return int(v)

    def _choice(self, choice: int | None, n: int) -> int:
        """The option a scripted plan walks to after the decision: ``choice`` (checked) or the correct one."""
        if choice is None:
            return int(self.task_state()["target" if "target" in self.task_state() else "cue"])
        if isinstance(choice, bool) or not isinstance(choice, (int, np.integer)) or not 0 <= choice < n:
            raise ValueError(f"{self.TASK}: choice must be an int in [0, {n}), got {choice!r}")
        return int(choice)

    def touching(self, ent: Entity) -> bool:
        """Whether the agent touches ``ent`` (MiniWorld's ``near``: within both radii + 1.1 forward steps)."""
        return bool(np.linalg.norm(_pos2(ent) - self.agent_pos) < ent.radius + self.agent.radius + 1.1 * self._fwd)

    def _near_goal(self) -> bool:
        return bool(np.linalg.norm(self.agent_pos - np.asarray(self.goal_pos)) < self.goal_radius)

    @property
    def goal_pos(self) -> tuple[float, float]:
        """The current target (x, z): the next route point not reached yet (the goal once all are)."""
        return tuple(self.route[min(1 + self.phase, len(self.route) - 1)])

    def _reach(self, d: float = 0.0) -> float:
        """Touch distance (metres, centre to centre) for an object of radius ``d``."""
        return d + self.agent.radius + 1.1 * self._fwd

    @property
    def agent_pos(self) -> np.ndarray:
        """Agent floor position float64 [2] (x, z) in metres."""
        return np.array([self.agent.pos[0], self.agent.pos[2]], dtype=np.float64)

    @property
    def grid(self) -> M.OccupancyGrid:
        """Where the agent's centre can be (walls only, inflated by the agent radius), 5 cm cells."""
        if self._grid is None:
            self._grid = self.layout.free_space(resolution=0.05, radius=self.agent.radius)
        return self._grid

    # ------------------------------------------------------------------ gymnasium API

    def _gen_world(self) -> None:
        self.rooms_by_name = self.layout.build(self)
        self.phase = 0
        self.goal_radius = 1.0
        self.route: list[tuple[float, float]] = []  # reference route: start, intermediate targets, goal
        self.route_radii: list[float] = []  # touch radius of each intermediate target (metres)
        self._setup_task()
        if any(c not in INSTRUCTION_CHARSET for c in self.instruction):
            raise ValueError(f"{self.TASK}: instruction {self.instruction!r} has characters outside the charset")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode; ``options`` may fix the task's cue (see ``OPTIONS``). Returns (obs, info)."""
        opts = dict(options or {})
        bad = sorted(set(opts) - set(self.OPTIONS))
        if bad:
            raise ValueError(f"{self.TASK}: unknown reset option(s) {bad}; valid: {sorted(self.OPTIONS) or 'none'}")
        self._opts = opts
        rgb, _ = MiniWorldEnv.reset(self, seed=seed)
        self._success = False
        self._path_length = 0.0
        self._trace = [self.agent_pos]
        self._phi = self._potential() if self.progress_reward else 0.0
        return build_observation(self, rgb, self.instruction), self._info(final=False)

    def _check_action(self, action: Any) -> int:
        a = np.asarray(action)
        n = int(self.action_space.n)
        if a.shape != () or not np.issubdtype(a.dtype, np.integer) or not 0 <= int(a) < n:
            raise ValueError(f"{self.TASK}: action {action!r} is outside the action space Discrete({n}) "
                             f"({', '.join(f'{i}={name}' for i, name in enumerate(ACTIONS[:n]))})")
        return int(a)

    def step(self, action: Any):
        """Apply one discrete action; returns (obs, reward, terminated, truncated, info)."""
        a = self._check_action(action)
        self.step_count += 1
        before = self.agent_pos
        if a == TURN_LEFT:
            self.turn_agent(self._turn)
        elif a == TURN_RIGHT:
            self.turn_agent(-self._turn)
        elif a == FORWARD:
            self.move_agent(self._fwd, 0.0)
        after = self.agent_pos
        self._path_length += float(np.linalg.norm(after - before))
        self._trace.append(after)
        terminated, success = self._task_step(a)
        self._success = bool(success)
        truncated = not terminated and self.step_count >= self.max_episode_steps
        rgb = self.render_obs()
        obs = build_observation(self, rgb, self.instruction)
        reward = float(success)
        if self.progress_reward:  # potential-based (Ng et al. 1999): the optimal policy is unchanged
            phi = self._potential()
            reward += self.progress_reward * (phi - self._phi)
            self._phi = phi
        return obs, reward, bool(terminated), bool(truncated), self._info(final=terminated or truncated)

    def render_depth(self, frame_buffer=None) -> np.ndarray:
        """Re-render and return metric depth float32 [H,W] (metres, 0 = no reading)."""
        from embodimem.envs.miniworld.adapter import read_depth

        fb = frame_buffer or self.obs_fb
        self.render_obs(fb)
        return read_depth(fb)

    # ------------------------------------------------------------------ info and metrics

    def _route_length(self, pts: list, radii: list[float]) -> float:
        """Geodesic metres along points [2] (the first is a position), each target reached at its touch radius."""
        total = 0.0
        for i in range(len(pts) - 1):
            g = M.shortest_path(self.grid, np.asarray(pts[i]), np.asarray(pts[i + 1]))[0]
            total += max(0.0, g - radii[i] - radii[i + 1])
        return float(total)

    def _radii(self) -> list[float]:
        """Touch radius of each route point: 0 for the start, ``goal_radius`` for the goal, ``route_radii`` else."""
        mid = list(getattr(self, "route_radii", [0.0] * (len(self.route) - 2)))
        return [0.0, *mid, self.goal_radius]

    def _remaining(self, pos) -> float:
        """Geodesic metres from pos [2] through the route targets not reached yet (phase) to the goal region."""
        radii = self._radii()
        return self._route_length([pos, *self.route[1 + self.phase:]], [0.0, *radii[1 + self.phase:]])

    def _reference_path(self) -> np.ndarray:
        """The shortest route start -> targets -> goal, resampled every forward step [K, 2]."""
        pts = [M.shortest_path(self.grid, a, b)[1] for a, b in zip(self.route[:-1], self.route[1:])]
        poly = np.concatenate([p if i == 0 else p[1:] for i, p in enumerate(pts)])
        seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        t = np.linspace(0.0, s[-1], max(2, int(math.ceil(s[-1] / self._fwd)) + 1))
        return np.stack([np.interp(t, s, poly[:, 0]), np.interp(t, s, poly[:, 1])], axis=1)

    def episode_metrics(self) -> dict[str, float]:
        """Success, SPL, soft-SPL, geodesic start/final distance, path length, nDTW, SDTW for the episode so far."""
        d0 = self._remaining_from_start()
        dT = self._remaining(self.agent_pos) if not self._success else 0.0
        s = bool(self._success)
        trace = np.asarray(self._trace)
        nd = M.ndtw(trace, self._reference_path(), self.goal_radius) if len(self.route) >= 2 else float("nan")
        return {"success": float(s), "spl": float(M.spl(s, d0, self._path_length)),
                "soft_spl": float(M.soft_spl(dT, d0, self._path_length)), "geodesic_start": d0,
                "geodesic_final": dT, "path_length": self._path_length, "ndtw": nd, "sdtw": float(s) * nd}

    def _remaining_from_start(self) -> float:
        return self._route_length(list(self.route), self._radii())

    def _info(self, final: bool) -> dict[str, Any]:
        goal = np.asarray(self.goal_pos, dtype=np.float32)
        info = {"is_success": bool(self._success), "agent_pos": self.agent_pos.astype(np.float32),
                "agent_dir": float(self.agent.dir), "goal_pos": goal,
                "distance_to_goal": float(np.linalg.norm(self.agent_pos - goal)),
                "path_length": float(self._path_length), "phase": int(self.phase), "step": int(self.step_count)}
        if final:
            info["metrics"] = self.episode_metrics()
        return info
