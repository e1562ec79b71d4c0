"""Gate fusion (MemoryVLA style): blend current features x with a memory summary m through a learned gate.

g = sigmoid(W [x; m] + b) per channel, out = g * m + (1 - g) * x (computed as x + g * (m - x)), so every
output element lies between x and m. The summary m is either the masked mean of the readout tokens
(``summary="mean"``, linearly projected when memory_dim != dim) or a cross-attention read with x as the
queries (``summary="attention"``, see ``CrossAttention``; time/pose embeddings on its keys).

Init: W = 0 and b = 0, so g = sigmoid(0) = 0.5 exactly and the fusion starts as the plain average
(MemoryVLA uses std 1e-3 for "about 0.5"; exact zero keeps the start reproducible, and W still gets a
gradient because d out / d W = (m - x) g (1 - g) [x; m] is non-zero).
Empty memory (every slot masked, or K=0): the gate is forced to 0 in that row, so out == x exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from embodimem.conditioning import (
    Conditioner,
    ConditionerConfig,
    check_time_config,
    flatten_query,
    flatten_readout,
    register_conditioner,
    unflatten_query,
)
from embodimem.conditioning.cross_attention import CrossAttention, CrossAttentionConfig
from embodimem.memory.base import Readout

SUMMARIES = ("mean", "attention")


@dataclass
class GateFusionConfig(ConditionerConfig):
    """Gate fusion settings; the attention fields apply only to ``summary="attention"``."""

    dim: int = 64  # width D of x, of the summary and of the output
    memory_dim: int | None = None  # width of readout tokens (None = dim)
    summary: str = "mean"  # mean (masked mean of tokens) | attention (cross-attention read, x as queries)
    num_heads: int = 4
    head_dim: int | None = None
    time_embed: str = "none"  # none | age | source_id (keys only)
    time_dim: int = 32
    max_period: float = 10000.0
    pose_dim: int = 0
    dropout: float = 0.0  # attention-weight dropout, training only

    def validate(self) -> None:
        who = type(self).__name__
        if self.dim <= 0:
            raise ValueError(f"{who}.dim must be > 0, got {self.dim}")
        if self.memory_dim is not None and self.memory_dim <= 0:
            raise ValueError(f"{who}.memory_dim must be > 0 or None, got {self.memory_dim}")
        if self.summary not in SUMMARIES:
            raise ValueError(f"{who}.summary must be one of {SUMMARIES}, got {self.summary!r}")
        check_time_config(who, self.time_embed, self.time_dim, self.max_period)
        if self.summary == "mean" and (self.time_embed != "none" or self.pose_dim):
            raise ValueError(f"{who}: time_embed={self.time_embed!r} / pose_dim={self.pose_dim} only apply to "
                             f"summary='attention' (a mean has no keys)")
        if self.summary == "attention":
            self.attention_config().validate()

    def attention_config(self) -> CrossAttentionConfig:
        """The cross-attention read behind ``summary="attention"`` (its raw contribution: no residual/norm)."""
        return CrossAttentionConfig(dim=self.dim, memory_dim=self.memory_dim, num_heads=self.num_heads,
                                    head_dim=self.head_dim, time_embed=self.time_embed, time_dim=self.time_dim,
                                    max_period=self.max_period, pose_dim=self.pose_dim, residual=False,
                                    norm=False, dropout=self.dropout)


@register_conditioner("gate")
class GateFusion(Conditioner):
    """x [B,(T,)(Q,)D] fused with a summary of readout [B,(T,)K,Dm] -> x's shape."""

    config_class = GateFusionConfig

    def __init__(self, config: GateFusionConfig):
        super().__init__(config)
        c = config
        self.memory_dim = c.memory_dim or c.dim
        self.gate = nn.Linear(2 * c.dim, c.dim)
        nn.init.zeros_(self.gate.weight)  # g = sigmoid(0) = 0.5 exactly at init (module docstring)
        nn.init.zeros_(self.gate.bias)
        self.attn = CrossAttention(c.attention_config()) if c.summary == "attention" else None
        self.mem_proj = (nn.Linear(self.memory_dim, c.dim)
                         if c.summary == "mean" and self.memory_dim != c.dim else None)

    def forward(self, x: torch.Tensor, readout: Readout, *, current_t: int | torch.Tensor | None = None,
                pose: torch.Tensor | None = None) -> torch.Tensor:
        """x [B,(Q,)D] with readout [B,K,Dm], or x [B,T,(Q,)D] with [B,T,K,Dm] -> x's shape.

        ``current_t`` / ``pose`` feed the attention summary's key embeddings (ignored by the mean summary).
        """
        if self.attn is not None:
            q, flat, t, p, squeeze = self.attn.prepare(x, readout, current_t, pose, who=self.name)
            m = self.attn.attend_flat(q, flat, t, p)  # [N,Q,D]
        else:
            if pose is not None:
                raise ValueError(f"{self.name}: got a pose argument, but summary='mean' uses no pose")
            flat = flatten_readout(readout, self.memory_dim, self.name)
            q, squeeze = flatten_query(x, flat.lead, self.config.dim, "x", self.name)
            m = self.masked_mean(flat.tokens, flat.mask)[:, None, :]  # [N,1,D], shared by the Q queries
        out, _ = self.fuse(q, m.expand_as(q), flat.has_memory[:, None])
        return unflatten_query(out, flat.lead, squeeze)

    def masked_mean(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean of valid tokens: [N,K,Dm], mask [N,K] -> [N,D] (0 before projection in empty rows)."""
        tokens = tokens.masked_fill(~mask[..., None], 0.0)
        count = mask.sum(-1, keepdim=True).clamp_min(1).to(tokens.dtype)
        m = tokens.sum(-2) / count
        return self.mem_proj(m) if self.mem_proj is not None else m

    def fuse(self, x: torch.Tensor, m: torch.Tensor, has_memory: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """x, m [...,D]; has_memory bool broadcastable to [...] (None = all rows) -> (out [...,D], gate [...,D])."""
        if x.shape != m.shape:
            raise ValueError(f"{self.name}: x {tuple(x.shape)} and memory summary m {tuple(m.shape)} must match")
        if x.shape[-1] != self.config.dim:
            raise ValueError(f"{self.name}: x has width {x.shape[-1]}, config.dim={self.config.dim}")
        g = torch.sigmoid(self.gate(torch.cat([x, m], dim=-1)))
        out = x + g * (m - x)  # = g*m + (1-g)*x; exact x where g=0 and x where x==m
        if has_memory is not None:
            empty = ~has_memory[..., None]
            g = g.masked_fill(empty, 0.0)
            out = torch.where(empty, x, out)
        return out, g
