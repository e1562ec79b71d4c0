"""Scripted experts for the Meta-World tasks, built on Meta-World's own hand-written policies (``metaworld.policies``).

An expert is a callable ``obs -> action`` (float32 [4] in [-1, 1]) with a ``reset(obs)`` method, so the same loop
drives experts and learned policies. Meta-World's policies read the 39-D state, goal included, so the plain expert
needs ``goal_observable=True``; the cue expert instead reads the goal from the cue it saw in the first image.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["MetaWorldExpert", "CueExpert", "expert_tasks"]


def expert_tasks() -> list[str]:
    """Meta-World task names that have a scripted policy (sorted)."""
    from metaworld.policies import ENV_POLICY_MAP

    return sorted(ENV_POLICY_MAP)


def _state(obs: Any) -> np.ndarray:
    state = obs["state"] if isinstance(obs, dict) else obs
    state = np.asarray(state, dtype=np.float64)
    if state.shape != (39,):
        raise ValueError(f"expected a Meta-World state of shape (39,), got {state.shape}")
    return state


class MetaWorldExpert:
    """Meta-World's scripted policy for ``task``: obs dict (or state [39]) -> action float32 [4], clipped to [-1, 1].

    ``noise_std`` > 0 adds Gaussian noise to the xyz part (diverse demonstrations); ``seed`` fixes that noise.
    """

    def __init__(self, task: str, *, noise_std: float = 0.0, seed: int | None = None) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        if task not in ENV_POLICY_MAP:
            raise ValueError(f"no scripted expert for task {task!r}; valid tasks: {', '.join(sorted(ENV_POLICY_MAP))}")
        if noise_std < 0:
            raise ValueError(f"noise_std: expected >= 0, got {noise_std}")
        self.task = task
        self.policy = ENV_POLICY_MAP[task]()
        self.noise_std = float(noise_std)
        self.rng = np.random.default_rng(seed)

    def reset(self, obs: Any = None, *, seed: int | None = None) -> None:
        """Start a new episode (re-seeds the action noise if ``seed`` is given)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def _act(self, state: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # the policies warn when their P-gain saturates; we clip below
            warnings.simplefilter("ignore")
            a = np.asarray(self.policy.get_action(state), dtype=np.float32)
        if self.noise_std > 0:
            a[:3] += self.rng.normal(0.0, self.noise_std, 3).astype(np.float32)
        return np.clip(a, -1.0, 1.0)

    def __call__(self, obs: Any) -> np.ndarray:
        state = _state(obs)
        if not np.any(state[-3:]):
            raise ValueError(
                f"{self.task}: the state's goal (last 3 values) is zero; the scripted expert needs goal_observable=True"
            )
        return self._act(state)


class CueExpert(MetaWorldExpert):
    """Expert for :class:`~embodimem.envs.metaworld.cue_task.MetaWorldCueEnv`: reads the cue from the first image.

    On ``reset(obs)`` it finds the cue lamp's colour in ``obs['rgb']`` (projecting the lamp's known position with
    ``obs['pose']`` and ``obs['intrinsics']``), remembers which goal it means, and from then on runs the base task's
    scripted policy with that goal written into the state. It never looks at the hidden goal or the cue later.
    """

    def __init__(self, layout: Any = "cue_pick_place", *, noise_std: float = 0.0, seed: int | None = None) -> None:
        from embodimem.envs.metaworld.cue_task import load_cue_layout

        self.layout = load_cue_layout(layout) if not hasattr(layout, "goals") else layout
        super().__init__(self.layout.base_task, noise_std=noise_std, seed=seed)
        self.cue: int | None = None

    def reset(self, obs: Any = None, *, seed: int | None = None) -> None:
        """Read the cue from the first observation (obs dict with rgb, pose, intrinsics)."""
        from embodimem.envs.metaworld.cue_task import read_cue

        super().reset(obs, seed=seed)
        if obs is None:
            raise ValueError("CueExpert.reset needs the first observation: the cue is only visible at the start")
        self.cue = read_cue(obs, self.layout)

    def __call__(self, obs: Any) -> np.ndarray:
        if self.cue is None:
            raise RuntimeError("CueExpert: call reset(first_obs) before acting")
        state = _state(obs).copy()
        state[-3:] = self.layout.goals[self.cue]
        return self._act(state)
