"""``embodimem bench video-banks``: batched video memory banks against per-stream list references, same run.

For each bank (default: pyramid, merge, and cognitive when its module exists) and each B: write throughput
(frames/s per stream and in total, after a warm-up that fills the bank, so eviction/merging is in the timed
part), read latency p50/p95, and -- where ``embodimem.bench.reference.REFERENCES`` registers a per-stream list
reference of the published code -- the same numbers for that reference and the speed-up ratios. Banks whose
``write`` takes ``donate`` are also timed with it (their tensors updated in place, as the PPO rollout and
evaluation use them; see embodimem.memory.pyramid).
Bytes per stream are measured after each T in ``byte_lengths``. Times are wall clock and thread CPU time; on a
shared machine the CPU-time ratio is the steadier one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from embodimem.bench.common import finish_axes, header, percentile, save_figure, save_results, sync
from embodimem.bench.reference import REFERENCES, reference_module
from embodimem.memory import make_memory, memory_config_class
from embodimem.memory.state import state_nbytes


@dataclass
class Config:
    """Benchmark every (bank, B); results go to ``out``/video_banks.json and video_banks.png."""

    banks: list[str] = field(default_factory=lambda: ["pyramid", "merge", "cognitive"])  # missing modules: skipped
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16, 64])  # B streams
    steps: int = 64  # timed writes per block
    repeats: int = 5  # timed blocks per runner, interleaved bank / reference; the fastest block counts
    warmup: int = 64  # untimed writes first: fills the bank so eviction / merging is what gets timed
    distinct_frames: int = 16  # distinct input frames cycled through (real inputs are new each step)
    byte_lengths: list[int] = field(default_factory=lambda: [100, 1_000])  # T for bytes per stream
    dim: int = 64  # token width D
    grid: tuple[int, int] = (16, 16)  # token grid per frame: tokens_per_step = h*w (VideoChat-Online: 16x16)
    read_reps: int = 30  # timed reads per (bank, B)
    check_finite: bool = False  # the banks' NaN check on input; off because the references check nothing
    device: str = "cpu"
    threads: int = 1  # torch intra-op threads (1 = steady timings on a shared machine)
    seed: int = 0
    out: Path = Path("runs/bench-video-banks")
    plot: bool = True


class _Clock:
    """Wall and thread-CPU seconds of a block (CUDA work synchronised at both ends)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> _Clock:
        sync(self.device)
        self.wall, self.cpu = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self.wall, time.thread_time() - self.cpu


def bank_config(name: str, cfg: Config):
    """The bank's default config at the benchmark's width, grid and input checking."""
    h, w = cfg.grid
    base = memory_config_class(name)()
    over: dict[str, Any] = {"dim": cfg.dim, "tokens_per_step": h * w, "check_finite": cfg.check_finite}
    if any(f.name == "grid" for f in dataclasses.fields(base)):
        over["grid"] = (h, w)
    return dataclasses.replace(base, **over)


