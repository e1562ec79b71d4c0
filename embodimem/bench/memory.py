"""``embodimem bench memory``: write throughput, read latency, bytes per env, growth in T, batch scaling.

Works for any registered memory: it builds the memory's default config with the benchmark's token width,
feeds ``example_inputs`` through ``write`` for T steps and times ``read`` on the final state. Ratios, not
absolute times, are what to compare across machines.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from embodimem.bench.common import finish_axes, header, percentile, save_figure, save_results, slope, sync
from embodimem.memory import available_memories, make_memory, memory_config_class


@dataclass
class Config:
    """Benchmark every (memory, T, B) combination; results go to ``out``/memory.json and memory.png."""

    memory: list[str] = field(default_factory=lambda: ["fifo", "recurrent"])  # registered names, or "all"
    episode_lengths: list[int] = field(default_factory=lambda: [100, 1_000, 10_000])  # T
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 64])  # B
    dim: int = 64  # token width D
    tokens_per_step: int = 4  # N tokens written per step
    read_reps: int = 50  # timed reads per (memory, T, B)
    device: str = "cpu"
    threads: int = 1  # torch intra-op threads (1 = stable timings on a shared 2-core machine)
    seed: int = 0
    out: Path = Path("runs/bench-memory")
    plot: bool = True


@torch.no_grad()
def bench_one(mem, T: int, B: int, reps: int, device: torch.device, seed: int) -> dict[str, Any]:
    """Write T steps into B envs, then time ``reps`` reads of the final state."""
    g = torch.Generator().manual_seed(seed)
    chunk = min(T, 256)  # inputs are recycled: the memory only sees valid tokens, not their novelty
    x, kw = mem.example_inputs(B, chunk, g)
    x = x.to(device)
    kw = {k: v.to(device) for k, v in kw.items()}
    state = mem.init_state(B, device=device)
    steps = [x[:, j] for j in range(chunk)]
    kws = [{k: v[:, j] for k, v in kw.items()} for j in range(chunk)]
    warm = min(10, T)
    for j in range(warm):
        state = mem.write(state, steps[j], **kws[j])
    state = mem.init_state(B, device=device)
    sync(device)
    t0 = time.perf_counter()
    for t in range(T):
        state = mem.write(state, steps[t % chunk], **kws[t % chunk])
    sync(device)
    write_s = time.perf_counter() - t0
    query, qkw = steps[(T - 1) % chunk], kws[(T - 1) % chunk]
    lat = []
    for _ in range(reps + 3):
        sync(device)
        t0 = time.perf_counter()
        r = mem.read(state, query, **qkw)
        sync(device)
        lat.append(time.perf_counter() - t0)
    lat = lat[3:]
    stats = mem.stats(state)
    return {
        "T": T,
        "B": B,
        "write_steps_per_s": T / write_s,
        "write_env_steps_per_s": T * B / write_s,
        "read_ms_p50": 1e3 * percentile(lat, 50),
        "read_ms_p95": 1e3 * percentile(lat, 95),
        "bytes_per_env": stats["bytes_per_env"],
        "bound_bytes_per_env": mem.bound_bytes(B) / B,
        "readout_tokens": int(r.tokens.shape[1]),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth exponents in T (per B) and batch-scaling efficiency (per T) from one memory's rows."""
    Ts = sorted({r["T"] for r in rows})
    Bs = sorted({r["B"] for r in rows})
    by = {(r["T"], r["B"]): r for r in rows}
    growth = {}
    for B in Bs:
        xs = [T for T in Ts if (T, B) in by]
        growth[str(B)] = {
            "bytes_exponent": slope(xs, [by[T, B]["bytes_per_env"] for T in xs]),
            "read_latency_exponent": slope(xs, [by[T, B]["read_ms_p50"] for T in xs]),
        }
    efficiency = {}
    for T in Ts:
        if (T, 1) not in by:
            continue
        base = by[T, 1]["write_env_steps_per_s"]
        efficiency[str(T)] = {str(B): by[T, B]["write_env_steps_per_s"] / (B * base) for B in Bs if (T, B) in by}
    return {"growth_in_T": growth, "batch_scaling_efficiency": efficiency}


