"""``pyramid``: the Pyramid Memory Bank of VideoChat-Online (Huang, Li et al., CVPR 2025), batched over B streams.

L levels, each a fixed number of frame slots at its own token grid (e.g. 16x16 / 8x8 / 4x4, derived from the
encoder grid by halving per level unless ``level_grids`` is given). Conventions (each tested):

* **Entry level.** Frame id ``i`` enters the first level l with ``i % strides[l] == 0`` (default strides
  8/4/1: every 8th frame at full detail, every 4th at half, the rest at quarter), else the last level. The
  frame is adaptive-average-pooled from the input grid to that level's grid.
* **Eviction.** When a frame arrives at a full level, the level's frames are put in frame-id order, each is
  keyed by the mean of its tokens, and the **earlier** frame of the adjacent pair with the highest cosine
  similarity leaves (ties: the earliest pair). It is bilinearly resized (``align_corners=False``) to the next
  level's grid and inserted there, which may cascade; the last level drops it. A level of capacity 1 evicts
  its only frame. The arriving frame then takes the freed slot.
* **Capacity 0.** A level with capacity 0 holds nothing: what arrives there passes straight on (resized) to
  the next level. The last level must hold >= 1 frame, so the newest frame is always present.
* **Frame ids.** ``t`` int64 [B], or by default the previous frame id + 1 (0 after a reset: the step counter
  since the episode began). Explicit ids must be >= 0 and strictly increase within an episode (ValueError
  otherwise), so each id is held at most once.
* **Read.** All held frames of all levels sorted by frame id, flattened to tokens [B,K,D] with
  K = sum(capacity_l * tokens_l) (the declared token budget); valid tokens come first, each frame's tokens
  contiguous in row-major grid order. With ``top_k`` > 0 only the k frames whose mean token is most
  cosine-similar to the mean query token are kept (ties: the earlier frame), still in time order.

Differences from the released ``HierarchicalMemoryBank`` (deliberate; see embodimem.bench.reference): it is
batched with fixed shapes; adjacency is temporal (the release uses list insertion order, which differs once
a cascaded older frame is appended); the cascade goes through every level (the release stops after one);
a capacity-0 level holds nothing (the release appends without bound); reset/clear works (``clear`` raises
there). Physical slot order is arbitrary here (a freed slot is reused); everything reads in frame-id order.

``write(..., donate=True)`` updates the given state's tensors in place instead of copying the touched levels
(the caller gives the old state up, as with JAX buffer donation); results are identical (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.frames import cached_constants, copy_rows_, next_frame_ids
from embodimem.memory.resample import grid_avg_pool, grid_bilinear
from embodimem.memory.similarity import adjacent_cosine, cosine_to, first_argmax
from embodimem.memory.state import State

_BIG = torch.iinfo(torch.long).max  # sort key of empty slots (after every real frame id)


@dataclass
class PyramidConfig(MemoryConfig):
    dim: int = 64
    tokens_per_step: int = 256  # N = h*w tokens of the input grid
    grid: tuple[int, ...] = ()  # (h, w) of the input token grid; () = square if N is one, else a 1 x N row
    capacities: tuple[int, ...] = (2, 2, 12)  # frames per level (the released streaming setting: 832 tokens)
    strides: tuple[int, ...] = (8, 4, 1)  # entry schedule: id % strides[l] == 0 -> level l (first match)
    level_grids: tuple[tuple[int, int], ...] = ()  # per-level (h, w); () = input grid halved per level
    read_top_k: int = 0  # >0: read only the k frames most similar to the query (0 = every frame)

    def __post_init__(self) -> None:
        # YAML and JSON give lists; keep tuples so configs compare equal after a round trip
        self.grid = tuple(int(v) for v in self.grid)
        self.capacities = tuple(int(v) for v in self.capacities)
        self.strides = tuple(int(v) for v in self.strides)
        self.level_grids = tuple(tuple(int(v) for v in g) for g in self.level_grids)

    @property
    def input_grid(self) -> tuple[int, int]:
        """(h, w) of the input token grid."""
        if self.grid:
            return self.grid[0], self.grid[1]
        side = math.isqrt(self.tokens_per_step)
        return (side, side) if side * side == self.tokens_per_step else (1, self.tokens_per_step)

    @property
    def grids(self) -> tuple[tuple[int, int], ...]:
        """Per-level (h, w) token grids."""
        if self.level_grids:
            return self.level_grids
        h, w = self.input_grid
        return tuple((max(1, h >> l), max(1, w >> l)) for l in range(len(self.capacities)))

    @property
    def token_budget(self) -> int:
        """K = sum over levels of capacity * tokens per frame: the most tokens a read returns."""
        return sum(c * h * w for c, (h, w) in zip(self.capacities, self.grids))

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        L = len(self.capacities)
        if not 1 <= L <= 8:
            raise ValueError(f"{n}.capacities must list 1 to 8 levels, got {len(self.capacities)}")
        if any(c < 0 for c in self.capacities):
            raise ValueError(f"{n}.capacities must be >= 0, got {self.capacities}")
        if self.capacities[-1] == 0:
            raise ValueError(f"{n}.capacities[-1] must be > 0: the last level receives every frame that falls "
                             f"through (a capacity-0 level only passes frames on), got {self.capacities}")
        if len(self.strides) != L or any(s < 1 for s in self.strides):
            raise ValueError(f"{n}.strides must be {L} integers >= 1 (one per level), got {self.strides}")
        if self.grid:
            if len(self.grid) != 2 or min(self.grid) < 1:
                raise ValueError(f"{n}.grid must be (h, w) with h, w >= 1, got {self.grid}")
            if self.grid[0] * self.grid[1] != self.tokens_per_step:
                raise ValueError(f"{n}.grid {self.grid} has {self.grid[0] * self.grid[1]} tokens but "
                                 f"tokens_per_step={self.tokens_per_step}")
        if self.level_grids and len(self.level_grids) != L:
            raise ValueError(f"{n}.level_grids must have one (h, w) per level ({L}), got {self.level_grids}")
        prev = self.input_grid
        for l, g in enumerate(self.grids):
            if len(g) != 2 or min(g) < 1 or g[0] > prev[0] or g[1] > prev[1]:
                raise ValueError(f"{n}.level_grids[{l}]={g} must be (h, w) >= 1 and no larger than the level "
                                 f"before it ({prev}; level 0 is compared with the input grid)")
            prev = g
        if self.read_top_k < 0:
            raise ValueError(f"{n}.read_top_k must be >= 0 (0 = read every frame), got {self.read_top_k}")

    @classmethod
    def example(cls) -> PyramidConfig:
        return cls(dim=8, tokens_per_step=16, grid=(4, 4), capacities=(2, 2, 3), strides=(4, 2, 1))


def cascade_table(capacities: tuple[int, ...]) -> torch.Tensor:
    """Where a frame entering level ``lvl`` goes, for every pattern of full levels: bool [L * 2^L', 4L].

    Row ``lvl * 2^L' + fullbits`` (bit i of fullbits: the i-th level with capacity > 0 is full) holds four
    L-wide blocks: a new frame enters here / the level receives a frame / it evicts / it receives while not
    full. A capacity-0 level counts as full (it passes its frame on); the last level drops what it evicts.
    """
    L = len(capacities)
    held = [l for l in range(L) if capacities[l] > 0]
    rows = []
    for lvl in range(L):
        for bits in range(2 ** len(held)):
            full = [capacities[l] == 0 or bool(bits >> held.index(l) & 1) for l in range(L)]
            here, recv, evict, open_ = ([False] * L for _ in range(4))
            here[lvl] = True
            for l in range(lvl, L):
                recv[l] = True
                if not full[l]:
                    open_[l] = True
                    break
                evict[l] = True
            rows.append(here + recv + evict + open_)
    return torch.tensor(rows, dtype=torch.bool)


@register_memory("pyramid")
class PyramidMemory(Memory):
    """Pyramid Memory Bank: level l holds slots [B,C_l,h_l*w_l,D]; a read returns K = token_budget tokens.

    State: ``tokens_{l}`` per level with capacity > 0; for the S = sum(capacities) slots, level after level,
    ``prov`` [B,S,2] (frame id, entry level; -1 = empty) and ``keys`` [B,S,D] (a frame's mean token);
    ``full_bits`` [B] (bit i: the i-th held level is full; slots fill in order and stay full until a reset)
    and ``last_id`` [B] (-1 after a reset).
    """

    config_class = PyramidConfig
    config: PyramidConfig

    def __init__(self, config: PyramidConfig):
        super().__init__(config)
        c = config
        L = len(c.capacities)
        self.grids, self.input_grid = c.grids, c.input_grid  # derived once (config properties recompute)
        self.offsets = [sum(c.capacities[:l]) for l in range(L)]  # first slot of each level in prov/keys
        self.levels = [l for l in range(L) if c.capacities[l] > 0]  # levels that hold frames
        period = math.lcm(*c.strides)
        self._period = period if period * 2 ** len(self.levels) <= 2 ** 16 else 0  # 0: no lookup tables
        self._tok_keys = [f"tokens_{l}" for l in range(L)]
        # constants, kept per device (plain tensors, not buffers: nothing here belongs in a state_dict)
        table = cascade_table(c.capacities).long()
        self._host = {
            # entry level of every id residue mod lcm(strides): one lookup per write
            "entry": torch.tensor([next((l for l, s in enumerate(c.strides) if i % s == 0), L - 1)
                                   for i in range(self._period)], dtype=torch.long),
            "strides": torch.tensor(c.strides),
            # cascade_table plus its entry level as a last column: [L * 2^L', 4L + 1]
            "plan": torch.cat([table, torch.arange(L).repeat_interleave(2 ** len(self.levels))[:, None]], 1),
            "tok_slot": torch.cat([torch.arange(self.offsets[l], self.offsets[l] + c.capacities[l])
                                   .repeat_interleave(c.grids[l][0] * c.grids[l][1]) for l in self.levels]),
            "tok_level": torch.cat([torch.full((c.capacities[l] * c.grids[l][0] * c.grids[l][1],), l)
                                    for l in self.levels]),
        }
        self._dev: dict[Any, dict[str, torch.Tensor]] = {}

    def _k(self, device: torch.device, B: int) -> dict[str, torch.Tensor]:
        """Device copies of the constants, plus arange(B) and its multiples for flat indexing (cached)."""

        def build() -> dict[str, Any]:
            k = {n: v.to(device) for n, v in self._host.items()}
            k["ar"] = torch.arange(B, device=device)
            k["arS"] = k["ar"] * sum(self.config.capacities)
            k["arC"] = [k["ar"] * cap for cap in self.config.capacities]
            k["slot_base"] = [k["arS"] + off for off in self.offsets]  # [B]: each row's first slot of a level
            k["zeros"] = torch.zeros(B, dtype=torch.long, device=device)
            if self._period:  # plan by (id % period, full bits): [period, 2^L', 4L + 1]
                k["plan_by_res"] = k["plan"].view(-1, 2 ** len(self.levels), k["plan"].shape[1])[k["entry"]]
            return k

        return cached_constants(self._dev, device, B, build)

    # ----- state ------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c = self.config
        s: State = {f"tokens_{l}": torch.zeros(batch_size, c.capacities[l], c.grids[l][0] * c.grids[l][1], c.dim,
                                               device=device) for l in self.levels}
        S = sum(c.capacities)
        s["prov"] = torch.full((batch_size, S, 2), -1, dtype=torch.long, device=device)
        s["keys"] = torch.zeros(batch_size, S, c.dim, device=device)
        s["full_bits"] = torch.zeros(batch_size, dtype=torch.long, device=device)
        s["last_id"] = torch.full((batch_size,), -1, dtype=torch.long, device=device)
        return s

    def clear(self, state: State) -> State:
        """Every row empty (same as ``reset`` with an all-True mask)."""
        return self.init_state(state["last_id"].shape[0], device=state["last_id"].device)

    def check_tokens(self, x: torch.Tensor, what: str = "x_t") -> torch.Tensor:
        """Accept [B,N,D], [B,D] or a grid [B,h,w,D]; a grid that is not ``config.grid`` raises."""
        if isinstance(x, torch.Tensor) and x.dim() == 4:
            if tuple(x.shape[1:3]) != self.input_grid:
                raise ValueError(f"{self.name}: {what} has token grid {tuple(x.shape[1:3])}, config grid is "
                                 f"{self.input_grid}")
            x = x.flatten(1, 2)
        return super().check_tokens(x, what)

    # ----- write ------------------------------------------------------------------------------------
    def frame_ids(self, state: State, t: torch.Tensor | None) -> torch.Tensor:
        """Frame ids int64 [B] of the frame being written: ``t`` (validated) or the previous id + 1."""
        return next_frame_ids(self.name, state["last_id"], t)

    def entry_level(self, ids: torch.Tensor) -> torch.Tensor:
        """Level each frame id enters: the first l with id % strides[l] == 0, else the last. int64 [B]."""
        k = self._k(ids.device, ids.shape[0])
        if self._period:
            return k["entry"][ids % self._period]
        hit = (ids[:, None] % k["strides"][None, :]) == 0  # [B,L]
        return torch.where(hit.any(1), hit.to(torch.uint8).argmax(1), torch.full_like(ids, hit.shape[1] - 1))

    def write(self, state: State, item: torch.Tensor, *, t: torch.Tensor | None = None, donate: bool = False,
              **_: Any) -> State:
        """Insert frame item [B,N,D] (or [B,h,w,D]) at its entry level; evictions cascade down the levels.

        ``donate=True`` hands the input state over: its tensors are updated in place and returned (no copy of
        the touched levels; the caller must not use the old state again). The default returns new tensors.
        Runs without autograd (as ``@torch.no_grad()``; the context is only entered when grad is on, since
        entering it costs as much as several tensor ops here).
        """
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self._write(state, item, t, donate)
        return self._write(state, item, t, donate)

    def _write(self, state: State, item: torch.Tensor, t: torch.Tensor | None, donate: bool) -> State:
        c = self.config
        x = self.check_tokens(item, "item")
        if x.dtype != state["keys"].dtype:
            x = x.to(state["keys"].dtype)
        x = x.contiguous()
        ids = self.frame_ids(state, t)
        B, L, S, D = ids.shape[0], len(c.capacities), state["prov"].shape[1], c.dim
        k = self._k(ids.device, B)
        # the cascade is decided on the pre-write state; plan [B,4L+1]: new frame here / receives / evicts / opens,
        # then the entry level
        if self._period:
            plan = k["plan_by_res"][ids % self._period, state["full_bits"]]
        else:
            plan = k["plan"][self.entry_level(ids) * 2 ** len(self.levels) + state["full_bits"]]
        n = plan.sum(0).tolist()  # the write's one host sync: per level, how many rows do what
        n_here, n_recv, n_evict, n_open = n[:L], n[L:2 * L], n[2 * L:3 * L], n[3 * L:4 * L]

        def rows(col: int, count: int) -> torch.Tensor | None:
            """Rows whose plan column is set (None: every row, the common case, which needs no indexing)."""
            return None if count == B else plan[:, col].nonzero().squeeze(1)

        def pick(v: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
            return v if r is None else v.index_select(0, r)

        out = dict(state)  # untouched levels keep their tensors (never mutated unless donated)
        prov, keys = (state["prov"], state["keys"]) if donate else (state["prov"].clone(), state["keys"].clone())
        full_bits = state["full_bits"]
        new_prov = torch.stack([ids, plan[:, 4 * L]], dim=1)
        # frames leaving the previous level: their rows (None = all), tokens [R,T,D] at grid prev, prov [R,2]
        moved = moved_rows = moved_prov = prev = None
        for l in range(L):
            if n_recv[l] == 0:
                moved = None
                continue
            grid, cap, off = self.grids[l], c.capacities[l], self.offsets[l]
            # what arrives: frames cascading from the level above and new frames entering here (disjoint rows);
            # each is resampled for its own rows only
            parts = []
            if moved is not None:
                parts.append((moved_rows, grid_bilinear(moved, prev, grid), moved_prov))
            if n_here[l]:
                r = rows(l, n_here[l])
                parts.append((r, grid_avg_pool(pick(x, r), self.input_grid, grid), pick(new_prov, r)))
            r, inc, inc_prov = parts[0] if len(parts) == 1 else (torch.cat(v) for v in zip(*parts))
            prev, moved = grid, None
            if cap == 0:  # holds nothing: everything passes straight on
                moved, moved_rows, moved_prov = inc, r, inc_prov
                continue
            tok, slot = state[self._tok_keys[l]], None
            if n_open[l]:  # rows still filling this level take its first empty slot
                slot = (state["prov"][:, off:off + cap, 0] >= 0).sum(1)
                becomes_full = plan[:, 3 * L + l].bool() & (slot == cap - 1)
                full_bits = full_bits | (becomes_full.long() << self.levels.index(l))
            if n_evict[l]:
                e = self._evict_slot(state, l, k)
                if l + 1 < L:  # the last level drops what it evicts
                    moved_rows = rows(2 * L + l, n_evict[l])
                    er = pick(e, moved_rows)
                    moved = tok.view(B * cap, -1, D).index_select(
                        0, (k["arC"][l] if moved_rows is None else moved_rows * cap) + er)
                    moved_prov = state["prov"].view(B * S, 2).index_select(
                        0, (k["arS"] if moved_rows is None else moved_rows * S) + (off + er))
                slot = e if slot is None else torch.where(plan[:, 2 * L + l].bool(), e, slot)
            slot = pick(slot, r)
            if not donate:
                tok = tok.clone()
            dst = (k["arC"][l] if r is None else r * cap) + slot
            copy_rows_(tok.view(B * cap, -1), dst, inc.reshape(len(slot), -1))
            out[self._tok_keys[l]] = tok
            flat = k["slot_base"][l] + slot if r is None else r * S + (off + slot)
            prov.view(B * S, 2).index_copy_(0, flat, inc_prov)
            keys.view(B * S, D).index_copy_(0, flat, inc.mean(dim=1))
        out.update(prov=prov, keys=keys, full_bits=full_bits, last_id=ids)
        return out

    def _evict_slot(self, state: State, l: int, k: dict[str, Any]) -> torch.Tensor:
        """Slot (in level l) of the earlier frame of the most similar adjacent pair, in time order. int64 [B].

        Frames are keyed by their mean token at the stored resolution (``keys``); only rows whose level is full
        use the result (frame ids are unique there)."""
        cap, off = self.config.capacities[l], self.offsets[l]
        if cap == 1:
            return k["zeros"]
        ids = state["prov"][:, off:off + cap, 0]
        if cap == 2:  # one pair: its earlier frame leaves, whatever the similarity
            return ids.argmin(dim=1)
        order = ids.argsort(dim=1)  # time order
        D = state["keys"].shape[-1]
        keys = state["keys"].reshape(-1, D).index_select(0, (order + k["slot_base"][l][:, None]).view(-1))
        keys = keys.view(-1, cap, D)
        j = first_argmax(adjacent_cosine(keys, dim=1), dim=1)  # pair (j, j+1) in time order; ties -> earliest
        return order.gather(1, j.unsqueeze(1)).squeeze(1)

    # ----- read -------------------------------------------------------------------------------------
    def read(self, state: State, query: torch.Tensor | None = None, *, top_k: int | None = None,
             **_: Any) -> Readout:
        """Held frames in frame-id order: tokens [B,K,D], K = token_budget; ``top_k`` (default config) keeps the
        k frames most similar to the mean query token [B,Q,D]. extras: ``level`` and ``entry_level`` [B,K]."""
        c = self.config
        top = c.read_top_k if top_k is None else int(top_k)
        if top < 0:
            raise ValueError(f"{self.name}: top_k must be >= 0, got {top}")
        if query is not None:
            query = self.check_query(query)
        if top > 0 and query is None:
            raise ValueError(f"{self.name}: top_k={top} needs a query [B,Q,{c.dim}]")
        prov = state["prov"]  # [B,S,2]
        B, D = prov.shape[0], c.dim
        k = self._k(prov.device, B)
        tokens = torch.cat([state[f"tokens_{l}"].view(B, -1, D) for l in self.levels], dim=1)  # [B,K,D]
        K = tokens.shape[1]
        tprov = prov[:, k["tok_slot"]]  # [B,K,2] provenance of each token
        tid = tprov[..., 0]
        keep = tid >= 0
        weights = None
        if top > 0:
            score = cosine_to(state["keys"], query.mean(dim=1).to(state["keys"].dtype))  # [B,S]
            keep = keep & self._top_k_slots(prov[..., 0], score, top)[:, k["tok_slot"]]
            weights = score[:, k["tok_slot"]]
        order = torch.where(keep, tid, _BIG).argsort(dim=1, stable=True)  # time order; each frame stays contiguous
        mask = keep.gather(1, order)
        out_tok = tokens.view(B * K, D).index_select(0, (order + (k["ar"] * K)[:, None]).view(-1)).view(B, K, D)
        if top > 0:  # unselected frames are real data: zero them (empty slots already hold zeros)
            out_tok = out_tok * mask.unsqueeze(-1)
            weights = torch.where(mask, weights.gather(1, order), 0.0)
        tprov = tprov.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
        sid = torch.where(mask, tprov[..., 0], -1)
        extras = {"level": torch.where(mask, k["tok_level"][order], -1),
                  "entry_level": torch.where(mask, tprov[..., 1], -1)}
        return Readout(tokens=out_tok, mask=mask, source_ids=sid, weights=weights,
                       time_span=torch.stack([sid, sid], dim=-1), extras=extras)

    @staticmethod
    def _top_k_slots(ids: torch.Tensor, score: torch.Tensor, k: int) -> torch.Tensor:
        """bool [B,S]: the k held slots (ids >= 0) with the highest score; ties -> the smaller frame id."""
        by_id = torch.where(ids >= 0, ids, _BIG).argsort(dim=1)
        s = score.gather(1, by_id).masked_fill(ids.gather(1, by_id) < 0, float("-inf"))
        ranked = by_id.gather(1, s.argsort(dim=1, descending=True, stable=True))  # stable: id order among ties
        chosen = torch.zeros_like(ids, dtype=torch.bool).scatter(1, ranked[:, :k], True)
        return chosen & (ids >= 0)

    # ----- stats ------------------------------------------------------------------------------------
    def stats(self, state: State) -> dict[str, float]:
        """Bytes held plus frames / tokens held per row (mean over rows) and the declared budgets."""
        out = super().stats(state)
        c = self.config
        valid = state["prov"][..., 0] >= 0
        held = [valid[:, o:o + cap].sum(1).float() for o, cap in zip(self.offsets, c.capacities)]
        tokens = sum(hd * gh * gw for hd, (gh, gw) in zip(held, c.grids))
        out["frames_held_mean"] = float(torch.stack(held).sum(0).mean())
        out["frames_capacity"] = float(sum(c.capacities))
        out["tokens_held_mean"] = float(tokens.mean())
        out["token_budget"] = float(c.token_budget)
        for l, hd in enumerate(held):
            out[f"level{l}_frames_mean"] = float(hd.mean())
        return out
