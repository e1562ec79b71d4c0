"""Conditioners: modules that condition a downstream model on a memory ``Readout``.

Three built-ins, each an ``nn.Module`` with a typed config, registered by name:
``gate`` (GateFusion, MemoryVLA-style gated fusion), ``cross_attention`` (masked multi-head cross-attention
adapter) and ``prefix`` (readout tokens projected into prefix tokens for a transformer).

Every conditioner accepts a step readout (tokens [B,K,D], query [B,Dq] or [B,Q,Dq]) and a sequence readout
(tokens [B,T,K,D], query [B,T,Dq] or [B,T,Q,Dq]); a sequence is flattened to B*T rows, so it equals the
per-step application. Empty memory (every slot masked, or K=0) is defined behaviour, documented per module.

This file holds the registry, the ``Conditioner`` base class and the helpers the three modules share
(input checks, flattening, the sinusoidal time embedding).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from embodimem.memory.base import Readout
from embodimem.registry import Registry

TIME_EMBEDS = ("none", "age", "source_id")


# ----- config, base class, registry -----------------------------------------------------------------------
@dataclass
class ConditionerConfig:
    """Fields every conditioner shares (none yet); subclasses add plain, YAML-serialisable values."""

    name: ClassVar[str] = ""

    def validate(self) -> None:
        """Raise ValueError on impossible values; subclasses extend."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self)}


