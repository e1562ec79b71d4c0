"""Prefix tokens: readout tokens projected to a transformer's width, to prepend to its input sequence.

token = Linear(readout token) + type embedding (optional, learned: marks "memory" tokens) + time embedding
(optional: sinusoid -> MLP of the slot's age current_t - source_id, or of its source_id). Masked slots come
out as exact zeros with mask False, so they are finite and inert even where a model ignores the mask.

Fixed length (``max_tokens=L``): slots are reordered valid-first (valid slots keep their readout order),
then cut or padded to exactly L. When more than L slots are valid the oldest are dropped, i.e. the L with the
largest source_id are kept (equal ids: the lower slot index wins). Padding is zeros with mask False.
Empty memory (every slot masked, or K=0) gives an all-False mask and zero tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from embodimem.conditioning import (
    Conditioner,
    ConditionerConfig,
    FlatReadout,
    TimeEmbedding,
    check_time_config,
    flatten_current_t,
    flatten_readout,
    register_conditioner,
)
from embodimem.memory.base import Readout


class Prefix(NamedTuple):
    """tokens float [B,(T,)K,Dm] and mask bool [B,(T,)K] (True = attend); unpacks as ``tokens, mask``."""

    tokens: torch.Tensor
    mask: torch.Tensor


@dataclass
class PrefixTokensConfig(ConditionerConfig):
    """Prefix-token settings."""

    memory_dim: int = 64  # width of readout tokens
    model_dim: int = 64  # width Dm of the downstream transformer
    max_tokens: int | None = None  # fixed prefix length L (drop oldest / pad); None = readout's K
    type_embed: bool = True  # learned vector added to every memory token
    time_embed: str = "none"  # none | age (current_t - source_id) | source_id
    time_dim: int = 32
    max_period: float = 10000.0

    def validate(self) -> None:
        who = type(self).__name__
        for f in ("memory_dim", "model_dim"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{who}.{f} must be > 0, got {getattr(self, f)}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ValueError(f"{who}.max_tokens must be > 0 or None, got {self.max_tokens}")
        check_time_config(who, self.time_embed, self.time_dim, self.max_period)


@register_conditioner("prefix")
class PrefixTokens(Conditioner):
    """Readout [B,(T,)K,D] -> Prefix(tokens [B,(T,)K',Dm], mask [B,(T,)K']), K' = max_tokens or K."""

    config_class = PrefixTokensConfig

    def __init__(self, config: PrefixTokensConfig):
        super().__init__(config)
        c = config
        self.proj = nn.Linear(c.memory_dim, c.model_dim)
        self.type_embed = nn.Parameter(torch.randn(c.model_dim) * 0.02) if c.type_embed else None
        self.time_embed = (TimeEmbedding(c.time_embed, c.model_dim, c.time_dim, c.max_period)
                           if c.time_embed != "none" else None)

    def forward(self, readout: Readout, *, current_t: int | torch.Tensor | None = None) -> Prefix:
        """Readout [B,K,D] (or [B,T,K,D]); current_t [B] ([B,T]) or int, needed for time_embed='age'."""
        flat = flatten_readout(readout, self.config.memory_dim, self.name)
        t = flatten_current_t(current_t, flat.lead, flat.tokens.device, self.name)
        if self.config.max_tokens is not None:
            flat = self.fixed_length(flat, self.config.max_tokens)
        tok = self.proj(flat.tokens)
        if self.type_embed is not None:
            tok = tok + self.type_embed
        if self.time_embed is not None:
            tok = tok + self.time_embed(flat.source_ids, flat.mask, t, who=self.name)
        tok = tok.masked_fill(~flat.mask[..., None], 0.0)
        K = flat.mask.shape[1]
        return Prefix(tok.reshape(*flat.lead, K, self.config.model_dim), flat.mask.reshape(*flat.lead, K))

    @staticmethod
    def fixed_length(flat: FlatReadout, L: int) -> FlatReadout:
        """Valid-first, newest-L selection padded to exactly L slots (rule in the module docstring)."""
        n, K = flat.mask.shape
        tokens, mask, ids = flat.tokens, flat.mask, flat.source_ids
        if K > 0:
            # newest first among valid slots; a stable sort keeps slot order among equal ids
            key = ids.masked_fill(~mask, torch.iinfo(torch.int64).min)
            order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :L]
            # back to readout order, valid slots first (keys are distinct, so the sort is exact)
            order = order.gather(1, (order + K * (~mask.gather(1, order))).argsort(dim=1))
            tokens = tokens.gather(1, order[..., None].expand(-1, -1, tokens.shape[-1]))
            mask, ids = mask.gather(1, order), ids.gather(1, order)
        pad = L - mask.shape[1]
        if pad > 0:
            tokens = torch.cat([tokens, tokens.new_zeros(n, pad, tokens.shape[-1])], dim=1)
            mask = torch.cat([mask, mask.new_zeros(n, pad)], dim=1)
            ids = torch.cat([ids, ids.new_zeros(n, pad)], dim=1)
        return FlatReadout(tokens, mask, ids, None, flat.lead)
