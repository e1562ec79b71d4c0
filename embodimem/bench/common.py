"""Helpers every benchmark shares: timing sync, percentiles, growth exponents, machine facts, figure output."""

from __future__ import annotations

import dataclasses
import io
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

from embodimem.atomic import atomic_write_bytes


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work so a timer measures it (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x): the growth exponent (0 = constant, 1 = linear)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den > 0 else None


def machine(device: torch.device | str = "cpu", **extra: Any) -> dict[str, Any]:
    """Where a result was measured: platform, processor, torch, threads, device."""
    return {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": str(device), **extra}


def header(benchmark: str, cfg: Any, command: str, device: torch.device | str = "cpu", **machine_extra: Any) -> dict[str, Any]:
    """The fields every result JSON starts with (config with Paths as strings)."""
    conf = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    return {"benchmark": benchmark, "command": command, "config": conf, "machine": machine(device, **machine_extra),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def save_results(results: dict[str, Any], cfg: Any, stem: str, plot: Any = None) -> dict[str, Any]:
    """Write ``cfg.out/<stem>.json`` atomically and, when ``cfg.plot`` is set, ``<stem>.png``; returns results."""
    from embodimem.atomic import atomic_write_json

    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg.out / f"{stem}.json", results)
    if plot is not None and getattr(cfg, "plot", False):
        plot(results, cfg.out / f"{stem}.png")
    return results


def finish_axes(axes: Any, titles: list[tuple[str, str]], logy: tuple[bool, ...] | None = None) -> None:
    """Title, x label, log scales, grid and legend for each panel (``logy`` False keeps a panel's y linear)."""
    for i, (a, (title, xl)) in enumerate(zip(axes, titles)):
        a.set_title(title)
        a.set_xlabel(xl)
        a.set_xscale("log")
        if logy is None or logy[i]:
            a.set_yscale("log")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG and write it atomically; closes the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