class Conditioner(nn.Module):
    """Base class: holds a validated ``config``; subclasses implement ``forward`` (see each module)."""

    config_class: ClassVar[type[ConditionerConfig]] = ConditionerConfig
    name: ClassVar[str] = ""

    def __init__(self, config: ConditionerConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        config.validate()
        self.config = config

    def extra_repr(self) -> str:
        return f"config={self.config}"


CONDITIONERS: Registry[type[Conditioner]] = Registry("conditioner", Conditioner)

register_conditioner = CONDITIONERS.register  # class decorator: @register_conditioner("name")
available_conditioners = CONDITIONERS.names  # every name make_conditioner accepts
conditioner_class = CONDITIONERS.get
make_conditioner = CONDITIONERS.build  # from a config, a name plus field overrides, or a dict with "name"


# ----- shared input handling --------------------------------------------------------------------------------
@dataclass
class FlatReadout:
    """A readout flattened to N = prod(lead) rows: tokens [N,K,D], mask [N,K], source_ids [N,K], positions."""

    tokens: torch.Tensor
    mask: torch.Tensor
    source_ids: torch.Tensor
    positions: torch.Tensor | None
    lead: tuple[int, ...]  # (B,) for a step readout, (B,T) for a sequence readout

    @property
    def has_memory(self) -> torch.Tensor:
        """bool [N]: the row has at least one valid slot."""
        return self.mask.any(-1)


def flatten_readout(readout: Readout, width: int, who: str) -> FlatReadout:
    """Check a step [B,K,D] / sequence [B,T,K,D] readout and flatten it to [N,K,...]; masked slots are zeroed.

    Zeroing masked tokens, ids and positions is why masked slots can have no effect, not even through
    0 * NaN, on any output or gradient.
    """
    if not isinstance(readout, Readout):
        raise TypeError(f"{who}: readout must be a Readout, got {type(readout).__name__}")
    tok, mask = readout.tokens, readout.mask
    if tok.dim() not in (3, 4) or not tok.is_floating_point():
        raise ValueError(f"{who}: readout.tokens must be float [B,K,D] or [B,T,K,D], got {tok.dtype} "
                         f"{tuple(tok.shape)}")
    if tok.shape[-1] != width:
        raise ValueError(f"{who}: readout.tokens has width D={tok.shape[-1]}, but memory_dim={width}")
    if mask.dtype != torch.bool or mask.shape != tok.shape[:-1]:
        raise ValueError(f"{who}: readout.mask must be bool {tuple(tok.shape[:-1])}, got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    if readout.source_ids.shape != mask.shape:
        raise ValueError(f"{who}: readout.source_ids must have shape {tuple(mask.shape)}, got "
                         f"{tuple(readout.source_ids.shape)}")
    lead, K = tuple(tok.shape[:-2]), tok.shape[-2]
    n = math.prod(lead)
    mask = mask.reshape(n, K)
    tokens = tok.reshape(n, K, width).masked_fill(~mask[..., None], 0.0)
    ids = readout.source_ids.reshape(n, K).masked_fill(~mask, 0)
    pos = readout.positions
    if pos is not None:
        if tuple(pos.shape) != (*lead, K, 3):
            raise ValueError(f"{who}: readout.positions must have shape {(*lead, K, 3)}, got {tuple(pos.shape)}")
        pos = pos.reshape(n, K, 3).masked_fill(~mask[..., None], 0.0)
    return FlatReadout(tokens, mask, ids, pos, lead)


def flatten_query(x: torch.Tensor, lead: tuple[int, ...], width: int, name: str, who: str
                  ) -> tuple[torch.Tensor, bool]:
    """Check features ``lead + [D]`` or ``lead + [Q,D]`` and flatten to [N,Q,D]; returns (x, had_no_Q_dim)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{who}: {name} must be a float tensor, got {getattr(x, 'dtype', type(x))}")
    nl = len(lead)
    if tuple(x.shape[:nl]) != lead or x.dim() not in (nl + 1, nl + 2) or x.shape[-1] != width:
        raise ValueError(f"{who}: {name} must be [{','.join(map(str, lead))},{width}] or "
                         f"[{','.join(map(str, lead))},Q,{width}] to match the readout, got {tuple(x.shape)}")
    squeeze = x.dim() == nl + 1
    n = math.prod(lead)
    return (x.reshape(n, 1, width) if squeeze else x.reshape(n, x.shape[-2], width)), squeeze


def unflatten_query(y: torch.Tensor, lead: tuple[int, ...], squeeze: bool) -> torch.Tensor:
    """Inverse of ``flatten_query`` for an output [N,Q,D]."""
    y = y.reshape(*lead, *y.shape[1:])
    return y.squeeze(-2) if squeeze else y


def flatten_rowwise(v: torch.Tensor | None, lead: tuple[int, ...], K: int, width: int, name: str, who: str
                    ) -> torch.Tensor | None:
    """Check a per-slot feature ``lead + [K,width]`` (e.g. a Plücker pose feature) and flatten to [N,K,width]."""
    if v is None:
        return None
    if tuple(v.shape) != (*lead, K, width) or not v.is_floating_point():
        raise ValueError(f"{who}: {name} must be float {(*lead, K, width)}, got {v.dtype} {tuple(v.shape)}")
    return v.reshape(math.prod(lead), K, width)


def flatten_current_t(current_t: int | torch.Tensor | None, lead: tuple[int, ...], device: torch.device, who: str
                      ) -> torch.Tensor | None:
    """``current_t`` as int64 [N]: an int / 0-d tensor (shared by every row) or a tensor of shape ``lead``."""
    if current_t is None:
        return None
    n = math.prod(lead)
    t = torch.as_tensor(current_t, device=device)
    if t.dim() == 0:
        return t.expand(n)
    if tuple(t.shape) != lead:
        raise ValueError(f"{who}: current_t must be a scalar or shape {lead} (one step per readout row), "
                         f"got {tuple(t.shape)}")
    return t.reshape(n)


# ----- time embedding ---------------------------------------------------------------------------------------
def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoid of t [...] (steps): [..., dim] = [sin(t*f_i), cos(t*f_i)], f_i = max_period^(-i/half)."""
    half = dim // 2
    dtype = torch.promote_types(t.dtype, torch.float32) if t.is_floating_point() else torch.float32
    i = torch.arange(half, device=t.device, dtype=dtype)
    freqs = torch.exp(-math.log(max_period) * i / half)
    ang = t.to(dtype)[..., None] * freqs
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


class TimeEmbedding(nn.Module):
    """Learned embedding of a slot's time: sinusoid(value) -> Linear -> SiLU -> Linear, [N,K] -> [N,K,out_dim].

    ``mode="age"``: value = current_t - source_id (steps since the slot was written; needs ``current_t``).
    ``mode="source_id"``: value = source_id (absolute step). Masked slots are embedded as value 0.
    """

    def __init__(self, mode: str, out_dim: int, time_dim: int = 32, max_period: float = 10000.0):
        super().__init__()
        if mode not in TIME_EMBEDS[1:]:
            raise ValueError(f"TimeEmbedding: mode must be one of {TIME_EMBEDS[1:]}, got {mode!r}")
        self.mode, self.time_dim, self.max_period = mode, time_dim, max_period
        self.mlp = nn.Sequential(nn.Linear(time_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def values(self, source_ids: torch.Tensor, mask: torch.Tensor, current_t: torch.Tensor | None,
               who: str) -> torch.Tensor:
        """The embedded scalar per slot [N,K] (age or source id; 0 where masked)."""
        if self.mode == "age":
            if current_t is None:
                raise ValueError(f"{who}: time_embed='age' needs current_t (the step being conditioned)")
            # float before subtracting so a float current_t (seconds) is not truncated
            v = current_t.to(torch.float64)[:, None] - source_ids.to(torch.float64)
        else:
            v = source_ids.to(torch.float64)
        return v.masked_fill(~mask, 0.0)

    def forward(self, source_ids: torch.Tensor, mask: torch.Tensor, current_t: torch.Tensor | None = None,
                who: str = "TimeEmbedding") -> torch.Tensor:
        """source_ids int64 [N,K], mask bool [N,K], current_t [N] or None -> [N,K,out_dim]."""
        v = self.values(source_ids, mask, current_t, who)
        w = self.mlp[0].weight
        # sinusoid in float32 (float64 for float64 modules) so large step counts keep their phase
        emb = sinusoidal_embedding(v.to(torch.promote_types(w.dtype, torch.float32)), self.time_dim, self.max_period)
        return self.mlp(emb.to(w.dtype))


def check_time_config(who: str, time_embed: str, time_dim: int, max_period: float) -> None:
    """Shared ValueError checks for the time-embedding config fields."""
    if time_embed not in TIME_EMBEDS:
        raise ValueError(f"{who}.time_embed must be one of {TIME_EMBEDS}, got {time_embed!r}")
    if time_dim <= 0 or time_dim % 2:
        raise ValueError(f"{who}.time_dim must be a positive even number, got {time_dim}")
    if max_period <= 1:
        raise ValueError(f"{who}.max_period must be > 1, got {max_period}")


# ----- built-ins (imported last: they use the registry defined above) ----------------------------------------
from embodimem.conditioning.cross_attention import CrossAttention, CrossAttentionConfig  # noqa: E402
from embodimem.conditioning.gate import GateFusion, GateFusionConfig  # noqa: E402
from embodimem.conditioning.prefix import Prefix, PrefixTokens, PrefixTokensConfig  # noqa: E402

__all__ = [
    "Conditioner",
    "ConditionerConfig",
    "CrossAttention",
    "CrossAttentionConfig",
    "GateFusion",
    "GateFusionConfig",
    "Prefix",
    "PrefixTokens",
    "PrefixTokensConfig",
    "TimeEmbedding",
    "available_conditioners",
    "conditioner_class",
    "make_conditioner",
    "register_conditioner",
    "sinusoidal_embedding",
]
