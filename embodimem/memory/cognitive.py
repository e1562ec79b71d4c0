"""``cognitive``: MemoryVLA's Perceptual-Cognitive Memory Bank (PCMB), batched over streams.

Input convention: each step writes x_t [B, N+1, D]; the first N tokens are perceptual (patch) tokens and
the LAST token is the cognitive token, so ``tokens_per_step = N + 1`` (N >= 1).

State (fixed shapes). Entries live in SLOTS that never move; ``order`` gives their time order, so a write
touches two slots per bank (O(N D) per row, plus one copy of the bank unless ``donate=True``):
  tokens [B,L,N+1,D]: tokens[:, :, :N] is the perceptual bank [B,L,N,D], tokens[:, :, N] the cognitive bank;
  count  [B,L,2]:   frames merged into the entry in each slot, per bank (0 perceptual, 1 cognitive; 0 = empty);
  span   [B,L,2,2]: first/last step the entry covers, per bank ([..., bank, 0] first, [..., bank, 1] last);
  order  [B,L,2]:   slot of each time position, per bank: positions are right-aligned (L-1 = newest entry,
                    the first L - min(t, L) positions point at empty slots); ``time_ordered`` gathers through it;
  sim    [B,L,2]:   similarity of positions j-1 and j, per bank (0 at j = 0), so a write computes O(1) cosines;
  valid  [B,L]: positions in use (both banks always hold min(t, L) entries); step, last_id, merges [B].

Write: append the step's entry; when that makes L+1 entries, consolidate back to L:
- ``consolidation="merge"`` (MemoryVLA's ``tome``): the similarity of adjacent entries i, i+1 is the mean over
  tokens of the per-token cosine; the argmax pair merges (ties: the EARLIEST pair) into the size-weighted
  mean (c_i a + c_{i+1} b) / (c_i + c_{i+1}), so the count-weighted sum of everything written is conserved
  (``merge_weighting="equal"`` gives the released code's 0.5/0.5); count = c_i + c_{i+1};
  span = [first of i, last of i+1]. ``merge_on="independent"`` (MemoryVLA) picks the pair per bank;
  ``"joint"`` picks one pair for both banks from the mean cosine over all N+1 tokens.
- ``consolidation="fifo"``: the oldest entry is dropped.
Entries are the raw written tokens (MemoryVLA's default ``update_fused=False``), never the fused readout.

Read (learned; the only parameters): per bank, the working-memory tokens (queries) run through
``read_layers`` blocks of [cross-attention over the bank's tokens, with a sinusoidal embedding of each
entry's time (its FIRST step, as MemoryVLA keeps) added to the KEYS only -> residual + LayerNorm -> GELU FFN
-> residual + LayerNorm], giving m; then gate fusion out = g m + (1-g) x = x + g (m - x),
g = sigmoid(W[x; m] + b), W = b = 0 at init (g = 0.5). Attention dropout applies in training mode only,
so eval reads are deterministic (MemoryVLA+ applied SDPA dropout at eval).
Readout: tokens [B,N+1,D] = the fused perceptual tokens, then the fused cognitive token; mask [B,N+1] =
the bank holds something; source_ids = the newest written step; time_span = [oldest step covered, newest];
per-entry provenance in ``extras``: count, span, order (as in the state) and merges [B] (merging writes since
the episode began: training with ``StreamingEpisodeSampler`` shows them). An empty bank reads
back the query itself, masked (MemoryVLA returns q). The contract order is write-then-read, so a ``step``
read sees the current step in the bank (MemoryVLA retrieves before appending).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.state import State

CONSOLIDATIONS = ("merge", "fifo")
WEIGHTINGS = ("count", "equal")
MERGE_ON = ("independent", "joint")
TIME_EMBEDS = ("age", "source_id", "none")


@dataclass
class CognitiveConfig(MemoryConfig):
    """PCMB settings; ``tokens_per_step`` = N perceptual tokens + 1 cognitive token (the last)."""

    tokens_per_step: int = 5
    capacity: int = 16  # L entries per bank (MemoryVLA: mem_length = 16)
    consolidation: str = "merge"  # merge (adjacent-cosine ToMe) | fifo
    merge_weighting: str = "count"  # count (size-weighted, conserves the mean) | equal (released code)
    merge_on: str = "independent"  # independent (a pair per bank, as MemoryVLA) | joint (one pair for both)
    read_layers: int = 2  # cross-attention blocks per bank (MemoryVLA: 2)
    num_heads: int = 4
    ffn_mult: int = 4  # FFN hidden width = ffn_mult * dim
    time_embed: str = "age"  # age (newest step - entry's first step) | source_id (entry's first step) | none
    time_dim: int = 32  # sinusoid features of the time embedding (even)
    max_period: float = 10000.0  # longest sinusoid period, in steps
    dropout: float = 0.0  # attention dropout, training mode only

    def validate(self) -> None:
        super().validate()
        who = type(self).__name__
        if self.tokens_per_step < 2:
            raise ValueError(f"{who}.tokens_per_step must be >= 2 (N >= 1 perceptual tokens + the last, "
                             f"cognitive token), got {self.tokens_per_step}")
        if self.capacity <= 0:
            raise ValueError(f"{who}.capacity must be > 0, got {self.capacity}")
        for f, allowed in (("consolidation", CONSOLIDATIONS), ("merge_weighting", WEIGHTINGS),
                           ("merge_on", MERGE_ON), ("time_embed", TIME_EMBEDS)):
            if getattr(self, f) not in allowed:
                raise ValueError(f"{who}.{f} must be one of {allowed}, got {getattr(self, f)!r}")
        for f in ("read_layers", "num_heads", "ffn_mult"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{who}.{f} must be > 0, got {getattr(self, f)}")
        if self.dim % self.num_heads:
            raise ValueError(f"{who}.dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.time_dim <= 0 or self.time_dim % 2:
            raise ValueError(f"{who}.time_dim must be a positive even number, got {self.time_dim}")
        if self.max_period <= 1:
            raise ValueError(f"{who}.max_period must be > 1, got {self.max_period}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{who}.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def example(cls) -> CognitiveConfig:
        return cls(dim=8, tokens_per_step=3, capacity=4, read_layers=1, num_heads=2, ffn_mult=2, time_dim=8)


class _CrossBlock(nn.Module):
    """MemoryVLA's CrossTransformerBlock: q <- LN(q + attn(q, keys, values)); q <- LN(q + FFN(q))."""

    def __init__(self, c: CognitiveConfig):
        super().__init__()
        D = c.dim
        self.heads, self.dropout = c.num_heads, c.dropout
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.ffn = nn.Sequential(nn.Linear(D, c.ffn_mult * D), nn.GELU(), nn.Linear(c.ffn_mult * D, D))

    def forward(self, q: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q [n,Q,D]; k_in, v_in [n,K,D]; mask bool [n,1,1,K] (True = attend) -> [n,Q,D]."""
        n, nq, D = q.shape
        H = self.heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, -1, H, D // H).transpose(1, 2)

        p = self.dropout if self.training else 0.0  # eval reads are deterministic
        a = F.scaled_dot_product_attention(heads(self.q(q)), heads(self.k(k_in)), heads(self.v(v_in)),
                                           attn_mask=mask, dropout_p=p)
        q = self.norm1(q + self.o(a.transpose(1, 2).reshape(n, nq, D)))
        return self.norm2(q + self.ffn(q))


class _BankReader(nn.Module):
    """Retrieval + gate fusion for one bank: x [n,Q,D] over entries [n,L,M,D] -> fused [n,Q,D].

    A small private module rather than ``embodimem.conditioning.CrossAttention``: the conditioner's per-call
    input checks cost more than this whole read at small sizes, and this one embeds time once per ENTRY
    (not per token). Same math: sinusoid(time) -> MLP added to the keys only; values are the raw tokens.
    """

    def __init__(self, c: CognitiveConfig):
        super().__init__()
        D, half = c.dim, c.time_dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(c.max_period) * torch.arange(half) / half),
                             persistent=False)
        self.time_mlp = (nn.Sequential(nn.Linear(c.time_dim, D), nn.SiLU(), nn.Linear(D, D))
                         if c.time_embed != "none" else None)
        self.blocks = nn.ModuleList(_CrossBlock(c) for _ in range(c.read_layers))
        self.gate = nn.Linear(2 * D, D)
        nn.init.zeros_(self.gate.weight)  # g = sigmoid(0) = 0.5 exactly: the fusion starts as the average
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor, entries: torch.Tensor, times: torch.Tensor, valid: torch.Tensor,
                has: torch.Tensor) -> torch.Tensor:
        """x [n,Q,D]; entries [n,L,M,D]; times [n,L] (steps); valid [n,L]; has [n] (any valid) -> [n,Q,D]."""
        n, L, M, D = entries.shape
        entries = entries * valid[:, :, None, None]  # masked slots stay inert (state keeps zeros there anyway)
        k_in = entries
        if self.time_mlp is not None:
            ang = (times * valid).to(self.freqs.dtype)[..., None] * self.freqs  # [n,L,half]
            pe = self.time_mlp(torch.cat([ang.sin(), ang.cos()], -1).to(entries.dtype))  # [n,L,D]
            k_in = entries + pe[:, :, None]
        # an empty bank would softmax over nothing (NaN): let it attend to its zeros; the gate drops it below
        mask = (valid | ~has[:, None])[:, :, None].expand(n, L, M).reshape(n, 1, 1, L * M)
        k_in, v_in = k_in.reshape(n, L * M, D), entries.reshape(n, L * M, D)
        m = x
        for blk in self.blocks:
            m = blk(m, k_in, v_in, mask)
        g = torch.sigmoid(self.gate(torch.cat([x, m], -1)))
        return torch.where(has[:, None, None], x + g * (m - x), x)  # empty bank: x exactly


@register_memory("cognitive")
class CognitiveMemory(Memory):
    """Perceptual bank [B,L,N,D] + cognitive bank [B,L,D], consolidated on write; read = retrieve + gate fuse."""

    config_class = CognitiveConfig
    config: CognitiveConfig

    def __init__(self, config: CognitiveConfig):
        super().__init__(config)
        self.per_reader = _BankReader(config)
        self.cog_reader = _BankReader(config)
        N = config.tokens_per_step - 1
        # bank of each token: 0 for the N perceptual tokens, 1 for the cognitive token
        self.register_buffer("token_bank", torch.tensor([0] * N + [1]), persistent=False)

    @property
    def num_perceptual(self) -> int:
        """N: perceptual tokens per step (the first tokens_per_step - 1 tokens)."""
        return self.config.tokens_per_step - 1

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c, B = self.config, batch_size
        L, K, D = c.capacity, c.tokens_per_step, c.dim
        long = dict(dtype=torch.long, device=device)
        return {
            "tokens": torch.zeros(B, L, K, D, device=device),
            "count": torch.zeros(B, L, 2, **long),
            "span": torch.full((B, L, 2, 2), -1, **long),
            "order": torch.arange(L, device=device)[None, :, None].repeat(B, 1, 2),
            "sim": torch.zeros(B, L, 2, device=device),
            "valid": torch.zeros(B, L, dtype=torch.bool, device=device),
            "step": torch.zeros(B, **long),
            "last_id": torch.full((B,), -1, **long),
            "merges": torch.zeros(B, **long),
        }

    # ----- write ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def write(self, state: State, item: torch.Tensor, *, t: torch.Tensor | None = None, donate: bool = False,
              **_: Any) -> State:
        """Append item [B,N+1,D] (last token cognitive) to both banks and consolidate them to L entries.

        Frame id = ``t`` [B] (checked: integer, >= 0, above the row's last id) or the step count. Touches two
        slots per bank: O(N D) work per row, plus one copy of the bank unless ``donate=True`` hands the input
        state over (its tensors are updated in place and returned; results are identical).
        """
        item = self.check_tokens(item, "item").detach().to(state["tokens"].dtype)
        ids = checked_ids(self.name, state["step"], state["last_id"], t)
        B, L = state["valid"].shape
        full = state["valid"][:, 0]  # right-aligned positions: position 0 is used only when the bank is full
        tb, order = self.token_bank, state["order"]
        tok = state["tokens"] if donate and state["tokens"].is_contiguous() else state["tokens"].clone()
        rows = _Rows(tok, tb)
        new_sim = self.bank_similarity(rows(order[:, L - 1]), item)  # [B,2]: newest held entry vs the new one
        ext_sim = torch.cat([state["sim"][:, 1:], new_sim[:, None]], 1)  # [B,L,2]: pair i = positions i, i+1
        if self.config.consolidation == "merge":
            if self.config.merge_on == "joint":
                N = self.num_perceptual
                pair = ((N * ext_sim[..., 0] + ext_sim[..., 1]) / (N + 1)).argmax(1)[:, None].expand(B, 2)
            else:
                pair = ext_sim.argmax(1)  # the first maximum: ties go to the lowest index
            p = torch.where(full[:, None], pair, torch.full_like(pair, -1))
        else:
            p = torch.full((B, 2), -1, dtype=torch.long, device=full.device)  # FIFO: always drop position 0
        new = consolidate(state, tok, rows, item, ids, ext_sim, p, self.config.merge_weighting,
                          self.bank_similarity, donate)
        merged = full.long() if self.config.consolidation == "merge" else torch.zeros_like(state["merges"])
        return {**new, "valid": torch.cat([state["valid"][:, 1:], torch.ones_like(full[:, None])], 1),
                "step": state["step"] + 1, "last_id": ids, "merges": state["merges"] + merged}

    @staticmethod
    def bank_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-bank entry similarity: a, b [B,N+1,D] -> [B,2] (mean per-token cosine of the N perceptual
        tokens; cosine of the cognitive tokens). A zero vector has cosine 0."""
        cos = F.cosine_similarity(a, b, dim=-1)  # [B,N+1]
        return torch.stack([cos[:, :-1].mean(-1), cos[:, -1]], -1)

    def time_ordered(self, state: State) -> State:
        """Entries in time order, right-aligned (position L-1 newest): tokens [B,L,N+1,D], count [B,L,2],
        span [B,L,2,2] (the slot-indexed state gathered through ``order``)."""
        order, D = state["order"], self.config.dim
        idx = order[:, :, self.token_bank, None].expand(-1, -1, -1, D)  # [B,L,K,D]
        return {"tokens": state["tokens"].gather(1, idx), "count": state["count"].gather(1, order),
                "span": state["span"].gather(1, order[..., None].expand(-1, -1, -1, 2))}

    # ----- read -----------------------------------------------------------------------------------------
    def read(self, state: State, query: torch.Tensor | None = None, **_: Any) -> Readout:
        """Fused working memory [B,N+1,D] for query [B,N+1,D] (the current step's tokens, last = cognitive)."""
        K = self.config.tokens_per_step
        if query is None:
            raise ValueError(f"{self.name}: read needs a query [B,{K},{self.config.dim}] (the working memory: "
                             f"N perceptual tokens + the cognitive token)")
        query = self.check_query(query)
        if query.shape[1] != K:
            raise ValueError(f"{self.name}: query has {query.shape[1]} tokens, expected tokens_per_step={K} "
                             f"(N perceptual + 1 cognitive)")
        return self.fuse(state, query)

    def fuse(self, s: State, query: torch.Tensor) -> Readout:
        """Unchecked core read: query [n,N+1,D] over entries tokens [n,L',N+1,D], count [n,L',2] (0 = empty
        slot), span [n,L',2,2], valid [n,L'], last_id [n], in any slot order and any L' (no padding needed).

        Rows n may be streams or streams x steps (``forward``); the list reference calls it per stream.
        """
        N, K = self.num_perceptual, self.config.tokens_per_step
        n, has = query.shape[0], s["valid"].any(-1)
        used = s["count"] > 0  # [n,L',2]: slot holds an entry of that bank
        first = s["span"][..., 0]  # [n,L',2]: each entry's first step
        times = s["last_id"][:, None, None] - first if self.config.time_embed == "age" else first
        tok = s["tokens"]
        per = self.per_reader(query[:, :N], tok[:, :, :N], times[..., 0], used[..., 0], has)
        cog = self.cog_reader(query[:, N:], tok[:, :, N:], times[..., 1], used[..., 1], has)
        oldest = first.masked_fill(~used, torch.iinfo(torch.long).max).flatten(1).amin(-1)
        newest = torch.where(has, s["last_id"], torch.full_like(s["last_id"], -1))
        span = torch.stack([torch.where(has, oldest, newest), newest], -1)  # [n,2]
        extras = {k: s[k] for k in ("count", "span", "order", "merges") if k in s}
        return Readout(tokens=torch.cat([per, cog], 1), mask=has[:, None].expand(n, K),
                       source_ids=newest[:, None].expand(n, K), time_span=span[:, None].expand(n, K, 2),
                       extras=extras)

    # ----- sequence path --------------------------------------------------------------------------------
    def forward(self, state: State, x: torch.Tensor, *, is_first: torch.Tensor,
                t: torch.Tensor | None = None, **_: Any) -> tuple[Readout, State]:
        """x [B,T,N+1,D]: sequential (cheap, no-grad) writes, then ONE batched read over all B*T steps.

        Same values as stepping; gradients reach the queries (x) and the read module, not the bank (its writes
        are detached, as in MemoryVLA). Holds the B*T bank snapshots for the read: O(B T L (N+1) D) memory.
        """
        x, is_first = self.check_sequence(x, is_first)
        B, T = is_first.shape
        snaps = []
        for i in range(T):
            state = self.reset(state, is_first[:, i])
            state = self.write(state, x[:, i], t=None if t is None else t[:, i])
            snaps.append(state)
        seq = {k: torch.stack([s[k] for s in snaps], 1).flatten(0, 1) for k in state}  # [B*T,...]
        r = self.fuse(seq, x.flatten(0, 1).to(state["tokens"].dtype))
        return r.map(lambda v: v.unflatten(0, (B, T))), {k: v.detach() for k, v in state.items()}


class _Rows:
    """Per-token slot access into tokens [B,L,K,D] (contiguous): token k of row b lives in slot s[b, bank(k)]."""

    def __init__(self, tok: torch.Tensor, token_bank: torch.Tensor):
        self.B, self.L, self.K, self.D = tok.shape
        self.flat, self.tb = tok.view(-1, self.D), token_bank
        self.bi = torch.arange(self.B, device=tok.device)[:, None]
        self.ki = torch.arange(self.K, device=tok.device)[None]

    def index(self, slot: torch.Tensor) -> torch.Tensor:
        """Flat row index [B*K] of each token's slot; slot [B,G] per bank."""
        return ((self.bi * self.L + slot[:, self.tb]) * self.K + self.ki).reshape(-1)

    def __call__(self, slot: torch.Tensor) -> torch.Tensor:
        """Tokens [B,K,D] at slot [B,G] (per bank)."""
        return self.flat.index_select(0, self.index(slot)).view(self.B, self.K, self.D)

    def put(self, slot: torch.Tensor, values: torch.Tensor) -> None:
        """Write values [B,K,D] at slot [B,G] (per bank), in place."""
        self.flat.index_copy_(0, self.index(slot), values.reshape(-1, self.D))


def checked_ids(who: str, step: torch.Tensor, last_id: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """Source ids [B] for a write: ``t`` if given (ValueError unless integer, >= 0 and > last_id) else ``step``."""
    if t is None:
        return step
    t = torch.as_tensor(t, device=step.device)
    if t.shape != step.shape or t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{who}: frame index t must be an integer tensor [B]={tuple(step.shape)}, "
                         f"got {t.dtype} {tuple(t.shape)}")
    t = t.long()
    if bool((t < 0).any()):
        raise ValueError(f"{who}: frame index t must be >= 0, got {t.tolist()}")
    if bool((t <= last_id).any()):
        raise ValueError(f"{who}: frame index t must increase within an episode (repeated or decreasing "
                         f"index): t={t.tolist()}, previous={last_id.tolist()}")
    return t


def consolidate(state: State, tok: torch.Tensor, rows: _Rows, item: torch.Tensor, ids: torch.Tensor,
                ext_sim: torch.Tensor, p: torch.Tensor, weighting: str, similarity: Callable, donate: bool
                ) -> State:
    """Shrink time positions [held 0..L-1; new item L] back to L, per bank g: p[b,g] = -1 drops position 0
    (empty, or FIFO); p >= 0 merges positions p, p+1 into p's slot. The new item takes the slot of the
    removed position r (0, or p+1); for p = L-1 it is merged straight into the newest entry.

    ``tok`` (the output tokens, already a copy unless donated) is written in place through ``rows``. Returns
    tokens, count, span (slot-indexed), order and sim (positional: sim[:, j] = similarity of positions j-1, j).
    """
    order, count, span = state["order"], state["count"], state["span"]
    B, L, G = count.shape
    ar = torch.arange(L, device=tok.device)[None, :, None]  # [1,L,1]
    merging, pc = p >= 0, p.clamp_min(0)
    r = torch.where(merging, p + 1, torch.zeros_like(p))  # removed position of [held; new] (L: the new item)
    b_new = r == L  # the pair's second entry is the new item itself
    at_ = lambda x, i: x.gather(1, i[:, None])[:, 0]  # noqa: E731  x [B,L,G(,2)] at per-bank position/slot i [B,G]
    f = at_(order, r.clamp(max=L - 1))  # slot that receives the new item
    a = at_(order, pc)  # slot of the merged entry
    ca, cb = at_(count, a), torch.where(b_new, 1, at_(count, f))
    first_a, last_b = at_(span[..., 0], a), torch.where(b_new, ids[:, None], at_(span[..., 1], f))
    if weighting == "count":  # size-weighted (rows not merging may hold empty slots: keep them finite)
        w = ca.to(tok.dtype) / (ca + cb).clamp_min(1).to(tok.dtype)
    else:
        w = torch.full_like(ca, 0.5, dtype=tok.dtype)
    wt = w[:, rows.tb, None]
    tok_b = torch.where(b_new[:, rows.tb, None], item, rows(f))
    merged = rows(a) * wt + tok_b * (1 - wt)  # [B,K,D]
    # the two similarities touching the merged entry: positions (p-1, p) and (p, p+1 of the result)
    right_pos = pc + 2  # position in [held; new]: L means the new item
    right = torch.where((right_pos == L)[:, rows.tb, None], item, rows(at_(order, right_pos.clamp(max=L - 1))))
    left = rows(at_(order, (pc - 1).clamp_min(0)))
    s_left, s_right = similarity(torch.cat([left, merged]), torch.cat([merged, right])).split(B)  # one call
    # writes: the new item into slot f, then (merging rows) the merged entry into slot a (a == f when p = L-1)
    rows.put(f, item)
    rows.put(a, torch.where(merging[:, rows.tb, None], merged, item))  # not merging: a == f holds the item
    cnt = count if donate else count.clone()
    spn = span if donate else span.clone()
    cnt.scatter_(1, f[:, None], 1)
    spn.scatter_(1, f[:, None, :, None].expand(B, 1, G, 2), ids.view(B, 1, 1, 1).expand(B, 1, G, 2))
    cnt.scatter_(1, a[:, None], torch.where(merging, ca + cb, at_(cnt, a))[:, None])
    a_span = torch.stack([torch.where(merging, first_a, at_(spn[..., 0], a)),
                          torch.where(merging, last_b, at_(spn[..., 1], a))], -1)
    spn.scatter_(1, a[:, None, :, None].expand(B, 1, G, 2), a_span[:, None])
    # positional bookkeeping: drop position r, append slot f as the newest (unchanged when r = L)
    keep = ar < r[:, None]
    new_order = torch.where(keep, order, torch.cat([order[:, 1:], f[:, None]], 1))
    before, at = ar < p[:, None], ar == p[:, None]
    sim = torch.where(before, torch.cat([torch.zeros_like(ext_sim[:, :1]), ext_sim[:, : L - 1]], 1), ext_sim)
    sim = torch.where(at, s_left[:, None], sim)
    sim = torch.where(merging[:, None] & (ar == p[:, None] + 1), s_right[:, None], sim)
    return {"tokens": tok, "count": cnt, "span": spn, "order": new_order, "sim": sim.masked_fill(ar == 0, 0.0)}
