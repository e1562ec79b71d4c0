"""``merge``: MA-LMM's memory bank compression (He et al., CVPR 2024), token-position-wise, batched over B streams.

The bank holds at most L frames of N tokens [N,D], in time order. Conventions (each tested):

* **Fill.** While a row holds fewer than L frames, a frame is appended (bank length = min(t, L)).
* **Merge.** When a row is full, the new frame is appended (L+1 frames) and then, **independently at every
  token position n**, the adjacent pair (k, k+1) whose tokens at n have the highest cosine similarity
  (ties: the earliest pair) is merged into slot k as the size-weighted mean
  (x_k c_k + x_{k+1} c_{k+1}) / (c_k + c_{k+1}); at that position the slots after k+1 shift left by one. So
  different positions may merge different pairs, and slot j at position n may cover other frames than slot j
  at position m: counts and time spans are kept per slot *and* position.
* **Conservation.** At every position, sum_j c_j x_j equals the sum of everything written since the reset,
  so the size-weighted mean of the bank is the mean of all frames written (up to float rounding). Slots that
  do not merge are copied, never recomputed.
* **Provenance.** ``counts`` [B,L,N] (frames merged into the slot at that position), ``span`` [B,L,N,2] (first
  and last frame id covered). Frame ids: ``t`` int64 [B] or the previous id + 1 (see embodimem.memory.frames).
* **Cost.** Pair scores are cached in ``pair_cos`` [B,L-1,N] as pairs form, so a write computes O(N*D)
  similarities (the new frame against the last one, and the two pairs around each merge) instead of the
  release's O(L*N*D); the functional copy of the bank is still O(L*N*D) bytes.
* **Read.** Every slot: tokens [B,L*N,D] slot-major (slot j, then position n), mask, ``source_ids`` = first
  frame id of the slot at that position, ``time_span``, ``extras["counts"]``. The query is not used (MA-LMM's
  Q-Former attends the whole bank); a query of the wrong width still raises.

Unlike the released code this is batched with per-row masks (rows fill and reset independently; the release
keeps one bank for a batch of equal-length videos), keeps unmerged slots bit-exact (the release divides every
slot by its size each step), and records time spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.frames import cached_constants, next_frame_ids
from embodimem.memory.similarity import first_argmax, paired_cosine
from embodimem.memory.state import State


@dataclass
class MergeConfig(MemoryConfig):
    dim: int = 64
    tokens_per_step: int = 32  # N tokens per frame (MA-LMM banks 32 Q-Former queries or the ViT patch tokens)
    capacity: int = 10  # L frames held (MA-LMM: memory_bank_length 10 for QA, 20 for long-video classification)

    def validate(self) -> None:
        super().validate()
        if self.capacity < 1:
            raise ValueError(f"{type(self).__name__}.capacity must be >= 1 (a bank that holds nothing cannot merge), "
                             f"got {self.capacity}")

    @classmethod
    def example(cls) -> MergeConfig:
        return cls(dim=8, tokens_per_step=3, capacity=4)


@register_memory("merge")
class MergeMemory(Memory):
    """Token-position-wise merge bank: tokens [B,L,N,D], counts [B,L,N], span [B,L,N,2], valid [B,L], pair_cos
    [B,L-1,N], last_id [B]; reads K = L*N tokens."""

    config_class = MergeConfig
    config: MergeConfig

    def __init__(self, config: MergeConfig):
        super().__init__(config)
        self._dev: dict[Any, dict[str, torch.Tensor]] = {}

    def _k(self, device: torch.device, B: int) -> dict[str, torch.Tensor]:
        """Index constants for flat row indexing, cached per (device, B)."""
        L, N = self.config.capacity, self.config.tokens_per_step
        return cached_constants(self._dev, device, B, lambda: {
            "j": torch.arange(L, device=device)[None, :, None],  # slot index [1,L,1]
            "n": torch.arange(N, device=device),
            "ar": torch.arange(B, device=device),
        })

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c = self.config
        B, L, N = batch_size, c.capacity, c.tokens_per_step
        return {
            "tokens": torch.zeros(B, L, N, c.dim, device=device),
            "counts": torch.zeros(B, L, N, dtype=torch.long, device=device),  # 0 = empty slot
            "span": torch.full((B, L, N, 2), -1, dtype=torch.long, device=device),  # first/last frame id
            "valid": torch.zeros(B, L, dtype=torch.bool, device=device),  # slots 0..min(t,L)-1
            # cos(slot p, slot p+1) per position, kept as pairs form (meaningful for p + 1 < slots held)
            "pair_cos": torch.zeros(B, L - 1, N, device=device),
            "last_id": torch.full((B,), -1, dtype=torch.long, device=device),
        }

    def clear(self, state: State) -> State:
        """Every row empty (same as ``reset`` with an all-True mask)."""
        return self.init_state(state["last_id"].shape[0], device=state["last_id"].device)

    def write(self, state: State, item: torch.Tensor, *, t: torch.Tensor | None = None, **_: Any) -> State:
        """Append frame item [B,N,D]; full rows then merge one adjacent pair per token position (no autograd)."""
        if torch.is_grad_enabled():  # as @torch.no_grad(), without paying for the context when grad is off
            with torch.no_grad():
                return self._write(state, item, t)
        return self._write(state, item, t)

    def _write(self, state: State, item: torch.Tensor, t: torch.Tensor | None) -> State:
        x = self.check_tokens(item, "item").to(state["tokens"].dtype)
        ids = next_frame_ids(self.name, state["last_id"], t)
        tok, cnt, span, valid, pc = (state[k] for k in ("tokens", "counts", "span", "valid", "pair_cos"))
        B, L, N, D = tok.shape
        k = self._k(tok.device, B)
        ar, j, n = k["ar"], k["j"], k["n"]
        flat, xf = tok.view(-1, D), x.reshape(-1, D)  # rows (b, slot, n) -> (b*L + slot)*N + n; x rows b*N + n

        def rows(b: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:  # b [R], slot [R,N] -> [R*N]
            return ((b[:, None] * L + slot) * N + n).view(-1)

        length = valid.sum(1)  # [B] frames held before this write
        full = valid[:, -1]
        n_full = int(full.sum())  # one host sync: fill only, merge only, or both
        new_span = ids[:, None, None].expand(B, N, 2)
        out_valid = valid | (j[..., 0] == length[:, None])  # full rows: length = L, unchanged
        # the one new pair score: last held frame vs the new one (O(N*D); older pairs are cached in pair_cos)
        last = flat.index_select(0, rows(ar, (length - 1).clamp_min(0)[:, None].expand(B, N)))
        cos_new = paired_cosine(xf, last).view(B, N)  # rows holding nothing: unused
        fill_pc = torch.where(j[:, :-1] == (length - 1)[:, None, None], cos_new[:, None], pc)
        if n_full == 0:  # every row still has room: the frame goes to slot `length` (functional copy + write)
            at = ar * L + length
            out = {"tokens": tok.clone(), "counts": cnt.clone(), "span": span.clone()}
            out["tokens"].view(B * L, N, D).index_copy_(0, at, x)
            out["counts"].view(B * L, N).index_copy_(0, at, torch.ones_like(cnt[:, 0]))
            out["span"].view(B * L, N, 2).index_copy_(0, at, new_span)
            return {**out, "valid": out_valid, "pair_cos": fill_pc, "last_id": ids}
        # bank + new frame = L+1 "ext" frames (index L = the new one); at each position merge the most similar
        # adjacent pair (kk, kk+1) into slot kk; the slots after it shift left by one
        sims = torch.cat([pc, cos_new[:, None]], dim=1)  # [B,L,N] scores of the L ext pairs
        kk = first_argmax(sims, dim=1)  # [B,N] ties -> earliest pair
        src = j + (j > kk[:, None, :])  # full rows: slot j takes ext frame j (j <= kk) or j+1 (j > kk)
        if n_full < B:  # rows with room take the new frame at slot `length` and keep the rest
            src = torch.where(full[:, None, None], src, torch.where(j == length[:, None, None], L, j))
        out_tok = flat.index_select(0, ((ar[:, None, None] * L + src.clamp_max(L - 1)) * N + n).view(-1))
        q = (src == L).view(-1).nonzero().squeeze(1)  # output rows that take the new frame
        out_tok.index_copy_(0, q, xf.index_select(0, q // (L * N) * N + q % N))
        ext_cnt = torch.cat([cnt, torch.ones_like(cnt[:, :1])], dim=1)
        ext_span = torch.cat([span, new_span[:, None]], dim=1)
        out_cnt = ext_cnt.gather(1, src).view(-1)
        out_span = ext_span.gather(1, src[..., None].expand(B, L, N, 2)).view(-1, 2)
        # full rows r: slot kk = size-weighted mean of ext frames kk and kk+1 (kk+1 = L: the new frame)
        r = ar if n_full == B else full.nonzero().squeeze(1)
        kr = kk.index_select(0, r)  # [R,N]
        at = rows(r, kr)  # rows of ext frame kk in tok, and of the merged slot in the output
        xa = flat.index_select(0, at)
        xb = torch.where((kr == L - 1).view(-1, 1), x.index_select(0, r).view(-1, D),
                         flat.index_select(0, rows(r, (kr + 1).clamp_max(L - 1))))
        cr = ext_cnt.index_select(0, r)
        ca, cb = cr.gather(1, kr[:, None]).view(-1), cr.gather(1, kr[:, None] + 1).view(-1)
        merged = (xa * ca[:, None] + xb * cb[:, None]) / (ca + cb)[:, None]
        out_tok.index_copy_(0, at, merged)
        out_cnt.index_copy_(0, at, ca + cb)
        last_b = ext_span.index_select(0, r)[..., 1].gather(1, kr[:, None] + 1).view(-1)
        out_span.index_copy_(0, at, torch.stack([out_span.index_select(0, at)[:, 0], last_b], dim=1))
        out_pc = self._pairs_after_merge(sims, kk, out_tok, merged, rows, r, kr) if L > 1 else pc
        out_tok = out_tok.view(B, L, N, D)
        if n_full < B:
            out_pc = torch.where(full[:, None, None], out_pc, fill_pc)
        return {"tokens": out_tok, "counts": out_cnt.view(B, L, N), "span": out_span.view(B, L, N, 2),
                "valid": out_valid, "pair_cos": out_pc, "last_id": ids}

    @staticmethod
    def _pairs_after_merge(sims: torch.Tensor, kk: torch.Tensor, out: torch.Tensor, merged: torch.Tensor,
                           rows, r: torch.Tensor, kr: torch.Tensor) -> torch.Tensor:
        """pair_cos [B,L-1,N] of the merged bank: pairs away from the merge keep their (shifted) score; the two
        touching the merged slot are recomputed (O(N*D)). Rows not in ``r`` (rows with room) are not meaningful."""
        L = sims.shape[1]
        p = torch.arange(L - 1, device=kk.device)[None, :, None]
        pc = sims.gather(1, p + (p > kk[:, None, :]))  # ext pair p (before the merge) or p+1 (after it)
        prev = out.index_select(0, rows(r, (kr - 1).clamp_min(0)))  # [R*N,D] neighbours of the merged slot
        nxt = out.index_select(0, rows(r, (kr + 1).clamp_max(L - 1)))
        shape = kr[:, None, :].shape
        fresh = pc.index_select(0, r)
        fresh = torch.where(p == (kr - 1)[:, None, :], paired_cosine(merged, prev).view(shape), fresh)
        fresh = torch.where(p == kr[:, None, :], paired_cosine(nxt, merged).view(shape), fresh)
        return pc.index_copy(0, r, fresh)

    def read(self, state: State, query: torch.Tensor | None = None, **_: Any) -> Readout:
        """Every slot: tokens [B,L*N,D] (slot-major), mask, source_ids (first frame), time_span, extras counts."""
        if query is not None:
            self.check_query(query)
        tok, cnt, span = state["tokens"], state["counts"], state["span"]
        B, L, N, D = tok.shape
        mask = state["valid"][:, :, None].expand(B, L, N).reshape(B, L * N)
        span = span.reshape(B, L * N, 2)
        return Readout(tokens=tok.reshape(B, L * N, D), mask=mask, source_ids=span[..., 0], time_span=span,
                       extras={"counts": cnt.reshape(B, L * N)})

    def stats(self, state: State) -> dict[str, float]:
        """Bytes held, slots used, and the mean number of frames merged per held slot."""
        out = super().stats(state)
        cnt = state["counts"].float()
        held = cnt > 0
        out["frames_per_slot_mean"] = float(cnt[held].mean()) if bool(held.any()) else 0.0
        return out