def run(cfg: Config, command: str = "") -> dict[str, Any]:
    """Run the benchmark, write ``out``/memory.json (+ memory.png) atomically, return the results."""
    from tqdm import tqdm

    names = available_memories() if cfg.memory == ["all"] else list(cfg.memory)
    for n in names:
        memory_config_class(n)  # unknown names fail here, listing the valid ones
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    results: dict[str, Any] = {**header("memory", cfg, command, device), "memories": {}}
    combos = [(n, T, B) for n in names for T in cfg.episode_lengths for B in cfg.batch_sizes]
    rows: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for n, T, B in tqdm(combos, desc="bench memory", unit="case"):
        mcfg = dataclasses.replace(memory_config_class(n)(), dim=cfg.dim, tokens_per_step=cfg.tokens_per_step)
        torch.manual_seed(cfg.seed)
        mem = make_memory(mcfg).to(device).eval()
        row = bench_one(mem, T, B, cfg.read_reps, device, cfg.seed)
        rows[n].append(row)
        results["memories"][n] = {"config": mcfg.to_dict(), "rows": rows[n], **summarize(rows[n])}
    return save_results(results, cfg, "memory", plot)


MemoryBenchConfig = Config  # the name used in docs and tests


def format_table(res: dict[str, Any]) -> str:
    """A plain-text table of one memory benchmark result."""
    lines = [f"{'memory':<12}{'T':>7}{'B':>5}{'env-steps/s':>14}{'read p50 ms':>13}{'read p95 ms':>13}{'bytes/env':>12}"]
    for name, m in res["memories"].items():
        for r in m["rows"]:
            lines.append(f"{name:<12}{r['T']:>7}{r['B']:>5}{r['write_env_steps_per_s']:>14.0f}"
                         f"{r['read_ms_p50']:>13.3f}{r['read_ms_p95']:>13.3f}{r['bytes_per_env']:>12.0f}")
        for B, g in m["growth_in_T"].items():
            lines.append(f"  {name} B={B}: growth exponent in T  bytes {_fmt(g['bytes_exponent'])}"
                         f"  read latency {_fmt(g['read_latency_exponent'])}")
        for T, eff in m["batch_scaling_efficiency"].items():
            effs = "  ".join(f"B={b}: {e:.2f}" for b, e in eff.items())
            lines.append(f"  {name} T={T}: batch-scaling efficiency  {effs}")
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def plot(results: dict[str, Any], path: Path) -> None:
    """Four panels: write throughput and read latency against T, bytes per env against T, batch efficiency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    for name, res in results["memories"].items():
        rows = res["rows"]
        for B in sorted({r["B"] for r in rows}):
            rb = sorted((r for r in rows if r["B"] == B), key=lambda r: r["T"])
            Ts = [r["T"] for r in rb]
            ax[0, 0].plot(Ts, [r["write_env_steps_per_s"] for r in rb], marker="o", label=f"{name} B={B}")
            ax[0, 1].plot(Ts, [r["read_ms_p50"] for r in rb], marker="o", label=f"{name} B={B}")
            ax[1, 0].plot(Ts, [r["bytes_per_env"] for r in rb], marker="o", label=f"{name} B={B}")
        for T, eff in res["batch_scaling_efficiency"].items():
            Bs = sorted(int(b) for b in eff)
            ax[1, 1].plot(Bs, [eff[str(b)] for b in Bs], marker="o", label=f"{name} T={T}")
    titles = [("write throughput (env-steps/s)", "T"), ("read latency p50 (ms)", "T"),
              ("state bytes per env", "T"), ("batch-scaling efficiency", "B")]
    finish_axes(ax.flat, titles, logy=(True, True, True, False))
    fig.suptitle(f"embodimem bench memory  ({results['machine']['device']}, torch {results['machine']['torch']})")
    save_figure(fig, path)
