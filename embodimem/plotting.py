"""``embodimem plot``: learning curves from run directories, mean and 95% interval over seeds per group."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embodimem.atomic import atomic_write_bytes
from embodimem.runs import read_metrics
from embodimem.stats import t_quantile_975


@dataclass
class PlotConfig:
    """Curves of ``metric`` against env steps; runs are grouped by ``group_by`` (a dotted config field)."""

    runs: list[Path] = field(default_factory=list)  # run directories (each with metrics.jsonl, config.yaml)
    metric: str = "success_rate"
    group_by: str = "policy.memory"
    out: Path = Path("runs/curves.png")
    points: int = 50  # x grid size (curves are interpolated onto it)


def _field(cfg: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg.get(part, {}) if isinstance(cfg, dict) else {}
    return cfg if cfg != {} else "?"


def curves(cfg: PlotConfig) -> dict[str, dict[str, np.ndarray]]:
    """group -> {"x", "mean", "lo", "hi", "n"} on a shared step grid."""
    import yaml

    if not cfg.runs:
        raise ValueError("plot: pass at least one run directory (--runs runs/a runs/b ...)")
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for run in cfg.runs:
        rows = [r for r in read_metrics(Path(run) / "metrics.jsonl") if cfg.metric in r]
        if not rows:
            raise ValueError(f"plot: {run}/metrics.jsonl has no '{cfg.metric}' values")
        conf = yaml.safe_load((Path(run) / "config.yaml").read_text()) or {}
        key = str(_field(conf, cfg.group_by))
        groups.setdefault(key, []).append((np.array([r["step"] for r in rows], float),
                                           np.array([r[cfg.metric] for r in rows], float)))
    out = {}
    for key, runs in groups.items():
        hi_x = min(x[-1] for x, _ in runs)
        lo_x = max(x[0] for x, _ in runs)
        grid = np.linspace(lo_x, hi_x, cfg.points) if hi_x > lo_x else np.array([hi_x])
        ys = np.stack([np.interp(grid, x, y) for x, y in runs])
        n = ys.shape[0]
        mean = ys.mean(0)
        half = t_quantile_975(n - 1) * ys.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
        out[key] = {"x": grid, "mean": mean, "lo": mean - half, "hi": mean + half, "n": np.array(n)}
    return out


def plot(cfg: PlotConfig) -> Path:
    """Draw the grouped curves to ``cfg.out`` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(cfg)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, c in sorted(data.items()):
        ax.plot(c["x"], c["mean"], label=f"{key} (n={int(c['n'])})")
        ax.fill_between(c["x"], c["lo"], c["hi"], alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel(cfg.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(cfg.out, buf.getvalue())
