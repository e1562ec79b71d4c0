"""``hcam``: Hierarchical Chunk Attention Memory (Lampinen et al. 2021, "Towards mental time travel").

Writes accumulate into a partial chunk; after C writes it becomes a readable chunk of C steps x N tokens
with key = mean of its C*N tokens. Reads are the shared ``ChunkAttention`` (top-k chunks by key, MHA
within each, weighted sum; keys and contents under stop-gradient).

Conventions (each has a test in tests/test_memory_hcam.py):
- Chunk = C consecutive steps of one episode x N tokens. Chunk slots are time-ordered and right-aligned
  (slot M-1 is the newest chunk). When M chunks are held, completing a chunk drops the OLDEST one.
- Partial chunk: the last ``fill`` (< C) steps are not a chunk (no key, never selected). Their raw tokens
  are returned after the Q attended tokens as the local working memory, so a read always sees every step
  of the episode either through a chunk or verbatim.
- Readout (K = Q + C*N): tokens[:, :Q] = HCAM output per query token (mask: at least one chunk read;
  source_ids/time_span: first step / [first, last] step over the selected chunks); tokens[:, Q:] = the
  partial chunk's tokens, oldest first, right-aligned (mask: held; ids: their step). ``weights`` is None;
  extras ``chunk_index`` int64 [B,Q,k] (slot, -1 = no pick), ``chunk_weight`` [B,Q,k], ``chunk_span`` [B,Q,k,2].
- Source ids are steps since the episode began (``is_first`` resets them to 0).
- Ties between chunk logits: the lower slot, i.e. the OLDER chunk, wins (stable sort).
- ``forward`` over [B,T] is vectorized (all chunks of the sequence at once, then causal/episode masks) and
  equals stepping; query tokens keep gradients, memory contents and keys do not (stop-gradient), the
  partial-chunk tokens in the readout keep gradients for steps written inside the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.chunk_attention import ChunkAttention, ChunkSelection, gather_chunks
from embodimem.memory.state import State


@dataclass
class HcamConfig(MemoryConfig):
    chunk_size: int = 16  # C: steps per chunk
    num_chunks: int = 64  # M: chunks held (capacity = M*C steps); the oldest is dropped when full
    top_k: int = 4  # k: chunks read per query token (<= num_chunks)
    heads: int = 4  # heads of the within-chunk attention (must divide dim)
    pos_encoding: bool = True  # sinusoidal within-chunk position of each step

    def validate(self) -> None:
        super().validate()
        who = type(self).__name__
        for f in ("chunk_size", "num_chunks", "top_k", "heads"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{who}.{f} must be > 0, got {getattr(self, f)}")
        if self.top_k > self.num_chunks:
            raise ValueError(f"{who}.top_k={self.top_k} is larger than num_chunks={self.num_chunks}")
        if self.dim % self.heads:
            raise ValueError(f"{who}.dim={self.dim} is not divisible by heads={self.heads}")

    @classmethod
    def example(cls) -> HcamConfig:
        return cls(dim=8, tokens_per_step=2, chunk_size=3, num_chunks=4, top_k=2, heads=2)


@register_memory("hcam")
class HcamMemory(Memory):
    """Chunks [B,M,C,N,D] + keys [B,M,D] + a partial chunk; reads top-k chunks then attends within them."""

    config_class = HcamConfig
    config: HcamConfig

    def __init__(self, config: HcamConfig):
        super().__init__(config)
        self.attn = ChunkAttention(config.dim, config.heads, config.top_k, config.chunk_size, config.pos_encoding)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c = self.config
        B, M, C, N, D = batch_size, c.num_chunks, c.chunk_size, c.tokens_per_step, c.dim
        return {
            "chunks": torch.zeros(B, M, C, N, D, device=device),  # completed chunks, oldest slot first
            "keys": torch.zeros(B, M, D, device=device),  # mean of each chunk's C*N tokens
            "ids": torch.full((B, M, C), -1, dtype=torch.long, device=device),  # source step of every entry
            "valid": torch.zeros(B, M, dtype=torch.bool, device=device),
            "acc": torch.zeros(B, C, N, D, device=device),  # the partial chunk, right-aligned (zeros = empty)
            "acc_ids": torch.full((B, C), -1, dtype=torch.long, device=device),
            "fill": torch.zeros(B, dtype=torch.long, device=device),  # steps in the partial chunk, 0..C-1
            "step": torch.zeros(B, dtype=torch.long, device=device),  # next step id within the episode
        }

    @torch.no_grad()
    def write(self, state: State, item: torch.Tensor, **_: Any) -> State:
        """Append item [B,N,D] to the partial chunk; after its C-th step it becomes a chunk (key = mean)."""
        item = self.check_tokens(item, "item").detach().to(state["acc"].dtype)
        B, C = item.shape[0], self.config.chunk_size
        acc = torch.cat([state["acc"][:, 1:], item[:, None]], dim=1)
        acc_ids = torch.cat([state["acc_ids"][:, 1:], state["step"][:, None]], dim=1)
        fill = state["fill"] + 1
        done = fill == C
        out = {**state, "acc": acc, "acc_ids": acc_ids, "fill": torch.where(done, 0, fill), "step": state["step"] + 1}
        if bool(done.any()):  # pushing a chunk copies the bank: only on the steps that complete one
            d = done.view(B, 1)
            out["chunks"] = torch.where(d[..., None, None, None], torch.cat([state["chunks"][:, 1:], acc[:, None]], 1),
                                        state["chunks"])
            out["keys"] = torch.where(d[..., None], torch.cat([state["keys"][:, 1:], acc.mean((1, 2))[:, None]], 1),
                                      state["keys"])
            out["ids"] = torch.where(d[..., None], torch.cat([state["ids"][:, 1:], acc_ids[:, None]], 1), state["ids"])
            out["valid"] = torch.where(d, torch.cat([state["valid"][:, 1:], done[:, None]], 1), state["valid"])
            out["acc"] = torch.where(d[..., None, None], 0.0, acc)  # the pushed chunk leaves the accumulator
            out["acc_ids"] = torch.where(d, -1, acc_ids)
        return out

    def read(self, state: State, query: torch.Tensor | None = None, **_: Any) -> Readout:
        """Query [B,Q,D] (or [B,D]) -> Readout [B,Q+C*N,D]: Q attended tokens, then the partial chunk."""
        if query is None:
            raise ValueError("hcam: read needs a query [B,Q,D] (step passes the current tokens)")
        q = self.check_query(query)
        B = state["valid"].shape[0]
        if q.shape[0] != B:
            raise ValueError(f"hcam: query has batch {q.shape[0]}, state has {B}")
        out, sel = self.attn(q, state["keys"], state["chunks"], state["valid"])
        span = self._span(gather_chunks(state["ids"], sel.index), sel)
        return self._readout(out, sel, span, state["acc"], state["acc_ids"])

    # ----- helpers shared by read and forward (any leading dims *) -----------------------------------
    @staticmethod
    def _span(picked_ids: torch.Tensor, sel: ChunkSelection) -> torch.Tensor:
        """[first, last] step of each pick: picked_ids [*,Q,k,C] -> int64 [*,Q,k,2] (-1 where invalid)."""
        span = torch.stack([picked_ids[..., 0], picked_ids[..., -1]], dim=-1)
        return torch.where(sel.valid[..., None], span, torch.full_like(span, -1))

    def _readout(self, out: torch.Tensor, sel: ChunkSelection, span: torch.Tensor, acc: torch.Tensor,
                 acc_ids: torch.Tensor) -> Readout:
        """Assemble [*,Q,D] attended tokens and the partial chunk (acc [*,C,N,D], acc_ids [*,C]) into a Readout."""
        N = self.config.tokens_per_step
        hmask = sel.valid.any(-1)  # [*,Q]
        first = torch.where(sel.valid, span[..., 0], torch.iinfo(torch.long).max).amin(-1)
        first = torch.where(hmask, first, -1)
        last = span[..., 1].amax(-1)  # -1 where nothing was read
        pids = acc_ids[..., None].expand(*acc_ids.shape, N).flatten(-2)  # [*,C*N]
        ids = torch.cat([first, pids], -1)
        return Readout(
            tokens=torch.cat([out, acc.flatten(-3, -2).to(out.dtype)], -2),
            mask=ids >= 0,
            source_ids=ids,
            time_span=torch.stack([ids, torch.cat([last, pids], -1)], -1),
            extras={"chunk_index": sel.index, "chunk_weight": sel.weight, "chunk_span": span},
        )

    def forward(self, state: State, x: torch.Tensor, *, is_first: torch.Tensor, **_: Any) -> tuple[Readout, State]:
        """Parallel sequence path: x [B,T,N,D], is_first [B,T] -> (Readout [B,T,Q+C*N,D], state); equals stepping."""
        x, is_first = self.check_sequence(x, is_first)
        self.check_tokens(x.flatten(0, 1), "x")
        c = self.config
        B, T = is_first.shape
        C, M = c.chunk_size, c.num_chunks
        dev = x.device
        x = x.to(state["acc"].dtype)
        ar = torch.arange(T, device=dev)
        last_reset = torch.where(is_first, ar, torch.full_like(ar, -1)).cummax(dim=1).values  # [B,T], -1 = none
        reset = last_reset >= 0
        ids = torch.where(reset, ar - last_reset, state["step"][:, None] + ar)  # [B,T] step ids
        fill = torch.where(reset, ar - last_reset + 1, state["fill"][:, None] + ar + 1) % C  # after each write
        done = fill == 0  # step t completes a chunk
        # the last C steps of the episode at every t: a sliding window over [held partial chunk ; new steps]
        hist_tok = torch.cat([state["acc"], x], dim=1)  # [B,C+T,N,D]
        hist_ids = torch.cat([state["acc_ids"], ids], dim=1)
        widx = ar[:, None] + 1 + torch.arange(C, device=dev)  # [T,C]
        ep_start = torch.where(reset, last_reset + C, torch.zeros_like(last_reset))
        wvalid = (hist_ids[:, widx] >= 0) & (widx >= ep_start[..., None])  # [B,T,C]
        win = hist_tok[:, widx] * wvalid[..., None, None]  # [B,T,C,N,D] (keeps grad for in-sequence steps)
        win_ids = torch.where(wvalid, hist_ids[:, widx], -1)
        # every chunk that exists during the sequence: E = [held M ; new ones in completion order]
        cnt = done.long().cumsum(1)  # [B,T] chunks completed so far
        Tn = (T - 1) // C + 1  # most chunks one row can complete in T steps
        t_of = torch.searchsorted(cnt, torch.arange(1, Tn + 1, device=dev).expand(B, Tn).contiguous())
        t_of = t_of.clamp(max=T - 1)  # [B,Tn] step that completed new chunk j
        new_ok = torch.arange(Tn, device=dev) < cnt[:, -1:]
        new_tok = gather_chunks(win.detach(), t_of)  # [B,Tn,C,N,D]
        e_tok = torch.cat([state["chunks"], new_tok], 1)
        e_key = torch.cat([state["keys"], new_tok.mean((2, 3))], 1)
        e_ids = torch.cat([state["ids"], gather_chunks(win_ids, t_of)], 1)
        e_ok = torch.cat([state["valid"], new_ok], 1)
        e_birth = torch.cat([torch.full((B, M), -1, dtype=torch.long, device=dev), t_of], 1)
        # the bank at step t is E[cnt_t : cnt_t + M]; a chunk is visible if born in t's episode
        slot = cnt[..., None] + torch.arange(M, device=dev)  # [B,T,M]
        vis = gather_chunks(e_ok, slot) & (gather_chunks(e_birth, slot) >= last_reset[..., None])
        sel = self.attn.select(x, gather_chunks(e_key, slot), vis)  # window-slot indices, like stepping
        e_pick = torch.where(sel.valid, cnt[..., None, None] + sel.index, -1)  # [B,T,Q,k]
        out = self.attn.attend(x, gather_chunks(e_tok, e_pick), sel.weight)
        span = self._span(gather_chunks(e_ids, e_pick), sel)
        # the partial chunk after step t is the window's last fill_t steps (nothing right after a push)
        part = torch.arange(C, device=dev) >= (C - fill[..., None])  # [B,T,C]
        acc = win * part[..., None, None]
        acc_ids = torch.where(part, win_ids, -1)
        readout = self._readout(out, sel, span, acc, acc_ids)
        v = vis[:, -1]
        final = {
            "chunks": gather_chunks(e_tok, slot[:, -1]) * v[..., None, None, None],
            "keys": gather_chunks(e_key, slot[:, -1]) * v[..., None],
            "ids": torch.where(v[..., None], gather_chunks(e_ids, slot[:, -1]), -1),
            "valid": v,
            "acc": acc[:, -1].detach(),
            "acc_ids": acc_ids[:, -1],
            "fill": fill[:, -1],
            "step": ids[:, -1] + 1,
        }
        return readout, final
