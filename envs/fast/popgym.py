"""POPGym partially observable memory tasks (RepeatPrevious, CountRecall, ...) with a flat vector observation.

POPGym observations are Discrete / MultiDiscrete / Tuple / Box spaces; we flatten them with
``gymnasium.spaces.flatten`` (one-hot for discrete parts) into ``obs["vector"]`` float32 [D]. There are no images,
so ``rgb``/``depth``/``pose``/``intrinsics`` are absent and ``Frame.from_obs`` does not apply: feed ``vector`` to
a vector encoder. Actions are POPGym's own action space (Discrete, MultiDiscrete or Box); anything outside it
raises ValueError.

Success: POPGym scales every task's rewards so that the episodic return lies in [-1, 1] (1 = perfect play).
``info["is_success"]`` is False on every step except the last one of an episode, where it is True iff the
episodic return reached ``success_threshold`` (default 0.9). ``info["episode_return"]`` is the return so far.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodimem.envs.adapters.common import check_discrete_action

__all__ = ["POPGymEnv", "popgym_task_names"]


def popgym_task_names() -> list[str]:
    """POPGym task names accepted as ``task`` (e.g. 'RepeatPreviousEasy', 'CountRecallHard')."""
    try:
        import popgym  # noqa: F401  (registers the popgym-* ids)
    except ImportError as e:  # pragma: no cover
        raise ImportError("POPGym is not installed: pip install popgym") from e
    return sorted(k[len("popgym-"): -len("-v0")] for k in gym.registry if k.startswith("popgym-") and k.endswith("-v0"))


class POPGymEnv(gym.Env):
    """A POPGym task with ``obs = {"vector": float32 [D]}`` and a documented ``info["is_success"]``."""

    metadata = {"render_modes": []}

    def __init__(self, task: str = "RepeatPreviousEasy", *, success_threshold: float = 0.9) -> None:
        names = popgym_task_names()
        if task not in names:
            raise ValueError(f"unknown POPGym task {task!r}; valid tasks: {', '.join(names)}")
        if not -1.0 <= success_threshold <= 1.0:
            raise ValueError(f"success_threshold: expected a value in [-1, 1], got {success_threshold}")
        self.task = task
        self.success_threshold = float(success_threshold)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._env = gym.make(f"popgym-{task}-v0").unwrapped  # no passive checker: POPGym obs are plain ints
        self._obs_space = self._env.observation_space
        dim = spaces.flatdim(self._obs_space)
        self.action_space = self._env.action_space
        self.observation_space = spaces.Dict({"vector": spaces.Box(-np.inf, np.inf, (dim,), np.float32)})
        self._return = 0.0
        self._started = False

    def _vector(self, raw: Any) -> dict[str, np.ndarray]:
        if isinstance(self._obs_space, spaces.Tuple):
            raw = tuple(raw)
        return {"vector": np.asarray(spaces.flatten(self._obs_space, raw), dtype=np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None and not self._started:
            seed = int(self.np_random.integers(2**31 - 1))
        raw, _ = self._env.reset(seed=seed)
        self._return, self._started = 0.0, True
        return self._vector(raw), {"is_success": False, "episode_return": 0.0}

    def _check(self, action: Any) -> Any:
        sp = self.action_space
        if isinstance(sp, spaces.Discrete) and int(sp.start) == 0:
            return check_discrete_action(action, int(sp.n), f"POPGymEnv({self.task}).step")
        try:
            a = np.asarray(action, dtype=sp.dtype)
        except (TypeError, ValueError):
            a = None
        if a is None or a.shape != sp.shape or not sp.contains(a):
            raise ValueError(f"POPGymEnv({self.task}).step: action {action!r} is outside the action space {sp}")
        return a

    def step(self, action):
        if not self._started:
            raise RuntimeError("POPGymEnv.step called before reset")
        raw, reward, terminated, truncated, _ = self._env.step(self._check(action))
        self._return += float(reward)
        done = bool(terminated or truncated)
        success = done and self._return >= self.success_threshold - 1e-9
        info = {"is_success": bool(success), "episode_return": self._return}
        return self._vector(raw), float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        self._env.close()
