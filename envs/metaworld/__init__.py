"""Meta-World 3.x manipulation: RGB-D adapter, instructions, scripted experts, a cue (memory) task, episode datasets.

``MUJOCO_GL=egl`` is set here (if unset) before anything imports mujoco, so rendering works headless on the CPU.
Submodules load lazily: ``from embodimem.envs.metaworld import MetaWorldEnv`` imports only the adapter.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("MUJOCO_GL", "egl")

_EXPORTS = {
    "MetaWorldEnv": "adapter",
    "instruction_for": "instructions",
    "INSTRUCTIONS": "instructions",
    "MetaWorldExpert": "experts",
    "CueExpert": "experts",
    "MetaWorldCueEnv": "cue_task",
    "load_cue_layout": "cue_task",
    "EpisodeWriter": "dataset",
    "EpisodeDataset": "dataset",
    "evaluate_policy": "evaluate",
    "success_summary": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
