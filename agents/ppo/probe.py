"""Decision probe: does a policy carry a MiniWorld task's cue to the decision point, and does it act on it?

For each seed the task's scripted solver walks to the decision point once per cue value. Its legs before the
decision never read the cue, so every cue value reaches the decision through the same actions and the same
frame there (tests check it): any cue information in the policy's features at that point came through memory.
The walk's observations are fed through the policy (trained checkpoint or fresh init), and a cross-validated
linear probe (multinomial logistic regression, folds grouped by seed) predicts the cue from

  first_frame      the encoder's pooled features of the first frame (sanity: the cue is in view at the start),
  decision_frame   those of the frame at the decision (chance for every policy: the frame is the same),
  memory_readout   the masked mean of the memory's readout tokens at the decision,
  policy_input     what the actor and critic read there (after the conditioner).

``action_dependence`` is the mean total-variation distance between the actor's action distributions at the
decision for two different cue values of the same seed: 0 when the decision ignores the cue. A policy whose
``policy_input`` predicts the cue but whose ``action_dependence`` is ~0 remembers but does not use it (an RL
problem, not a memory problem); one whose ``memory_readout`` is at chance never kept the cue.

    embodimem probe --run-dir runs/tmaze-...            # latest checkpoint
    embodimem probe --run-dir runs/tmaze-... --untrained  # the same architecture at init
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from embodimem.agents.ppo.config import TrainConfig
from embodimem.agents.ppo.policy import MemoryPolicy
from embodimem.atomic import atomic_write_json
from embodimem.checkpoint import latest_checkpoint, load_checkpoint
from embodimem.config import load_yaml

FEATURES = ("first_frame", "decision_frame", "memory_readout", "policy_input")


@dataclass
class ProbeConfig:
    """Probe a training run's policy at the task's decision point."""

    run_dir: Path = Path("runs/ppo")  # a training run (its config.yaml and checkpoints/)
    checkpoint: Path | None = None  # default: the run's latest checkpoint
    untrained: bool = False  # probe the run's architecture freshly initialised (torch seed `seed`) instead
    episodes: int = 32  # seeds walked; each once per cue value
    start_seed: int = 20_000  # disjoint from training and evaluation seeds
    folds: int = 4  # cross-validation folds (grouped by seed)
    l2: float = 1e-2  # ridge penalty of the logistic probe (on standardised features)
    seed: int = 0
    threads: int = 1
    out: Path | None = None  # default: <run_dir>/probe.json (untrained: probe_untrained.json)


def probe_accuracy(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 4, l2: float = 1e-2) -> float:
    """Cross-validated accuracy of a multinomial logistic regression predicting y [n] from x [n,F].

    Folds hold whole groups (every cue value of a seed lands in one fold); features are standardised with the
    training fold's statistics; the L2-penalised loss is minimised with L-BFGS (convex, so deterministic)."""
    x, y, groups = np.asarray(x, np.float64), np.asarray(y, np.int64), np.asarray(groups)
    if x.ndim != 2 or len(x) != len(y) or len(y) != len(groups):
        raise ValueError(f"probe_accuracy: x must be [n,F] with y, groups [n]; got {x.shape}, {y.shape}, {groups.shape}")
    uniq = np.unique(groups)
    if not 2 <= folds <= len(uniq):
        raise ValueError(f"probe_accuracy: folds must be in [2, {len(uniq)} groups], got {folds}")
    classes = int(y.max()) + 1
    correct = 0
    for k in range(folds):
        test = np.isin(groups, uniq[k::folds])
        mu, sd = x[~test].mean(0), x[~test].std(0) + 1e-6
        xt = torch.as_tensor((x[~test] - mu) / sd)
        yt = torch.as_tensor(y[~test])
        w = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            opt.zero_grad()
            v = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum()
            v.backward()
            return v

        opt.step(loss)
        with torch.no_grad():
            pred = (torch.as_tensor((x[test] - mu) / sd) @ w + b).argmax(-1).numpy()
        correct += int((pred == y[test]).sum())
    return correct / len(y)


