"""The memory contract: ``Readout``, ``MemoryConfig`` and the ``Memory`` base class.

Every memory keeps its state outside the module (a ``dict[str, Tensor]`` with leading dim B), resets rows
flagged ``is_first`` itself, and never stores an autograd graph in that state. See DESIGN.md.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from embodimem.memory.state import State, batch_size_of, detach_state, state_nbytes, where_rows


@dataclass
class Readout:
    """What a memory returns. Shapes use K = slots read; a sequence readout has an extra T after B.

    tokens: float [B,K,D]; mask: bool [B,K] (True = valid slot); source_ids: int64 [B,K] step id the slot
    came from (the first step for merged slots, -1 where masked); weights: float [B,K] retrieval weights
    or None; time_span: int64 [B,K,2] first/last step a slot covers or None; positions: float [B,K,3]
    world positions (metres) for spatial memories or None.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    source_ids: torch.Tensor
    weights: torch.Tensor | None = None
    time_span: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def tensors(self) -> dict[str, torch.Tensor]:
        """All non-None tensors by field name (extras prefixed ``extras.``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extras"}
        out = {k: v for k, v in out.items() if v is not None}
        out.update({f"extras.{k}": v for k, v in self.extras.items()})
        return out

    def map(self, fn) -> Readout:
        """Apply ``fn`` to every tensor (e.g. index rows, move device)."""
        kw = {f.name: (None if getattr(self, f.name) is None else fn(getattr(self, f.name)))
              for f in dataclasses.fields(self) if f.name != "extras"}
        return Readout(**kw, extras={k: fn(v) for k, v in self.extras.items()})

    @staticmethod
    def stack(readouts: list[Readout], dim: int = 1) -> Readout:
        """Stack per-step readouts into a sequence readout [B,T,K,...]."""
        first = readouts[0]
        kw = {}
        for f in dataclasses.fields(first):
            if f.name == "extras":
                continue
            vals = [getattr(r, f.name) for r in readouts]
            kw[f.name] = None if vals[0] is None else torch.stack(vals, dim=dim)
        extras = {k: torch.stack([r.extras[k] for r in readouts], dim=dim) for k in first.extras}
        return Readout(**kw, extras=extras)

    @property
    def num_valid(self) -> torch.Tensor:
        """Valid slots per row: int64 [B] (or [B,T] for a sequence readout)."""
        return self.mask.sum(-1)


@dataclass
class MemoryConfig:
    """Fields every memory shares. Subclasses add their own; all are plain, YAML-serialisable values."""

    dim: int = 64  # token width D of what is written (and of the readout tokens unless documented)
    tokens_per_step: int = 1  # N tokens written per step (static, so shapes stay fixed)
    check_finite: bool = True  # raise on NaN/inf input (costs one device sync per step on GPU)

    name: ClassVar[str] = ""

    def validate(self) -> None:
        """Raise ValueError on impossible values; subclasses extend."""
        if self.dim <= 0:
            raise ValueError(f"{type(self).__name__}.dim must be > 0, got {self.dim}")
        if self.tokens_per_step <= 0:
            raise ValueError(f"{type(self).__name__}.tokens_per_step must be > 0, got {self.tokens_per_step}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self)}

    @classmethod
    def example(cls) -> MemoryConfig:
        """A small config for the contract suite, docs and smoke benchmarks (subclasses shrink capacities)."""
        return cls(dim=8, tokens_per_step=2)


class Memory(nn.Module):
    """Base class. Subclasses implement ``init_state``, ``write`` and ``read``; may override ``forward``.

    ``step`` = reset rows with ``is_first`` -> write (no grad) -> read. ``forward`` runs ``step`` over a
    [B,T,...] sequence; overrides must return the same values (the contract suite checks it), and may keep
    gradients for tokens written inside the sequence. The returned state is always detached.
    """

    config_class: ClassVar[type[MemoryConfig]] = MemoryConfig
    name: ClassVar[str] = ""

    def __init__(self, config: MemoryConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        config.validate()
        self.config = config

    # ----- to implement -------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Fresh (empty) state for ``batch_size`` envs."""
        raise NotImplementedError

    def write(self, state: State, item: torch.Tensor, **kw: Any) -> State:
        """Store ``item`` [B,N,D]; no gradient; consolidation/eviction happens here."""
        raise NotImplementedError

    def read(self, state: State, query: torch.Tensor | None = None, **kw: Any) -> Readout:
        """Read memory; ``query`` [B,N,D] (or None where the memory needs none)."""
        raise NotImplementedError

    # ----- shared behaviour ---------------------------------------------------------------------------
    @property
    def readout_dim(self) -> int:
        """Width of the readout tokens (``config.dim`` unless the memory documents otherwise)."""
        return self.config.dim

    @functools.cached_property
    def accepts_donate(self) -> bool:
        """Whether ``write`` takes ``donate=True`` (update the given state in place instead of copying it).

        Looked up once per instance: rollouts ask on every step."""
        return "donate" in inspect.signature(self.write).parameters

    def example_inputs(self, batch_size: int, steps: int, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        """Random inputs for tests and benchmarks: x [B,T,N,D] plus per-step keyword arguments ([B,T,...])."""
        c = self.config
        return torch.randn(batch_size, steps, c.tokens_per_step, c.dim, generator=generator), {}

    def reset(self, state: State, mask: torch.Tensor) -> State:
        """Rows where ``mask`` (bool [B]) is True become fresh; other rows are untouched."""
        mask = self.check_mask(mask, batch_size_of(state), "mask")
        if not bool(mask.any()):
            return state
        fresh = self.init_state(mask.shape[0], device=mask.device)
        return where_rows(mask, fresh, state)

    def step(self, state: State, x_t: torch.Tensor, *, is_first: torch.Tensor, **kw: Any) -> tuple[Readout, State]:
        """One rollout step: x_t [B,N,D] (or [B,D]); is_first bool [B]. Returns (Readout [B,K,D], state)."""
        x_t = self.check_tokens(x_t)
        state = self.reset(state, self.check_mask(is_first, x_t.shape[0], "is_first"))
        with torch.no_grad():
            state = self.write(state, x_t.detach(), **kw)
        readout = self.read(state, query=x_t, **kw)
        return readout, detach_state(state)

    def forward(self, state: State, x: torch.Tensor, *, is_first: torch.Tensor, **kw: Any) -> tuple[Readout, State]:
        """A sequence: x [B,T,N,D] (or [B,T,D]); is_first bool [B,T]. Returns (Readout [B,T,K,...], state)."""
        x, is_first = self.check_sequence(x, is_first)
        readouts = []
        for t in range(x.shape[1]):
            kw_t = {k: _slice_time(v, t, x.shape[1]) for k, v in kw.items()}
            r, state = self.step(state, x[:, t], is_first=is_first[:, t], **kw_t)
            readouts.append(r)
        return Readout.stack(readouts, dim=1), state

    def stats(self, state: State) -> dict[str, float]:
        """Bytes held, bytes per env and, where the state has a ``valid`` mask, slots used."""
        b = batch_size_of(state)
        out = {"bytes": float(state_nbytes(state)), "bytes_per_env": state_nbytes(state) / b}
        if "valid" in state:
            used = state["valid"].reshape(b, -1).sum(-1).float()
            out["slots_used_mean"] = float(used.mean())
            out["slots_capacity"] = float(state["valid"][0].numel())
        return out

    def bound_bytes(self, batch_size: int) -> int:
        """Declared upper bound on state bytes for ``batch_size`` envs (fixed capacity: the empty state's)."""
        return state_nbytes(self.init_state(batch_size, device="meta"))

    # ----- input checks (rule 6: fail loudly) ---------------------------------------------------------
    def check_tokens(self, x: torch.Tensor, what: str = "x_t") -> torch.Tensor:
        """Validate tokens [B,N,D] (a [B,D] input means N=1)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.name}: {what} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 2:
            x = x.unsqueeze(1)
        cfg = self.config
        if x.dim() != 3:
            raise ValueError(f"{self.name}: {what} must be [B,N,D] or [B,D], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{self.name}: {what} must be floating point, got {x.dtype}")
        if x.shape[-1] != cfg.dim:
            raise ValueError(f"{self.name}: {what} has width D={x.shape[-1]}, config.dim={cfg.dim}")
        if x.shape[1] != cfg.tokens_per_step:
            raise ValueError(f"{self.name}: {what} has N={x.shape[1]} tokens, config.tokens_per_step={cfg.tokens_per_step}")
        # amax propagates NaN and inf, and is ~8x cheaper on CPU than isfinite(x).all() on a large input
        if cfg.check_finite and not bool(torch.isfinite(x.detach().abs().amax())):
            raise ValueError(f"{self.name}: {what} contains NaN or inf")
        return x

    def check_query(self, query: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """Validate a query [B,Q,Dq] (a [B,Dq] input means Q=1)."""
        width = self.config.dim if width is None else width
        if query.dim() == 2:
            query = query.unsqueeze(1)
        if query.dim() != 3 or query.shape[-1] != width:
            raise ValueError(f"{self.name}: query must be [B,Q,{width}] or [B,{width}], got shape {tuple(query.shape)}")
        return query

    @staticmethod
    def check_mask(mask: torch.Tensor, batch_size: int, what: str) -> torch.Tensor:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError(f"{what} must be a bool tensor [B], got {getattr(mask, 'dtype', type(mask))}")
        if mask.shape != (batch_size,):
            raise ValueError(f"{what} must have shape [{batch_size}], got {tuple(mask.shape)}")
        return mask

    def check_sequence(self, x: torch.Tensor, is_first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate a sequence x [B,T,N,D] (or [B,T,D]) and is_first bool [B,T]."""
        if x.dim() == 3:
            x = x.unsqueeze(2)
        if x.dim() != 4:
            raise ValueError(f"{self.name}: x must be [B,T,N,D] or [B,T,D], got shape {tuple(x.shape)}")
        if not isinstance(is_first, torch.Tensor) or is_first.dtype != torch.bool or is_first.shape != x.shape[:2]:
            raise ValueError(f"{self.name}: is_first must be bool [B,T]={tuple(x.shape[:2])}, got "
                             f"{getattr(is_first, 'dtype', type(is_first))} {tuple(getattr(is_first, 'shape', ()))}")
        return x, is_first

    def extra_repr(self) -> str:
        return f"config={self.config}"


def _slice_time(v: Any, t: int, T: int) -> Any:
    """Per-step slice of a sequence keyword argument ([B,T,...] tensors are sliced, others passed through)."""
    if isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[1] == T:
        return v[:, t]
    return v
