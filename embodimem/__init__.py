"""embodimem: memory for embodied and video agents, in PyTorch.

Frames -> perception encoders -> memory banks (explicit batched state) -> conditioners -> agents.
Heavy submodules import lazily; `import embodimem` stays cheap.
"""

__version__ = "0.1.0"

from embodimem.memory import (  # noqa: E402  (re-exported public API)
    Memory,
    MemoryConfig,
    Readout,
    available_memories,
    make_memory,
    register_memory,
)

__all__ = [
    "Memory",
    "MemoryConfig",
    "Readout",
    "available_memories",
    "make_memory",
    "register_memory",
    "__version__",
]
