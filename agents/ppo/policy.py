"""MemoryPolicy: encoder -> memory (any registered name, or none) -> conditioner -> actor and critic heads.

The same module runs one step at a time during rollouts (``act``) and over [B,T] chunks during the
update (``evaluate``); because every memory's ``forward`` equals stepping, the first epoch of an update
reproduces the rollout's log-probabilities exactly (tests check it for every memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from embodimem.memory import Memory, available_memories, make_memory, memory_config_class
from embodimem.memory.state import State
from embodimem.perception import EncoderOutput, make_encoder

MEMORY_TOKENS = ("grid", "pooled")
# observation keys that may feed a memory's geometry keyword arguments
GEOMETRY_KEYS = ("depth", "pose", "intrinsics", "place")


@dataclass
class PolicyConfig:
    """What the agent is made of. ``memory="none"`` is the memoryless baseline."""

    memory: str = "recurrent"  # a registered memory name, or "none"
    memory_args: dict[str, int | float | bool | str] = field(default_factory=dict)  # memory config overrides
    feature_dim: int = 64  # token width D shared by encoder, memory and conditioner
    encoder_width: int = 16  # conv: channels of the first layer; vector obs: MLP hidden width
    encoder_depth: int = 3  # conv: stride-2 layers (64x64 -> 8x8 tokens at 3)
    vector_tokens: int = 1  # vector obs: tokens per step the MLP encoder emits
    memory_tokens: str = "grid"  # what each step writes: "grid" (every encoder token) | "pooled" (their mean, 1)
    conditioner: str = "cross_attention"  # cross_attention | gate | concat
    heads: int = 4  # attention heads of the cross-attention conditioner
    time_embed: str = "age"  # none | age | source_id: when each memory slot was written, added to its key
    hidden: int = 64  # actor/critic MLP width


class VectorEncoder(nn.Module):
    """Float vector observations [B,F] -> tokens [B,n,D] and their mean [B,D] (for POPGym-style tasks)."""

    def __init__(self, in_dim: int, dim: int, hidden: int, tokens: int = 1):
        super().__init__()
        self.dim, self.tokens = dim, tokens
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, dim * tokens))

    def forward(self, obs: torch.Tensor) -> EncoderOutput:
        tokens = self.net(obs.float().flatten(1)).view(obs.shape[0], self.tokens, self.dim)
        return EncoderOutput(tokens=tokens, pooled=tokens.mean(1), grid=None)


def observation_key(space: gym.Space) -> str:
    """The observation entry the encoder reads: ``rgb`` if present, else the single flat Box entry."""
    if isinstance(space, gym.spaces.Dict):
        if "rgb" in space.spaces:
            return "rgb"
        boxes = [k for k, s in space.spaces.items() if isinstance(s, gym.spaces.Box) and k not in GEOMETRY_KEYS]
        if len(boxes) == 1:
            return boxes[0]
        raise ValueError(f"cannot choose the encoder input among observation keys {sorted(space.spaces)}; "
                         "provide an 'rgb' entry or exactly one vector Box")
    if isinstance(space, gym.spaces.Box):
        return ""  # the observation itself
    raise ValueError(f"unsupported observation space {space}")


def _mlp(i: int, h: int, o: int, out_gain: float) -> nn.Sequential:
    last = nn.Linear(h, o)
    nn.init.orthogonal_(last.weight, gain=out_gain)  # small actor init: near-uniform initial policy
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Linear(i, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), last)


class MemoryPolicy(nn.Module):
    """Actor-critic over a memory; discrete actions."""

    def __init__(self, cfg: PolicyConfig, obs_space: gym.Space, action_space: gym.Space):
        super().__init__()
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(f"MemoryPolicy needs a Discrete action space, got {action_space}")
        if cfg.memory != "none" and cfg.memory not in available_memories():
            raise ValueError(f"unknown memory {cfg.memory!r}; valid: none, {', '.join(available_memories())}")
        if cfg.memory_tokens not in MEMORY_TOKENS:
            raise ValueError(f"unknown memory_tokens {cfg.memory_tokens!r}; valid: {', '.join(MEMORY_TOKENS)}")
        self.cfg = cfg
        self.obs_key = observation_key(obs_space)
        space = obs_space[self.obs_key] if self.obs_key else obs_space
        D = cfg.feature_dim
        if self.obs_key == "rgb":
            H, W = space.shape[:2]
            self.encoder = make_encoder("conv", dim=D, width=cfg.encoder_width, depth=cfg.encoder_depth, groups=4)
            n_tokens = self.encoder.num_tokens((H, W))
        else:
            self.encoder = VectorEncoder(int(np.prod(space.shape)), D, cfg.hidden, cfg.vector_tokens)
            n_tokens = cfg.vector_tokens
        self.memory: Memory | None = None
        self.geometry_keys: tuple[str, ...] = ()
        feat = D
        if cfg.memory != "none":
            self.memory = make_memory(memory_config(cfg, n_tokens if cfg.memory_tokens == "grid" else 1))
            g = torch.Generator().manual_seed(0)
            self.geometry_keys = tuple(self.memory.example_inputs(1, 1, g)[1].keys())
            missing = [k for k in self.geometry_keys if not isinstance(obs_space, gym.spaces.Dict) or k not in obs_space.spaces]
            if missing:
                raise ValueError(f"memory {cfg.memory!r} needs observation keys {missing}, which this env does not provide")
            feat = self._build_conditioner(cfg, D, self.memory.readout_dim)
        self.actor = _mlp(feat, cfg.hidden, int(action_space.n), 0.01)
        self.critic = _mlp(feat, cfg.hidden, 1, 1.0)

    def _build_conditioner(self, cfg: PolicyConfig, D: int, Dm: int) -> int:
        from embodimem.conditioning import make_conditioner

        if cfg.conditioner == "cross_attention":
            self.conditioner = make_conditioner("cross_attention", dim=D, memory_dim=Dm, num_heads=cfg.heads,
                                                time_embed=cfg.time_embed)
            return D
        if cfg.conditioner == "gate":
            self.conditioner = make_conditioner("gate", dim=D, memory_dim=Dm, summary="attention",
                                                num_heads=cfg.heads, time_embed=cfg.time_embed)
            return D
        if cfg.conditioner == "concat":  # [pooled ; masked mean of the readout]
            self.conditioner = None
            return D + Dm
        raise ValueError(f"unknown conditioner {cfg.conditioner!r}; valid: cross_attention, gate, concat")

    @property
    def obs_keys(self) -> tuple[str, ...]:
        """The observation entries the policy reads: the encoder input plus the memory's geometry keys."""
        return tuple(k for k in (self.obs_key, *self.geometry_keys) if k)

    # ----- memory state ---------------------------------------------------------------------------------
    def init_memory(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Fresh memory state (an empty dict for the memoryless policy)."""
        return {} if self.memory is None else self.memory.init_state(batch_size, device=device)

    # ----- one step (rollout) ---------------------------------------------------------------------------
    def act(self, obs: dict[str, torch.Tensor], mem: State, is_first: torch.Tensor,
            donate: bool = False) -> tuple[torch.Tensor, torch.Tensor, State]:
        """obs entries [B,...]; is_first bool [B] -> (logits [B,A], value [B], new memory state).

        ``donate=True`` hands ``mem`` over: a memory whose ``write`` takes ``donate`` updates its tensors in place
        instead of copying them (same values), so the caller must not use ``mem`` again; others ignore it."""
        _, _, feat, mem = self.step_features(obs, mem, is_first, donate)
        return self.actor(feat), self.critic(feat).squeeze(-1), mem

    def step_features(self, obs: dict[str, torch.Tensor], mem: State, is_first: torch.Tensor, donate: bool = False
                      ) -> tuple[EncoderOutput, Any, torch.Tensor, State]:
        """One step up to the heads: (encoder output, memory readout or None, head input [B,F], new memory state)."""
        enc = self._encode(obs[self.obs_key] if self.obs_key else obs[""])
        if self.memory is None:
            return enc, None, enc.pooled, mem
        geo = {k: obs[k] for k in self.geometry_keys}
        hand_over = {"donate": True} if donate and self.memory.accepts_donate else {}  # for write (read ignores it)
        readout, mem = self.memory.step(mem, self._written(enc), is_first=is_first, **geo, **hand_over)
        return enc, readout, self._condition(enc.pooled, readout), mem

    # ----- a [B,T] chunk (update) -----------------------------------------------------------------------
    def evaluate(self, obs: dict[str, torch.Tensor], mem0: State, is_first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs entries [B,T,...]; mem0: memory state at the chunk start; is_first [B,T] -> (logits [B,T,A], values [B,T])."""
        x = obs[self.obs_key] if self.obs_key else obs[""]
        B, T = x.shape[:2]
        enc = self._encode(x.flatten(0, 1))
        pooled = enc.pooled.view(B, T, -1)
        if self.memory is None:
            feat = pooled
        else:
            written = self._written(enc)
            tokens = written.view(B, T, *written.shape[1:])
            geo = {k: obs[k] for k in self.geometry_keys}
            readout, _ = self.memory(mem0, tokens, is_first=is_first, **geo)
            feat = self._condition(pooled, readout)
        return self.actor(feat), self.critic(feat).squeeze(-1)

    def _encode(self, x: torch.Tensor) -> EncoderOutput:
        return self.encoder(x)

    def _written(self, enc: EncoderOutput) -> torch.Tensor:
        """The tokens a step writes to memory [B,N,D]: the encoder's tokens, or their mean as one token."""
        return enc.tokens if self.cfg.memory_tokens == "grid" else enc.pooled.unsqueeze(1)

    def _condition(self, pooled: torch.Tensor, readout: Any) -> torch.Tensor:
        if self.conditioner is not None:
            # "now" = the newest slot's step id, so ages need no extra bookkeeping in the agent
            now = readout.source_ids.masked_fill(~readout.mask, -1).amax(-1).clamp(min=0)
            return self.conditioner(pooled, readout, current_t=now)
        m = readout.mask.unsqueeze(-1).to(readout.tokens.dtype)
        mean = (readout.tokens * m).sum(-2) / m.sum(-2).clamp(min=1.0)
        return torch.cat([pooled, mean], dim=-1)


def memory_config(cfg: PolicyConfig, tokens_per_step: int):
    """The memory's typed config: width and tokens from the encoder, the rest from ``memory_args``."""
    from embodimem.config import from_dict

    return from_dict(memory_config_class(cfg.memory),
                     {**cfg.memory_args, "dim": cfg.feature_dim, "tokens_per_step": tokens_per_step})
