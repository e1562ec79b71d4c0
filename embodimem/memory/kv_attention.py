"""Building blocks of ``kv_window``: rotary positions, masked attention, the sink+window rule, a block.

Everything here is stateless and batched; ``kv_window.py`` owns the cache layout. Conventions:
- a step's episode index n counts steps since the last ``is_first`` (0-based); it is the RoPE position
  of all P tokens of that step and the provenance id of its cache slot;
- the sink+window rule for a cache of ``capacity`` slots with ``sink`` of them pinned: after step n the
  steps kept are j <= n with j < sink or n - j < capacity - sink, i.e. {0..s-1} U {n-r+1..n}.
"""

from __future__ import annotations

import torch
from torch import nn


def rope_inv_freq(head_dim: int, base: float) -> torch.Tensor:
    """Rotary frequencies base^(-2i/head_dim), duplicated to [head_dim] for rotate-half, float64."""
    inv = base ** (-torch.arange(head_dim // 2, dtype=torch.float64) * 2.0 / head_dim)
    return torch.cat([inv, inv])


def rope_cos_sin(pos: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin float32 [*pos.shape, 3, 1, head_dim] rotating q and k by pos * inv_freq and leaving v as is
    (cos 1, sin 0: exact), so one ``apply_rope`` handles a fused qkv [..., 3, H, dh]. Angles in float64
    (step indices reach 10^5+ in long episodes)."""
    ang = pos.to(torch.float64)[..., None] * inv_freq
    cos, sin = ang.cos().float(), ang.sin().float()
    cos = torch.stack([cos, cos, torch.ones_like(cos)], dim=-2)
    sin = torch.stack([sin, sin, torch.zeros_like(sin)], dim=-2)
    return cos.unsqueeze(-2), sin.unsqueeze(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., head_dim] by rotate-half RoPE (pairs i and i+head_dim/2); cos/sin broadcast to x."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                     allow_empty: bool = True) -> torch.Tensor:
    """Softmax attention: q [B,H,Lq,dh], k/v [B,H,Lk,dh], mask bool [B,1|H,Lq,Lk] (True = may attend).

    Returns [B,H,Lq,dh]. With ``allow_empty`` a query with no visible key gets a zero output (finite, no
    NaN gradients); callers that guarantee a visible key per query pass False and skip that work.
    """
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    p = torch.softmax(scores, dim=-1)
    if allow_empty:
        p = p * mask.any(-1, keepdim=True).to(p.dtype)
    return p @ v


def kept(j: torch.Tensor, n: torch.Tensor, sink: int, capacity: int) -> torch.Tensor:
    """The sink+window rule: is step j (episode index) still cached after step n? bool, broadcast shape."""
    return (j >= 0) & (j <= n) & ((j < sink) | (n - j < capacity - sink))


def slot_of(n: torch.Tensor, sink: int, capacity: int) -> torch.Tensor:
    """Episode index each slot holds after step n: int64 [B,capacity] (-1 = empty). n: int64 [B] (-1 = none).

    Layout: slot c < sink holds step c; the recent slots are right-aligned, slot capacity-1 holds step n
    and slot c holds step n-(capacity-1-c). A step j < sink lives only in its sink slot, so a recent slot
    whose step would be < sink stays empty.
    """
    c = torch.arange(capacity, device=n.device)
    j = torch.where(c < sink, c, n[:, None] - (capacity - 1 - c))
    ok = (j >= 0) & (j <= n[:, None]) & ((c < sink) | (j >= sink))
    return torch.where(ok, j, torch.full_like(j, -1))


def pack(hist_ids: torch.Tensor, hist_vis: torch.Tensor, n: torch.Tensor, sink: int,
         capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trim a history of E entries to the fixed slot layout of ``slot_of``.

    hist_ids int64 [B,E] episode index per entry; hist_vis bool [B,E] entries of the current episode that the
    rule keeps; n int64 [B] current index. Returns (src int64 [B,capacity] entry per slot (0 where empty),
    slot_ids int64 [B,capacity] (-1 empty), slot_valid bool [B,capacity]). Idempotent: packing a packed
    cache with the same n returns it unchanged.
    """
    want = slot_of(n, sink, capacity)  # [B,C]
    match = hist_vis[:, None, :] & (hist_ids[:, None, :] == want[:, :, None]) & (want[:, :, None] >= 0)
    valid = match.any(-1)
    src = match.long().argmax(-1)  # at most one entry matches a slot
    return src, torch.where(valid, want, torch.full_like(want, -1)), valid


def gather_slots(hist: torch.Tensor, src: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """hist [B,E,...] -> [B,C,...] at entries src [B,C]; empty slots are zeros (so equal states compare equal)."""
    b = torch.arange(hist.shape[0], device=hist.device)[:, None]
    out = hist[b, src]
    return out * valid.view(*valid.shape, *([1] * (out.dim() - 2))).to(out.dtype)


class Block(nn.Module):
    """Pre-norm transformer block; attention is supplied by the caller (so caches can differ per head group).

    ``qkv`` is Linear(D, 3D) whose output splits as [3, heads, head_dim]; RoPE rotates q and k. The MLP
    uses the tanh GELU (the erf one costs 6x more per call on small CPU tensors).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        hidden = max(1, round(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def qkv_heads(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [...,D] -> (q [...,H,dh], kv [...,2,H,dh]) with RoPE on q and k; cos/sin from ``rope_cos_sin``."""
        qkv = apply_rope(self.qkv(self.ln1(h)).unflatten(-1, (3, self.heads, -1)), cos, sin)
        return qkv[..., 0, :, :], qkv[..., 1:, :, :]

    def finish(self, h: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual update from the attention output attn [...,H,dh] (heads in config order), then the MLP."""
        h = h + self.proj(attn.flatten(-2))
        return h + self.mlp(self.ln2(h))
