"""Vector envs (gymnasium Sync/Async) with per-episode seeds, and the ``is_first`` flags memories need.

Autoreset: SAME_STEP by default (as LeRobot and embodimem's PPO use). The step that ends an episode in env i
returns the *next* episode's first observation in row i, and the ended episode's last observation and info in
``info["final_obs"]`` / ``info["final_info"]`` (rows where ``info["_final_obs"]`` is True). So
``is_first = terminated | truncated`` of that very step, every returned observation is acted on, and no
action is wasted. With NEXT_STEP (gymnasium's default) the step that ends an episode returns its last
observation; the *following* step ignores env i's action, resets it and returns the first observation, so
``is_first`` = the previous step's ``terminated | truncated``. DISABLED never resets by itself: call
``envs.reset(options={"reset_mask": mask})`` and ``EpisodeTracker.reset(mask)``. ``EpisodeTracker`` implements
all three rules and also counts the step index ``t`` within each episode.

Seeds: each sub-env is wrapped by ``EpisodeSeeds``: after ``reset(seed=s)`` its k-th episode uses seed
s + k * num_envs, and ``info["episode_seed"]`` carries it on every step (and ``seed_log`` keeps them all).
``vec.reset(seed=S)`` seeds env i with S + i, so episode k of env i has seed S + i + k * num_envs: distinct
and reproducible, the LeRobot evaluation convention (``embodimem.seeding.episode_seeds``). Re-running one
episode: ``gym.make(env_id).reset(seed=info["episode_seed"][i])``.

Async workers start with ``forkserver``: forking a process that has loaded GL/EGL (MiniWorld) hangs the child.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from embodimem.types import Frame

__all__ = ["AutoresetMode", "EpisodeSeeds", "EpisodeTracker", "frames_from_vec_obs", "make_vec_env"]

_SEED_MOD = 2**32


class EpisodeSeeds(gym.Wrapper):
    """Give every episode its own recorded seed: after reset(seed=s) the k-th episode uses s + k * stride."""

    def __init__(self, env: gym.Env, stride: int = 1):
        super().__init__(env)
        if int(stride) != stride or stride < 1:
            raise ValueError(f"EpisodeSeeds: stride must be an int >= 1, got {stride!r}")
        self.stride = int(stride)
        self._base: int | None = None
        self._k = 0
        self.episode_seed: int | None = None
        self.seed_log: list[int] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset with this episode's seed (recorded in ``info['episode_seed']`` and ``seed_log``)."""
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < _SEED_MOD:
                raise ValueError(f"EpisodeSeeds: seed must be an int in [0, 2**32), got {seed!r}")
            self._base, self._k = int(seed), 0
        elif self._base is None:  # never seeded: draw a base from OS entropy, and still record every seed
            self._base, self._k = int(np.random.SeedSequence().entropy % _SEED_MOD), 0
        else:
            self._k += 1
        self.episode_seed = (self._base + self._k * self.stride) % _SEED_MOD
        self.seed_log.append(self.episode_seed)
        obs, info = self.env.reset(seed=self.episode_seed, options=options)
        return obs, {**info, "episode_seed": self.episode_seed}

    def step(self, action):
        """Step; ``info['episode_seed']`` names the episode."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "episode_seed": self.episode_seed}


class _DefaultSeed(gym.vector.VectorWrapper):
    """The first reset without a seed uses ``seed`` (env i gets seed + i)."""

    def __init__(self, env: gym.vector.VectorEnv, seed: int):
        super().__init__(env)
        self._pending: int | None = seed

    def reset(self, *, seed=None, options=None):
        if seed is None and self._pending is not None:
            seed = self._pending
        self._pending = None
        return self.env.reset(seed=seed, options=options)

    def get_attr(self, name: str) -> tuple:
        """The attribute ``name`` of every sub-env (e.g. ``seed_log``)."""
        return self.env.get_attr(name)

    def set_attr(self, name: str, values: Any) -> None:
        """Set the attribute ``name`` of the sub-envs."""
        self.env.set_attr(name, values)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple:
        """Call the method ``name`` of every sub-env."""
        return self.env.call(name, *args, **kwargs)


def _make_one(env_id: str, env_kwargs: dict[str, Any], stride: int, record_seeds: bool) -> gym.Env:
    import embodimem.envs  # noqa: F401  (registers the embodimem/ ids in worker processes)

    env = gym.make(env_id, **env_kwargs)
    return EpisodeSeeds(env, stride=stride) if record_seeds else env


def _autoreset(mode: str | AutoresetMode) -> AutoresetMode:
    if isinstance(mode, AutoresetMode):
        return mode
    names = {"same_step": AutoresetMode.SAME_STEP, "next_step": AutoresetMode.NEXT_STEP,
             "disabled": AutoresetMode.DISABLED}
    key = str(mode).lower().replace("-", "_")
    if key not in names:
        raise ValueError(f"autoreset_mode must be one of {sorted(names)} (or a gymnasium AutoresetMode), got {mode!r}")
    return names[key]


def make_vec_env(env_id: str, num_envs: int, mode: str = "sync", *, seed: int | None = None,
                 autoreset_mode: str | AutoresetMode = "same_step", env_kwargs: dict[str, Any] | None = None,
                 context: str | None = "forkserver", record_seeds: bool = True,
                 shared_memory: bool = True) -> gym.vector.VectorEnv:
    """``num_envs`` copies of a registered env in a Sync or Async vector env (see the module docstring).

    seed: the first ``reset()`` without a seed seeds env i with seed + i. env_kwargs go to ``gym.make``.
    """
    import embodimem.envs  # noqa: F401
    from embodimem.envs.registry import resolve_env_id

    # embodimem ids (with or without the namespace) are checked, listing the valid ones; other gymnasium ids pass
    full = env_id if env_id in gym.registry and not env_id.startswith("embodimem/") else resolve_env_id(env_id)
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
    if mode not in ("sync", "async"):
        raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be an int >= 0 or None, got {seed!r}")
    ar = _autoreset(autoreset_mode)
    fns = [functools.partial(_make_one, full, dict(env_kwargs or {}), int(num_envs), record_seeds)
           for _ in range(int(num_envs))]
    if mode == "sync":
        venv: gym.vector.VectorEnv = gym.vector.SyncVectorEnv(fns, autoreset_mode=ar)
    else:
        venv = gym.vector.AsyncVectorEnv(fns, autoreset_mode=ar, context=context, shared_memory=shared_memory)
    return _DefaultSeed(venv, int(seed)) if seed is not None else venv


class EpisodeTracker:
    """``is_first`` bool [B] and step index ``t`` int64 [B] of each observation a vector env returns."""

    def __init__(self, num_envs: int, autoreset_mode: str | AutoresetMode = "same_step"):
        if int(num_envs) != num_envs or num_envs < 1:
            raise ValueError(f"EpisodeTracker: num_envs must be an int >= 1, got {num_envs!r}")
        self.mode = _autoreset(autoreset_mode)
        self.n = int(num_envs)
        self.t = np.zeros(self.n, dtype=np.int64)
        self._prev_done = np.zeros(self.n, dtype=bool)

    def reset(self, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """After ``envs.reset()`` (all rows) or a masked reset (DISABLED mode): (is_first [B], t [B])."""
        m = np.ones(self.n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if m.shape != (self.n,):
            raise ValueError(f"EpisodeTracker.reset: mask must have shape ({self.n},), got {m.shape}")
        self.t = np.where(m, 0, self.t)
        self._prev_done = np.where(m, False, self._prev_done)
        return m.copy(), self.t.copy()

    def step(self, terminated, truncated) -> tuple[np.ndarray, np.ndarray]:
        """After ``envs.step()``: (is_first [B], t [B]) of the observations that step returned."""
        done = np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)
        if done.shape != (self.n,):
            raise ValueError(f"EpisodeTracker.step: expected [{self.n}] terminated/truncated, got {done.shape}")
        if self.mode == AutoresetMode.SAME_STEP:
            first = done
        elif self.mode == AutoresetMode.NEXT_STEP:
            first = self._prev_done
        else:
            first = np.zeros(self.n, dtype=bool)
        self._prev_done = done
        self.t = np.where(first, 0, self.t + 1)
        return first.copy(), self.t.copy()


def frames_from_vec_obs(obs: dict[str, Any], is_first, t=None, device: torch.device | str | None = None) -> Frame:
    """A batched ``Frame`` [B] from a vector env's observation dict; is_first bool [B], t int64 [B] (default 0)."""
    if not isinstance(obs, dict) or "rgb" not in obs:
        raise ValueError("frames_from_vec_obs: expected a dict observation with an 'rgb' entry [B,H,W,3]")
    first = np.asarray(is_first, dtype=bool)
    B = int(np.asarray(obs["rgb"]).shape[0])
    if first.shape != (B,):
        raise ValueError(f"frames_from_vec_obs: is_first must have shape ({B},), got {first.shape}")
    tt = np.zeros(B, dtype=np.int64) if t is None else np.asarray(t, dtype=np.int64)
    return Frame.from_obs(obs, t=tt, is_first=first, device=device)
