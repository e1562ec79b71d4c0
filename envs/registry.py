"""Environment registry: every built-in env is a gymnasium id under the ``embodimem/`` namespace.

Registration stores only an entry-point string, so heavy simulators are imported when an env is made,
never when ``embodimem.envs`` is imported.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

NAMESPACE = "embodimem"
_IDS: dict[str, str] = {}  # full id -> entry point "module:callable"


def register_env(name: str, entry_point: str, *, max_episode_steps: int | None = None, **kwargs: Any) -> str:
    """Register ``embodimem/<name>`` with gymnasium (lazy entry point); returns the full id."""
    env_id = f"{NAMESPACE}/{name}"
    if env_id in _IDS:
        if _IDS[env_id] != entry_point:
            raise ValueError(f"env {env_id!r} already registered with entry point {_IDS[env_id]!r}")
        return env_id
    gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps, kwargs=kwargs)
    _IDS[env_id] = entry_point
    return env_id


def available_envs() -> list[str]:
    """Every registered embodimem env id."""
    return sorted(_IDS)


def resolve_env_id(env_id: str) -> str:
    """Accept ``embodimem/Name`` or ``Name``; unknown ids raise ValueError listing the valid ones."""
    full = env_id if env_id.startswith(f"{NAMESPACE}/") else f"{NAMESPACE}/{env_id}"
    if full not in _IDS:
        raise ValueError(f"unknown env {env_id!r}; valid ids: {', '.join(available_envs()) or '(none registered)'}")
    return full


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` for an embodimem env id (with or without the namespace)."""
    return gym.make(resolve_env_id(env_id), **kwargs)
