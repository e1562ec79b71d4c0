"""``embodimem bench envs``: simulator steps/s for each navigation env, alone and vectorized (sync, async).

Every env emits the full observation dict (rgb, depth, pose, intrinsics, instruction). Actions are random
but move the agent (forward 60 %, turn left 20 %, turn right 20 %; no stop), and episodes that end are reset
inside the timed loop, so resets are part of the cost. Vectorized numbers are env-steps/s (vector steps/s x
num_envs) and their ratio to the single env measured in the same run: sync runs the envs one after another
in this process (ratio ~1 minus batching overhead), async runs one worker process per env (ratio up to the
number of free cores). Ratios, not absolute rates, are what to compare across machines.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embodimem.bench.common import header, save_figure, save_results

DEFAULT_ENVS = ["TMaze-v0", "ObjectRecall-v0", "SignNav-v0", "Revisit-v0"]
_PROBS = np.array([0.2, 0.2, 0.6, 0.0])  # turn_left, turn_right, move_forward, stop


@dataclass
class Config:
    """Benchmark each env single and vectorized; results go to ``out``/envs.json and envs.png."""

    envs: list[str] = field(default_factory=lambda: list(DEFAULT_ENVS))  # embodimem ids, or "all" (navigation)
    steps: int = 400  # timed steps per measurement (vector steps for vectorized runs)
    warmup: int = 20  # untimed steps first
    num_envs: int = 4  # copies in the vectorized runs
    modes: list[str] = field(default_factory=lambda: ["sync", "async"])  # vectorized modes to time
    obs_size: int = 64  # square observations, pixels
    seed: int = 0
    out: Path = Path("runs/bench-envs")
    plot: bool = True


def _actions(rng: np.random.Generator, n: int, shape: tuple[int, ...] = ()) -> np.ndarray:
    return rng.choice(len(_PROBS), size=(n, *shape), p=_PROBS)


def bench_single(env_id: str, cfg: Config) -> dict[str, Any]:
    """Steps/s of one env (resets included), plus construction and reset times."""
    from embodimem.envs import make_env

    t0 = time.perf_counter()
    env = make_env(env_id, obs_width=cfg.obs_size, obs_height=cfg.obs_size)
    make_s = time.perf_counter() - t0
    rng = np.random.default_rng(cfg.seed)
    resets = []
    t0 = time.perf_counter()
    env.reset(seed=cfg.seed)
    resets.append(time.perf_counter() - t0)
    acts = _actions(rng, cfg.warmup + cfg.steps)
    episodes = 0
    for i, a in enumerate(acts):
        if i == cfg.warmup:
            start = time.perf_counter()
        _, _, term, trunc, _ = env.step(int(a))
        if term or trunc:
            episodes += 1
            t1 = time.perf_counter()
            env.reset()
            resets.append(time.perf_counter() - t1)
    elapsed = time.perf_counter() - start
    env.close()
    return {"steps_per_s": cfg.steps / elapsed, "make_s": make_s, "reset_ms": 1e3 * float(np.mean(resets)),
            "episodes_ended": episodes}


def bench_vector(env_id: str, mode: str, cfg: Config) -> dict[str, Any]:
    """Env-steps/s of ``num_envs`` copies in a ``mode`` vector env (SAME_STEP autoreset)."""
    from embodimem.envs.vector import make_vec_env

    t0 = time.perf_counter()
    envs = make_vec_env(env_id, cfg.num_envs, mode, seed=cfg.seed,
                        env_kwargs={"obs_width": cfg.obs_size, "obs_height": cfg.obs_size})
    envs.reset()
    startup_s = time.perf_counter() - t0
    acts = _actions(np.random.default_rng(cfg.seed), cfg.warmup + cfg.steps, (cfg.num_envs,))
    for i, a in enumerate(acts):
        if i == cfg.warmup:
            start = time.perf_counter()
        envs.step(a)
    elapsed = time.perf_counter() - start
    envs.close()
    return {"env_steps_per_s": cfg.steps * cfg.num_envs / elapsed, "vector_steps_per_s": cfg.steps / elapsed,
            "startup_s": startup_s, "num_envs": cfg.num_envs}


def run(cfg: Config, command: str = "") -> dict[str, Any]:
    """Run the benchmark, write ``out``/envs.json (+ envs.png) atomically, return the results."""
    from tqdm import tqdm

    from embodimem.envs import resolve_env_id
    from embodimem.envs.ids_navigation import NAVIGATION_IDS

    ids = list(NAVIGATION_IDS) if cfg.envs == ["all"] else [resolve_env_id(e) for e in cfg.envs]
    bad = [m for m in cfg.modes if m not in ("sync", "async")]
    if bad or cfg.steps < 1 or cfg.num_envs < 1 or cfg.warmup < 0:
        raise ValueError(f"bench envs: modes must be among sync/async (got {cfg.modes}), steps and num_envs >= 1, "
                         f"warmup >= 0")
    results: dict[str, Any] = {
        **header("envs", cfg, command, cpus=os.cpu_count(),
                 load_avg_at_start=list(os.getloadavg()) if hasattr(os, "getloadavg") else None),
        "envs": {},
    }
    jobs = [(e, m) for e in ids for m in ("single", *cfg.modes)]
    for env_id, mode in tqdm(jobs, desc="bench envs", unit="run"):
        row = results["envs"].setdefault(env_id, {})
        if mode == "single":
            row["single"] = bench_single(env_id, cfg)
        else:
            r = bench_vector(env_id, mode, cfg)
            r["ratio_to_single"] = r["env_steps_per_s"] / row["single"]["steps_per_s"]
            row[mode] = r
    return save_results(results, cfg, "envs", plot)


EnvsBenchConfig = Config


def format_table(res: dict[str, Any]) -> str:
    """A plain-text table: steps/s single, env-steps/s per vector mode and its ratio to single."""
    modes = res["config"]["modes"]
    n = res["config"]["num_envs"]
    head = f"{'env':<28}{'single steps/s':>16}{'reset ms':>10}"
    for m in modes:
        head += f"{f'{m} x{n} env-steps/s':>24}{'ratio':>7}"
    lines = [head]
    for env_id, row in res["envs"].items():
        s = row["single"]
        line = f"{env_id:<28}{s['steps_per_s']:>16.0f}{s['reset_ms']:>10.1f}"
        for m in modes:
            line += f"{row[m]['env_steps_per_s']:>24.0f}{row[m]['ratio_to_single']:>7.2f}"
        lines.append(line)
    la = res["machine"].get("load_avg_at_start")
    lines.append(f"machine: {res['machine']['cpus']} CPUs" + (f", load average {la[0]:.1f} at start" if la else ""))
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: steps/s per env, single and each vectorized mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = list(results["envs"])
    modes = ["single", *results["config"]["modes"]]
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(ids)), 4))
    w = 0.8 / len(modes)
    for k, m in enumerate(modes):
        key = "steps_per_s" if m == "single" else "env_steps_per_s"
        vals = [results["envs"][e][m][key] for e in ids]
        label = m if m == "single" else f"{m} x{results['config']['num_envs']}"
        ax.bar(np.arange(len(ids)) + k * w, vals, w, label=label)
    ax.set_xticks(np.arange(len(ids)) + w * (len(modes) - 1) / 2, [e.split("/")[-1] for e in ids])
    ax.set_ylabel("env-steps/s")
    ax.set_title(f"embodimem bench envs ({results['config']['obs_size']}px rgb+depth+pose)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
