"""The agents results table: PPO with each memory on memory tasks, several seeds, mean and 95% interval.

    python benchmarks/memory_agents.py --env embodimem/POPGym-v0 --env-args task=RepeatPreviousEasy \
        --memories none recurrent fifo hcam kv_window --seeds 0 1 2 --steps 60000 --out benchmarks/agents

Each (memory, seed) trains with `embodimem train` settings below, then `embodimem eval` runs held-out episodes
(seeds disjoint from training). The JSON keeps every run's summary; `tables.py` prints the README table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from embodimem.agents.ppo.config import EvalConfig, TrainConfig
from embodimem.agents.ppo.evaluate import evaluate
from embodimem.agents.ppo.policy import PolicyConfig
from embodimem.agents.ppo.train import train
from embodimem.atomic import atomic_write_json
from embodimem.stats import mean_ci


def parse_kv(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, v = it.split("=", 1)
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                pass
        out[k] = v
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="embodimem/POPGym-v0")
    p.add_argument("--env-args", nargs="*", default=["task=RepeatPreviousEasy"])
    p.add_argument("--memories", nargs="+", default=["none", "recurrent", "fifo", "hcam", "kv_window"])
    p.add_argument("--memory-args", nargs="*", default=[], help="memory:key=value, e.g. fifo:capacity=16")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=60_000)
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--num-steps", type=int, default=64)
    p.add_argument("--chunk-len", type=int, default=16)
    p.add_argument("--feature-dim", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-episodes", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("benchmarks/agents"))
    a = p.parse_args()
    env_args = parse_kv(a.env_args)
    mem_args: dict[str, dict] = {}
    for item in a.memory_args:
        name, kv = item.split(":", 1)
        mem_args.setdefault(name, {}).update(parse_kv([kv]))
    tag = a.env.split("/")[-1] + "".join(f"-{v}" for v in env_args.values())
    out_json = a.out / f"{tag}.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {"runs": {}}
    results.update({"env": a.env, "env_args": env_args, "steps": a.steps, "command": "python benchmarks/memory_agents.py "
                    + " ".join(__import__("sys").argv[1:])})
    work = Path("runs") / "memory-agents" / tag
    for memory in a.memories:
        for seed in a.seeds:
            key = f"{memory}/{seed}"
            if key in results["runs"]:
                continue  # resumable: finished runs are kept
            run_dir = work / memory / f"seed{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            cfg = TrainConfig(env=a.env, env_args=env_args, num_envs=a.num_envs, num_steps=a.num_steps,
                              chunk_len=a.chunk_len, total_steps=a.steps, lr=a.lr, seed=seed, run_dir=run_dir,
                              progress=False, checkpoint_every=10**9,
                              policy=PolicyConfig(memory=memory, memory_args=mem_args.get(memory, {}),
                                                  feature_dim=a.feature_dim, hidden=64, heads=4))
            t0 = time.perf_counter()
            tr = train(cfg)
            ev = evaluate(EvalConfig(run_dir=run_dir, episodes=a.eval_episodes, num_envs=8, videos=0,
                                     start_seed=10_000 + 1000 * seed))
            results["runs"][key] = {"train": tr, "eval": ev, "seconds": time.perf_counter() - t0}
            print(f"{key}: success {ev['success']:.2f} return {ev['return']:.3f} ({time.perf_counter() - t0:.0f} s)")
            atomic_write_json(out_json, results)  # after every run: an interruption loses nothing
    table = {}
    for memory in a.memories:
        runs = [results["runs"][f"{memory}/{s}"]["eval"] for s in a.seeds if f"{memory}/{s}" in results["runs"]]
        if runs:
            table[memory] = {m: mean_ci([r[m] for r in runs]) for m in ("success", "return")}
            table[memory]["seeds"] = len(runs)
    results["table"] = table
    atomic_write_json(out_json, results)
    for m, t in table.items():
        print(f"{m:10s} success {t['success'][0]:.2f} [{t['success'][1]:.2f}, {t['success'][2]:.2f}]  "
              f"return {t['return'][0]:.3f} [{t['return'][1]:.3f}, {t['return'][2]:.3f}]  n={t['seeds']}")


if __name__ == "__main__":
    main()
