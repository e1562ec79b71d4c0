"""``kv_window``: a small causal transformer over time whose K/V cache keeps sink + recent steps.

The frame-level cache of JanusVLN (first 8 + last 48 frames of VGGT keys/values), StreamingLLM's attention
sinks, and DuoAttention's split into streaming heads (sink + window) and retrieval heads (full cache).

Conventions (tested in tests/test_memory_kv_window.py):
- Positions: a step's episode index n (steps since ``is_first``, 0-based) is the RoPE position of all P
  tokens of that step. Keys are cached after rotation, so a retained step's key, value and position never
  change when other steps are evicted. The ``t`` keyword other memories take is ignored.
- Attention: the P tokens of step n attend to each other (no order inside a step: encoders put patch
  positions into their tokens) and to every cached past step. The cache is written first, then read, so
  ``recent`` counts the current step: after step n a streaming head holds steps {0..s-1} U {n-r+1..n}.
- Retrieval heads (``retrieval_heads[h]`` True) keep a cache of ``max_steps`` slots under the same rule
  with window ``max_steps - sink``: exact full attention while n < max_steps; beyond it they keep the sink
  and the last ``max_steps - sink`` steps (fixed capacity, no error).
- Slot layout per head group: slot c < sink holds step c; recent slots are right-aligned (the last slot
  holds the newest step). Empty slots hold zeros and id -1. Eviction is by rule, so there are no ties.
- Readout of a step: the transformer's output tokens for that step [B,P,D], source id = n, time_span =
  (oldest step it attended to, n), ``extras["retained_ids"]`` [B,s+r] (and ``retained_ids_full`` [B,M]):
  the step ids held after the step. ``read(state, query)`` runs query tokens [B,Q,D] at the newest
  step's position through the transformer, attending to the cache only; ``read(state, x_t)`` right after
  writing x_t reproduces the step's output. Slots are never merged (each holds one step), so there are
  no merge counts to report.
- Bytes per env are constant in T: 4 * 2 * layers * P * dh * (H_stream * (s + r) + H_retrieval * M) for the
  K/V, plus ids, masks and the last output.
- ``forward`` equals stepping (same rule as a mask over [held cache ; sequence]) and keeps the graph through
  the whole sequence, chunk boundaries included; ``step``'s readout keeps the graph to x_t and the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.kv_attention import (
    Block,
    gather_slots,
    kept,
    masked_attention,
    pack,
    rope_cos_sin,
    rope_inv_freq,
    slot_of,
)
from embodimem.memory.state import State, detach_state


@dataclass
class KVWindowConfig(MemoryConfig):
    layers: int = 2  # transformer layers (each caches K/V)
    heads: int = 4  # attention heads; dim % heads == 0 and the head width must be even (RoPE)
    sink: int = 8  # s: first steps of the episode kept forever (attention sinks); 0 = pure sliding window
    recent: int = 48  # r: last steps kept, the current one included (>= 1)
    retrieval_heads: list[bool] = field(default_factory=list)  # per head: True = full cache (DuoAttention); [] = none
    max_steps: int = 0  # M: cache slots of the retrieval heads (>= sink + recent); 0 when there are none
    mlp_ratio: float = 2.0  # MLP hidden width / dim
    rope_base: float = 10000.0  # RoPE frequency base
    chunk_steps: int = 64  # forward() attends over chunks of this many steps (memory O(chunk * (cache + chunk)))

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        if self.recent < 1:
            raise ValueError(f"{n}.recent must be >= 1 (the window holds the current step; a cache of capacity "
                             f"sink + recent without it attends to nothing new), got {self.recent}")
        if self.sink < 0:
            raise ValueError(f"{n}.sink must be >= 0, got {self.sink}")
        if self.layers < 1:
            raise ValueError(f"{n}.layers must be >= 1, got {self.layers}")
        if self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"{n}.heads must divide dim={self.dim}, got {self.heads}")
        if (self.dim // self.heads) % 2:
            raise ValueError(f"{n}.heads: head width dim/heads={self.dim // self.heads} must be even for RoPE")
        if self.retrieval_heads and len(self.retrieval_heads) != self.heads:
            raise ValueError(f"{n}.retrieval_heads needs one bool per head ({self.heads}), got {len(self.retrieval_heads)}")
        if any(self.retrieval_heads):
            if self.max_steps < self.sink + self.recent:
                raise ValueError(f"{n}.max_steps must be >= sink + recent = {self.sink + self.recent} when "
                                 f"retrieval_heads are set, got {self.max_steps}")
        elif self.max_steps != 0:
            raise ValueError(f"{n}.max_steps is the retrieval heads' capacity; set retrieval_heads or max_steps=0, "
                             f"got {self.max_steps}")
        if self.mlp_ratio <= 0 or self.rope_base <= 0:
            raise ValueError(f"{n}.mlp_ratio and {n}.rope_base must be > 0, got {self.mlp_ratio}, {self.rope_base}")
        if self.chunk_steps < 1:
            raise ValueError(f"{n}.chunk_steps must be >= 1, got {self.chunk_steps}")

    @classmethod
    def example(cls) -> KVWindowConfig:
        return cls(dim=8, tokens_per_step=2, layers=1, heads=2, sink=2, recent=3,
                   retrieval_heads=[False, True], max_steps=7, chunk_steps=5)


@register_memory("kv_window")
class KVWindowMemory(Memory):
    """Causal transformer over steps. State per head group (prefix "" = streaming, "full_" = retrieval):
    ``kv`` [B,layers,C,P,2,Hg,dh] (rotated keys, values), ``ids`` [B,C] step ids (-1 empty), ``valid`` [B,C];
    plus ``step`` [B] (steps in the episode) and ``out`` [B,P,D] (the last step's output tokens)."""

    config_class = KVWindowConfig
    config: KVWindowConfig

    def __init__(self, config: KVWindowConfig):
        super().__init__(config)
        c = config
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio) for _ in range(c.layers))
        self.ln_out = nn.LayerNorm(c.dim)
        ret = list(c.retrieval_heads) or [False] * c.heads
        stream = [h for h in range(c.heads) if not ret[h]]
        full = [h for h in range(c.heads) if ret[h]]
        # (state key prefix, capacity, head indices); the streaming group always exists (its ids drive stats)
        self.groups: list[tuple[str, int, list[int]]] = [("", c.sink + c.recent, stream)]
        if full:
            self.groups.append(("full_", c.max_steps, full))
        order = stream + full
        self._permuted = order != list(range(c.heads))
        self.register_buffer("_inv_order", torch.tensor(order).argsort(), persistent=False)
        self.register_buffer("_inv_freq", rope_inv_freq(c.dim // c.heads, c.rope_base), persistent=False)
        for p, C, heads in self.groups:
            ar = torch.arange(C)
            self.register_buffer(f"_heads_{p}", torch.tensor(heads, dtype=torch.long), persistent=False)
            self.register_buffer(f"_ar_{p}", ar, persistent=False)  # slot indices for the one-step trim
            self.register_buffer(f"_shift_{p}", torch.where(ar < c.sink, ar, ar + 1), persistent=False)

    @property
    def head_dim(self) -> int:
        return self.config.dim // self.config.heads

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c, B = self.config, batch_size
        dt = self.ln_out.weight.dtype  # the cache holds activations: same dtype as the weights
        st: State = {}
        for p, C, heads in self.groups:
            st[p + "kv"] = torch.zeros(B, c.layers, C, c.tokens_per_step, 2, len(heads), self.head_dim, device=device,
                                       dtype=dt)
            st[p + "ids"] = torch.full((B, C), -1, dtype=torch.long, device=device)
            st[p + "valid"] = torch.zeros(B, C, dtype=torch.bool, device=device)
        st["step"] = torch.zeros(B, dtype=torch.long, device=device)
        st["out"] = torch.zeros(B, c.tokens_per_step, c.dim, device=device, dtype=dt)
        return st

    # ----- the transformer ---------------------------------------------------------------------------------
    def _split(self, x: torch.Tensor, p: str, heads: list[int]) -> torch.Tensor:
        """Select a head group's heads from [...,H,dh] (a view when they are contiguous)."""
        if heads == list(range(heads[0], heads[0] + len(heads))):
            return x.narrow(-2, heads[0], len(heads))
        return x.index_select(-2, getattr(self, f"_heads_{p}"))

    def _merge(self, outs: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate per-group outputs [...,Hg,dh] back into config head order [...,H,dh]."""
        out = torch.cat(outs, dim=-2) if len(outs) > 1 else outs[0]
        return out.index_select(-2, self._inv_order) if self._permuted else out

    def _rope(self, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [*n.shape,1,3,1,dh] for a fused qkv [*n.shape,P,3,H,dh]: all P tokens share step n's angle."""
        cos, sin = rope_cos_sin(n, self._inv_freq)
        return cos.unsqueeze(-4), sin.unsqueeze(-4)

    @staticmethod
    def _attend(q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor, allow_empty: bool) -> torch.Tensor:
        """q [B,Lq,Hg,dh] over kv [B,E,P,2,Hg,dh] (E cached steps) with mask [B,1,Lq,E*P] -> [B,Lq,Hg,dh]."""
        kv = kv.flatten(1, 2)  # [B,E*P,2,Hg,dh]
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        return masked_attention(q.transpose(1, 2), k, v, mask, allow_empty).transpose(1, 2)

    def _step1(self, state: State, x: torch.Tensor, is_first: torch.Tensor) -> tuple[Readout, State]:
        """One step x [B,P,D] (the hot path): append, trim by shifting slots, attend to the trimmed cache.

        Keeps the autograd graph to x and the weights (callers detach the state).
        """
        c = self.config
        B, P, _ = x.shape
        n = torch.where(is_first, torch.zeros_like(state["step"]), state["step"])  # episode index of this step
        b = torch.arange(B, device=x.device)[:, None]
        plan, new = {}, {}
        for p, C, _ in self.groups:
            # slot c takes entry src[c] of [cache ; new step ; zeros] (entry C = the new step): while n < sink
            # the new step fills sink slot n; afterwards the recent slots shift left by one and the oldest
            # falls out. Empty slots take the zero entry C+1 (a reset row's stale entries are dropped so)
            ar = getattr(self, f"_ar_{p}")
            src = torch.where((n < c.sink)[:, None], torch.where(ar == n[:, None], C, ar), getattr(self, f"_shift_{p}"))
            ids = torch.cat([state[p + "ids"], n[:, None]], dim=1)[b, src]
            valid = torch.cat([state[p + "valid"] & ~is_first[:, None], torch.ones_like(is_first)[:, None]], dim=1)[b, src]
            new[p + "ids"], new[p + "valid"] = ids.masked_fill(~valid, -1), valid
            plan[p] = (src.masked_fill(~valid, C + 1), valid.repeat_interleave(P, dim=1)[:, None, None, :], [])
        cos, sin = self._rope(n)
        h = x
        for layer, blk in enumerate(self.blocks):
            q, kv = blk.qkv_heads(h, cos, sin)  # [B,P,H,dh], [B,P,2,H,dh]
            outs = []
            for p, _, heads in self.groups:
                if not heads:
                    continue
                src, mask, kvs = plan[p]
                kv_g = self._split(kv, p, heads)[:, None]
                kvs.append(torch.cat([state[p + "kv"][:, layer], kv_g, torch.zeros_like(kv_g)], dim=1)[b, src])
                outs.append(self._attend(self._split(q, p, heads), kvs[-1], mask, allow_empty=False))
            h = blk.finish(h, self._merge(outs))
        out = self.ln_out(h)
        for p, _, heads in self.groups:
            new[p + "kv"] = torch.stack(plan[p][2], dim=1) if heads else state[p + "kv"].clone()
        new["step"] = n + 1
        new["out"] = out
        return self._readout(out, n, {p: new[p + "ids"] for p, _, _ in self.groups}), new

    def _run(self, state: State, x: torch.Tensor, is_first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Steps x [B,T,P,D] after ``state`` in parallel: (outputs [B,T,P,D], episode index n [B,T], new state).

        Each step attends to [cache ; all T steps] under a mask encoding the rule, causality and episode
        boundaries; the final cache is packed from that history. Keeps the autograd graph.
        """
        c = self.config
        B, T, P, _ = x.shape
        ar = torch.arange(T, device=x.device)
        last_reset = torch.where(is_first, ar, -1).cummax(dim=1).values  # [B,T]
        n = torch.where(last_reset >= 0, ar - last_reset, state["step"][:, None] + ar)  # episode index
        old_ok = (last_reset < 0)[:, :, None]  # the cached steps belong to step t's episode
        same = (ar[None, None, :] <= ar[None, :, None]) & (ar[None, None, :] >= last_reset[:, :, None])  # [B,Tq,Tk]
        vis, mask = {}, {}
        for p, C, _ in self.groups:
            v_old = state[p + "valid"][:, None, :] & old_ok & kept(state[p + "ids"][:, None, :], n[:, :, None], c.sink, C)
            v_new = same & kept(n[:, None, :], n[:, :, None], c.sink, C)
            vis[p] = torch.cat([v_old, v_new], dim=-1)  # [B,T,C+T]: step-level visibility
            mask[p] = vis[p][:, :, None, :, None].expand(B, T, P, C + T, P).reshape(B, 1, T * P, (C + T) * P)
        cos, sin = self._rope(n)
        hist: dict[str, list[torch.Tensor]] = {p: [] for p, _, _ in self.groups}
        h = x
        for layer, blk in enumerate(self.blocks):
            q, kv = blk.qkv_heads(h, cos, sin)  # [B,T,P,H,dh], [B,T,P,2,H,dh]
            outs = []
            for p, _, heads in self.groups:
                if not heads:
                    continue
                hist[p].append(torch.cat([state[p + "kv"][:, layer], self._split(kv, p, heads)], dim=1))
                o = self._attend(self._split(q, p, heads).flatten(1, 2), hist[p][-1], mask[p], allow_empty=False)
                outs.append(o.unflatten(1, (T, P)))  # every step sees itself: no empty rows
            h = blk.finish(h, self._merge(outs))
        out = self.ln_out(h)
        new: State = {}
        for p, C, heads in self.groups:
            src, ids, valid = pack(torch.cat([state[p + "ids"], n], dim=1), vis[p][:, -1], n[:, -1], c.sink, C)
            new[p + "kv"] = (torch.stack([gather_slots(kv_l, src, valid) for kv_l in hist[p]], dim=1) if heads
                             else state[p + "kv"].clone())
            new[p + "ids"], new[p + "valid"] = ids, valid
        new["step"] = n[:, -1] + 1
        new["out"] = out[:, -1]
        return out, n, new

    def _readout(self, tokens: torch.Tensor, n: torch.Tensor, retained: dict[str, torch.Tensor]) -> Readout:
        """Readout of tokens [...,K,D] made at episode index n [...] (-1 = nothing written yet); ``retained``:
        per group prefix the step ids held [...,C] (-1 empty)."""
        K = tokens.shape[-2]
        extras = {"retained_ids" + ("_full" if p else ""): ids for p, ids in retained.items()}
        # the oldest step attended to follows from the rule: step 0 while there is a sink, else the window start
        cap = max(C for _, C, _ in self.groups)
        oldest = torch.zeros_like(n) if self.config.sink else (n - (cap - 1)).clamp(min=0)
        ok = n >= 0
        span = torch.stack([oldest.masked_fill(~ok, -1), n], dim=-1).unsqueeze(-2).expand(*n.shape, K, 2)
        return Readout(tokens=tokens, mask=ok.unsqueeze(-1).expand(*n.shape, K),
                       source_ids=n.unsqueeze(-1).expand(*n.shape, K), time_span=span, extras=extras)

    # ----- the memory contract ----------------------------------------------------------------------------
    @torch.no_grad()
    def write(self, state: State, item: torch.Tensor, **_: Any) -> State:
        """Run item [B,P,D] through the transformer as the next step; cache its K/V and trim to sink+window."""
        item = self.check_tokens(item, "item")
        no_reset = torch.zeros(item.shape[0], dtype=torch.bool, device=item.device)
        return detach_state(self._step1(state, item.to(state["out"].dtype), no_reset)[1])

    def step(self, state: State, x_t: torch.Tensor, *, is_first: torch.Tensor, **_: Any) -> tuple[Readout, State]:
        """One step x_t [B,P,D]; the readout [B,P,D] keeps the graph to x_t and the weights (cache detached)."""
        x_t = self.check_tokens(x_t)
        is_first = self.check_mask(is_first, x_t.shape[0], "is_first")
        readout, new = self._step1(state, x_t.to(state["out"].dtype), is_first)  # is_first rows reset inside
        return readout, detach_state(new)

    def forward(self, state: State, x: torch.Tensor, *, is_first: torch.Tensor, **_: Any) -> tuple[Readout, State]:
        """x [B,T,P,D]: equals stepping; chunks of ``chunk_steps`` keep the graph across chunk boundaries."""
        x, is_first = self.check_sequence(x, is_first)
        if x.shape[1] == 0:
            raise ValueError(f"{self.name}: x has no steps (T=0)")
        self.check_tokens(x.flatten(0, 1), "x")
        outs, ns = [], []
        for a in range(0, x.shape[1], self.config.chunk_steps):
            b = a + self.config.chunk_steps
            out, n, state = self._run(state, x[:, a:b].to(state["out"].dtype), is_first[:, a:b])
            outs.append(out)
            ns.append(n)
        n = torch.cat(ns, dim=1)
        retained = {p: slot_of(n.reshape(-1), self.config.sink, C).reshape(*n.shape, C) for p, C, _ in self.groups}
        return self._readout(torch.cat(outs, dim=1), n, retained), detach_state(state)

    def read(self, state: State, query: torch.Tensor | None = None, **_: Any) -> Readout:
        """No query: the last step's output [B,P,D]. Query [B,Q,D]: its tokens at the newest step's
        position attend to the cache (not to themselves) in every layer -> [B,Q,D]."""
        n = state["step"] - 1
        retained = {p: state[p + "ids"] for p, _, _ in self.groups}
        if query is None:
            return self._readout(state["out"], n, retained)
        h = self.check_query(query).to(state["out"].dtype)
        if self.config.check_finite and not bool(torch.isfinite(h).all()):
            raise ValueError(f"{self.name}: query contains NaN or inf")
        cos, sin = self._rope(n.clamp(min=0))
        masks = {p: state[p + "valid"].repeat_interleave(self.config.tokens_per_step, dim=1)[:, None, None, :]
                 for p, _, _ in self.groups}
        for layer, blk in enumerate(self.blocks):
            q, _ = blk.qkv_heads(h, cos, sin)  # [B,Q,H,dh]
            outs = [self._attend(self._split(q, p, heads), state[p + "kv"][:, layer], masks[p], allow_empty=True)
                    for p, _, heads in self.groups if heads]
            h = blk.finish(h, self._merge(outs))
        return self._readout(self.ln_out(h), n, retained)

    def trim(self, state: State) -> State:
        """Re-apply the sink+window rule to a state's cache (a no-op on any state this module produced)."""
        c, n = self.config, state["step"] - 1
        new = dict(state)
        for p, C, _ in self.groups:
            vis = state[p + "valid"] & kept(state[p + "ids"], n[:, None], c.sink, C)
            src, ids, valid = pack(state[p + "ids"], vis, n, c.sink, C)
            new[p + "kv"] = gather_slots(state[p + "kv"].transpose(1, 2), src, valid).transpose(1, 2).contiguous()
            new[p + "ids"], new[p + "valid"] = ids, valid
        return new