@torch.no_grad()
def walk_features(policy: MemoryPolicy, rollout: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Feed a solver rollout up to its decision observation through the policy: (features, action probs there)."""
    mem = policy.init_memory(1)
    first = torch.ones(1, dtype=torch.bool)
    out: dict[str, np.ndarray] = {}
    for t, obs in enumerate(rollout.observations[: rollout.decision_index + 1]):
        row = {k: torch.as_tensor(np.asarray(obs[k]))[None] for k in policy.obs_keys}
        enc, readout, feat, mem = policy.step_features(row, mem, first)
        if t == 0:
            out["first_frame"] = enc.pooled[0].numpy()
        first[:] = False
    out["decision_frame"] = enc.pooled[0].numpy()
    if readout is not None:
        m = readout.mask.unsqueeze(-1).to(readout.tokens.dtype)
        out["memory_readout"] = ((readout.tokens * m).sum(-2) / m.sum(-2).clamp(min=1.0))[0].reshape(-1).numpy()
    out["policy_input"] = feat[0].numpy()
    return out, policy.actor(feat).softmax(-1)[0].numpy()


def probe(cfg: ProbeConfig) -> dict[str, Any]:
    """Walk cfg.episodes seeds x every cue value, probe each feature; write and return the result."""
    from embodimem.envs.miniworld.solvers import run_solver

    run_dir = Path(cfg.run_dir)
    train_cfg = load_yaml(TrainConfig, run_dir / "config.yaml")
    if cfg.episodes < cfg.folds or cfg.folds < 2:
        raise ValueError(f"ProbeConfig: need folds >= 2 and episodes >= folds, got {cfg.folds} and {cfg.episodes}")
    torch.set_num_threads(cfg.threads)
    import embodimem.envs  # noqa: F401  (registers ids)

    env = gym.make(train_cfg.env, **train_cfg.env_args)
    task = env.unwrapped
    if not hasattr(task, "scripted_plan") or len(task.OPTIONS) != 1:
        raise ValueError(f"probe: {train_cfg.env} is not a MiniWorld memory task with one cue option "
                         "(it needs a scripted solver and a decision point)")
    option = next(iter(task.OPTIONS))
    torch.manual_seed(cfg.seed)
    policy = MemoryPolicy(train_cfg.policy, env.observation_space, env.action_space).eval()
    ckpt = None
    if not cfg.untrained:
        ckpt = cfg.checkpoint or latest_checkpoint(run_dir / "checkpoints")
        if ckpt is None:
            raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'} (train first, or pass --untrained)")
        load_checkpoint(ckpt, model=policy, restore_rng=False)

    feats: dict[str, list[np.ndarray]] = {}
    labels, groups, skipped, tv = [], [], [], []
    for i in range(cfg.episodes):
        seed = cfg.start_seed + i
        env.reset(seed=seed)
        n = task.option_sizes[option]
        walks = [run_solver(env, seed=seed, options={option: c}, stop_at_decision=True) for c in range(n)]
        if any(w.decision_index is None for w in walks):
            skipped.append(seed)  # the solver did not reach the decision (rare with coarse moves)
            continue
        probs = []
        for c, w in enumerate(walks):
            f, p = walk_features(policy, w)
            for k, v in f.items():
                feats.setdefault(k, []).append(v)
            labels.append(c)
            groups.append(seed)
            probs.append(p)
        tv.append(np.mean([0.5 * np.abs(a - b).sum() for a, b in itertools.combinations(probs, 2)]))
    env.close()
    y, g = np.array(labels), np.array(groups)
    if len(np.unique(g)) < cfg.folds:
        raise ValueError(f"probe: only {len(np.unique(g))} seeds reached the decision point; need >= {cfg.folds}")
    result = {
        "run_dir": str(run_dir), "checkpoint": None if ckpt is None else str(ckpt), "untrained": cfg.untrained,
        "env": train_cfg.env, "memory": train_cfg.policy.memory, "option": option, "values": int(y.max()) + 1,
        "seeds": int(len(np.unique(g))), "skipped_seeds": skipped, "chance": float(np.bincount(y).max() / len(y)),
        "accuracy": {k: probe_accuracy(np.stack(feats[k]), y, g, cfg.folds, cfg.l2) for k in FEATURES if k in feats},
        "action_dependence": float(np.mean(tv)),
    }
    out = Path(cfg.out) if cfg.out else run_dir / ("probe_untrained.json" if cfg.untrained else "probe.json")
    atomic_write_json(out, result)
    result["out"] = str(out)
    return result
