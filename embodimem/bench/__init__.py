"""Benchmarks behind ``embodimem bench <kind>``: a module per kind, imported lazily.

Each module defines a config dataclass ``Config``, ``run(cfg, command) -> dict`` (writes JSON/PNG under
``cfg.out`` atomically) and ``format_table(results) -> str``. Results report ratios against a baseline
measured in the same run, never absolute-time assertions.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# kind -> module. Add a benchmark here (and nowhere else).
BENCHES: dict[str, str] = {
    "memory": "embodimem.bench.memory",
    "attention": "embodimem.bench.attention",      # hcam vs full attention, kv_window bytes (issue 3)
    "video-banks": "embodimem.bench.video_banks",  # batched banks vs per-stream list references (issue 4)
    "spatial": "embodimem.bench.spatial",          # octree vs open3d, point-frame retrieval, bytes (issue 5)
    "envs": "embodimem.bench.envs",                # env steps/s, single and vectorized (issue 6)
    "ppo": "embodimem.bench.ppo",                  # our PPO vs a CleanRL-style PPO-LSTM reference (issue 7)
}


def bench_module(kind: str) -> ModuleType:
    """The module implementing ``kind`` (ValueError listing valid kinds otherwise)."""
    if kind not in BENCHES:
        raise ValueError(f"unknown benchmark {kind!r}; valid: {', '.join(BENCHES)}")
    return importlib.import_module(BENCHES[kind])
