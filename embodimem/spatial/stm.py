"""Short-term memory (Mem4Nav-style): K keyed entries stored relative to a topology node, LFU-recency eviction.

State (leading dim B; K = size):
  stm_key int64 [B,K]    entry key (a coarse Morton cell of the observed position), -1 = empty
  stm_emb float [B,K,D]  running mean of the embeddings written under the key
  stm_node int64 [B,K]   anchor node; stm_rel float [B,K,3] position relative to that node's position at the
                         time of the last write, so abs = node_pos[anchor] + rel (the entry moves with its node)
  stm_freq int64 [B,K]   writes merged into the entry (frequency); stm_first/stm_last int64 [B,K] steps
  stm_valid bool [B,K];  stm_evicted int64 [B] evictions this episode

Write (key, v, p, node u, step t): a matching key merges (freq += 1, emb and absolute position become running
means, the entry is re-anchored to u, last = t). Otherwise the entry goes to the lowest free slot, or, if all
K are held, replaces the entry minimising lambda*freq - (1-lambda)*(t - last) (ties -> lower slot). key = -1
writes nothing. Read (q, p_q): entries within ``radius`` metres of p_q (inclusive), ranked by cosine
similarity to q (ties -> lower slot), top k; ``hit`` = best similarity >= tau (False when none is in range).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

State = dict[str, Tensor]

__all__ = ["ShortTermMemory"]


def _gather_rows(v: Tensor, idx: Tensor) -> Tensor:
    """v [B,N,...] at idx [B,K] -> [B,K,...] (idx must be in range)."""
    return v.gather(1, idx.view(*idx.shape, *([1] * (v.dim() - 2))).expand(*idx.shape, *v.shape[2:]))


class ShortTermMemory:
    """Static parameters plus functional ops on the STM entries of a state dict."""

    KEYS = ("stm_key", "stm_emb", "stm_node", "stm_rel", "stm_freq", "stm_first", "stm_last", "stm_valid",
            "stm_evicted")

    def __init__(self, size: int, dim: int, lam: float = 0.5, radius: float = 3.0, k: int = 3, tau: float = 0.7):
        if size <= 0 or not 0 < k <= size:
            raise ValueError(f"ShortTermMemory: need size > 0 and 0 < k <= size, got size={size}, k={k}")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"ShortTermMemory.lam must be in [0, 1], got {lam}")
        if not radius >= 0:
            raise ValueError(f"ShortTermMemory.radius must be >= 0 metres, got {radius}")
        self.size, self.dim, self.lam, self.radius, self.k, self.tau = size, dim, lam, radius, k, tau

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Empty STM for ``batch_size`` envs."""
        B, K = batch_size, self.size
        i64 = dict(dtype=torch.int64, device=device)
        return {
            "stm_key": torch.full((B, K), -1, **i64),
            "stm_emb": torch.zeros(B, K, self.dim, device=device),
            "stm_node": torch.zeros(B, K, **i64),
            "stm_rel": torch.zeros(B, K, 3, device=device),
            "stm_freq": torch.zeros(B, K, **i64),
            "stm_first": torch.full((B, K), -1, **i64),
            "stm_last": torch.full((B, K), -1, **i64),
            "stm_valid": torch.zeros(B, K, dtype=torch.bool, device=device),
            "stm_evicted": torch.zeros(B, **i64),
        }

    @staticmethod
    def positions(state: State, node_pos: Tensor) -> Tensor:
        """Absolute positions [B,K,3] (metres) of the entries: anchor node position + relative offset."""
        return _gather_rows(node_pos, state["stm_node"]) + state["stm_rel"]

    def scores(self, state: State, step: Tensor) -> Tensor:
        """Eviction scores float64 [B,K]: lambda*freq - (1-lambda)*(step - last); +inf on empty slots."""
        age = (step[:, None] - state["stm_last"]).double()
        s = self.lam * state["stm_freq"].double() - (1.0 - self.lam) * age
        return torch.where(state["stm_valid"], s, torch.full_like(s, math.inf))

    @torch.no_grad()
    def update(self, state: State, key: Tensor, emb: Tensor, pos: Tensor, node: Tensor, node_pos: Tensor,
               step: Tensor) -> State:
        """Write one entry per env: key int64 [B] (-1 = skip), emb [B,D], pos [B,3] metres, anchor node int64 [B]
        with node positions node_pos [B,M,3] (after this step's graph update), step int64 [B]."""
        valid = state["stm_valid"]
        write = key >= 0
        match = (state["stm_key"] == key[:, None]) & write[:, None]  # empty slots hold -1, never a key
        has_match = match.any(1)
        has_free = ~valid.all(1)
        slot = torch.where(has_match, match.long().argmax(1),
                           torch.where(has_free, valid.long().argmin(1), self.scores(state, step).argmin(1)))
        at = (torch.arange(self.size, device=key.device) == slot[:, None]) & write[:, None]  # [B,K]
        fresh = at & ~has_match[:, None]  # a new entry (into a free slot or over the evicted one)
        freq = torch.where(fresh, 1, state["stm_freq"] + at)
        n = freq.clamp(min=1)[..., None].to(state["stm_emb"].dtype)
        e0 = state["stm_emb"].masked_fill(fresh[..., None], 0.0)  # running mean from zero = the observation
        old_abs = self.positions(state, node_pos).masked_fill(fresh[..., None], 0.0)
        new_abs = old_abs + (pos.to(old_abs.dtype)[:, None] - old_abs) / n
        anchor = _gather_rows(node_pos, node[:, None])  # [B,1,3]
        return {
            "stm_key": torch.where(at, key[:, None], state["stm_key"]),
            "stm_emb": torch.where(at[..., None], e0 + (emb.to(e0.dtype)[:, None] - e0) / n, state["stm_emb"]),
            "stm_node": torch.where(at, node[:, None], state["stm_node"]),
            "stm_rel": torch.where(at[..., None], new_abs - anchor, state["stm_rel"]),
            "stm_freq": freq,
            "stm_first": torch.where(fresh, step[:, None], state["stm_first"]),
            "stm_last": torch.where(at, step[:, None], state["stm_last"]),
            "stm_valid": valid | at,
            "stm_evicted": state["stm_evicted"] + (write & ~has_match & ~has_free),
        }

    def read(self, state: State, query: Tensor, q_pos: Tensor,
             node_pos: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Query emb [B,D] at q_pos [B,3] -> (slots int64 [B,k], -1 = none; cosine [B,k]; found [B,k]; hit [B])."""
        cos = F.cosine_similarity(state["stm_emb"], query[:, None].to(state["stm_emb"].dtype), dim=-1)
        return self.rank(state, cos, q_pos, node_pos)

    def rank(self, state: State, cos: Tensor, q_pos: Tensor, node_pos: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``read`` given the entries' cosine similarities cos [B,K] to the query."""
        d = self.positions(state, node_pos) - q_pos[:, None].to(node_pos.dtype)
        near = state["stm_valid"] & ((d * d).sum(-1) <= self.radius * self.radius)
        s, o = torch.sort(cos.masked_fill(~near, -math.inf), dim=1, descending=True, stable=True)
        s, o = s[:, :self.k], o[:, :self.k]
        found = s > -math.inf
        hit = found[:, 0] & (s[:, 0] >= self.tau)
        return o.masked_fill(~found, -1), s.masked_fill(~found, 0.0), found, hit
