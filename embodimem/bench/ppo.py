"""``embodimem bench ppo``: training env-steps/s of our PPO (recurrent memory) against a CleanRL-style
single-file PPO-LSTM kept in benchmarks/, on the same env with the same hyperparameters, in one run.

Both replay whole rollouts per update (our chunk_len = num_steps), minibatch over envs, use an LSTM of the
same size after a conv (or MLP) encoder of the same shape, and run single-threaded.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embodimem.bench.common import header, save_results

REFERENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "ppo_lstm_reference.py"


@dataclass
class Config:
    env: str = "embodimem/MiniGridMemory-v0"
    num_envs: int = 8
    num_steps: int = 64
    updates: int = 6
    repeats: int = 2  # alternate reference/ours this many times; report the best of each (less noise)
    feature_dim: int = 64
    hidden: int = 64
    seed: int = 0
    out: Path = Path("runs/bench-ppo")


def _reference():
    if not REFERENCE.is_file():
        raise FileNotFoundError(f"bench ppo needs the reference at {REFERENCE} (run from a source checkout)")
    spec = importlib.util.spec_from_file_location("ppo_lstm_reference", REFERENCE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


def _ours(cfg: Config) -> dict[str, float]:
    from embodimem.agents.ppo.config import TrainConfig
    from embodimem.agents.ppo.policy import PolicyConfig
    from embodimem.agents.ppo.train import train

    with tempfile.TemporaryDirectory() as d:
        tc = TrainConfig(env=cfg.env, num_envs=cfg.num_envs, num_steps=cfg.num_steps, chunk_len=cfg.num_steps,
                         total_steps=cfg.updates * cfg.num_envs * cfg.num_steps, minibatches=4, epochs=4, lr=5e-4,
                         anneal_lr=False, seed=cfg.seed, run_dir=Path(d) / "run", progress=False,
                         checkpoint_every=10**9,
                         policy=PolicyConfig(memory="recurrent", memory_args={"cell": "lstm", "hidden": cfg.hidden},
                                             feature_dim=cfg.feature_dim, encoder_width=16, encoder_depth=3,
                                             conditioner="concat", hidden=cfg.hidden))
        t0 = time.perf_counter()
        res = train(tc)
        secs = time.perf_counter() - t0
    steps = cfg.updates * cfg.num_envs * cfg.num_steps
    return {"env_steps": steps, "seconds": secs, "steps_per_s": steps / secs, "loop_steps_per_s": res["steps_per_s"]}


def run(cfg: Config, command: str = "") -> dict[str, Any]:
    """Alternate reference and ours ``repeats`` times; the ratio of best steps/s is the result."""
    ref = _reference()
    args = ref.Args(env=cfg.env, num_envs=cfg.num_envs, num_steps=cfg.num_steps, updates=cfg.updates,
                    feature_dim=cfg.feature_dim, hidden=cfg.hidden, seed=cfg.seed)
    refs, ours = [], []
    for _ in range(cfg.repeats):
        refs.append(ref.run(args))
        ours.append(_ours(cfg))
    best_ref = max(r["steps_per_s"] for r in refs)
    best_ours = max(o["steps_per_s"] for o in ours)
    res = {**header("ppo", cfg, command), "reference_runs": refs, "ours_runs": ours,
           "reference_steps_per_s": best_ref, "ours_steps_per_s": best_ours, "ratio_ours_over_reference": best_ours / best_ref}
    return save_results(res, cfg, "ppo")


def format_table(res: dict[str, Any]) -> str:
    return (f"env {res['config']['env']}: reference PPO-LSTM {res['reference_steps_per_s']:.0f} env-steps/s, "
            f"embodimem PPO (recurrent lstm) {res['ours_steps_per_s']:.0f} env-steps/s, "
            f"ratio {res['ratio_ours_over_reference']:.2f}")
