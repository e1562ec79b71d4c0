"""Evaluate a trained memory policy: per-episode seeds, per_episode.jsonl, summary.json with intervals, videos.

Episode i runs with seed ``start_seed + i`` whichever env slot it lands in, so results do not depend on
``num_envs``. Envs are stepped as a batch for the policy (one memory state [B,...]); a slot that finishes
starts the next episode with ``is_first`` set, which resets only that row of the memory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.distributions import Categorical

from embodimem.agents.ppo.config import EvalConfig, TrainConfig
from embodimem.agents.ppo.policy import MemoryPolicy
from embodimem.atomic import atomic_write_json, atomic_write_text
from embodimem.checkpoint import latest_checkpoint, load_checkpoint
from embodimem.config import load_yaml
from embodimem.stats import mean_ci, wilson_interval

# numeric info keys reported per episode when an env provides them at its last step
METRIC_KEYS = ("spl", "soft_spl", "distance_to_goal", "ndtw", "sdtw")


def _obs_row(obs: Any, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    if not isinstance(obs, dict):
        return {"": torch.as_tensor(np.asarray(obs))}
    return {k: torch.as_tensor(np.asarray(obs[k])) for k in keys}


def _stack(rows: list[dict[str, torch.Tensor]], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.stack([r[k] for r in rows]).to(device) for k in rows[0]}


def evaluate(cfg: EvalConfig, env_fn: Any = None) -> dict[str, Any]:
    """Run ``cfg.episodes`` episodes; write per_episode.jsonl, summary.json and videos; return the summary."""
    run_dir = Path(cfg.run_dir)
    train_cfg = load_yaml(TrainConfig, run_dir / "config.yaml")
    ckpt = cfg.checkpoint or latest_checkpoint(run_dir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'} (train first, or pass --checkpoint)")
    if cfg.threads <= 0:
        raise ValueError(f"EvalConfig.threads must be > 0, got {cfg.threads}")
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    out = Path(cfg.out) if cfg.out else run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)

    import embodimem.envs  # noqa: F401  (registers ids)

    make = env_fn or (lambda: gym.make(train_cfg.env, **train_cfg.env_args))
    n_slots = min(cfg.num_envs, cfg.episodes)
    envs = [make() for _ in range(n_slots)]
    policy = MemoryPolicy(train_cfg.policy, envs[0].observation_space, envs[0].action_space).to(device).eval()
    load_checkpoint(ckpt, model=policy, restore_rng=False)
    keys = policy.obs_keys
    torch.manual_seed(cfg.start_seed)  # action sampling is reproducible too

    records: list[dict[str, Any]] = []
    frames: dict[int, list[np.ndarray]] = {}
    next_ep = 0
    slot_ep = [-1] * n_slots
    slot_ret = [0.0] * n_slots
    slot_len = [0] * n_slots
    obs_rows: list[dict[str, torch.Tensor] | None] = [None] * n_slots
    is_first = torch.ones(n_slots, dtype=torch.bool)
    mem = policy.init_memory(n_slots, device)

    def start(i: int) -> None:
        nonlocal next_ep
        slot_ep[i], slot_ret[i], slot_len[i] = next_ep, 0.0, 0
        o, _ = envs[i].reset(seed=cfg.start_seed + next_ep)
        obs_rows[i] = _obs_row(o, keys)
        if next_ep < cfg.videos:
            frames[next_ep] = [_frame(o, envs[i])]
        is_first[i] = True
        next_ep += 1

    for i in range(n_slots):
        start(i)
    t0 = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=cfg.episodes, desc="eval", unit="episode")
    while len(records) < cfg.episodes:
        active = [i for i in range(n_slots) if slot_ep[i] >= 0]
        with torch.no_grad():
            logits, _, mem = policy.act(_stack(obs_rows, device), mem, is_first.to(device), donate=True)
        actions = logits.argmax(-1) if cfg.deterministic else Categorical(logits=logits).sample()
        is_first[:] = False
        for i in active:
            o, r, term, trunc, info = envs[i].step(int(actions[i]))
            slot_ret[i] += float(r)
            slot_len[i] += 1
            obs_rows[i] = _obs_row(o, keys)
            ep = slot_ep[i]
            if ep in frames:
                frames[ep].append(_frame(o, envs[i], step=slot_len[i], ret=slot_ret[i]))
            if term or trunc:
                rec = {"episode_ix": ep, "seed": cfg.start_seed + ep, "return": slot_ret[i], "length": slot_len[i],
                       "success": bool(info.get("is_success", False))}
                final = {**info, **info.get("metrics", {})}  # navigation tasks report episode metrics on the last step
                rec.update({k: float(final[k]) for k in METRIC_KEYS if k in final})
                records.append(rec)
                bar.update(1)
                if ep in frames:
                    frames[ep][-1] = _overlay(frames[ep][-1], f"ep {ep} {'SUCCESS' if rec['success'] else 'fail'} "
                                              f"R={slot_ret[i]:.2f}")
                if next_ep < cfg.episodes:
                    start(i)
                else:
                    slot_ep[i] = -1
    bar.close()
    for e in envs:
        e.close()
    records.sort(key=lambda r: r["episode_ix"])
    atomic_write_text(out / "per_episode.jsonl", "".join(_json_line(r) for r in records))
    summary = summarize(records)
    summary.update({"checkpoint": str(ckpt), "env": train_cfg.env, "memory": train_cfg.policy.memory,
                    "deterministic": cfg.deterministic, "start_seed": cfg.start_seed,
                    "eval_s": time.perf_counter() - t0})
    summary["videos"] = _write_videos(frames, out / "videos")
    atomic_write_json(out / "summary.json", summary)
    return summary


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Success with a Wilson 95% interval; return, length and nav metrics with Student-t 95% intervals."""
    n = len(records)
    succ = sum(r["success"] for r in records)
    lo, hi = wilson_interval(succ, n)
    s: dict[str, Any] = {"episodes": n, "success": succ / n if n else 0.0, "success_ci95": [lo, hi]}
    for k in ("return", "length", *METRIC_KEYS):
        vals = [r[k] for r in records if k in r]
        if vals:
            m, a, b = mean_ci(vals)
            s[k] = m
            s[f"{k}_ci95"] = [a, b]
    return s


