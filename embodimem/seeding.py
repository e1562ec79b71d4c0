"""Seeding and RNG state: one seed for every generator, per-rank seeds, per-episode env seeds.

Conventions:
- ``seed_everything(seed)`` seeds Python ``random``, NumPy's global generator and torch (CPU and CUDA).
- ``rank_seed(seed, rank)`` gives each DDP rank its own stream; rank 0 keeps ``seed`` itself, so a
  single-process run and rank 0 of a multi-process run draw the same numbers.
- ``episode_seeds`` follows LeRobot's evaluation convention: the i-th env of batch ``batch_ix`` resets
  with ``start_seed + batch_ix * n_envs + i``, so every evaluated episode has a distinct, reproducible seed
  whatever the number of envs per batch. With ``world_size > 1`` the global env index is used instead,
  so ranks never evaluate the same episode.
- ``get_rng_state`` / ``set_rng_state`` capture all of the above for checkpoints (plain Python values and
  tensors only, so checkpoints load with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
import random
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "rank_seed", "episode_seeds", "get_rng_state", "set_rng_state"]

_MAX_SEED = 2**32 - 1  # numpy's legacy seeding accepts [0, 2**32)


def _check_seed(seed: int, what: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) <= _MAX_SEED:
        raise ValueError(f"{what} must be in [0, 2**32), got {seed}")
    return int(seed)


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed random, numpy and torch (CPU + all CUDA devices); ``deterministic`` also forces deterministic kernels.

    ``deterministic=True`` turns on ``torch.use_deterministic_algorithms`` (ops without a deterministic
    kernel then raise), disables cuDNN autotuning and sets ``CUBLAS_WORKSPACE_CONFIG`` (needed by cuBLAS,
    effective only if CUDA is not initialised yet). ``deterministic=False`` leaves those settings alone.
    PYTHONHASHSEED is exported for child processes only; it cannot change this interpreter's hashing.
    """
    seed = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


def _splitmix64(x: int) -> int:
    """A bijective 64-bit mixer (SplitMix64 finaliser): nearby inputs give unrelated outputs."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def rank_seed(seed: int, rank: int) -> int:
    """Seed for process ``rank``: ``seed`` for rank 0, a well-mixed value in [0, 2**32) for others."""
    seed = _check_seed(seed)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank must be an int >= 0, got {rank!r}")
    if rank == 0:
        return seed
    # Hashing (not seed + rank) keeps rank streams apart from the small consecutive seeds users pick.
    return _splitmix64((seed << 20) ^ rank) & _MAX_SEED


def episode_seeds(start_seed: int, n_envs: int, batch_ix: int, *, rank: int = 0, world_size: int = 1) -> list[int]:
    """Reset seeds for the ``n_envs`` envs of batch ``batch_ix``: ``start_seed + (batch_ix*world_size + rank)*n_envs + i``."""
    _check_seed(start_seed, "start_seed")
    for what, v, low in (("n_envs", n_envs, 1), ("batch_ix", batch_ix, 0), ("world_size", world_size, 1), ("rank", rank, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{what} must be an int >= {low}, got {v!r}")
    if rank >= world_size:
        raise ValueError(f"rank {rank} must be < world_size {world_size}")
    base = start_seed + (batch_ix * world_size + rank) * n_envs
    return [base + i for i in range(n_envs)]


def get_rng_state() -> dict[str, Any]:
    """The state of python ``random``, numpy's global RNG, torch CPU and (if available) every CUDA device."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``get_rng_state`` captured (CUDA states only when the device count matches, else a warning)."""
    missing = [k for k in ("python", "numpy", "torch") if k not in state]
    if missing:
        raise ValueError(f"RNG state is missing {missing}")
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state({
        "bit_generator": npst["bit_generator"],
        "state": {"key": np.asarray(npst["key"], dtype=np.uint32) if not isinstance(npst["key"], torch.Tensor)
                  else npst["key"].numpy().astype(np.uint32), "pos": int(npst["pos"])},
        "has_gauss": int(npst["has_gauss"]),
        "gauss": float(npst["gauss"]),
    })
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        else:
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            warnings.warn(f"checkpoint holds RNG states for {len(cuda)} CUDA device(s) but {n} are visible; "
                          "CUDA random streams are not restored", stacklevel=2)
