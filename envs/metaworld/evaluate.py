"""Success rate of a policy over episodes x seeds, with a Wilson 95% interval (the manipulation protocol).

Protocol: for each seed s in ``seeds`` and episode i < ``episodes_per_seed`` the env is reset with
``episode_seed(s, i)`` (so every episode's initial state is reproducible and distinct), the policy's ``reset(obs)``
is called if it has one, and the episode runs until terminated or truncated. An episode succeeds if
``info["is_success"]`` was true at any step (``success``; ManiSkill's ``success_once``); ``success_at_end`` is the
flag on the last step. The summary pools every episode of every seed into one binomial proportion with a Wilson
score interval, and also reports per-seed rates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from embodimem.envs.metrics import wilson_interval

__all__ = ["episode_seed", "run_episode", "evaluate_policy", "success_summary"]


def episode_seed(seed: int, episode: int) -> int:
    """Reset seed (int in [0, 2**31)) of episode ``episode`` under evaluation seed ``seed``; distinct per pair."""
    if seed < 0 or episode < 0:
        raise ValueError(f"seed and episode must be >= 0, got seed={seed}, episode={episode}")
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1)[0] & 0x7FFFFFFF)


def run_episode(env: Any, policy: Callable[[Any], Any], *, seed: int, options: dict | None = None,
                max_steps: int | None = None) -> dict[str, Any]:
    """Roll out one episode -> {seed, length, return, success, success_at_end, terminated, truncated}."""
    obs, info = env.reset(seed=seed, options=options)
    if hasattr(policy, "reset"):
        policy.reset(obs)
    ret, steps, ever = 0.0, 0, bool(info.get("is_success", False))
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        ret += float(reward)
        steps += 1
        ever = ever or bool(info["is_success"])
        if max_steps is not None and steps >= max_steps:
            truncated = True
    return {"seed": seed, "length": steps, "return": ret, "success": ever,
            "success_at_end": bool(info.get("is_success", False)), "terminated": bool(terminated),
            "truncated": bool(truncated) and not terminated}


def success_summary(per_episode: Sequence[dict[str, Any]], key: str = "success") -> dict[str, Any]:
    """{n_episodes, successes, success_rate, ci95 [lo, hi] (Wilson), per_seed {seed: {n, successes, rate}}}."""
    n = len(per_episode)
    k = int(sum(bool(e[key]) for e in per_episode))
    lo, hi = wilson_interval(k, n)
    per_seed: dict[str, dict[str, Any]] = {}
    for e in per_episode:
        s = per_seed.setdefault(str(e.get("eval_seed", "all")), {"n": 0, "successes": 0})
        s["n"] += 1
        s["successes"] += int(bool(e[key]))
    for s in per_seed.values():
        s["rate"] = s["successes"] / s["n"]
    return {"metric": key, "n_episodes": n, "successes": k, "success_rate": (k / n) if n else float("nan"),
            "ci95": [lo, hi], "per_seed": per_seed}


def evaluate_policy(env: Any, policy: Callable[[Any], Any], *, seeds: Sequence[int] = (0,),
                    episodes_per_seed: int = 10, options: dict | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Run ``episodes_per_seed`` episodes per seed -> {"summary": success_summary(...), "per_episode": [...]}."""
    if episodes_per_seed < 1 or not seeds:
        raise ValueError(f"need episodes_per_seed >= 1 and at least one seed, got {episodes_per_seed}, {list(seeds)}")
    jobs = [(s, i) for s in seeds for i in range(episodes_per_seed)]
    it = jobs
    if progress:
        from tqdm import tqdm

        it = tqdm(jobs, desc="eval", unit="ep")
    per_episode = []
    for s, i in it:
        ep = run_episode(env, policy, seed=episode_seed(s, i), options=options)
        ep.update(eval_seed=int(s), episode=i, episode_index=len(per_episode),
                  task=getattr(getattr(env, "unwrapped", env), "task", None))
        per_episode.append(ep)
    summary = success_summary(per_episode)
    summary["success_at_end_rate"] = success_summary(per_episode, "success_at_end")["success_rate"]
    summary["seeds"] = [int(s) for s in seeds]
    summary["episodes_per_seed"] = episodes_per_seed
    return {"summary": summary, "per_episode": per_episode}
