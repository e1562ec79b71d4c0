"""MiniGrid memory tasks (``MiniGrid-MemoryS7-v0`` ...) in embodimem's observation convention.

The agent sees an object in the start room, walks down a corridor and must enter the cell beside the matching
one of two objects at the far end. Observation dict:

- ``rgb`` uint8 [V*tile, V*tile, 3]: the agent's egocentric partial view (``RGBImgPartialObsWrapper``; V = 7 view
  cells, ``tile_size`` 8 -> 56x56);
- ``symbolic`` uint8 [V,V,3]: MiniGrid's (object, colour, state) encoding of the same view;
- ``direction`` int64 (0 east, 1 south, 2 west, 3 north); ``instruction`` str: the mission text.

There is no depth and no camera pose: a 2D top-down grid has no pinhole camera, so ``depth``, ``pose`` and
``intrinsics`` are omitted (``Frame.from_obs`` then leaves them None). Actions: Discrete(3) = turn left, turn
right, forward (the only ones the task needs); ``full_actions=True`` exposes MiniGrid's 7. ``info["is_success"]``
is True on the step the agent reaches the matching object (MiniGrid gives a positive reward and terminates);
reaching the other object terminates with ``is_success`` False. ``info["agent_pos"]``/``["agent_dir"]`` are
privileged, for analysis.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodimem.envs.adapters.common import TEXT_SPACE, check_discrete_action

__all__ = ["MiniGridMemoryEnv", "memory_task_names", "oracle_action"]

_ACTION_NAMES = ["left", "right", "forward", "pickup", "drop", "toggle", "done"]
_DIRS = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)])  # MiniGrid's agent_dir -> (dx, dy)


def memory_task_names() -> list[str]:
    """MiniGrid memory task names accepted as ``task`` (e.g. 'MemoryS7', 'MemoryS13Random')."""
    import minigrid  # noqa: F401  (registers the MiniGrid-* ids)

    return sorted(k[len("MiniGrid-"): -len("-v0")] for k in gym.registry
                  if k.startswith("MiniGrid-Memory") and k.endswith("-v0"))


class MiniGridMemoryEnv(gym.Env):
    """A MiniGrid memory task with rgb / symbolic / direction / instruction observations (see module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str = "MemoryS7", *, tile_size: int = 8, full_actions: bool = False,
                 max_steps: int | None = None, render_mode: str | None = None) -> None:
        try:
            import minigrid  # noqa: F401
            from minigrid.wrappers import RGBImgPartialObsWrapper
        except ImportError as e:  # pragma: no cover
            raise ImportError("MiniGrid is not installed: pip install minigrid") from e
        names = memory_task_names()
        if task not in names:
            raise ValueError(f"unknown MiniGrid memory task {task!r}; valid tasks: {', '.join(names)}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        kw = {} if max_steps is None else {"max_steps": int(max_steps)}
        self.task = task
        self._env = RGBImgPartialObsWrapper(gym.make(f"MiniGrid-{task}-v0", **kw).unwrapped, tile_size=tile_size)
        self.render_mode = render_mode
        base = self._env.unwrapped
        v = base.agent_view_size
        self.action_space = spaces.Discrete(7 if full_actions else 3)
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (v * tile_size, v * tile_size, 3), np.uint8),
            "symbolic": spaces.Box(0, 255, (v, v, 3), np.uint8),
            "direction": spaces.Discrete(4),
            "instruction": TEXT_SPACE,
        })
        self._last: dict[str, Any] | None = None
        self._seeded = False

    @property
    def grid_env(self):
        """The underlying MiniGrid env (privileged: grid, agent_pos, success_pos, failure_pos)."""
        return self._env.unwrapped

    def _convert(self, raw: dict[str, Any]) -> dict[str, Any]:
        base = self._env.unwrapped
        obs = {
            "rgb": np.asarray(raw["image"], np.uint8),
            "symbolic": base.gen_obs()["image"].astype(np.uint8),
            "direction": np.int64(raw["direction"]),
            "instruction": str(raw["mission"]),
        }
        self._last = obs
        return obs

    def _info(self) -> dict[str, Any]:
        base = self._env.unwrapped
        return {"agent_pos": tuple(int(x) for x in base.agent_pos), "agent_dir": int(base.agent_dir)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None and not self._seeded:
            seed = int(self.np_random.integers(2**31 - 1))
        self._seeded = True
        raw, _ = self._env.reset(seed=seed)
        return self._convert(raw), {"is_success": False, **self._info()}

    def step(self, action):
        if self._last is None:
            raise RuntimeError("MiniGridMemoryEnv.step called before reset")
        n = int(self.action_space.n)
        a = check_discrete_action(action, n, "MiniGridMemoryEnv.step", _ACTION_NAMES[:n])
        raw, reward, terminated, truncated, _ = self._env.step(a)
        success = bool(terminated and reward > 0)
        info = {"is_success": success, **self._info()}
        return self._convert(raw), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        """The egocentric RGB view uint8 [H,W,3]."""
        if self._last is None:
            raise RuntimeError("render called before reset")
        return self._last["rgb"]

    def close(self) -> None:
        self._env.close()


def oracle_action(env: MiniGridMemoryEnv, target: str = "success") -> int:
    """Privileged shortest-path action (0 left, 1 right, 2 forward) toward the 'success' or 'failure' cell."""
    base = env.grid_env
    goal = tuple(base.success_pos if target == "success" else base.failure_pos)
    start = (int(base.agent_pos[0]), int(base.agent_pos[1]), int(base.agent_dir))

    def free(x: int, y: int) -> bool:
        cell = base.grid.get(x, y)
        return cell is None or cell.can_overlap()

    # BFS over (x, y, dir); the first action of a shortest path is stored with each state.
    seen = {start: None}
    q: deque = deque([start])
    while q:
        x, y, d = q.popleft()
        if (x, y) == goal:
            first = seen[(x, y, d)]
            return 2 if first is None else first
        dx, dy = _DIRS[d]
        for a, nxt in ((0, (x, y, (d - 1) % 4)), (1, (x, y, (d + 1) % 4)), (2, (x + dx, y + dy, d))):
            if a == 2 and not free(x + dx, y + dy):
                continue
            if nxt not in seen:
                seen[nxt] = a if seen[(x, y, d)] is None else seen[(x, y, d)]
                q.append(nxt)
    raise RuntimeError(f"oracle_action: no path from {start[:2]} to {goal}")
