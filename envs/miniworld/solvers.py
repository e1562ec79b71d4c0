"""Scripted solvers that use privileged state: they prove each task is solvable and mark its decision point.

A task's ``scripted_plan()`` lists legs (targets, with the cue already resolved); ``run_solver`` walks them
with the task's own discrete actions. Each leg is planned with ``metrics.shortest_path`` on the layout's map,
walls inflated by the agent radius plus a safety margin, other objects blocked, then followed by turning
toward the next waypoint (within half a turn step) and moving forward. The legs before the decision point
never read the cue, so the agent reaches it by the same actions whatever the cue was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from embodimem.envs import metrics as M
from embodimem.envs.miniworld.base import FORWARD, STOP, TURN_LEFT, TURN_RIGHT, Leg

__all__ = ["Rollout", "WaypointFollower", "run_solver", "solver_grid", "steer"]


@dataclass
class Rollout:
    """One episode: observations[0] is the reset observation, observations[t + 1] follows actions[t]."""

    observations: list[dict[str, Any]] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False
    decision_index: int | None = None  # index into observations: what the agent sees at the decision point

    @property
    def success(self) -> bool:
        """``is_success`` of the last step."""
        return bool(self.infos and self.infos[-1]["is_success"])


def bearing_error(pos, heading: float, target) -> float:
    """Signed turn (radians, in [-pi, pi), positive = left) that would face target [2] from pos [2] (x, z)."""
    dx, dz = float(target[0] - pos[0]), float(target[1] - pos[1])
    err = math.atan2(-dz, dx) - heading  # heading 0 walks +x, +90 degrees walks -z
    return (err + math.pi) % (2 * math.pi) - math.pi


def steer(pos, heading: float, target, turn_deg: float) -> int:
    """Discrete action toward target [2] from pos [2] (x, z) and heading (radians): turn if off by > turn/2."""
    err = bearing_error(pos, heading, target)
    tol = math.radians(turn_deg) / 2 + 1e-3
    if err > tol:
        return TURN_LEFT
    if err < -tol:
        return TURN_RIGHT
    return FORWARD


def solver_grid(env, exclude: Any = None, margin: float = 0.15) -> M.OccupancyGrid:
    """The map a solver plans on: walls inflated by agent radius + margin metres, objects (but ``exclude``) blocked."""
    r = env.agent.radius + margin
    cache = env.__dict__.setdefault("_solver_grids", {})
    if r not in cache:
        cache[r] = env.layout.free_space(resolution=0.1, radius=r)
    base = cache[r]
    free = base.free.copy()
    R, C = free.shape
    xs = base.origin[0] + (np.arange(C) + 0.5) * base.resolution
    zs = base.origin[1] + (np.arange(R) + 0.5) * base.resolution
    for ent in env.entities:
        if ent is env.agent or ent is exclude or not getattr(ent, "radius", 0):
            continue
        d2 = (xs[None, :] - ent.pos[0]) ** 2 + (zs[:, None] - ent.pos[2]) ** 2
        # keep out of touching range too: touching a wrong object can end the episode, and with coarse forward
        # steps that range (1.1 steps beyond both radii) is wider than the collision radius
        keep_off = max(ent.radius + r, env._reach(ent.radius) + margin) if hasattr(env, "_reach") else ent.radius + r
        free &= d2 >= keep_off ** 2
    return M.OccupancyGrid(free, base.origin, base.resolution)


class WaypointFollower:
    """Follows the shortest path to a leg's target with turn/forward actions; re-plans when blocked."""

    def __init__(self, env, leg: Leg, margin: float = 0.15):
        self.env, self.leg, self.margin = env, leg, margin
        self.stuck = 0
        self.seen: set[tuple[float, float, float]] = set()  # poses this leg has acted from
        self._plan()

    def _plan(self) -> None:
        self.grid = grid = solver_grid(self.env, self.leg.target_entity, self.margin)
        self.nudge: list[int] = []
        pos = self.env.agent_pos
        length, pts = M.shortest_path(grid, pos, np.asarray(self.leg.target, dtype=np.float64))
        if not math.isfinite(length):
            raise RuntimeError(f"{self.env.TASK} solver: no path from {pos} to {self.leg.target}")
        self.waypoints = list(pts[1:])
        if not grid.is_free(pos):  # too close to a wall for the margin: first step back into the safe region
            self.waypoints.insert(0, grid.nearest_free(pos))

    def act(self) -> int:
        """The next action (never STOP)."""
        e = self.env
        if self.nudge:
            return self.nudge.pop(0)
        pos = e.agent_pos
        reach = max(0.5 * e._fwd, 0.1)
        # Drop a waypoint once it is reached or the next one is in (margin-safe) sight: a coarse forward step
        # can overshoot a corner by more than `reach`, and turning back to it would oscillate for ever.
        while len(self.waypoints) > 1 and (np.linalg.norm(self.waypoints[0] - pos) < reach
                                           or bool(self.grid.line_of_sight(pos, self.waypoints[1]))):
            self.waypoints.pop(0)
        # Steering within half a turn can drift off the planned line (into a wrong object's touching range, say):
        # re-plan from here -- but only from a pose not seen before in this leg, or a re-plan that sends us back
        # round a corner we just overshot would repeat for ever.
        pose = (round(float(pos[0]), 3), round(float(pos[1]), 3), round(float(e.agent.dir), 3))
        if pose not in self.seen and self.grid.is_free(pos) and not bool(self.grid.line_of_sight(pos, self.waypoints[0])):
            self._plan()
        self.seen.add(pose)
        return steer(pos, e.agent.dir, self.waypoints[0], e._turn)

    def moved(self, action: int, before: np.ndarray) -> None:
        """Tell the follower whether a forward step moved the agent; re-plans (or gives up) when blocked."""
        if action != FORWARD or np.linalg.norm(self.env.agent_pos - before) > 1e-9:
            self.stuck = 0
            return
        self.stuck += 1
        if self.stuck > 6:
            raise RuntimeError(f"{self.env.TASK} solver: stuck at {self.env.agent_pos} heading to {self.leg.target}")
        self._plan()
        # Blocked although steering says "forward": the heading is within half a turn of the waypoint but grazes
        # a wall. Turn one step past the waypoint's bearing (away from the side we were off on) and try again;
        # repeated blocks alternate sides.
        err = bearing_error(self.env.agent_pos, self.env.agent.dir, self.waypoints[0])
        left = (err >= 0) == (self.stuck % 2 == 1)
        self.nudge = [TURN_LEFT if left else TURN_RIGHT, FORWARD]


