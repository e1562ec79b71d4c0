"""Shared pieces of the optional simulator adapters: lazy imports with install hints, old-gym API conversion,
quaternions and discrete-action checks. Pure numpy; no simulator is imported here.
"""

from __future__ import annotations

import importlib
import string
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = [
    "TEXT_SPACE",
    "require",
    "old_gym_reset",
    "old_gym_step",
    "quat_wxyz_to_matrix",
    "check_discrete_action",
    "pose_from_axes",
]


#: Space of the ``instruction`` key: free text (gymnasium's default Text charset has no spaces or punctuation).
TEXT_SPACE = spaces.Text(max_length=512, min_length=0, charset=string.printable)


def require(module: str, *, package: str, how: str, why_not_here: str = "") -> Any:
    """Import ``module`` or raise ImportError saying which package provides it, how to install it, and (if set)
    why it cannot be installed on embodimem's reference machines."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        msg = (f"this adapter needs the optional package {package!r} (module {module!r}), which is not importable: "
               f"{e}. Install: {how}")
        if why_not_here:
            msg += f". Note: {why_not_here}"
        raise ImportError(msg) from e


def old_gym_reset(result: Any) -> tuple[Any, dict[str, Any]]:
    """Old gym ``reset()`` -> obs, or gym>=0.26 (obs, info) -> gymnasium's (obs, info)."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
        return result[0], dict(result[1])
    return result, {}


def old_gym_step(result: tuple) -> tuple[Any, float, bool, bool, dict[str, Any]]:
    """Old gym 4-tuple (obs, reward, done, info) or a 5-tuple -> gymnasium's (obs, r, terminated, truncated, info).

    For 4-tuples a time-limit end is recognised by ``info["TimeLimit.truncated"]`` (gym's TimeLimit wrapper);
    any other ``done`` counts as termination.
    """
    if not isinstance(result, tuple) or len(result) not in (4, 5):
        raise ValueError(f"expected a 4-tuple (old gym) or 5-tuple step result, got {type(result).__name__} "
                         f"of length {len(result) if isinstance(result, tuple) else 'n/a'}")
    if len(result) == 5:
        obs, reward, terminated, truncated, info = result
        return obs, float(reward), bool(terminated), bool(truncated), dict(info or {})
    obs, reward, done, info = result
    info = dict(info or {})
    truncated = bool(done) and bool(info.pop("TimeLimit.truncated", False))
    return obs, float(reward), bool(done) and not truncated, truncated, info


def quat_wxyz_to_matrix(q: Any) -> np.ndarray:
    """Unit quaternion (w, x, y, z) [4] -> rotation matrix float64 [3,3] (normalised first; zero raises)."""
    q = np.asarray(q, dtype=np.float64).reshape(4)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"quaternion {q.tolist()} has zero or non-finite norm")
    w, x, y, z = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def pose_from_axes(right: Any, down: Any, forward: Any, position: Any) -> np.ndarray:
    """OpenCV camera-to-world pose float64 [4,4] from the camera's world-frame x (right), y (down), z (forward)."""
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = right, down, forward
    pose[:3, 3] = np.asarray(position, dtype=np.float64).reshape(3)
    return pose


def check_discrete_action(action: Any, n: int, who: str, names: list[str] | None = None) -> int:
    """Validate an integer action in [0, n) -> int; anything else raises ValueError naming the valid range."""
    ok = not isinstance(action, (bool, np.bool_)) and np.ndim(action) == 0
    if ok:
        try:
            ok = float(action).is_integer() and 0 <= int(action) < n
        except (TypeError, ValueError):
            ok = False
    if not ok:
        hint = f" ({', '.join(f'{i} = {s}' for i, s in enumerate(names))})" if names else ""
        raise ValueError(f"{who}: action {action!r} is outside the action space Discrete({n}){hint}")
    return int(action)
