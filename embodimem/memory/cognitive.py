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
  unit_newest [B,N+1,D]: the newest entry's tokens, each divided by its norm (zeros when empty): a cache the
                    next write's similarity reads instead of gathering and normalising that entry again;
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
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.frames import cached_constants, copy_rows_
from embodimem.memory.similarity import normalize, normalize_
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
        self._consts: dict[Any, dict[str, torch.Tensor]] = {}  # write's index constants per (device, B)

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
            "unit_newest": torch.zeros(B, K, D, device=device),
            "valid": torch.zeros(B, L, dtype=torch.bool, device=device),
            "step": torch.zeros(B, **long),
            "last_id": torch.full((B,), -1, **long),
            "merges": torch.zeros(B, **long),
        }

    # ----- write ----------------------------------------------------------------------------------------
    def _k(self, device: torch.device, B: int) -> dict[str, torch.Tensor]:
        """Index constants per (device, B), cached: flat token rows of slot 0 [1,B,K], time positions [1,L,1] (and
        position 0), the offsets from p of the positions a consolidation touches."""

        def build() -> dict[str, torch.Tensor]:
            L, K = self.config.capacity, self.config.tokens_per_step
            ar = torch.arange(B, device=device)
            pos = torch.arange(L, device=device)[None, :, None]
            return {"pos": pos, "first": pos == 0,
                    "offsets": torch.tensor([1, 2, 0, -1], device=device)[None, :, None],
                    "rows": (ar[:, None] * (L * K) + torch.arange(K, device=device))[None]}

        return cached_constants(self._consts, device, B, build)

    @torch.no_grad()
    def write(self, state: State, item: torch.Tensor, *, t: torch.Tensor | None = None, donate: bool = False,
              **_: Any) -> State:
        """Append item [B,N+1,D] (last token cognitive) to both banks and consolidate them to L entries.

        Frame id = ``t`` [B] (checked: integer, >= 0, above the row's last id) or the step count. Touches two
        slots per bank: O(N D) work per row, plus one copy of the bank unless ``donate=True`` hands the input
        state over (its tensors are updated in place and returned; results are identical).
        """
        item = self.check_tokens(item, "item").detach().to(state["tokens"].dtype).contiguous()
        ids = checked_ids(self.name, state["step"], state["last_id"], t)
        B, L = state["valid"].shape
        k = self._k(item.device, B)
        full = state["valid"][:, 0]  # right-aligned positions: position 0 is used only when the bank is full
        tok = state["tokens"]
        if not (donate and tok.is_contiguous()):
            tok = tok.clone(memory_format=torch.contiguous_format)
        # the newest held entry against the new one, per bank (F.cosine_similarity's arithmetic, bit for bit);
        # the item's unit tokens become the next write's ``unit_newest``
        unit = normalize(item)
        prev = state["unit_newest"]
        new_sim = bank_mean((prev.mul_(unit) if donate else prev * unit).sum(-1))  # [B,2]
        ext_sim = torch.cat([state["sim"][:, 1:], new_sim[:, None]], 1)  # [B,L,2]: pair i = positions i, i+1
        if self.config.consolidation == "merge":
            if self.config.merge_on == "joint":
                N = self.num_perceptual
                pair = ((N * ext_sim[..., 0] + ext_sim[..., 1]) / (N + 1)).argmax(1)[:, None].expand(B, 2)
            else:
                pair = ext_sim.argmax(1)  # the first maximum: ties go to the lowest index
            p = torch.where(full[:, None], pair, -1)
        else:
            p = torch.full((B, 2), -1, dtype=torch.long, device=full.device)  # FIFO: always drop position 0
        new = self._consolidate(state, tok, item, unit, ids, ext_sim, p, k, donate)
        merged = full.long() if self.config.consolidation == "merge" else torch.zeros_like(state["merges"])
        return {**new, "valid": torch.cat([state["valid"][:, 1:], torch.ones_like(full[:, None])], 1),
                "step": state["step"] + 1, "last_id": ids, "merges": state["merges"] + merged}

    def _per_token(self, x: torch.Tensor) -> torch.Tensor:
        """Per-bank values [...,2] -> per token [...,N+1] (``x[..., token_bank]`` as an expand + cat, far cheaper)."""
        return torch.cat([x[..., :1].expand(*x.shape[:-1], self.num_perceptual), x[..., 1:]], -1)

    def _token_rows(self, k: dict[str, torch.Tensor], slots: torch.Tensor) -> torch.Tensor:
        """Flat row (in tokens.view(-1, D)) of every token of the entries in slots [B,n,G]: int64 [n,B,K]."""
        return torch.add(k["rows"], self._per_token(slots.transpose(0, 1)), alpha=self.config.tokens_per_step)

    def _consolidate(self, state: State, tok: torch.Tensor, item: torch.Tensor, unit: torch.Tensor,
                     ids: torch.Tensor, ext_sim: torch.Tensor, p: torch.Tensor, k: dict[str, torch.Tensor],
                     donate: bool) -> State:
        """Shrink time positions [held 0..L-1; new item L] back to L, per bank g: p[b,g] = -1 drops position 0
        (empty, or FIFO); p >= 0 merges positions p, p+1 into p's slot. The new item takes the slot of the
        removed position r (0, or p+1); for p = L-1 it is merged straight into the newest entry.

        ``tok`` (the output tokens, already a copy unless donated) is written in place: the item's and the
        merged entry's slots only; ``unit`` (the item's unit tokens, ours) becomes ``unit_newest``. Returns
        tokens, count, span (slot-indexed), order, sim (positional: sim[:, j] = similarity of positions j-1, j)
        and unit_newest. Temporaries are updated in place; the arithmetic is the released formulas'
        (F.cosine_similarity, the weighted mean), bit for bit.
        """
        order, count, span = state["order"], state["count"], state["span"]
        B, L, G = count.shape
        D, n = item.shape[-1], item[..., 0].numel()  # n = B * (N+1) token rows
        flat, pos = tok.view(-1, D), k["pos"]
        # time positions of: the removed one r = p+1 (it takes the new item; 0 when not merging, L = the item
        # itself), the pair's right neighbour, the pair's first entry (it takes the merged one), its left
        # neighbour; [B,4,G], their slots and their token rows [4,B,N+1]
        at = p[:, None] + k["offsets"]
        slots = order.gather(1, at.clamp(0, L - 1))
        f, a = slots[:, 0], slots[:, 2]
        rows = self._token_rows(k, slots)
        # per bank: merging; the pair's second entry is the new item (p = L-1, it merges into the newest entry);
        # the pair's right neighbour is the new item (p = L-2)
        flags = torch.stack([p >= 0, p == L - 1, p == L - 2])
        merging, b_new = flags[0], flags[1]
        (m0, m1), (b0, b1), (r0, r1) = flags.sum(1).tolist()  # the write's one host sync
        n_merge, n_new = m0 + m1, b0 * self.num_perceptual + b1  # n_new: token rows of the p = L-1 merges
        cnt = count if donate else count.clone()
        spn = span if donate else span.clone()
        if n_merge:  # everything is read before slot f or a is written
            cf, ca = count.gather(1, slots[:, 0::2]).unbind(1)
            sf, sa = span.gather(1, slots[:, 0::2, :, None].expand(B, 2, G, 2)).unbind(1)
            cb = torch.where(b_new, 1, cf)
            cab = ca + cb
            if self.config.merge_weighting == "count":  # size-weighted (rows not merging may hold empty slots)
                w = ca.to(tok.dtype) / cab.clamp_min(1).to(tok.dtype)
            else:
                w = torch.full_like(ca, 0.5, dtype=tok.dtype)
            g = flat.index_select(0, rows.view(-1)).view(4, *item.shape)  # the pair's second, right, first, left
            if b0 + b1 + r0 + r1:  # the pair's second entry (p = L-1) or its right neighbour (p = L-2) is the item
                fix = self._per_token(flags[1:]).view(-1).nonzero().squeeze(1)  # rows of g[0] then g[1]
                copy_rows_(g.view(-1, D), fix, item.view(-1, D).index_select(0, fix % n))
            wt = self._per_token(w)[..., None]
            merged = g[2].mul_(wt).add_(g[0].mul_(1 - wt))  # first * w + second * (1 - w), [B,N+1,D]
        # writes: the new item into slot f, then (merging rows) the merged entry into slot a (a == f when p = L-1)
        copy_rows_(flat, rows[0].view(-1), item.view(-1, D))
        cnt.scatter_(1, f[:, None], 1)
        spn.scatter_(1, f[:, None, :, None].expand(B, 1, G, 2), ids.view(B, 1, 1, 1).expand(B, 1, G, 2))
        if n_merge:
            ra, src = rows[2].view(-1), merged.view(-1, D)
            a_cnt, a_span = cab, torch.stack([sa[..., 0], torch.where(b_new, ids[:, None], sf[..., 1])], -1)
            if n_merge < merging.numel():  # rows not merging keep the item in a == f
                m = self._per_token(merging).view(-1).nonzero().squeeze(1)
                ra, src = ra.index_select(0, m), src.index_select(0, m)
                a_cnt = torch.where(merging, a_cnt, 1)
                a_span = torch.where(merging[..., None], a_span, ids[:, None, None])
            copy_rows_(flat, ra, src)
            cnt.scatter_(1, a[:, None], a_cnt[:, None])
            spn.scatter_(1, a[:, None, :, None].expand(B, 1, G, 2), a_span[:, None])
            # the two similarities touching the merged entry: with its right (position p+1 of the result) and
            # left (position p) neighbours
            nbr = normalize_(g[1::2])
            s_right, s_left = bank_mean(nbr.mul_(normalize_(merged)).sum(-1)).unbind(0)
            if n_new:  # p = L-1: the merged entry is the newest (its rows lead ``fix``, which is sorted)
                fix = fix[:n_new]
                copy_rows_(unit.view(-1, D), fix, merged.view(-1, D).index_select(0, fix))
        # positional bookkeeping: drop position r, append slot f as the newest (unchanged when r = L)
        new_order = torch.where(pos < at[:, :1], order, torch.cat([order[:, 1:], f[:, None]], 1))
        # positions before the pair keep their pairs (the old sim; its position 0 is 0), later ones shift left
        sim = torch.where(pos < p[:, None], state["sim"], ext_sim)
        if n_merge:  # rows not merging have r = 0: position 0, cleared below
            sim = torch.where(pos == p[:, None], s_left[:, None], sim)
            sim = torch.where(pos == at[:, :1], s_right[:, None], sim)
        return {"tokens": tok, "count": cnt, "span": spn, "order": new_order, "sim": sim.masked_fill(k["first"], 0.0),
                "unit_newest": unit}

    @staticmethod
    def bank_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-bank entry similarity: a, b [B,N+1,D] -> [B,2] (mean per-token cosine of the N perceptual
        tokens; cosine of the cognitive tokens). A zero vector has cosine 0."""
        return bank_mean(F.cosine_similarity(a, b, dim=-1))

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
        seq = {k: torch.stack([s[k] for s in snaps], 1).flatten(0, 1) for k in state if k != "unit_newest"}
        r = self.fuse(seq, x.flatten(0, 1).to(state["tokens"].dtype))
        return r.map(lambda v: v.unflatten(0, (B, T))), {k: v.detach() for k, v in state.items()}


def bank_mean(cos: torch.Tensor) -> torch.Tensor:
    """Per-token cosines [...,N+1] -> per-bank similarity [...,2]: the mean over the N perceptual tokens, and
    the cognitive token's."""
    return torch.stack([cos[..., :-1].mean(-1), cos[..., -1]], -1)


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
