"""Memory systems: registry plus lazy import (a module per system, loaded when first named)."""

from __future__ import annotations

from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.state import State
from embodimem.registry import Registry

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
MEMORIES: Registry[type[Memory]] = Registry("memory", Memory, _BUILTIN)

register_memory = MEMORIES.register  # class decorator: @register_memory("name")
available_memories = MEMORIES.names  # every name make_memory accepts
memory_class = MEMORIES.get  # the class for a name (imports its module on first use)
memory_config_class = MEMORIES.config_class
make_memory = MEMORIES.build  # from a config, a name plus field overrides, or a dict with "name"
config_from_dict = MEMORIES.config_from_dict  # inverse of MemoryConfig.to_dict (unknown fields raise)


__all__ = [
    "MEMORIES",
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