def _inputs(mem, B: int, cfg: Config, device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """``distinct_frames`` contiguous frames [B,N,D] (and per-step keyword arguments), as an encoder hands them."""
    g = torch.Generator().manual_seed(cfg.seed)
    x, kw = mem.example_inputs(B, cfg.distinct_frames, g)
    frames = [x[:, j].contiguous().to(device) for j in range(cfg.distinct_frames)]
    kws = [{k: v[:, j].to(device) for k, v in kw.items()} for j in range(cfg.distinct_frames)]
    return frames, kws


@torch.no_grad()
def _time_writes(writers: dict[str, Any], frames, kws, cfg: Config, device: torch.device) -> dict[str, dict]:
    """Warm every writer up, then time ``repeats`` blocks of ``steps`` calls write(frame, kw) each, the writers
    interleaved block by block (so a busy spell on a shared machine hits all of them); the fastest block counts."""
    F = len(frames)
    for write in writers.values():
        for i in range(cfg.warmup):
            write(frames[i % F], kws[i % F])
    best = {name: {"wall_s": math.inf, "cpu_s": math.inf} for name in writers}
    for r in range(cfg.repeats):
        start = cfg.warmup + r * cfg.steps
        for name, write in writers.items():
            with _Clock(device) as c:
                for i in range(start, start + cfg.steps):
                    write(frames[i % F], kws[i % F])
            best[name]["wall_s"] = min(best[name]["wall_s"], c.wall)
            best[name]["cpu_s"] = min(best[name]["cpu_s"], c.cpu)
    return best


def _time_reads(read, reps: int, device: torch.device) -> dict[str, float]:
    lat = []
    for i in range(reps + 3):
        with _Clock(device) as c:
            read()
        if i >= 3:
            lat.append(c.wall)
    return {"read_ms_p50": 1e3 * percentile(lat, 50), "read_ms_p95": 1e3 * percentile(lat, 95)}


def bench_bank(name: str, B: int, cfg: Config, device: torch.device) -> dict[str, Any]:
    """One (bank, B): batched functional / donated writes, reads, and the list reference of the same config."""
    torch.manual_seed(cfg.seed)
    mem = make_memory(bank_config(name, cfg)).to(device).eval()
    frames, kws = _inputs(mem, B, cfg, device)
    row: dict[str, Any] = {"B": B}
    modes = {"functional": False}
    if mem.accepts_donate:
        modes["donate"] = True
    boxes = {mode: {"s": mem.init_state(B, device=device)} for mode in modes}

    def writer(box: dict, extra: dict):
        def write(x, kw):
            box["s"] = mem.write(box["s"], x, **kw, **extra)
        return write

    writers = {mode: writer(boxes[mode], {"donate": True} if donate else {}) for mode, donate in modes.items()}
    ref_mod = reference_module(name)
    ref = None if ref_mod is None else ref_mod.make_reference(mem.config, B, device)
    if ref is not None:
        writers["reference"] = lambda x, kw: ref.write(x, **kw)
    for who, tm in _time_writes(writers, frames, kws, cfg, device).items():
        row[who] = _rates(tm, B, cfg.steps)
    state, query, qkw = boxes["functional"]["s"], frames[-1], kws[-1]
    row.update(_time_reads(lambda: mem.read(state, query, **qkw), cfg.read_reps, device))
    if ref is not None:
        row["reference"].update(_time_reads(lambda: ref.read(query), cfg.read_reps, device))
        for mode in modes:
            row[f"speedup_{mode}"] = row[mode]["frames_per_s"] / row["reference"]["frames_per_s"]
            row[f"speedup_{mode}_cpu"] = row[mode]["frames_per_cpu_s"] / row["reference"]["frames_per_cpu_s"]
        row["read_speedup"] = row["reference"]["read_ms_p50"] / row["read_ms_p50"]
    return row


def _rates(tm: dict[str, float], B: int, steps: int) -> dict[str, float]:
    return {"frames_per_s_per_stream": steps / tm["wall_s"], "frames_per_s": steps * B / tm["wall_s"],
            "frames_per_cpu_s": steps * B / max(tm["cpu_s"], 1e-9), "us_per_step": 1e6 * tm["wall_s"] / steps}


@torch.no_grad()
def bytes_per_stream(name: str, cfg: Config, device: torch.device) -> dict[str, Any]:
    """State bytes per stream after each T in ``byte_lengths`` (one stream), batched bank and reference."""
    mem = make_memory(bank_config(name, cfg)).to(device).eval()
    frames, kws = _inputs(mem, 1, cfg, device)
    ref_mod = reference_module(name)
    ref = None if ref_mod is None else ref_mod.make_reference(mem.config, 1, device)
    state, out, t = mem.init_state(1, device=device), {"bank": {}, "reference": {}}, 0
    for T in sorted(cfg.byte_lengths):
        while t < T:
            j = t % len(frames)
            state = mem.write(state, frames[j], **kws[j])
            if ref is not None:
                ref.write(frames[j], **kws[j])
            t += 1
        out["bank"][str(T)] = state_nbytes(state)
        if ref is not None:
            out["reference"][str(T)] = ref.nbytes_per_stream()[0]
    out["bank_constant_in_T"] = len(set(out["bank"].values())) == 1
    return out


def _available(name: str) -> str | None:
    """None if the bank can be built, else why not (its module is not written yet)."""
    try:
        memory_config_class(name)
    except ModuleNotFoundError as e:
        return f"module not importable: {e}"
    return None


def run(cfg: Config, command: str = "") -> dict[str, Any]:
    """Run the benchmark, write ``out``/video_banks.json (+ .png) atomically, return the results."""
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    skipped = {n: why for n in cfg.banks if (why := _available(n)) is not None}
    names = [n for n in cfg.banks if n not in skipped]
    results: dict[str, Any] = {
        **header("video-banks", cfg, command, device),
        "references": {n: REFERENCES.get(n) for n in names},
        "skipped": skipped,
        "banks": {},
    }
    for name in tqdm(names, desc="bench video-banks", unit="bank"):
        rows = [bench_bank(name, B, cfg, device) for B in cfg.batch_sizes]
        results["banks"][name] = {"config": bank_config(name, cfg).to_dict(), "rows": rows,
                                  "bytes_per_stream": bytes_per_stream(name, cfg, device)}
    return save_results(results, cfg, "video_banks", plot)


def format_table(res: dict[str, Any]) -> str:
    """Plain-text table: per bank and B, throughput, ratios against the list reference, read latency, bytes."""
    lines = [f"{'bank':<10}{'B':>4}{'frames/s/stream':>17}{'frames/s':>10}{'donated':>10}{'ref':>9}"
             f"{'x func':>8}{'x donate':>9}{'(cpu)':>6}{'/':>1}{'(cpu)':<6}{'read p50 ms':>12}{'p95':>7}"
             f"{'ref p50':>9}"]
    for name, bank in res["banks"].items():
        for r in bank["rows"]:
            ref = r.get("reference")
            don = r.get("donate")
            lines.append(
                f"{name:<10}{r['B']:>4}{r['functional']['frames_per_s_per_stream']:>17.0f}"
                f"{r['functional']['frames_per_s']:>10.0f}{_num(don and don['frames_per_s'], 10)}"
                f"{_num(ref and ref['frames_per_s'], 9)}{_num(r.get('speedup_functional'), 8, '.1f')}"
                f"{_num(r.get('speedup_donate'), 9, '.1f')}"
                f"{_num(r.get('speedup_functional_cpu'), 6, '.1f')}/{_num(r.get('speedup_donate_cpu'), -6, '.1f')}"
                f"{r['read_ms_p50']:>12.3f}{r['read_ms_p95']:>7.3f}{_num(ref and ref['read_ms_p50'], 9, '.3f')}")
        b = bank["bytes_per_stream"]
        lines.append(f"  {name} bytes/stream by T: bank {b['bank']} (constant: {b['bank_constant_in_T']})"
                     + (f", reference {b['reference']}" if b["reference"] else ""))
    for name, why in res.get("skipped", {}).items():
        lines.append(f"  {name}: skipped ({why})")
    lines.append("  x func / x donate: batched frames/s over the list reference's (wall clock, fastest of "
                 f"{res['config']['repeats']} interleaved blocks); (cpu): the same ratio in thread CPU time")
    return "\n".join(lines)


def _num(v: float | None, width: int, fmt: str = ".0f") -> str:
    """Right-aligned number (left-aligned for a negative width), or '-'."""
    align, width = (">", width) if width > 0 else ("<", -width)
    return f"{'-':{align}{width}}" if v is None else f"{v:{align}{width}{fmt}}"


def plot(results: dict[str, Any], path: Path) -> None:
    """Three panels: write throughput vs B (bank modes and reference), read latency vs B, bytes per stream vs T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    for i, (name, bank) in enumerate(results["banks"].items()):
        rows, col = bank["rows"], f"C{i}"  # one colour per bank; line style = batched mode or reference
        Bs = [r["B"] for r in rows]
        for mode, style in (("functional", "-o"), ("donate", "--o"), ("reference", ":s")):
            if all(mode in r for r in rows):
                ax[0].plot(Bs, [r[mode]["frames_per_s"] for r in rows], style, color=col, label=f"{name} {mode}")
        ax[1].plot(Bs, [r["read_ms_p50"] for r in rows], "-o", color=col, label=f"{name}")
        if all("reference" in r for r in rows):
            ax[1].plot(Bs, [r["reference"]["read_ms_p50"] for r in rows], ":s", color=col,
                       label=f"{name} reference")
        b = bank["bytes_per_stream"]
        for who, style in (("bank", "-o"), ("reference", ":s")):
            if b[who]:
                Ts = sorted(int(t) for t in b[who])
                ax[2].plot(Ts, [b[who][str(t)] for t in Ts], style, color=col, label=f"{name} {who}")
    finish_axes(ax, [("write throughput, all streams (frames/s)", "B streams"), ("read latency p50 (ms)", "B streams"),
                     ("state bytes per stream", "T frames")])
    fig.suptitle(f"embodimem bench video-banks ({results['machine']['device']}, torch {results['machine']['torch']})")
    save_figure(fig, path)
