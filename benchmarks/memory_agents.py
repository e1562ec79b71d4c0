"""The agents results table: PPO with each memory on a memory task, several seeds, mean and 95% interval.

    python benchmarks/memory_agents.py --config configs/tmaze.yaml \
        --memories none recurrent fifo hcam kv_window point_frame --seeds 0 1 2 --out benchmarks/agents

Each (memory, seed) trains from the preset (a ``TrainConfig`` YAML, as ``embodimem train --config``) with only
``policy.memory``, ``seed`` and ``run_dir`` changed (plus ``--steps`` / ``--memory-args`` if given), then
``embodimem eval``'s evaluation runs held-out episodes (seeds disjoint from training). The JSON keeps every run's
train and eval summary and is rewritten atomically after each run, so an interrupted grid resumes where it
stopped; `tables.py` renders the README table from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import shutil
import sys
import time
from pathlib import Path

from embodimem.agents.ppo.config import EvalConfig, TrainConfig
from embodimem.agents.ppo.evaluate import evaluate
from embodimem.agents.ppo.train import train
from embodimem.atomic import atomic_write_json
from embodimem.config import load_yaml
from embodimem.stats import mean_ci

METRICS = ("success", "return", "spl")  # summarised per memory (spl only where the env reports it)
TABLE_ORDER = ("none", "recurrent", "fifo", "hcam", "kv_window", "place", "point_frame", "octree")


def parse_kv(items: list[str]) -> dict:
    """["k=v", ...] -> {k: int | float | str}."""
    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"memory_agents: expected key=value, got {it!r}")
        k, v = it.split("=", 1)
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                pass
        out[k] = v
    return out


def summarise(results: dict, memories: list[str], seeds: list[int]) -> dict:
    """Per memory: mean and 95% t-interval over seeds of each eval metric, the seed count and the memory_args."""
    table = {}
    for memory in memories:
        records = [results["runs"][f"{memory}/{s}"] for s in seeds if f"{memory}/{s}" in results["runs"]]
        runs = [r["eval"] for r in records]
        if runs:
            table[memory] = {m: mean_ci([r[m] for r in runs]) for m in METRICS if all(m in r for r in runs)}
            for m in ("success", "spl"):  # rates: a t-interval over 3 seeds can leave [0, 1]; clip it
                if m in table[memory]:
                    mu, lo, hi = table[memory][m]
                    table[memory][m] = (mu, max(0.0, lo), min(1.0, hi))
            table[memory]["seeds"] = len(runs)
            args = {json.dumps(r.get("memory_args", {}), sort_keys=True) for r in records}
            if len(args) > 1:
                raise ValueError(f"{memory}: runs with different memory_args {sorted(args)} in one table")
            table[memory]["memory_args"] = json.loads(args.pop())
    return table


def save(out_json: Path, results: dict, memories: list[str], seeds: list[int]) -> dict:
    """Merge this process's runs into the JSON on disk (under a lock) and rewrite it atomically.

    Several processes may fill one grid side by side (e.g. one per core, each with its own memories); each
    keeps the runs the others wrote.
    """
    out_json.parent.mkdir(parents=True, exist_ok=True)
    with open(out_json.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        disk = json.loads(out_json.read_text()) if out_json.exists() else {"runs": {}}
        merged = {**disk, **{k: v for k, v in results.items() if k != "runs"}, "runs": {**disk["runs"], **results["runs"]}}
        merged["commands"] = list(dict.fromkeys([*disk.get("commands", []), results["command"]]))
        held = {k.split("/")[0] for k in merged["runs"]}
        order = sorted(held, key=lambda m: (TABLE_ORDER.index(m) if m in TABLE_ORDER else len(TABLE_ORDER), m))
        merged["table"] = summarise(merged, order, sorted({int(k.split("/")[1]) for k in merged["runs"]} | set(seeds)))
        atomic_write_json(out_json, merged)
    return merged


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, required=True, help="TrainConfig preset (configs/*.yaml)")
    p.add_argument("--memories", nargs="+", default=["none", "recurrent", "fifo", "hcam", "kv_window"])
    p.add_argument("--memory-args", nargs="*", default=[], help="memory:key=value, e.g. fifo:capacity=16")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=0, help="total env steps per run (0 = the preset's)")
    p.add_argument("--eval-episodes", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("benchmarks/agents"))
    a = p.parse_args()
    base = load_yaml(TrainConfig, a.config)
    if a.steps:
        base.total_steps = a.steps
    mem_args: dict[str, dict] = {}
    for item in a.memory_args:
        name, kv = item.split(":", 1)
        mem_args.setdefault(name, {}).update(parse_kv([kv]))
    tag = a.config.stem
    out_json = a.out / f"{tag}.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {"runs": {}}
    results.update({"env": base.env, "env_args": base.env_args, "steps": base.total_steps, "preset": str(a.config),
                    "command": "python benchmarks/memory_agents.py " + " ".join(sys.argv[1:])})
    work = Path("runs") / "memory-agents" / tag
    for memory in a.memories:
        for seed in a.seeds:
            key = f"{memory}/{seed}"
            if key in results["runs"]:
                continue  # resumable: finished runs are kept
            run_dir = work / memory / f"seed{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            policy = dataclasses.replace(base.policy, memory=memory,
                                         memory_args={**base.policy.memory_args, **mem_args.get(memory, {})})
            cfg = dataclasses.replace(base, policy=policy, seed=seed, run_dir=run_dir, progress=False,
                                      checkpoint_every=10**9, resume=False)
            t0 = time.perf_counter()
            tr = train(cfg)
            ev = evaluate(EvalConfig(run_dir=run_dir, episodes=a.eval_episodes, num_envs=8, videos=0,
                                     start_seed=10_000 + 1000 * seed))
            results["runs"][key] = {"train": tr, "eval": ev, "seconds": time.perf_counter() - t0,
                                    "memory_args": policy.memory_args}
            print(f"{key}: success {ev['success']:.2f} return {ev['return']:.3f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
            results = save(out_json, results, a.memories, a.seeds)  # after every run: an interruption loses nothing
    results = save(out_json, results, a.memories, a.seeds)
    for m, t in results["table"].items():
        print(f"{m:12s} " + "  ".join(f"{k} {t[k][0]:.3f} [{t[k][1]:.3f}, {t[k][2]:.3f}]" for k in METRICS if k in t)
              + f"  n={t['seeds']}")


if __name__ == "__main__":
    main()
