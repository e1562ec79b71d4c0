"""``fifo``: the last L steps' tokens, read in time order with provenance.

State layout equals readout layout: slots are time-ordered and right-aligned (slot L-1 is the newest
step), so a read is a reshape. Empty slots hold zeros with source id -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.state import State


@dataclass
class FifoConfig(MemoryConfig):
    capacity: int = 32  # L: steps kept

    def validate(self) -> None:
        super().validate()
        if self.capacity <= 0:
            raise ValueError(f"FifoConfig.capacity must be > 0 (a FIFO that holds nothing is a bug), got {self.capacity}")

    @classmethod
    def example(cls) -> FifoConfig:
        return cls(dim=8, tokens_per_step=2, capacity=5)


@register_memory("fifo")
class FifoMemory(Memory):
    """Keeps tokens [B,L,N,D] of the last L steps; reads them all (K = L*N), oldest first, newest last."""

    config_class = FifoConfig
    config: FifoConfig

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c = self.config
        L, N, D = c.capacity, c.tokens_per_step, c.dim
        return {
            "tokens": torch.zeros(batch_size, L, N, D, device=device),
            "ids": torch.full((batch_size, L), -1, dtype=torch.long, device=device),
            "valid": torch.zeros(batch_size, L, dtype=torch.bool, device=device),
            "step": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    @torch.no_grad()
    def write(self, state: State, item: torch.Tensor, *, t: torch.Tensor | None = None, **_: Any) -> State:
        """Append item [B,N,D] as the newest slot; ``t`` int64 [B] overrides the source id (default: step)."""
        item = self.check_tokens(item, "item").detach().to(state["tokens"].dtype)
        ids = state["step"] if t is None else t.to(torch.long)
        return {
            "tokens": torch.cat([state["tokens"][:, 1:], item[:, None]], dim=1),
            "ids": torch.cat([state["ids"][:, 1:], ids[:, None]], dim=1),
            "valid": torch.cat([state["valid"][:, 1:], torch.ones_like(state["valid"][:, :1])], dim=1),
            "step": state["step"] + 1,
        }

    def read(self, state: State, query: torch.Tensor | None = None, **_: Any) -> Readout:
        """All held tokens [B,L*N,D] in time order; ``query`` is ignored (a FIFO reads everything)."""
        return self._readout(state["tokens"], state["ids"], state["valid"])

    def _readout(self, tokens: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> Readout:
        """Flatten [...,L,N,D] slots into [...,L*N,D] tokens with per-token provenance."""
        N = self.config.tokens_per_step
        lead = tokens.shape[:-3]
        tok_ids = ids.unsqueeze(-1).expand(*ids.shape, N).reshape(*lead, -1)
        return Readout(
            tokens=tokens.reshape(*lead, -1, tokens.shape[-1]),
            mask=valid.unsqueeze(-1).expand(*valid.shape, N).reshape(*lead, -1),
            source_ids=tok_ids,
            time_span=torch.stack([tok_ids, tok_ids], dim=-1),
        )

    def forward(self, state: State, x: torch.Tensor, *, is_first: torch.Tensor,
                t: torch.Tensor | None = None, **_: Any) -> tuple[Readout, State]:
        """Parallel sequence path: x [B,T,N,D]; same values as stepping, gradients kept for in-sequence tokens."""
        x, is_first = self.check_sequence(x, is_first)
        self.check_tokens(x.flatten(0, 1), "x")
        B, T = is_first.shape
        L = self.config.capacity
        dev = x.device
        ar = torch.arange(T, device=dev)
        # last reset position s(t) <= t (or -1): entries before it belong to an earlier episode
        last_reset = torch.where(is_first, ar, torch.full_like(ar, -1)).cummax(dim=1).values  # [B,T]
        if t is None:
            new_ids = torch.where(last_reset >= 0, ar - last_reset, state["step"][:, None] + ar)
        else:
            new_ids = t.to(torch.long)
        # history = [held L slots ; T new steps]; the window for step t is history[t+1 : t+1+L]
        hist_tok = torch.cat([state["tokens"], x.to(state["tokens"].dtype)], dim=1)  # [B,L+T,N,D]
        hist_ids = torch.cat([state["ids"], new_ids], dim=1)
        hist_valid = torch.cat([state["valid"], torch.ones(B, T, dtype=torch.bool, device=dev)], dim=1)
        win = (ar[:, None] + 1 + torch.arange(L, device=dev)[None, :])  # [T,L] history index
        episode_start = torch.where(last_reset >= 0, last_reset + L, torch.zeros_like(last_reset))  # [B,T]
        valid = hist_valid[:, win] & (win[None] >= episode_start[:, :, None])  # [B,T,L]
        tokens = hist_tok[:, win] * valid[..., None, None]  # zeros in empty slots, like the stepped state
        ids = torch.where(valid, hist_ids[:, win], torch.full_like(valid, -1, dtype=torch.long))
        readout = self._readout(tokens, ids, valid)
        step = torch.where(last_reset[:, -1] >= 0, T - last_reset[:, -1], state["step"] + T)
        final = {"tokens": tokens[:, -1].detach(), "ids": ids[:, -1], "valid": valid[:, -1], "step": step}
        return readout, final
