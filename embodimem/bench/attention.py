"""``embodimem bench attention``: hcam read latency against full attention over the same history, per T.

For each episode length T the same T steps of N tokens (width D) are held by (a) an ``hcam`` memory and
(b) a full multi-head attention with the same D and heads. Both read with the newest step's N tokens as
queries; at the newest step the causal mask admits the whole history, so the full read attends to all
T*N tokens. Two full-attention baselines are timed:
- ``full``: ``nn.MultiheadAttention(query, history, history)``, i.e. the read computed from the stored
  tokens, as hcam's is (hcam also stores raw tokens and projects at read time);
- ``full_cached``: keys/values already projected (a KV cache), so only the query side and the attention
  itself are timed; the stronger baseline.
Chunk size per T: C = clamp(round(sqrt(T/k)), 1, floor(T/(16k))), so k*C <= T/16 and M = ceil(T/C) chunks
hold the whole episode (hcam's read cost is O(M*D + k*C*N*D*H), i.e. O(sqrt(T)) with this rule).
Speedups are ratios measured in the same run; the growth exponent is the log-log slope of latency in T.
If the ``kv_window`` memory is importable, its bytes per env are reported beside hcam's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embodimem.bench.common import finish_axes, header, percentile as _percentile, save_figure, save_results, slope as _slope, sync as _sync
from embodimem.memory import make_memory


@dataclass
class Config:
    """Time one hcam read and one full-attention read per T; results go to ``out``/attention.json and .png."""

    episode_lengths: list[int] = field(default_factory=lambda: [100, 1_000, 10_000])  # T (each >= 16*top_k)
    dim: int = 64  # token width D (both models)
    heads: int = 4  # attention heads (both models)
    tokens_per_step: int = 4  # N tokens per step; the N newest tokens are the queries
    top_k: int = 2  # k chunks read per query
    batch_size: int = 1  # B envs read at once
    read_reps: int = 30  # timed reads per (model, T); the median is reported
    device: str = "cpu"
    threads: int = 1  # torch intra-op threads (1 = stable timings on a shared machine)
    seed: int = 0
    out: Path = Path("runs/bench-attention")
    plot: bool = True


def chunk_size_for(T: int, k: int) -> int:
    """The chunk size C used at episode length T: about sqrt(T/k), capped so that k*C <= T/16."""
    cap = T // (16 * k)
    if cap < 1:
        raise ValueError(f"bench attention: T={T} is too short for top_k={k} (needs T >= 16*top_k={16 * k})")
    return max(1, min(cap, round(math.sqrt(T / k))))


def _time(fn, reps: int, device: torch.device) -> list[float]:
    for _ in range(3):
        fn()
    lat = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        lat.append(time.perf_counter() - t0)
    return lat


def kv_window_bytes_per_env(dim: int, tokens_per_step: int) -> float | None:
    """Declared bytes per env of the ``kv_window`` memory's default config, or None if it is not installed."""
    from embodimem.memory import memory_config_class

    try:
        cfg_cls = memory_config_class("kv_window")
    except ModuleNotFoundError as e:  # only its own module missing counts as "not available"
        if e.name != "embodimem.memory.kv_window":
            raise
        return None
    mem = make_memory(dataclasses.replace(cfg_cls(), dim=dim, tokens_per_step=tokens_per_step))
    return float(mem.bound_bytes(1))


@torch.no_grad()
def bench_one(cfg: Config, T: int, device: torch.device) -> dict[str, Any]:
    """Fill hcam with T steps, build the same T*N history for full attention, time both reads."""
    B, N, D, k = cfg.batch_size, cfg.tokens_per_step, cfg.dim, cfg.top_k
    C = chunk_size_for(T, k)
    M = math.ceil(T / C)
    torch.manual_seed(cfg.seed)
    mem = make_memory("hcam", dim=D, tokens_per_step=N, chunk_size=C, num_chunks=M, top_k=k,
                      heads=cfg.heads).to(device).eval()
    mha = nn.MultiheadAttention(D, cfg.heads, batch_first=True).to(device).eval()
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(B, T, N, D, generator=g).to(device)
    state = mem.init_state(B, device=device)
    t0 = time.perf_counter()
    for t in range(T):
        state = mem.write(state, x[:, t])
    _sync(device)
    write_s = time.perf_counter() - t0
    query = x[:, -1]  # [B,N,D]: the newest step's tokens
    history = x.reshape(B, T * N, D)
    H, hd = cfg.heads, D // cfg.heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    k_cache = F.linear(history, w_k, b_k).view(B, T * N, H, hd).transpose(1, 2)  # [B,H,T*N,hd]
    v_cache = F.linear(history, w_v, b_v).view(B, T * N, H, hd).transpose(1, 2)

    def full_cached() -> torch.Tensor:
        q = F.linear(query, w_q, b_q).view(B, N, H, hd).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k_cache, v_cache)
        return mha.out_proj(o.transpose(1, 2).reshape(B, N, D))

    lat_h = _time(lambda: mem.read(state, query), cfg.read_reps, device)
    lat_f = _time(lambda: mha(query, history, history, need_weights=False), cfg.read_reps, device)
    lat_c = _time(full_cached, cfg.read_reps, device)
    h, f, c = (1e3 * _percentile(v, 50) for v in (lat_h, lat_f, lat_c))
    return {
        "T": T, "B": B, "chunk_size": C, "num_chunks": M, "top_k": k, "history_tokens": T * N,
        "hcam_ms_p50": h, "hcam_ms_p95": 1e3 * _percentile(lat_h, 95),
        "full_ms_p50": f, "full_ms_p95": 1e3 * _percentile(lat_f, 95),
        "full_cached_ms_p50": c, "full_cached_ms_p95": 1e3 * _percentile(lat_c, 95),
        "speedup": f / h, "speedup_vs_cached": c / h,
        "hcam_write_steps_per_s": T / write_s,
        "hcam_bytes_per_env": mem.bound_bytes(B) / B,
        "full_bytes_per_env": T * N * D * x.element_size(),  # the raw history
        "full_cached_bytes_per_env": 2 * T * N * D * x.element_size(),  # projected K and V
    }


