"""Per-stream, list-based references of published memory banks: the baselines of ``embodimem bench video-banks``.

Each reference keeps, for every stream, the Python data structure the released code uses (lists of per-frame
tensors) and loops over streams, as that code must be run for B videos. They double as oracles in the tests.
A reference module defines ``make_reference(config, batch_size, device) -> ListReference``; register it below
with one line and the benchmark measures it beside the batched bank of the same name, in the same run.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Protocol

import torch

# bank name (as registered in embodimem.memory) -> module defining make_reference. Add a reference here.
REFERENCES: dict[str, str] = {
    "pyramid": "embodimem.bench.reference.pyramid_lists",
    "cognitive": "embodimem.bench.reference.cognitive_lists",
}


class ListReference(Protocol):
    """What the benchmark needs from a reference: B streams behind the batched bank's calling convention."""

    def write(self, item: torch.Tensor, t: torch.Tensor | None = None,
              is_first: torch.Tensor | None = None, **kw: Any) -> None:
        """Write item [B,N,D] (one frame per stream) in place; ``is_first`` bool [B] clears those streams first."""

    def read(self, query: torch.Tensor | None = None) -> list[Any]:
        """Per stream, what the released code hands to the model (tokens in its own layout)."""

    def nbytes_per_stream(self) -> list[int]:
        """Tensor bytes held by each stream."""


def reference_module(name: str) -> ModuleType | None:
    """The reference module for bank ``name``, or None where no reference is registered."""
    path = REFERENCES.get(name)
    return None if path is None else importlib.import_module(path)


__all__ = ["REFERENCES", "ListReference", "reference_module"]