def _json_line(r: dict[str, Any]) -> str:
    return json.dumps(r) + "\n"


def _frame(obs: Any, env: gym.Env, step: int = 0, ret: float = 0.0) -> np.ndarray:
    """An RGB frame for the video: the observation's rgb, else the env's render (None-safe)."""
    img = obs.get("rgb") if isinstance(obs, dict) else None
    if img is None:
        try:
            img = env.render()
        except Exception:
            img = None
    if img is None:
        img = np.zeros((64, 64, 3), np.uint8)
    return _overlay(np.asarray(img, dtype=np.uint8), f"t={step} R={ret:.2f}")


def _overlay(img: np.ndarray, text: str) -> np.ndarray:
    """Upscale small frames and draw the metrics text in the top-left corner."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    if im.width < 256:
        s = 256 // im.width
        im = im.resize((im.width * s, im.height * s), Image.NEAREST)
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, 8 + 6 * len(text), 14], fill=(0, 0, 0))
    d.text((4, 2), text, fill=(255, 255, 0))
    return np.asarray(im)


def _write_videos(frames: dict[int, list[np.ndarray]], folder: Path) -> list[str] | str:
    """mp4 per recorded episode via PyAV; a note instead when PyAV is missing."""
    if not frames:
        return []
    try:
        import av  # noqa: F401
    except ImportError:
        return "skipped: PyAV missing (pip install 'embodimem[video]')"
    from embodimem.video import write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ep, fr in sorted(frames.items()):
        p = folder / f"eval_episode_{ep}.mp4"
        write_mp4(p, fr, fps=8)
        paths.append(str(p))
    return paths
