"""A tiny memory task for agent tests: a cue shown only at step 0 must be reported after a delay."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class CueRecall(gym.Env):
    """obs: one-hot cue at t=0, zeros after; at t=delay the action must equal the cue (reward 1, success)."""

    def __init__(self, delay: int = 3):
        self.delay = delay
        self.observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(2))
        o = np.zeros(3, np.float32)
        o[self.cue] = 1.0
        return o, {"is_success": False}

    def step(self, action):
        if not self.action_space.contains(int(action)):
            raise ValueError(f"CueRecall: action {action!r} outside Discrete(2)")
        self.t += 1
        o = np.zeros(3, np.float32)
        if self.t < self.delay:
            return o, 0.0, False, False, {"is_success": False}
        ok = int(action) == self.cue
        return o, float(ok), True, False, {"is_success": ok}
