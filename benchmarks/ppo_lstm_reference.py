"""Reference for `embodimem bench ppo`: a single-file, CleanRL-style PPO-LSTM (no embodimem imports).

Same recipe as CleanRL's recurrent PPO: the LSTM state at the rollout start is stored, and each update
replays whole env sequences (minibatches over envs) through the LSTM with a Python loop that zeroes the
state where an episode started. Used only as a throughput baseline measured in the same run.

    python benchmarks/ppo_lstm_reference.py --env MiniGrid-MemoryS7-v0 --updates 5
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical


@dataclass
class Args:
    env: str = "MiniGrid-MemoryS7-v0"
    num_envs: int = 8
    num_steps: int = 64
    updates: int = 5
    lr: float = 5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    epochs: int = 4
    minibatches: int = 4
    clip: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    feature_dim: int = 64
    width: int = 16
    depth: int = 3
    hidden: int = 64  # LSTM size
    seed: int = 0
    threads: int = 1


class Agent(nn.Module):
    def __init__(self, obs_space: gym.Space, n_actions: int, a: Args):
        super().__init__()
        self.is_image = isinstance(obs_space, gym.spaces.Dict) and "rgb" in obs_space.spaces
        if self.is_image:
            layers, c = [], 3
            for i in range(a.depth):
                o = min(a.width * 2**i, a.feature_dim)
                layers += [nn.Conv2d(c, o, 3, 2, 1), nn.GroupNorm(4, o), nn.SiLU()]
                c = o
            self.enc = nn.Sequential(*layers, nn.Conv2d(c, a.feature_dim, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            n = int(np.prod(obs_space.shape))
            self.enc = nn.Sequential(nn.Flatten(), nn.Linear(n, a.hidden), nn.SiLU(), nn.Linear(a.hidden, a.feature_dim))
        self.lstm = nn.LSTM(a.feature_dim, a.hidden)
        # heads read [encoder feature ; LSTM output] through two tanh layers: the same network as the
        # embodimem policy under test, so the ratio measures the training code, not the network size
        n_in = a.feature_dim + a.hidden
        self.actor = nn.Sequential(nn.Linear(n_in, a.hidden), nn.Tanh(), nn.Linear(a.hidden, a.hidden), nn.Tanh(),
                                   nn.Linear(a.hidden, n_actions))
        self.critic = nn.Sequential(nn.Linear(n_in, a.hidden), nn.Tanh(), nn.Linear(a.hidden, a.hidden), nn.Tanh(),
                                    nn.Linear(a.hidden, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_image:
            x = x.permute(0, 3, 1, 2).float() / 255.0
        return self.enc(x.float())

    def hidden(self, x: torch.Tensor, state: tuple, first: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """x [T*B,...], first [T,B] -> [feature ; LSTM output] [T*B, F+H], zeroing the state where an episode starts."""
        T, B = first.shape
        f = self.features(x)
        h = f.view(T, B, -1)
        outs = []
        for t in range(T):
            keep = (~first[t]).float().view(1, -1, 1)
            out, state = self.lstm(h[t:t + 1], (state[0] * keep, state[1] * keep))
            outs.append(out)
        return torch.cat([f, torch.cat(outs).view(T * B, -1)], dim=-1), state


def run(a: Args) -> dict[str, float]:
    """Train for ``a.updates`` updates; returns env steps/s of the whole loop (rollout + update)."""
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    import embodimem.envs  # noqa: F401  (registers embodimem/ ids; the reference itself uses plain gymnasium)

    envs = gym.vector.SyncVectorEnv([lambda: gym.make(a.env) for _ in range(a.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    space = envs.single_observation_space
    key = "rgb" if isinstance(space, gym.spaces.Dict) and "rgb" in space.spaces else None
    agent = Agent(space, int(envs.single_action_space.n), a)
    opt = torch.optim.Adam(agent.parameters(), lr=a.lr, eps=1e-5)
    T, B = a.num_steps, a.num_envs
    obs_np, _ = envs.reset(seed=[a.seed * 1000 + i for i in range(B)])
    get = (lambda o: torch.as_tensor(o[key])) if key else (lambda o: torch.as_tensor(o))
    obs, first = get(obs_np), torch.ones(B, dtype=torch.bool)
    state = (torch.zeros(1, B, a.hidden), torch.zeros(1, B, a.hidden))
    t0 = time.perf_counter()
    for _ in range(a.updates):
        init_state = (state[0].clone(), state[1].clone())
        buf_obs = torch.zeros(T, *obs.shape, dtype=obs.dtype)
        buf_first = torch.zeros(T, B, dtype=torch.bool)
        acts, lps, vals, rews, dones = (torch.zeros(T, B, dtype=torch.long), torch.zeros(T, B), torch.zeros(T, B),
                                        torch.zeros(T, B), torch.zeros(T, B, dtype=torch.bool))
        for t in range(T):
            buf_obs[t], buf_first[t] = obs, first
            with torch.no_grad():
                h, state = agent.hidden(obs, state, first[None])
                dist = Categorical(logits=agent.actor(h))
                act = dist.sample()
                vals[t] = agent.critic(h).squeeze(-1)
            acts[t], lps[t] = act, dist.log_prob(act)
            obs_np, r, term, trunc, _ = envs.step(act.numpy())
            done = np.logical_or(term, trunc)
            rews[t], dones[t] = torch.as_tensor(r, dtype=torch.float32), torch.as_tensor(done)
            obs, first = get(obs_np), torch.as_tensor(done)
        with torch.no_grad():
            h, _ = agent.hidden(obs, state, first[None])
            nv = agent.critic(h).squeeze(-1)
        adv, last = torch.zeros(T, B), torch.zeros(B)
        for t in reversed(range(T)):
            nxt = nv if t == T - 1 else vals[t + 1]
            live = (~dones[t]).float()
            delta = rews[t] + a.gamma * nxt * live - vals[t]
            last = delta + a.gamma * a.gae_lambda * live * last
            adv[t] = last
        ret = adv + vals
        envs_per_mb = B // a.minibatches
        for _ in range(a.epochs):
            for mb in torch.randperm(B).split(envs_per_mb):
                h, _ = agent.hidden(buf_obs[:, mb].flatten(0, 1), (init_state[0][:, mb], init_state[1][:, mb]),
                                    buf_first[:, mb])
                dist = Categorical(logits=agent.actor(h))
                new_lp = dist.log_prob(acts[:, mb].flatten())
                ratio = (new_lp - lps[:, mb].flatten()).exp()
                mb_adv = adv[:, mb].flatten()
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - a.clip, 1 + a.clip)).mean()
                v = 0.5 * (agent.critic(h).squeeze(-1) - ret[:, mb].flatten()).pow(2).mean()
                loss = pg + a.vf_coef * v - a.ent_coef * dist.entropy().mean()
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), a.max_grad_norm)
                opt.step()
    elapsed = time.perf_counter() - t0
    envs.close()
    return {"env_steps": a.updates * T * B, "seconds": elapsed, "steps_per_s": a.updates * T * B / elapsed}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for f, v in Args().__dict__.items():
        p.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    print(run(Args(**vars(p.parse_args()))))
