"""Record scripted expert demonstrations into an episode dataset (see :mod:`.dataset` for the format).

    python -m embodimem.envs.metaworld.record --task pick-place-v3 --episodes 10 --out runs/demos/pick-place
    python -m embodimem.envs.metaworld.record --task cue_pick_place --episodes 10 --out runs/demos/cue

``--task`` is a Meta-World v3 task name or a cue-task layout name from ``maps/metaworld/``. Episode k is reset
with ``episode_seed(seed, attempt)``; by default only successful attempts are kept (``--keep-failures`` keeps
all), stopping after ``--max-attempts`` (default 3 x episodes). Appending to an existing dataset is allowed when
its fps, cameras and image size match.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RecordConfig", "make_env_and_expert", "record", "main"]


@dataclass
class RecordConfig:
    """Flags of ``python -m embodimem.envs.metaworld.record``."""

    task: str = "pick-place-v3"
    """Meta-World v3 task (e.g. pick-place-v3) or a cue layout name (e.g. cue_pick_place)."""
    episodes: int = 10
    """Episodes to write."""
    out: Path = Path("runs/demos")
    """Dataset folder (created or appended to)."""
    seed: int = 0
    """Evaluation seed; episode seeds derive from (seed, attempt)."""
    cameras: tuple[str, ...] = ()
    """Cameras to record (first = primary); empty = the env's default."""
    size: int = 64
    """Image height = width in pixels (even, for H.264)."""
    depth: bool = True
    """Record depth (uint16 mm) and render it."""
    max_steps: int = 200
    """Episode horizon (the episode also ends on success)."""
    noise_std: float = 0.0
    """Gaussian noise on the expert's xyz action, for diverse demonstrations."""
    keep_failures: bool = False
    """Also keep episodes where the expert failed."""
    max_attempts: int = 0
    """Stop after this many attempts (0 = 3 x episodes)."""
    crf: int = 18
    """H.264 quality (0 best, 51 worst)."""


def make_env_and_expert(task: str, *, cameras: tuple[str, ...] = (), size: int = 64, depth: bool = True,
                        max_steps: int = 200, noise_std: float = 0.0, seed: int | None = None) -> tuple[Any, Any]:
    """(env, expert) for a Meta-World task name or a cue layout name; unknown names raise ValueError."""
    from embodimem.envs.metaworld.adapter import MetaWorldEnv
    from embodimem.envs.metaworld.experts import CueExpert, MetaWorldExpert
    from embodimem.envs.metaworld.instructions import INSTRUCTIONS

    kw: dict[str, Any] = {"height": size, "width": size, "depth": depth, "max_episode_steps": max_steps}
    if cameras:
        kw["cameras"] = tuple(cameras)
    if task in INSTRUCTIONS:
        env = MetaWorldEnv(task, terminate_on_success=True, **kw)
        return env, MetaWorldExpert(task, noise_std=noise_std, seed=seed)
    from embodimem.envs.metaworld.cue_task import MetaWorldCueEnv, load_cue_layout

    try:
        layout = load_cue_layout(task)
    except ValueError as e:
        raise ValueError(f"unknown task {task!r}: not a Meta-World v3 task ({', '.join(sorted(INSTRUCTIONS))}) "
                         f"and not a cue layout ({e})") from None
    return MetaWorldCueEnv(layout, **kw), CueExpert(layout, noise_std=noise_std, seed=seed)


def record(cfg: RecordConfig) -> dict[str, Any]:
    """Record ``cfg.episodes`` expert episodes into ``cfg.out``; returns a summary dict (also printed by main)."""
    from embodimem.envs.metaworld.dataset import EpisodeWriter
    from embodimem.envs.metaworld.evaluate import episode_seed, success_summary

    if cfg.episodes < 1:
        raise ValueError(f"--episodes: expected >= 1, got {cfg.episodes}")
    env, expert = make_env_and_expert(cfg.task, cameras=cfg.cameras, size=cfg.size, depth=cfg.depth,
                                      max_steps=cfg.max_steps, noise_std=cfg.noise_std, seed=cfg.seed)
    cams = list(env.cameras)
    writer = EpisodeWriter(cfg.out, fps=env.metadata["render_fps"], cameras=cams, height=cfg.size, width=cfg.size,
                           depth=cfg.depth, crf=cfg.crf)
    max_attempts = cfg.max_attempts or 3 * cfg.episodes
    attempts: list[dict[str, Any]] = []
    written, frames, t0 = 0, 0, time.perf_counter()
    try:
        while written < cfg.episodes and len(attempts) < max_attempts:
            s = episode_seed(cfg.seed, len(attempts))
            obs, info = env.reset(seed=s)
            expert.reset(obs, seed=s)
            writer.start_episode(task=env.instruction, seed=s, env_task=cfg.task)
            ever, done = False, False
            while not done:
                action = expert(obs)
                nxt, reward, terminated, truncated, info = env.step(action)
                writer.add_step(obs, action, reward, terminated=terminated, is_success=info["is_success"])
                ever = ever or bool(info["is_success"])
                obs, done = nxt, terminated or truncated
            attempts.append({"seed": s, "success": ever})
            if ever or cfg.keep_failures:
                frames += writer.end_episode(success=ever)["length"]
                written += 1
            else:
                writer.abort_episode()
    finally:
        writer.close()
        env.close()
    dt = time.perf_counter() - t0
    summary = success_summary(attempts)
    return {"task": cfg.task, "out": str(cfg.out), "episodes_written": written, "attempts": len(attempts),
            "expert_success_rate": summary["success_rate"], "expert_success_ci95": summary["ci95"],
            "frames": frames, "seconds": dt, "steps_per_s": frames / dt if dt > 0 else 0.0,
            "dataset_episodes": writer.num_episodes}


def main(argv: list[str] | None = None) -> int:
    """Console entry: parse flags with tyro, record, print a one-line summary."""
    import tyro

    cfg = tyro.cli(RecordConfig, args=sys.argv[1:] if argv is None else argv,
                   prog="python -m embodimem.envs.metaworld.record")
    res = record(cfg)
    lo, hi = res["expert_success_ci95"]
    print(f"{res['task']}: wrote {res['episodes_written']} episodes ({res['frames']} frames) to {res['out']} "
          f"[dataset now {res['dataset_episodes']} episodes]; expert success {res['expert_success_rate']:.2f} "
          f"(95% CI {lo:.2f}-{hi:.2f}) over {res['attempts']} attempts; {res['seconds']:.1f} s, "
          f"{res['steps_per_s']:.1f} recorded steps/s")
    if res["episodes_written"] < cfg.episodes:
        print(f"warning: only {res['episodes_written']} of {cfg.episodes} episodes succeeded within "
              f"{res['attempts']} attempts (use --keep-failures or --max-attempts)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
