"""Checkpoints that resume exactly: model, optimizer, scheduler, counters, RNG states and configs, written atomically.

The payload holds only tensors and plain Python values (configs are stored via ``config.to_dict``), so it
loads with ``torch.load(weights_only=True)``: no arbitrary code runs when a checkpoint is opened.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from embodimem.atomic import atomic_torch_save
from embodimem.config import diff_configs, to_dict
from embodimem.seeding import get_rng_state, set_rng_state

__all__ = [
    "CheckpointError", "LoadedCheckpoint", "save_checkpoint", "load_checkpoint", "read_checkpoint",
    "latest_checkpoint", "list_checkpoints", "checkpoint_name", "prune_checkpoints",
]

FORMAT = "embodimem.checkpoint"
VERSION = 1
_STEP_RE = re.compile(r"(\d+)")


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, truncated, or not an embodimem checkpoint."""


@dataclass
class LoadedCheckpoint:
    """What ``load_checkpoint`` hands back besides the restored modules."""

    path: Path
    counters: dict[str, Any]
    extra: Any = None
    config: dict[str, Any] | None = None
    memory_config: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _unwrap(model: nn.Module) -> nn.Module:
    """The inner module of DDP / DataParallel / torch.compile wrappers, so keys carry no wrapper prefix."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _plain_config(cfg: Any, what: str) -> dict[str, Any] | None:
    if cfg is None:
        return None
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return to_dict(cfg)
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"{what} must be a dataclass instance or a dict, got {type(cfg).__name__}")


def _check_plain(obj: Any, path: str) -> None:
    """Refuse values that would need full pickle to load (they would break weights_only loading later)."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)):
                raise TypeError(f"checkpoint {path}: key {k!r} must be a str/int/float/bool")
            _check_plain(v, f"{path}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{path}[{i}]")
        return
    raise TypeError(f"checkpoint {path}: {type(obj).__name__} cannot be stored safely; "
                    "use tensors, numbers, strings, lists and dicts (convert numpy arrays with torch.from_numpy)")


def save_checkpoint(path: str | os.PathLike[str], *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    counters: Mapping[str, Any], config: Any = None, memory_config: Any = None, extra: Any = None,
                    scheduler: Any = None) -> Path:
    """Atomically write everything needed to resume (model, optimizer, scheduler, counters, RNG, configs)."""
    counters = dict(counters)
    _check_plain(counters, "counters")
    _check_plain(extra, "extra")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "counters": counters,
        "config": _plain_config(config, "config"),
        "config_class": type(config).__qualname__ if dataclasses.is_dataclass(config) else None,
        "memory_config": _plain_config(memory_config, "memory_config"),
        "rng": get_rng_state(),
        "extra": extra,
        "meta": {"torch_version": str(torch.__version__), "saved_at": time.time()},
    }
    return atomic_torch_save(payload, path)


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, validated; FileNotFoundError if absent, CheckpointError if corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError/EOFError/UnpicklingError/... for damaged files
        if "Unsupported global" in str(e):  # a valid pickle, but with classes weights_only refuses
            why = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln), "")
            raise CheckpointError(f"checkpoint {path} holds Python objects that safe loading refuses ({why}); "
                                  "it was not written by embodimem.save_checkpoint, or is from an untrusted source") from e
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be loaded "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                              "resume from an earlier checkpoint") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an embodimem checkpoint (no '{FORMAT}' format marker)")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {payload['version']}; "
                              f"this embodimem reads up to {VERSION}: upgrade embodimem")
    return payload


def _check_config(saved: dict[str, Any] | None, expected: Any, what: str, path: Path, ignore: Iterable[str]) -> None:
    if expected is None:
        return
    if saved is None:
        raise ValueError(f"checkpoint {path} was saved without a {what}, so it cannot be checked against the "
                         f"expected one; pass expected_{what}=None to load it anyway")
    diffs = diff_configs(saved, _plain_config(expected, what), ignore=ignore)
    if diffs:
        raise ValueError(f"checkpoint {path} comes from an incompatible {what}; differing fields: {', '.join(diffs)}")


def load_checkpoint(path: str | os.PathLike[str], *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    expected_config: Any = None, restore_rng: bool = True, scheduler: Any = None,
                    expected_memory_config: Any = None, ignore_config_fields: Iterable[str] = (),
                    strict: bool = True, map_location: Any = "cpu") -> LoadedCheckpoint:
    """Restore model/optimizer/scheduler (and RNG) in place after checking configs; returns counters, extra, configs."""
    path = Path(path)
    payload = read_checkpoint(path, map_location=map_location)
    ignore = tuple(ignore_config_fields)
    # Check compatibility before touching the model, so a refused load leaves it unchanged.
    _check_config(payload.get("config"), expected_config, "config", path, ignore)
    _check_config(payload.get("memory_config"), expected_memory_config, "memory_config", path, ignore)
    try:
        _unwrap(model).load_state_dict(payload["model"], strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: model weights do not fit this model: {e}") from e
    if optimizer is not None:
        if payload.get("optimizer") is None:
            raise CheckpointError(f"checkpoint {path} holds no optimizer state, but an optimizer was given")
        optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None:
        if payload.get("scheduler") is None:
            raise CheckpointError(f"checkpoint {path} holds no scheduler state, but a scheduler was given")
        scheduler.load_state_dict(payload["scheduler"])
    if restore_rng:
        set_rng_state(payload["rng"])
    return LoadedCheckpoint(path=path, counters=dict(payload["counters"]), extra=payload.get("extra"),
                            config=payload.get("config"), memory_config=payload.get("memory_config"),
                            meta=dict(payload.get("meta") or {}))


def checkpoint_name(step: int) -> str:
    """File name for a checkpoint at ``step``: zero-padded so names sort by step."""
    return f"step_{int(step):010d}.pt"


def _step_of(p: Path) -> int:
    nums = _STEP_RE.findall(p.stem)
    return int(nums[-1]) if nums else -1


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """``*.pt`` files in ``directory`` (temp files excluded), oldest first by step number then mtime."""
    d = Path(directory)
    if not d.is_dir():
        return []
    files = [p for p in d.glob("*.pt") if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (_step_of(p), p.stat().st_mtime, p.name))


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step number in ``directory`` (mtime breaks ties), or None."""
    files = list_checkpoints(directory)
    return files[-1] if files else None


def prune_checkpoints(directory: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints; returns the deleted paths."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (never delete the last checkpoint), got {keep}")
    files = list_checkpoints(directory)
    doomed = files[:-keep]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed
