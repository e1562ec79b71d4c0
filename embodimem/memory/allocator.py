"""The Adaptive Memory Allocator (SAT, Cho et al. 2024): a contextual bandit choosing an eviction policy per task.

Context = a task id; arms = the ``place`` memory's eviction policies (``POLICIES``: fifo, lifo, mvfo,
lvfo). The allocator keeps a value table Q [num_tasks, num_arms] and picks epsilon-greedy: with
probability epsilon a uniformly random arm, else argmax_a Q[task, a]. The SAT paper regresses a small
Q-network on one-hot tasks; with one-hot inputs a table is the same function class, minus the optimizer.

Conventions:
- Greedy ties go to the LOWER arm index (a stable descending sort of the row of Q).
- Values: ``lr=None`` -> incremental sample mean (Q = mean reward of every update so far);
  ``lr>0`` -> Q += lr * (batch-mean reward of that (task, arm) - Q), once per ``update`` call.
- Epsilon anneals linearly from ``epsilon_start`` to ``epsilon_end`` over ``anneal_steps`` ``select`` calls.
- Randomness comes only from the allocator's own seeded CPU generator, saved in ``state_dict``, so a run
  (and a resumed run) is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from embodimem.memory.place import POLICIES


@dataclass
class AllocatorConfig:
    num_tasks: int = 4  # task ids are 0..num_tasks-1
    num_arms: int = len(POLICIES)  # eviction policies to choose from (indices into POLICIES)
    epsilon_start: float = 1.0  # exploration probability at the first select
    epsilon_end: float = 0.1  # ... after anneal_steps selects
    anneal_steps: int = 100  # select calls to anneal over (0 = epsilon_end from the start)
    lr: float | None = None  # None = incremental mean; else constant step size in (0, 1]
    initial_value: float = 0.0  # Q before any update
    seed: int = 0

    def validate(self) -> None:
        who = type(self).__name__
        if self.num_tasks <= 0:
            raise ValueError(f"{who}.num_tasks must be > 0, got {self.num_tasks}")
        if not 0 < self.num_arms <= len(POLICIES):
            raise ValueError(f"{who}.num_arms must be in 1..{len(POLICIES)}, got {self.num_arms}")
        for f in ("epsilon_start", "epsilon_end"):
            if not 0.0 <= getattr(self, f) <= 1.0:
                raise ValueError(f"{who}.{f} must be in [0, 1], got {getattr(self, f)}")
        if self.anneal_steps < 0:
            raise ValueError(f"{who}.anneal_steps must be >= 0, got {self.anneal_steps}")
        if self.lr is not None and not 0.0 < self.lr <= 1.0:
            raise ValueError(f"{who}.lr must be None or in (0, 1], got {self.lr}")


class AdaptiveMemoryAllocator(nn.Module):
    """Epsilon-greedy contextual bandit: task int64 [B] -> policy index int64 [B]; learns from rewards [B]."""

    def __init__(self, config: AllocatorConfig):
        super().__init__()
        config.validate()
        self.config = config
        A = config.num_arms
        self.register_buffer("q", torch.full((config.num_tasks, A), float(config.initial_value)))
        self.register_buffer("n", torch.zeros(config.num_tasks, A, dtype=torch.long))  # updates per (task, arm)
        self.register_buffer("selects", torch.zeros((), dtype=torch.long))  # select calls so far
        self.generator = torch.Generator().manual_seed(config.seed)

    @property
    def epsilon(self) -> float:
        """Exploration probability for the next ``select``."""
        c = self.config
        if c.anneal_steps == 0:
            return c.epsilon_end
        frac = min(1.0, int(self.selects) / c.anneal_steps)
        return c.epsilon_start + frac * (c.epsilon_end - c.epsilon_start)

    def _check_task(self, task: torch.Tensor) -> torch.Tensor:
        if not isinstance(task, torch.Tensor) or task.dtype != torch.int64 or task.dim() != 1:
            raise ValueError(f"allocator: task must be int64 [B], got {getattr(task, 'dtype', type(task))} "
                             f"{tuple(getattr(task, 'shape', ()))}")
        if task.numel() and (int(task.min()) < 0 or int(task.max()) >= self.config.num_tasks):
            raise ValueError(f"allocator: task id out of range [0, {self.config.num_tasks})")
        return task.to(self.q.device)

    def greedy(self, task: torch.Tensor) -> torch.Tensor:
        """argmax_a Q[task, a] per row, ties to the lower arm: task int64 [B] -> int64 [B]."""
        task = self._check_task(task)
        # a stable descending sort keeps index order on ties, so the lower arm wins exactly
        return torch.sort(self.q[task], dim=-1, descending=True, stable=True).indices[:, 0]

    def select(self, task: torch.Tensor, *, explore: bool = True) -> torch.Tensor:
        """Epsilon-greedy arm per row (``explore=False``: greedy, no RNG draw, no step count)."""
        task = self._check_task(task)
        choice = self.greedy(task)
        if not explore:
            return choice
        B = task.shape[0]
        u = torch.rand(B, generator=self.generator)
        rand_arm = torch.randint(self.config.num_arms, (B,), generator=self.generator)
        pick = u < self.epsilon
        self.selects += 1
        return torch.where(pick.to(choice.device), rand_arm.to(choice.device), choice)

    @torch.no_grad()
    def update(self, task: torch.Tensor, arm: torch.Tensor, reward: torch.Tensor) -> None:
        """Learn from one batch: task, arm int64 [B], reward float [B] (larger is better)."""
        task = self._check_task(task)
        A = self.config.num_arms
        if not isinstance(arm, torch.Tensor) or arm.dtype != torch.int64 or arm.shape != task.shape:
            raise ValueError(f"allocator: arm must be int64 {tuple(task.shape)}, got "
                             f"{getattr(arm, 'dtype', type(arm))} {tuple(getattr(arm, 'shape', ()))}")
        if arm.numel() and (int(arm.min()) < 0 or int(arm.max()) >= A):
            raise ValueError(f"allocator: arm out of range [0, {A})")
        if not isinstance(reward, torch.Tensor) or reward.shape != task.shape or not bool(torch.isfinite(reward).all()):
            raise ValueError(f"allocator: reward must be a finite float tensor {tuple(task.shape)}")
        flat = task * A + arm.to(task.device)
        dev = self.q.device
        cnt = torch.zeros(self.q.numel(), dtype=torch.long, device=dev).index_add_(0, flat, torch.ones_like(flat))
        r = reward.to(dev, self.q.dtype)
        tot = torch.zeros(self.q.numel(), dtype=self.q.dtype, device=dev).index_add_(0, flat, r)
        cnt, tot = cnt.view_as(self.n), tot.view_as(self.q)
        seen = cnt > 0
        if self.config.lr is None:  # incremental mean over every reward ever seen for (task, arm)
            new_n = self.n + cnt
            self.q.copy_(torch.where(seen, self.q + (tot - cnt * self.q) / new_n.clamp(min=1), self.q))
        else:
            mean = tot / cnt.clamp(min=1)
            self.q.copy_(torch.where(seen, self.q + self.config.lr * (mean - self.q), self.q))
        self.n += cnt

    def policy_names(self, arm: torch.Tensor) -> list[str]:
        """Human-readable policy names for arm indices (logging only; not for the hot path)."""
        return [POLICIES[int(a)] for a in arm.tolist()]

    # the RNG is part of the allocator's state, so a resumed run draws the same explorations
    def get_extra_state(self) -> Any:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: Any) -> None:
        self.generator.set_state(state["generator"])
