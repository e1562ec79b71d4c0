"""PPO with any registered memory, readable top to bottom (CleanRL style), DD-PPO under torchrun.

Rollout: every env's memory state is carried step to step and reset by ``is_first`` inside the memory.
Update: the rollout is cut into chunks of ``chunk_len`` steps; each chunk replays through the memory's
``forward`` from the state saved at its start (truncated BPTT), so every memory trains through one path.
Autoreset is gymnasium's SAME_STEP: the step that ends an episode returns the next episode's first
observation, so ``is_first[t+1] = terminated[t] | truncated[t]``; truncation is treated as termination.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.distributions import Categorical

from embodimem.agents.ppo.config import TrainConfig
from embodimem.agents.ppo.distributed import DistInfo, allreduce_gradients, allreduce_mean, init_distributed, shutdown
from embodimem.agents.ppo.policy import MemoryPolicy
from embodimem.agents.ppo.rollout import Rollout
from embodimem.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from embodimem.config import print_config
from embodimem.runs import RunDir, truncate_metrics
from embodimem.seeding import rank_seed, seed_everything


# fields a resumed run may change (moving the run directory, training longer)
RESUME_MAY_CHANGE = ("resume", "run_dir", "total_steps", "progress")


def make_vector_env(cfg: TrainConfig, env_fns: list[Any] | None = None) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``cfg.env`` with SAME_STEP autoreset (sync or async)."""
    import embodimem.envs  # noqa: F401  (registers the embodimem/ ids)

    if env_fns is None:
        if cfg.env.startswith("embodimem/"):
            from embodimem.envs import resolve_env_id

            resolve_env_id(cfg.env)  # unknown ids fail here, listing the valid ones
        env_fns = [lambda: gym.make(cfg.env, **cfg.env_args) for _ in range(cfg.num_envs)]
    cls = gym.vector.SyncVectorEnv if cfg.vectorization == "sync" else gym.vector.AsyncVectorEnv
    return cls(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def obs_to_torch(obs: Any, keys: tuple[str, ...], device: torch.device) -> dict[str, torch.Tensor]:
    """Vector-env observation (dict of arrays, or one array) -> the entries the policy reads, as tensors."""
    if not isinstance(obs, dict):
        return {"": torch.as_tensor(np.asarray(obs), device=device)}
    return {k: torch.as_tensor(np.asarray(obs[k]), device=device) for k in keys}


def episode_ends(info: dict[str, Any], done: np.ndarray) -> np.ndarray:
    """Per env: did the episode that just ended succeed (``info['is_success']`` of its final step)."""
    final = info.get("final_info", {})
    succ = final.get("is_success", info.get("is_success", np.zeros_like(done)))
    return np.asarray(succ, dtype=bool) & done


def _pickle_envs(envs: gym.vector.VectorEnv) -> torch.Tensor | None:
    """The sub-envs as bytes (uint8 tensor) when they can be pickled: exact resume; None otherwise."""
    if not isinstance(envs, gym.vector.SyncVectorEnv):
        return None
    try:
        import cloudpickle

        return torch.frombuffer(bytearray(cloudpickle.dumps(list(envs.envs))), dtype=torch.uint8).clone()
    except Exception:  # GL contexts, simulators with native handles: resume restarts envs from seeds
        return None


def train(cfg: TrainConfig, env_fns: list[Any] | None = None) -> dict[str, Any]:
    """Run PPO; returns the final counters and last logged metrics. ``env_fns`` overrides env creation (tests)."""
    cfg.validate()
    dist_info: DistInfo = init_distributed(cfg.device)
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device if not cfg.device.startswith("cuda") else f"cuda:{dist_info.local_rank}")
    seed = rank_seed(cfg.seed, dist_info.rank)
    seed_everything(seed)

    # ----- run directory (rank 0 writes) ------------------------------------------------------------------
    run = RunDir(cfg.run_dir, name=cfg.name, resume=cfg.resume) if dist_info.is_main else None
    if run is not None:
        run.save_config(cfg, ignore=RESUME_MAY_CHANGE)
        print_config(cfg, title=f"embodimem train -> {run.path}")

    # ----- envs, policy, optimizer -----------------------------------------------------------------------
    envs = make_vector_env(cfg, env_fns)
    policy = MemoryPolicy(cfg.policy, envs.single_observation_space, envs.single_action_space).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=1e-5)
    keys = policy.obs_keys
    B, T = cfg.num_envs, cfg.num_steps
    steps_per_update = B * T * dist_info.world_size
    num_updates = max(1, cfg.total_steps // steps_per_update)

    update, global_step = 0, 0
    obs_np, _ = envs.reset(seed=[seed * 1000 + i for i in range(B)])
    obs = obs_to_torch(obs_np, keys, device)
    mem = policy.init_memory(B, device)
    is_first = torch.ones(B, dtype=torch.bool, device=device)
    ep_return = torch.zeros(B)

    if cfg.resume:
        ckpt = latest_checkpoint(cfg.run_dir / "checkpoints")  # every rank loads the shared weights
        if ckpt is None:
            raise FileNotFoundError(f"resume: no checkpoint in {cfg.run_dir}/checkpoints")
        loaded = load_checkpoint(ckpt, model=policy, optimizer=optimizer, expected_config=cfg,
                                 ignore_config_fields=RESUME_MAY_CHANGE)
        update, global_step = loaded.counters["update"], loaded.counters["global_step"]
        ex = loaded.extra
        # exact resume: the envs, observation and memory as they were (rank 0 saved its own; other ranks restart)
        if ex.get("envs") is not None and dist_info.is_main:
            import cloudpickle

            saved_envs = cloudpickle.loads(bytes(ex["envs"].numpy()))
            envs.close()
            envs = make_vector_env(cfg, [lambda e=e: e for e in saved_envs])
            obs = {k: v.to(device) for k, v in ex["obs"].items()}
            is_first = ex["is_first"].to(device)
            mem = {k: v.to(device) for k, v in ex["memory"].items()}
            ep_return = ex["ep_return"]
        else:  # envs with native handles (GL, simulators): new episodes from seeds offset by the step count
            obs_np, _ = envs.reset(seed=[seed * 1000 + global_step + i for i in range(B)])
            obs = obs_to_torch(obs_np, keys, device)
        if run is not None:
            truncate_metrics(run.metrics_path, global_step)
    logger = run.metrics_logger() if run else None

    from tqdm import tqdm

    bar = tqdm(total=num_updates, initial=update, desc="train", unit="update",
               disable=not (cfg.progress and dist_info.is_main))
    recent_success: list[float] = []
    recent_return: list[float] = []
    last_metrics: dict[str, Any] = {}
    t_start = time.perf_counter()
    steps_start = global_step

    while update < num_updates:
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = cfg.lr * (1.0 - update / num_updates)

        # ----- rollout ---------------------------------------------------------------------------------
        ro = Rollout(T, B, cfg.chunk_len)
        policy.eval()  # no dropout anywhere in the acting path
        for t in range(T):
            if t % cfg.chunk_len == 0:  # a copy even on CPU: the acts below update ``mem`` in place (donate)
                ro.chunk_states.append({k: v.to("cpu", copy=True) for k, v in mem.items()})
            ro.store_obs(t, {k: v.cpu() for k, v in obs.items()})
            ro.is_first[t] = is_first.cpu()
            with torch.no_grad():
                logits, value, mem = policy.act(obs, mem, is_first, donate=True)
                dist = Categorical(logits=logits)
                action = dist.sample()
            obs_np, reward, term, trunc, info = envs.step(action.cpu().numpy())
            done = np.logical_or(term, trunc)
            ro.actions[t], ro.logprobs[t], ro.values[t] = action.cpu(), dist.log_prob(action).cpu(), value.cpu()
            ro.rewards[t] = torch.as_tensor(reward, dtype=torch.float32)
            ro.dones[t] = torch.as_tensor(done)
            obs = obs_to_torch(obs_np, keys, device)
            is_first = torch.as_tensor(done, device=device)
            ep_return += ro.rewards[t]
            succ = episode_ends(info, done)
            for i in np.flatnonzero(done):
                recent_success.append(float(succ[i]))
                recent_return.append(float(ep_return[i]))
            ep_return[torch.as_tensor(done)] = 0.0
        global_step += steps_per_update

        with torch.no_grad():  # bootstrap value of the next observation; the memory state is not advanced
            _, next_value, _ = policy.act(obs, mem, is_first)
        adv, ret = ro.advantages(next_value.cpu(), cfg.gamma, cfg.gae_lambda)

        # ----- update: epochs x minibatches of whole chunks ----------------------------------------------
        policy.train()
        C, S = ro.sequences()
        states = ro.stacked_chunk_states()
        mb_size = S // cfg.minibatches
        stats: dict[str, list[float]] = {"pg_loss": [], "v_loss": [], "entropy": [], "approx_kl": [], "clipfrac": []}
        for _ in range(cfg.epochs):
            for mb in torch.randperm(S).split(mb_size):
                o = {k: v.to(device) for k, v in zip(ro.obs, ro.gather(mb, *ro.obs.values()))}
                act, old_lp, mb_adv, mb_ret, first = (x.to(device) for x in
                                                      ro.gather(mb, ro.actions, ro.logprobs, adv, ret, ro.is_first))
                mem0 = {k: v[mb].to(device) for k, v in states.items()}
                logits, values = policy.evaluate(o, mem0, first)
                dist = Categorical(logits=logits)
                new_lp = dist.log_prob(act)
                log_ratio = new_lp - old_lp
                ratio = log_ratio.exp()
                if cfg.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
                v_loss = 0.5 * (values - mb_ret).pow(2).mean()
                entropy = dist.entropy().mean()
                loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                allreduce_gradients(policy, dist_info)
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    stats["pg_loss"].append(pg_loss.item())
                    stats["v_loss"].append(v_loss.item())
                    stats["entropy"].append(entropy.item())
                    stats["approx_kl"].append(((ratio - 1) - log_ratio).mean().item())
                    stats["clipfrac"].append(((ratio - 1).abs() > cfg.clip).float().mean().item())
        update += 1

        # ----- log, checkpoint ---------------------------------------------------------------------------
        metrics = {k: float(np.mean(v)) for k, v in stats.items()}
        if recent_success:
            metrics["success_rate"] = float(np.mean(recent_success[-100:]))
            metrics["episode_return"] = float(np.mean(recent_return[-100:]))
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["steps_per_s"] = (global_step - steps_start) / (time.perf_counter() - t_start)
        metrics = allreduce_mean(metrics, dist_info)
        last_metrics = {"update": update, "global_step": global_step, **metrics}
        if logger is not None:
            logger.log(global_step, metrics)
            bar.update(1)
            bar.set_postfix(sps=f"{metrics['steps_per_s']:.0f}", success=f"{metrics.get('success_rate', float('nan')):.2f}")
            if update % cfg.checkpoint_every == 0 or update == num_updates:
                save_checkpoint(run.checkpoint_path(global_step), model=policy, optimizer=optimizer,
                                counters={"update": update, "global_step": global_step}, config=cfg,
                                extra={"memory": {k: v.cpu() for k, v in mem.items()},
                                       "obs": {k: v.cpu() for k, v in obs.items()}, "is_first": is_first.cpu(),
                                       "ep_return": ep_return.clone(),
                                       "envs": _pickle_envs(envs)})
    bar.close()
    if logger is not None:
        logger.close()
    envs.close()
    shutdown(dist_info)
    return {**last_metrics, "run_dir": str(run.path) if run else None}


def first_epoch_ratio_check(policy: MemoryPolicy, ro: Rollout, device: torch.device) -> float:
    """Max |ratio - 1| when re-evaluating a rollout before any update (0 when forward == stepping)."""
    C, S = ro.sequences()
    states = ro.stacked_chunk_states()
    mb = torch.arange(S)
    o = dict(zip(ro.obs, ro.gather(mb, *ro.obs.values())))
    act, old_lp, first = ro.gather(mb, ro.actions, ro.logprobs, ro.is_first)
    with torch.no_grad():
        logits, _ = policy.evaluate(o, {k: v for k, v in states.items()}, first)
    new_lp = Categorical(logits=logits).log_prob(act)
    return float((new_lp - old_lp).exp().sub(1).abs().max())


__all__ = ["TrainConfig", "train", "make_vector_env", "obs_to_torch", "first_epoch_ratio_check"]
