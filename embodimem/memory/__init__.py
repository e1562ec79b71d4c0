"""Memory systems: registry plus lazy import (a module per system, loaded when first named)."""

from __future__ import annotations

import importlib
from typing import Any

from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.state import State

# name -> module that registers it on import. Add a built-in memory here (and nowhere else).
_BUILTIN: dict[str, str] = {
    "fifo": "embodimem.memory.fifo",
    "recurrent": "embodimem.memory.recurrent",
    "hcam": "embodimem.memory.hcam",
    "place": "embodimem.memory.place",
    "kv_window": "embodimem.memory.kv_window",
    "pyramid": "embodimem.memory.pyramid",
    "merge": "embodimem.memory.merge",
    "cognitive": "embodimem.memory.cognitive",
    "streaming": "embodimem.memory.streaming",
    "octree": "embodimem.memory.octree",
    "point_frame": "embodimem.memory.point_frame",
}
_REGISTRY: dict[str, type[Memory]] = {}


def register_memory(name: str):
    """Class decorator: register a ``Memory`` subclass (with its ``config_class``) under ``name``."""

    def deco(cls: type[Memory]) -> type[Memory]:
        if not (isinstance(cls, type) and issubclass(cls, Memory)):
            raise TypeError(f"register_memory({name!r}) expects a Memory subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"memory {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        cls.config_class.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_memories() -> list[str]:
    """Every memory name that ``make_memory`` accepts."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def memory_class(name: str) -> type[Memory]:
    """The registered class for ``name`` (imports its module on first use)."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        raise ValueError(f"unknown memory {name!r}; valid names: {', '.join(available_memories())}")
    return _REGISTRY[name]


def memory_config_class(name: str) -> type[MemoryConfig]:
    return memory_class(name).config_class


def make_memory(config: MemoryConfig | str, **overrides: Any) -> Memory:
    """Build a memory from its config (or from a name plus config field overrides)."""
    if isinstance(config, str):
        config = memory_config_class(config)(**overrides)
    elif overrides:
        import dataclasses

        config = dataclasses.replace(config, **overrides)
    if not config.name:
        raise ValueError(f"{type(config).__name__} is not attached to a registered memory")
    return memory_class(config.name)(config)


def config_from_dict(d: dict[str, Any]) -> MemoryConfig:
    """Inverse of ``MemoryConfig.to_dict`` (unknown fields raise, naming them)."""
    d = dict(d)
    name = d.pop("name", None)
    if name is None:
        raise ValueError("memory config dict needs a 'name' field")
    cls = memory_config_class(name)
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"memory {name!r} config has unknown fields {unknown}; known: {sorted(known)}")
    return cls(**d)


__all__ = [
    "Memory",
    "MemoryConfig",
    "Readout",
    "State",
    "available_memories",
    "config_from_dict",
    "make_memory",
    "memory_class",
    "memory_config_class",
    "register_memory",
]
