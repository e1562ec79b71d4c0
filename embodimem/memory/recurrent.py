"""``recurrent``: a GRU/LSTM hidden state as a one-token memory.

The only built-in memory whose state is differentiable: inside one ``forward`` chunk the graph runs
through the hidden state (truncated BPTT); the state handed back is detached, like every memory's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.state import State


@dataclass
class RecurrentConfig(MemoryConfig):
    hidden: int = 128  # readout width H
    cell: str = "gru"  # "gru" or "lstm"
    # Added at init to the bias of the gate that keeps the old state (GRU update gate z, LSTM forget gate f):
    # the state then keeps sigmoid(keep_bias) of itself per step (0.5 at 0, 0.95 at 3). A default cell forgets
    # a cue within ~10 steps, before training can learn to hold it (cf. Jozefowicz et al. 2015, chrono init).
    keep_bias: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.hidden <= 0:
            raise ValueError(f"RecurrentConfig.hidden must be > 0, got {self.hidden}")
        if not -20.0 <= self.keep_bias <= 20.0:
            raise ValueError(f"RecurrentConfig.keep_bias must be in [-20, 20], got {self.keep_bias}")
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"RecurrentConfig.cell must be 'gru' or 'lstm', got {self.cell!r}")

    @classmethod
    def example(cls) -> RecurrentConfig:
        return cls(dim=8, tokens_per_step=2, hidden=12)


@register_memory("recurrent")
class RecurrentMemory(Memory):
    """h_t = cell(mean_N(x_t), h_{t-1}); read = h_t as one token [B,1,H] (source id = last written step)."""

    config_class = RecurrentConfig
    config: RecurrentConfig

    def __init__(self, config: RecurrentConfig):
        super().__init__(config)
        cls = nn.GRUCell if config.cell == "gru" else nn.LSTMCell
        self.cell = cls(config.dim, config.hidden)
        if config.keep_bias:
            H = config.hidden
            gate = slice(H, 2 * H)  # torch packs GRU biases as (r, z, n) and LSTM biases as (i, f, g, o)
            with torch.no_grad():
                self.cell.bias_ih[gate] += config.keep_bias

    @property
    def readout_dim(self) -> int:
        return self.config.hidden

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        H = self.config.hidden
        state = {
            "h": torch.zeros(batch_size, H, device=device),
            "step": torch.zeros(batch_size, dtype=torch.long, device=device),
            "last_id": torch.full((batch_size,), -1, dtype=torch.long, device=device),
        }
        if self.config.cell == "lstm":
            state["c"] = torch.zeros(batch_size, H, device=device)
        return state

    def _advance(self, state: State, x: torch.Tensor, t: torch.Tensor | None) -> State:
        """One cell update (keeps the graph); x [B,N,D] is mean-pooled over N first."""
        inp = x.mean(dim=1).to(state["h"].dtype)
        if self.config.cell == "lstm":
            h, c = self.cell(inp, (state["h"], state["c"]))
            new = {"h": h, "c": c}
        else:
            new = {"h": self.cell(inp, state["h"])}
        new["last_id"] = state["step"] if t is None else t.to(torch.long)
        new["step"] = state["step"] + 1
        return new

    @torch.no_grad()
    def write(self, state: State, item: torch.Tensor, *, t: torch.Tensor | None = None, **_: Any) -> State:
        """Fold item [B,N,D] into the hidden state (no grad)."""
        return self._advance(state, self.check_tokens(item, "item"), t)

    def read(self, state: State, query: torch.Tensor | None = None, **_: Any) -> Readout:
        """The hidden state as one token [B,1,H]; masked until the first write of the episode."""
        ids = state["last_id"][:, None]
        return Readout(tokens=state["h"][:, None], mask=ids >= 0, source_ids=ids,
                       time_span=torch.stack([ids, ids], dim=-1))

    def step(self, state: State, x_t: torch.Tensor, *, is_first: torch.Tensor,
             t: torch.Tensor | None = None, **_: Any) -> tuple[Readout, State]:
        """Like the base step, but the readout keeps the graph to x_t and the cell parameters.

        The reset is arithmetic (rows times 0 are the fresh zeros), which needs no host sync on GPU.
        """
        x_t = self.check_tokens(x_t)
        is_first = self.check_mask(is_first, x_t.shape[0], "is_first")
        keep = (~is_first).to(state["h"].dtype)[:, None]
        state = {k: (v * keep if k in ("h", "c") else v) for k, v in state.items()}
        state["step"] = state["step"].masked_fill(is_first, 0)
        state["last_id"] = state["last_id"].masked_fill(is_first, -1)
        state = self._advance(state, x_t, t)
        return self.read(state), {k: v.detach() for k, v in state.items()}

    def forward(self, state: State, x: torch.Tensor, *, is_first: torch.Tensor,
                t: torch.Tensor | None = None, **_: Any) -> tuple[Readout, State]:
        """x [B,T,N,D]: the graph runs through h across the chunk; a reset multiplies rows to the fresh zeros.

        Pooling, step ids and the readout are computed for the whole chunk at once; only the cell loops.
        """
        x, is_first = self.check_sequence(x, is_first)
        self.check_tokens(x.flatten(0, 1), "x")
        B, T = is_first.shape
        inp = x.mean(dim=2).to(state["h"].dtype)  # [B,T,D]
        keep = (~is_first).to(inp.dtype).unsqueeze(-1)  # [B,T,1]
        h, c = state["h"], state.get("c")
        hs = []
        for i in range(T):
            if c is not None:
                h, c = self.cell(inp[:, i], (h * keep[:, i], c * keep[:, i]))
            else:
                h = self.cell(inp[:, i], h * keep[:, i])
            hs.append(h)
        ar = torch.arange(T, device=is_first.device)
        last_reset = torch.where(is_first, ar, torch.full_like(ar, -1)).cummax(dim=1).values
        step_at = torch.where(last_reset >= 0, ar - last_reset, state["step"][:, None] + ar)  # [B,T] before each write
        ids = step_at if t is None else t.to(torch.long)
        readout = Readout(tokens=torch.stack(hs, dim=1)[:, :, None], mask=torch.ones(B, T, 1, dtype=torch.bool,
                          device=ids.device), source_ids=ids[:, :, None],
                          time_span=torch.stack([ids, ids], dim=-1)[:, :, None])
        final = {"h": h.detach(), "step": step_at[:, -1] + 1, "last_id": ids[:, -1]}
        if c is not None:
            final["c"] = c.detach()
        return readout, final
