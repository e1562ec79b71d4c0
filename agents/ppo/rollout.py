"""Rollout storage for recurrent/memory PPO: [T,B] tensors plus each env's memory state at chunk starts."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from embodimem.memory.state import State


@dataclass
class Rollout:
    """One update's experience. T steps per env, chunks of ``chunk_len`` steps for truncated BPTT."""

    num_steps: int
    num_envs: int
    chunk_len: int
    obs: dict[str, torch.Tensor] = field(default_factory=dict)  # key -> [T,B,...]
    actions: torch.Tensor | None = None  # [T,B] int64
    logprobs: torch.Tensor | None = None  # [T,B]
    values: torch.Tensor | None = None  # [T,B]
    rewards: torch.Tensor | None = None  # [T,B]
    dones: torch.Tensor | None = None  # [T,B] bool: the episode ended at this step
    is_first: torch.Tensor | None = None  # [T,B] bool: this step's observation starts an episode
    chunk_states: list[State] = field(default_factory=list)  # memory state before step c*chunk_len, [B,...]

    def __post_init__(self) -> None:
        if self.num_steps % self.chunk_len:
            raise ValueError(f"num_steps={self.num_steps} must be a multiple of chunk_len={self.chunk_len}")
        T, B = self.num_steps, self.num_envs
        self.actions = torch.zeros(T, B, dtype=torch.long)
        self.logprobs = torch.zeros(T, B)
        self.values = torch.zeros(T, B)
        self.rewards = torch.zeros(T, B)
        self.dones = torch.zeros(T, B, dtype=torch.bool)
        self.is_first = torch.zeros(T, B, dtype=torch.bool)

    def store_obs(self, t: int, obs: dict[str, torch.Tensor]) -> None:
        """Keep step t's observation entries [B,...] (buffers are allocated on first use)."""
        for k, v in obs.items():
            if k not in self.obs:
                self.obs[k] = torch.zeros(self.num_steps, *v.shape, dtype=v.dtype)
            self.obs[k][t] = v

    def advantages(self, next_value: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE(lambda): (advantages [T,B], returns [T,B]); ``dones`` cut the bootstrap at episode ends."""
        adv = torch.zeros_like(self.rewards)
        last = torch.zeros(self.num_envs)
        for t in reversed(range(self.num_steps)):
            nv = next_value if t == self.num_steps - 1 else self.values[t + 1]
            live = (~self.dones[t]).float()
            delta = self.rewards[t] + gamma * nv * live - self.values[t]
            last = delta + gamma * lam * live * last
            adv[t] = last
        return adv, adv + self.values

    def sequences(self) -> tuple[int, int]:
        """(number of chunks per env, total sequences) for minibatching."""
        C = self.num_steps // self.chunk_len
        return C, C * self.num_envs

    def gather(self, seq_ids: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Sequences ``seq_ids`` (index = chunk * B + env) of [T,B,...] tensors -> [S,L,...] each."""
        B, L = self.num_envs, self.chunk_len
        c, e = seq_ids // B, seq_ids % B
        steps = c[:, None] * L + torch.arange(L)[None, :]  # [S,L]
        return [x[steps, e[:, None]] for x in tensors]

    def stacked_chunk_states(self) -> State:
        """Chunk-start memory states stacked to [C*B,...] in sequence order (chunk * B + env)."""
        if not self.chunk_states or not self.chunk_states[0]:
            return {}
        return {k: torch.cat([s[k] for s in self.chunk_states], dim=0) for k in self.chunk_states[0]}