def run(cfg: Config, command: str = "") -> dict[str, Any]:
    """Run the benchmark, write ``out``/attention.json (+ attention.png) atomically, return the results."""
    for T in cfg.episode_lengths:
        chunk_size_for(T, cfg.top_k)  # too-short T fails before anything runs
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    rows = [bench_one(cfg, T, device) for T in sorted(cfg.episode_lengths)]
    Ts = [r["T"] for r in rows]
    expo = {m: _slope(Ts, [r[f"{m}_ms_p50"] for r in rows]) for m in ("hcam", "full", "full_cached")}
    last = rows[-1]
    kvw = kv_window_bytes_per_env(cfg.dim, cfg.tokens_per_step)
    results: dict[str, Any] = {
        **header("attention", cfg, command, device),
        "rows": rows,
        "summary": {
            "latency_exponent_in_T": expo,
            "max_T": last["T"],
            "speedup_at_max_T": last["speedup"],
            "speedup_vs_cached_at_max_T": last["speedup_vs_cached"],
            "hcam_10x_faster_at_max_T": last["speedup"] >= 10,
            "hcam_sublinear_in_T": expo["hcam"] is not None and expo["hcam"] < 1,
        },
        "kv_window_bytes_per_env": kvw,  # None: the kv_window memory is not installed
    }
    return save_results(results, cfg, "attention", plot)


def format_table(res: dict[str, Any]) -> str:
    """A plain-text table of one attention benchmark result."""
    lines = [f"{'T':>7}{'C':>5}{'M':>6}{'k':>3}{'hcam ms':>10}{'full ms':>10}{'cached ms':>11}"
             f"{'speedup':>9}{'vs cached':>11}{'hcam B/env':>12}"]
    for r in res["rows"]:
        lines.append(f"{r['T']:>7}{r['chunk_size']:>5}{r['num_chunks']:>6}{r['top_k']:>3}{r['hcam_ms_p50']:>10.3f}"
                     f"{r['full_ms_p50']:>10.3f}{r['full_cached_ms_p50']:>11.3f}{r['speedup']:>8.1f}x"
                     f"{r['speedup_vs_cached']:>10.1f}x{r['hcam_bytes_per_env']:>12.0f}")
    s = res["summary"]
    e = s["latency_exponent_in_T"]
    fmt = lambda v: "n/a" if v is None else f"{v:+.2f}"  # noqa: E731
    lines.append(f"latency growth exponent in T: hcam {fmt(e['hcam'])}  full {fmt(e['full'])}  "
                 f"full_cached {fmt(e['full_cached'])}")
    lines.append(f"at T={s['max_T']}: hcam {s['speedup_at_max_T']:.1f}x faster than full attention, "
                 f"{s['speedup_vs_cached_at_max_T']:.1f}x faster than KV-cached full attention")
    if res.get("kv_window_bytes_per_env") is not None:
        lines.append(f"kv_window bytes per env (default config): {res['kv_window_bytes_per_env']:.0f}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Three panels against T: read latency, speedup of hcam, state bytes per env."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    Ts = [r["T"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for key, label in (("hcam", "hcam"), ("full", "full attention"), ("full_cached", "full attention, KV cached")):
        ax[0].plot(Ts, [r[f"{key}_ms_p50"] for r in rows], marker="o", label=label)
    ax[1].plot(Ts, [r["speedup"] for r in rows], marker="o", label="vs full")
    ax[1].plot(Ts, [r["speedup_vs_cached"] for r in rows], marker="o", label="vs KV cached")
    ax[1].axhline(10, color="grey", ls="--", lw=1, label="10x")
    ax[2].plot(Ts, [r["hcam_bytes_per_env"] for r in rows], marker="o", label="hcam")
    ax[2].plot(Ts, [r["full_cached_bytes_per_env"] for r in rows], marker="o", label="KV cache")
    if results.get("kv_window_bytes_per_env") is not None:
        ax[2].axhline(results["kv_window_bytes_per_env"], color="C3", ls="--", label="kv_window")
    finish_axes(ax, [(t, "T (steps)") for t in ("read latency p50 (ms)", "hcam speedup (x)", "state bytes per env")])
    m = results["machine"]
    fig.suptitle(f"embodimem bench attention  ({m['device']}, {m['threads']} thread(s), torch {m['torch']})")
    save_figure(fig, path)
