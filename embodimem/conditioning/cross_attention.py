"""Masked multi-head cross-attention from current features (queries) to memory readout tokens (keys/values).

Keys get optional time and pose embeddings ADDED to the memory tokens before the key projection; values
are projected from the raw tokens (MemoryVLA: position tells *where to look*, not *what is read*).
- time: ``time_embed="age"`` embeds current_t - source_id (steps since the slot was written),
  ``"source_id"`` the absolute step; both sinusoid -> MLP (see ``TimeEmbedding``).
- pose: ``pose_dim > 0`` adds Linear(pose) where pose is the ``pose`` argument (e.g. a Plücker feature
  [.., K, pose_dim]) or, when not given, ``readout.positions`` (then pose_dim must be 3).

Empty memory (every slot masked, or K=0): the memory contribution (``attend``) is exactly zero and finite,
so with ``residual=True`` the output is the query path (``x``, or ``LayerNorm(x)`` with ``norm=True``).
Dropout on the attention weights only in training; eval mode is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from embodimem.conditioning import (
    Conditioner,
    ConditionerConfig,
    FlatReadout,
    TimeEmbedding,
    check_time_config,
    flatten_current_t,
    flatten_query,
    flatten_readout,
    flatten_rowwise,
    register_conditioner,
    unflatten_query,
)
from embodimem.memory.base import Readout


@dataclass
class CrossAttentionConfig(ConditionerConfig):
    """Cross-attention adapter settings."""

    dim: int = 64  # width D of the query features and of the output
    memory_dim: int | None = None  # width of readout tokens (None = dim)
    num_heads: int = 4
    head_dim: int | None = None  # per-head width (None = dim // num_heads)
    time_embed: str = "none"  # none | age (current_t - source_id) | source_id; added to keys only
    time_dim: int = 32  # sinusoid features before the time MLP (even)
    max_period: float = 10000.0  # longest sinusoid period, in steps
    pose_dim: int = 0  # 0 = off; else width of the pose feature (3 for readout.positions) added to keys only
    residual: bool = True  # out = x + attn (else attn alone)
    norm: bool = True  # LayerNorm on the output (post-norm, as in MemoryVLA's cross blocks)
    dropout: float = 0.0  # attention-weight dropout, training only

    def validate(self) -> None:
        who = type(self).__name__
        for f in ("dim", "num_heads"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{who}.{f} must be > 0, got {getattr(self, f)}")
        if self.memory_dim is not None and self.memory_dim <= 0:
            raise ValueError(f"{who}.memory_dim must be > 0 or None, got {self.memory_dim}")
        if self.head_dim is None and self.dim % self.num_heads:
            raise ValueError(f"{who}.dim={self.dim} is not divisible by num_heads={self.num_heads}; set head_dim")
        if self.head_dim is not None and self.head_dim <= 0:
            raise ValueError(f"{who}.head_dim must be > 0 or None, got {self.head_dim}")
        check_time_config(who, self.time_embed, self.time_dim, self.max_period)
        if self.pose_dim < 0:
            raise ValueError(f"{who}.pose_dim must be >= 0, got {self.pose_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{who}.dropout must be in [0, 1), got {self.dropout}")


@register_conditioner("cross_attention")
class CrossAttention(Conditioner):
    """Queries x [B,(T,)(Q,)D] attend over readout tokens [B,(T,)K,Dm]; output has x's shape."""

    config_class = CrossAttentionConfig

    def __init__(self, config: CrossAttentionConfig):
        super().__init__(config)
        c = config
        self.memory_dim = c.memory_dim or c.dim
        self.head_dim = c.head_dim or c.dim // c.num_heads
        inner = c.num_heads * self.head_dim
        self.q_proj = nn.Linear(c.dim, inner)
        self.k_proj = nn.Linear(self.memory_dim, inner)
        self.v_proj = nn.Linear(self.memory_dim, inner)
        self.o_proj = nn.Linear(inner, c.dim)
        self.time_embed = (TimeEmbedding(c.time_embed, self.memory_dim, c.time_dim, c.max_period)
                           if c.time_embed != "none" else None)
        self.pose_embed = nn.Linear(c.pose_dim, self.memory_dim) if c.pose_dim else None
        self.norm = nn.LayerNorm(c.dim) if c.norm else None

    # ----- public API ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, readout: Readout, *, current_t: int | torch.Tensor | None = None,
                pose: torch.Tensor | None = None) -> torch.Tensor:
        """x [B,(Q,)D] with readout [B,K,Dm], or x [B,T,(Q,)D] with [B,T,K,Dm] -> x's shape."""
        a = self.attend(x, readout, current_t=current_t, pose=pose)
        out = x + a if self.config.residual else a
        return self.norm(out) if self.norm is not None else out

    def attend(self, x: torch.Tensor, readout: Readout, *, current_t: int | torch.Tensor | None = None,
               pose: torch.Tensor | None = None) -> torch.Tensor:
        """The memory contribution alone (no residual, no norm), x's shape; exactly 0 in empty-memory rows."""
        q, flat, t, p, squeeze = self.prepare(x, readout, current_t, pose)
        return unflatten_query(self.attend_flat(q, flat, t, p), flat.lead, squeeze)

    def prepare(self, x: torch.Tensor, readout: Readout, current_t: int | torch.Tensor | None = None,
                pose: torch.Tensor | None = None, who: str | None = None
                ) -> tuple[torch.Tensor, FlatReadout, torch.Tensor | None, torch.Tensor | None, bool]:
        """Check and flatten: (q [N,Q,D], readout [N,K,..], current_t [N] | None, pose [N,K,P] | None, squeeze)."""
        who = who or self.name
        flat = flatten_readout(readout, self.memory_dim, who)
        q, squeeze = flatten_query(x, flat.lead, self.config.dim, "x", who)
        t = flatten_current_t(current_t, flat.lead, q.device, who)
        if pose is not None and not self.config.pose_dim:
            raise ValueError(f"{who}: got a pose argument but pose_dim=0 (pose embedding is off)")
        p = flatten_rowwise(pose, flat.lead, flat.mask.shape[1], self.config.pose_dim, "pose", who)
        return q, flat, t, p, squeeze

    # ----- flat core ----------------------------------------------------------------------------------------
    def key_inputs(self, flat: FlatReadout, current_t: torch.Tensor | None, pose: torch.Tensor | None
                   ) -> torch.Tensor:
        """Memory tokens plus the time/pose embeddings: the key-projection input [N,K,Dm]."""
        k_in = flat.tokens
        if self.time_embed is not None:
            k_in = k_in + self.time_embed(flat.source_ids, flat.mask, current_t, who=self.name)
        if self.pose_embed is not None:
            if pose is None:
                if flat.positions is None:
                    raise ValueError(f"{self.name}: pose_dim={self.config.pose_dim} needs a pose argument or "
                                     f"readout.positions, got neither")
                if self.config.pose_dim != 3:
                    raise ValueError(f"{self.name}: readout.positions has width 3, but pose_dim="
                                     f"{self.config.pose_dim}; pass pose=[..,K,{self.config.pose_dim}]")
                pose = flat.positions
            pose = pose.masked_fill(~flat.mask[..., None], 0.0)  # masked slots stay inert
            k_in = k_in + self.pose_embed(pose)
        return k_in

    def attend_flat(self, q: torch.Tensor, flat: FlatReadout, current_t: torch.Tensor | None = None,
                    pose: torch.Tensor | None = None) -> torch.Tensor:
        """q [N,Q,D], flat readout [N,K,Dm] -> memory contribution [N,Q,D] (0 where a row has no valid slot)."""
        n, nq, _ = q.shape
        K, H, hd = flat.mask.shape[1], self.config.num_heads, self.head_dim
        if K == 0:
            return q.new_zeros(n, nq, self.config.dim)
        has = flat.has_memory
        # an empty row would softmax over nothing (NaN): let it attend to its (zeroed) slots, then zero it below
        attn_mask = (flat.mask | ~has[:, None])[:, None, None, :]  # [N,1,1,K], True = attend
        qh = self.q_proj(q).view(n, nq, H, hd).transpose(1, 2)
        kh = self.k_proj(self.key_inputs(flat, current_t, pose)).view(n, K, H, hd).transpose(1, 2)
        vh = self.v_proj(flat.tokens).view(n, K, H, hd).transpose(1, 2)
        p = self.config.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask, dropout_p=p)
        o = self.o_proj(o.transpose(1, 2).reshape(n, nq, H * hd))
        return o.masked_fill(~has[:, None, None], 0.0)