def run_solver(env: gym.Env, *, seed: int | None = None, options: dict[str, Any] | None = None,
               stop_at_decision: bool = False, plan_kwargs: dict[str, Any] | None = None) -> Rollout:
    """Reset ``env`` (a NavTaskEnv, possibly wrapped) and solve it with privileged state; returns the Rollout."""
    obs, info = env.reset(seed=seed, options=options)
    u = env.unwrapped
    if not hasattr(u, "scripted_plan"):
        raise ValueError(f"run_solver: {type(u).__name__} has no scripted_plan (not an embodimem MiniWorld task)")
    ro = Rollout(observations=[obs], infos=[info])

    def step(a: int) -> bool:
        o, r, term, trunc, inf = env.step(a)
        ro.observations.append(o)
        ro.actions.append(a)
        ro.rewards.append(float(r))
        ro.infos.append(inf)
        ro.terminated, ro.truncated = bool(term), bool(trunc)
        return term or trunc

    for leg in u.scripted_plan(**(plan_kwargs or {})):
        follower = WaypointFollower(u, leg)
        while not leg.done(u):
            a = follower.act()
            before = u.agent_pos
            if step(a):
                return ro
            follower.moved(a, before)
        if leg.decision:
            ro.decision_index = len(ro.observations) - 1
            if stop_at_decision:
                return ro
        for _ in range(leg.spin):
            if step(TURN_LEFT):
                return ro
        if leg.stop_after and step(STOP):
            return ro
    return ro
