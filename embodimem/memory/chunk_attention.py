"""The hierarchical chunk-attention read (HCAM, Lampinen et al. 2021), shared by ``hcam`` and ``place``.

A read has two levels. (1) Select: a projected query meets projected chunk keys (logits / sqrt(D)); the
top-k chunks win and their logits are softmaxed. (2) Attend: multi-head attention from the raw query
over each selected chunk's contents (plus a sinusoidal within-chunk position encoding), weighted by the
step-1 softmax and summed. Chunk keys and contents are read under stop-gradient.

Shapes: any leading dims ``*`` (e.g. [B] for a step, [B,T] for a sequence); Q query tokens; M chunks;
each chunk holds S entries (steps) of N tokens of width D; k = ``top_k``.

Conventions:
- Ties between chunk logits go to the LOWER chunk index (stable sort), so eval reads are deterministic.
- A masked chunk is never selected while a valid one is left; picks beyond the number of valid chunks are
  invalid (index -1, weight 0). With no valid chunk the output is exactly 0.
- The within-chunk position of entry s (0 = oldest entry of the chunk) is the sinusoid ``pe[s]``, shared by
  the N tokens of that entry; there is no cross-chunk position, so chunk order does not matter.
- The inner attention is ``nn.MultiheadAttention`` (weights in ``self.mha``) computed in an algebraically
  equal folded form: the key projection is folded into the query and the value projection is applied
  after averaging, so the cost per query is O(k*S*N*D*H + D^2) instead of O(k*S*N*D^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def sinusoid(n: int, dim: int, *, device: torch.device | str | None = None,
             max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal position table [n, dim] (sin on even, cos on odd features) for positions 0..n-1."""
    pos = torch.arange(n, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(-math.log(max_period) * torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)
    out = torch.zeros(n, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return out


def gather_chunks(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-row gather along dim 1: x [B,M,...] and index int64 [B,*I] -> [B,*I,...]; index -1 reads chunk 0."""
    B = x.shape[0]
    flat = index.clamp(min=0).reshape(B, -1)
    rows = torch.arange(B, device=x.device)[:, None]
    return x[rows, flat].reshape(*index.shape, *x.shape[2:])


@dataclass
class ChunkSelection:
    """Step 1 of a read: which chunks each query attends to. All [*,Q,k]."""

    index: torch.Tensor  # int64 chunk index, -1 where the pick is invalid
    weight: torch.Tensor  # float softmax over the valid picks' logits, 0 where invalid
    valid: torch.Tensor  # bool


class ChunkAttention(nn.Module):
    """Top-k chunk selection by summary keys, then MHA within the selected chunks, weighted and summed."""

    def __init__(self, dim: int, heads: int, top_k: int, max_entries: int, pos_encoding: bool = True):
        super().__init__()
        if dim <= 0 or heads <= 0 or dim % heads:
            raise ValueError(f"ChunkAttention: dim={dim} must be > 0 and divisible by heads={heads}")
        if top_k <= 0:
            raise ValueError(f"ChunkAttention: top_k must be > 0, got {top_k}")
        if max_entries <= 0:
            raise ValueError(f"ChunkAttention: max_entries must be > 0, got {max_entries}")
        self.dim, self.heads, self.top_k, self.max_entries = dim, heads, top_k, max_entries
        self.q_proj = nn.Linear(dim, dim, bias=False)  # summary query projection
        self.k_proj = nn.Linear(dim, dim, bias=False)  # summary key projection
        self.mha = nn.MultiheadAttention(dim, heads, bias=True, batch_first=True)  # within-chunk attention
        pe = sinusoid(max_entries, dim) if pos_encoding else torch.zeros(max_entries, dim)
        self.register_buffer("pe", pe, persistent=False)

    # ----- step 1 -------------------------------------------------------------------------------------
    def summary_logits(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(Wq q)·(Wk key)/sqrt(D): query [*,Q,D], keys [*,M,D] -> [*,Q,M]; keys under stop-gradient."""
        # fold Wk into the query: O(M*D) per query instead of projecting all M keys (O(M*D^2))
        q = F.linear(F.linear(query, self.q_proj.weight), self.k_proj.weight.t())
        return torch.matmul(q, keys.detach().transpose(-1, -2)) / math.sqrt(self.dim)

    def select(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> ChunkSelection:
        """Top-k chunks per query: query [*,Q,D], keys [*,M,D], mask bool [*,M] or [*,Q,M] (True = allowed)."""
        M = keys.shape[-2]
        if self.top_k > M:
            raise ValueError(f"ChunkAttention: top_k={self.top_k} exceeds the number of chunks M={M}")
        logits = self.summary_logits(query, keys)
        if mask.dim() == logits.dim() - 1:
            mask = mask.unsqueeze(-2)
        logits = torch.where(mask, logits, float("-inf"))
        # stable descending sort: equal logits keep index order, so the lower chunk index wins a tie
        vals, idx = torch.sort(logits, dim=-1, descending=True, stable=True)
        vals, idx = vals[..., : self.top_k], idx[..., : self.top_k]
        valid = torch.isfinite(vals)
        # clamping -inf to finfo.min keeps an all-invalid row finite; its uniform weights are then zeroed
        weight = torch.softmax(vals.clamp(min=torch.finfo(vals.dtype).min), dim=-1) * valid
        return ChunkSelection(index=torch.where(valid, idx, -1), weight=weight, valid=valid)

    # ----- step 2 -------------------------------------------------------------------------------------
    def attend(self, query: torch.Tensor, contents: torch.Tensor, weight: torch.Tensor,
               entry_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted MHA over selected chunks: query [*,Q,D], contents [*,Q,k,S,N,D], weight [*,Q,k],
        entry_mask bool [*,Q,k,S] (None = all entries valid) -> [*,Q,D]; contents under stop-gradient."""
        D, H = self.dim, self.heads
        hd = D // H
        S, N = contents.shape[-3], contents.shape[-2]
        if S > self.max_entries:
            raise ValueError(f"ChunkAttention: chunks hold S={S} entries, more than max_entries={self.max_entries}")
        x = (contents.detach() + self.pe[:S, None, :]).flatten(-3, -2)  # [*,Q,k,L=S*N,D]
        w_q, w_k, w_v = self.mha.in_proj_weight.chunk(3, dim=0)
        b_q, _, b_v = self.mha.in_proj_bias.chunk(3, dim=0)  # the key bias shifts all logits equally: no effect
        q = (F.linear(query, w_q, b_q) / math.sqrt(hd)).unflatten(-1, (H, 1, hd))  # [*,Q,H,1,hd]
        q_fold = torch.matmul(q, w_k.view(H, hd, D)).transpose(-3, -2)  # [*,Q,1,H,D]: Wk folded in
        logits = torch.matmul(q_fold, x.transpose(-1, -2))  # [*,Q,k,H,L]
        if entry_mask is not None:
            tok_mask = entry_mask[..., :, None].expand(*entry_mask.shape, N).flatten(-2)  # [*,Q,k,L]
            logits = logits.masked_fill(~tok_mask[..., None, :], torch.finfo(logits.dtype).min)
        attn = torch.softmax(logits, dim=-1) * weight[..., None, None]  # chunk weights folded in
        x_bar = torch.matmul(attn, x).sum(-3)  # [*,Q,H,D]: weighted raw contents per head
        total = weight.sum(-1)  # [*,Q]: 1 with a valid chunk, 0 without
        v = torch.matmul(x_bar[..., None, :], w_v.view(H, hd, D).transpose(-1, -2))[..., 0, :]  # [*,Q,H,hd]
        v = v + b_v.view(H, hd) * total[..., None, None]
        return F.linear(v.flatten(-2), self.mha.out_proj.weight) + self.mha.out_proj.bias * total[..., None]

    def forward(self, query: torch.Tensor, keys: torch.Tensor, contents: torch.Tensor, mask: torch.Tensor,
                entry_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ChunkSelection]:
        """Full read with leading dim B: query [B,Q,D], keys [B,M,D], contents [B,M,S,N,D], mask bool [B,M]
        (or [B,Q,M]), entry_mask bool [B,M,S] or None -> (output [B,Q,D], selection)."""
        sel = self.select(query, keys, mask)
        picked = gather_chunks(contents, sel.index)  # [B,Q,k,S,N,D]
        picked_mask = None if entry_mask is None else gather_chunks(entry_mask, sel.index)
        return self.attend(query, picked, sel.weight, picked_mask), sel
