"""``streaming``: VideoStreaming's memory-propagated streaming encoding with adaptive memory selection.

Frames (x_t [B,N,D], N tokens per frame) are grouped into clips of ``clip_len`` = C frames. When a clip's
LAST frame arrives, a small transformer encoder (``nn.TransformerEncoder``, dropout 0, pre-norm) reads
[previous clip's memory (m tokens; a learned initial memory for an episode's first clip) ; the clip's C*N
frame tokens (+ frame-position embedding) ; m learned summary queries] and its outputs at the m query
positions become the clip's memory -- a fixed-length summary of the video up to that clip, propagated to
the next clip. Each clip also keeps a key (its global token: the mean of its frame tokens, the paper's clip
indicator) and its frame span. Up to ``max_clips`` = K clips are held, time-ordered and right-aligned;
when full, the OLDEST clip is dropped.

Read (query [B,Q,D] or [B,D]: a question embedding or the policy state; Q tokens are mean-pooled): score
every held clip by cosine (or dot) between the pooled query and the clip key, keep the top ``select`` = V
(ties: the earlier clip), and return them in TEMPORAL order. query=None selects the V newest clips.
Readout tokens, in this order: V clips x R tokens (R = [global token;] m summary tokens), then, with
``live_frames``, the (C-1)*N raw tokens of the current, unfinished clip (frames not yet encoded) -- so what a
read sees before a clip's last frame is that clip's raw frames, and before an episode's first clip
completes only those. The consumer always gets the same number of tokens, whatever the video length.
Masked slots (fewer than V clips held, live frames not yet arrived) have source id -1 and come last within
their part. source_ids: the clip's first frame id (live frames: their own id); time_span: the clip's
[first, last] frame id. weights: per token, the selection weight (1 for hard selection; in training mode
with ``train_select="straight_through"`` / ``"gumbel"`` it is hard + soft - soft.detach(), value 1 but with
the gradient of softmax(scores / tau), so selection is trainable). Eval mode is always hard and
deterministic; "gumbel" (noisy top-V) is stochastic in training mode by design.

Cost: a write buffers the frame (O(C N D) per row); on a step where some row completes a clip the encoder
runs once over all B rows (static shapes; rows not completing keep their state) -- deciding that costs one
host sync per step. ``forward`` holds B*T state snapshots for its single batched read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.cognitive import checked_ids
from embodimem.memory.state import State

SIMILARITIES = ("cosine", "dot")
TRAIN_SELECTS = ("hard", "straight_through", "gumbel")


@dataclass
class StreamingConfig(MemoryConfig):
    """VideoStreaming settings; ``tokens_per_step`` = N tokens per frame."""

    clip_len: int = 8  # C frames per clip
    summary_tokens: int = 4  # m summary tokens per clip memory
    select: int = 4  # V clip memories a read returns
    max_clips: int = 64  # K clips held; when full the oldest is dropped
    global_token: bool = True  # readout per clip = [global (mean frame) token; m summary tokens]
    live_frames: bool = True  # readout also carries the unfinished clip's raw frame tokens
    layers: int = 1  # encoder layers
    num_heads: int = 4
    ffn_mult: int = 2  # encoder FFN width = ffn_mult * dim
    similarity: str = "cosine"  # cosine | dot (query vs clip key)
    train_select: str = "hard"  # hard | straight_through | gumbel (training mode only)
    tau: float = 1.0  # softmax temperature of the differentiable selection

    def validate(self) -> None:
        super().validate()
        who = type(self).__name__
        for f in ("clip_len", "summary_tokens", "select", "max_clips", "layers", "num_heads", "ffn_mult"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{who}.{f} must be > 0, got {getattr(self, f)}")
        if self.select > self.max_clips:
            raise ValueError(f"{who}.select={self.select} must be <= max_clips={self.max_clips}")
        if self.dim % self.num_heads:
            raise ValueError(f"{who}.dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"{who}.similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        if self.train_select not in TRAIN_SELECTS:
            raise ValueError(f"{who}.train_select must be one of {TRAIN_SELECTS}, got {self.train_select!r}")
        if self.tau <= 0:
            raise ValueError(f"{who}.tau must be > 0, got {self.tau}")

    @classmethod
    def example(cls) -> StreamingConfig:
        return cls(dim=8, tokens_per_step=2, clip_len=3, summary_tokens=2, select=2, max_clips=4, num_heads=2)


@register_memory("streaming")
class StreamingMemory(Memory):
    """Clip memories [B,K,m,D] + keys [B,K,D] + the unfinished clip's frames [B,C-1,N,D]; read = top-V clips."""

    config_class = StreamingConfig
    config: StreamingConfig

    def __init__(self, config: StreamingConfig):
        super().__init__(config)
        c = config
        D, m = c.dim, c.summary_tokens
        layer = nn.TransformerEncoderLayer(D, c.num_heads, c.ffn_mult * D, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.layers, norm=nn.LayerNorm(D), enable_nested_tensor=False)
        self.init_memory = nn.Parameter(0.02 * torch.randn(m, D))  # "previous memory" of an episode's first clip
        self.summary_queries = nn.Parameter(0.02 * torch.randn(m, D))
        self.frame_pos = nn.Parameter(0.02 * torch.randn(c.clip_len, D))  # frame position within the clip
        self.segment = nn.Parameter(0.02 * torch.randn(2, D))  # 0: previous memory, 1: frame tokens

    @property
    def tokens_per_clip(self) -> int:
        """R: readout tokens per selected clip."""
        return self.config.summary_tokens + int(self.config.global_token)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c, B = self.config, batch_size
        K, m, D, N = c.max_clips, c.summary_tokens, c.dim, c.tokens_per_step
        long = dict(dtype=torch.long, device=device)
        return {
            "memory": torch.zeros(B, K, m, D, device=device),
            "key": torch.zeros(B, K, D, device=device),
            "span": torch.full((B, K, 2), -1, **long),
            "clip_id": torch.full((B, K), -1, **long),  # clip number within the episode
            "valid": torch.zeros(B, K, dtype=torch.bool, device=device),
            "buf": torch.zeros(B, c.clip_len - 1, N, D, device=device),
            "buf_ids": torch.full((B, c.clip_len - 1), -1, **long),
            "fill": torch.zeros(B, **long),  # frames of the unfinished clip held in buf
            "clips": torch.zeros(B, **long),  # clips completed since the episode began
            "step": torch.zeros(B, **long),
            "last_id": torch.full((B,), -1, **long),
        }

    # ----- write ----------------------------------------------------------------------------------------
    def encode_clip(self, prev: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """prev [B,m,D] previous clip memory, frames [B,C,N,D] -> this clip's memory [B,m,D]."""
        B, C, N, D = frames.shape
        x = (frames + self.frame_pos[:, None] + self.segment[1]).reshape(B, C * N, D)
        seq = torch.cat([prev + self.segment[0], x, self.summary_queries.expand(B, -1, -1)], 1)
        return self.encoder(seq)[:, -self.config.summary_tokens:]

    def _write(self, state: State, item: torch.Tensor, ids: torch.Tensor) -> State:
        """Buffer frame item [B,N,D]; rows whose clip completes encode it (keeps the graph; callers choose)."""
        C = self.config.clip_len
        fill, buf = state["fill"], state["buf"]
        done = fill == C - 1  # this frame is the clip's last
        ar = torch.arange(C - 1, device=item.device)
        slot = (ar[None] == fill[:, None]) & ~done[:, None]  # [B,C-1]: where the frame goes in the buffer
        new = dict(state)
        new["buf"] = torch.where(slot[:, :, None, None], item[:, None].to(buf.dtype), buf)
        new["buf_ids"] = torch.where(slot, ids[:, None], state["buf_ids"])
        new["fill"] = torch.where(done, torch.zeros_like(fill), fill + 1)
        new["step"], new["last_id"] = state["step"] + 1, ids
        if bool(done.any()):  # one host sync per step; the encoder runs on every row, done rows keep it
            frames = torch.cat([buf, item[:, None].to(buf.dtype)], 1)  # [B,C,N,D]
            has_prev = state["valid"][:, -1]
            prev = torch.where(has_prev[:, None, None], state["memory"][:, -1], self.init_memory.to(buf.dtype))
            mem = self.encode_clip(prev, frames)
            key = frames.mean(dim=(1, 2))
            first = state["buf_ids"][:, 0] if C > 1 else ids  # the buffer starts at slot 0 for every clip
            span = torch.stack([first, ids], -1)
            d1, d3 = done[:, None], done[:, None, None]
            # done rows: append as the newest clip (the oldest drops off); other rows unchanged
            new["memory"] = torch.where(d3[..., None], torch.cat([state["memory"][:, 1:], mem[:, None]], 1),
                                        state["memory"])
            new["key"] = torch.where(d3, torch.cat([state["key"][:, 1:], key[:, None]], 1), state["key"])
            new["span"] = torch.where(d3, torch.cat([state["span"][:, 1:], span[:, None]], 1), state["span"])
            new["clip_id"] = torch.where(d1, torch.cat([state["clip_id"][:, 1:], state["clips"][:, None]], 1),
                                         state["clip_id"])
            new["valid"] = torch.where(d1, torch.cat([state["valid"][:, 1:], done[:, None]], 1), state["valid"])
            new["clips"] = state["clips"] + done.long()
            new["buf"] = torch.where(d3[..., None], torch.zeros_like(new["buf"]), new["buf"])
            new["buf_ids"] = torch.where(d1, torch.full_like(new["buf_ids"], -1), new["buf_ids"])
        return new

    @torch.no_grad()
    def write(self, state: State, item: torch.Tensor, *, t: torch.Tensor | None = None, **_: Any) -> State:
        """Add frame item [B,N,D] (frame id ``t`` [B] or the step count); a clip's last frame encodes it."""
        item = self.check_tokens(item, "item").detach()
        return self._write(state, item, checked_ids(self.name, state["step"], state["last_id"], t))

    # ----- read -----------------------------------------------------------------------------------------
    def scores(self, state: State, query: torch.Tensor | None) -> torch.Tensor:
        """Relevance [B,K] of each held clip to query [B,Q,D] (pooled over Q); -inf where no clip is held.

        query=None scores by recency (newer clips higher).
        """
        valid = state["valid"]
        if query is None:
            s = torch.arange(valid.shape[1], device=valid.device, dtype=state["key"].dtype).expand(valid.shape)
        else:
            q = query.mean(1).to(state["key"].dtype)  # [B,D]
            if self.config.similarity == "cosine":
                s = F.cosine_similarity(q[:, None], state["key"], dim=-1)
            else:
                s = (q[:, None] * state["key"]).sum(-1)
        return s.masked_fill(~valid, float("-inf"))

    def read(self, state: State, query: torch.Tensor | None = None, *, select: int | None = None,
             **_: Any) -> Readout:
        """Top-V clips for query [B,Q,D] / [B,D] (None: the V newest) in temporal order, then the live frames.

        ``select`` overrides V for this read (e.g. V = max_clips reads every held clip).
        """
        if query is not None:
            query = self.check_query(query)
        V = self.config.select if select is None else int(select)
        if not 0 < V <= self.config.max_clips:
            raise ValueError(f"{self.name}: select must be in 1..max_clips={self.config.max_clips}, got {V}")
        return self._read(state, query, V)

    def _read(self, s: State, query: torch.Tensor | None, V: int) -> Readout:
        """Core read over any leading rows n (streams, or streams x steps in ``forward``)."""
        c = self.config
        n, K = s["valid"].shape
        scores = self.scores(s, query)  # [n,K]
        noisy = scores
        st = self.training and c.train_select != "hard" and query is not None
        if st and c.train_select == "gumbel":
            g = -torch.log(-torch.log(torch.rand_like(scores).clamp(1e-9, 1 - 1e-9)))
            noisy = scores / c.tau + g
        # stable descending sort: among equal scores the earlier (lower-index = older) clip comes first
        top = torch.sort(noisy, dim=1, descending=True, stable=True).indices[:, :V]  # [n,V]
        ok = s["valid"].gather(1, top)
        # temporal order, selected-but-empty slots last
        top = top.gather(1, torch.sort(torch.where(ok, top, top + K), dim=1).indices)
        ok = s["valid"].gather(1, top)
        weight = ok.to(s["key"].dtype)
        if st:  # straight-through: value 1 on selected clips, gradient of the softmax over held clips
            soft = torch.softmax(noisy if c.train_select == "gumbel" else scores / c.tau, dim=1)
            soft = torch.nan_to_num(soft, nan=0.0)  # a row with no clip: softmax of all -inf
            sel = soft.gather(1, top)
            weight = weight + (sel - sel.detach()) * ok
        R, m, D = self.tokens_per_clip, c.summary_tokens, c.dim
        mem = s["memory"].gather(1, top[:, :, None, None].expand(n, V, m, D))
        if c.global_token:
            mem = torch.cat([s["key"].gather(1, top[:, :, None].expand(n, V, D))[:, :, None], mem], 2)
        tokens = (mem * weight[:, :, None, None]).reshape(n, V * R, D)
        span = s["span"].gather(1, top[:, :, None].expand(n, V, 2))
        span = torch.where(ok[..., None], span, torch.full_like(span, -1))
        mask = ok[:, :, None].expand(n, V, R).reshape(n, V * R)
        span = span[:, :, None].expand(n, V, R, 2).reshape(n, V * R, 2)
        weights = weight[:, :, None].expand(n, V, R).reshape(n, V * R)
        sel_idx = torch.where(ok, top, torch.full_like(top, -1))
        live = torch.zeros(n, V * R, dtype=torch.bool, device=mask.device)
        if c.live_frames and c.clip_len > 1:
            N = c.tokens_per_step
            lid = s["buf_ids"][:, :, None].expand(-1, -1, N).reshape(n, -1)  # [n,(C-1)*N]
            tokens = torch.cat([tokens, s["buf"].reshape(n, -1, D)], 1)
            mask = torch.cat([mask, lid >= 0], 1)
            span = torch.cat([span, torch.stack([lid, lid], -1)], 1)
            weights = torch.cat([weights, (lid >= 0).to(weights.dtype)], 1)
            live = torch.cat([live, torch.ones_like(lid, dtype=torch.bool)], 1)
        return Readout(tokens=tokens, mask=mask, source_ids=span[..., 0], weights=weights, time_span=span,
                       extras={"scores": scores, "selected": sel_idx, "live": live})

    def read_all(self, state: State) -> Readout:
        """Every held clip in temporal order, no selection: tokens [B,K*R,D] (right-aligned like the state)."""
        c = self.config
        B, K = state["valid"].shape
        mem = state["memory"]
        if c.global_token:
            mem = torch.cat([state["key"][:, :, None], mem], 2)
        R = self.tokens_per_clip
        valid = state["valid"][:, :, None].expand(B, K, R).reshape(B, K * R)
        ids = state["span"][..., 0][:, :, None].expand(B, K, R).reshape(B, K * R)
        return Readout(tokens=mem.reshape(B, K * R, c.dim), mask=valid, source_ids=ids.masked_fill(~valid, -1))

    # ----- sequence path --------------------------------------------------------------------------------
    def forward(self, state: State, x: torch.Tensor, *, is_first: torch.Tensor,
                t: torch.Tensor | None = None, **_: Any) -> tuple[Readout, State]:
        """x [B,T,N,D]: per-step buffering (the encoder runs only at clip ends, WITH gradient, so clip memories
        written in the sequence carry the graph through the memory chain), then ONE read over all B*T steps."""
        x, is_first = self.check_sequence(x, is_first)
        self.check_tokens(x.flatten(0, 1), "x")
        B, T = is_first.shape
        snaps = []
        for i in range(T):
            state = self.reset(state, is_first[:, i])
            ids = checked_ids(self.name, state["step"], state["last_id"], None if t is None else t[:, i])
            state = self._write(state, x[:, i], ids)
            snaps.append(state)
        seq = {k: torch.stack([s[k] for s in snaps], 1).flatten(0, 1) for k in state}  # [B*T,...]
        r = self._read(seq, x.flatten(0, 1), self.config.select)
        return r.map(lambda v: v.unflatten(0, (B, T))), {k: v.detach() for k, v in state.items()}
