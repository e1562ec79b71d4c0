"""``place``: place-centric episodic memory of the Spatially-Aware Transformer (Cho, Yoon, Ahn, ICLR 2024).

Every write carries a place id (from the environment, or a grid cell of the camera position when
``cell_size > 0``). Place p owns chunk p: up to C entries (steps of N tokens), time-ordered, oldest first.
At most L = ``capacity`` entries are held in total; when a write finds the memory full (or its place's
chunk full) one entry is evicted first, chosen by the row's policy. Reads are the HCAM read with places
as chunks (the shared ``ChunkAttention``: key = mean of a place's held tokens).

Eviction (a brute-force list oracle for each policy is in tests/test_memory_place.py):
- candidates: every held entry; but if the written place already holds C entries, only that place's.
- ``fifo``: the oldest candidate. ``lifo``: the newest candidate (the memory keeps its first L-1 entries).
- ``mvfo`` / ``lvfo``: the oldest entry of the candidate place with the most / fewest visits; ties go to
  the lower place id. ``visits[p]`` counts writes to p in this episode, including the current one (it is
  incremented before eviction) and including entries since evicted.
- The policy is ``config.policy`` unless write/step get ``policy`` int64 [B] (index into ``POLICIES``),
  which is how the Adaptive Memory Allocator picks one per env.
Readout (K = Q): the attended token per query token; source_ids/time_span = first step / [first, last]
step over the selected places; extras ``chunk_index`` = selected place ids [B,Q,k] (-1 = no pick),
``chunk_weight``, ``chunk_span``. Ties between place logits go to the lower place id. ``forward`` steps
(eviction is a sequential decision), so training sees exactly the inference semantics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from embodimem.memory import register_memory
from embodimem.memory.base import Memory, MemoryConfig, Readout
from embodimem.memory.chunk_attention import ChunkAttention, gather_chunks
from embodimem.memory.state import State

POLICIES: tuple[str, ...] = ("fifo", "lifo", "mvfo", "lvfo")
_AXES = {"x": 0, "y": 1, "z": 2}
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8)


def grid_place_ids(position: torch.Tensor, *, cell_size: float, cols: int, rows: int,
                   origin: tuple[float, float] = (0.0, 0.0), axes: str = "xz") -> torch.Tensor:
    """Place id = row*cols + col of the grid cell holding ``position`` [B,3] (metres) -> int64 [B].

    The grid spans ``cols`` x ``rows`` cells of ``cell_size`` metres on the plane of ``axes`` (first axis ->
    col), starting at ``origin``. A position outside the grid (or non-finite) raises ValueError.
    """
    if position.dim() != 2 or position.shape[-1] != 3:
        raise ValueError(f"grid_place_ids: position must be [B,3], got {tuple(position.shape)}")
    u = position[:, _AXES[axes[0]]] - origin[0]
    v = position[:, _AXES[axes[1]]] - origin[1]
    if not bool(torch.isfinite(u).all() & torch.isfinite(v).all()):
        raise ValueError("grid_place_ids: position contains NaN or inf")
    col = torch.floor(u / cell_size).long()
    row = torch.floor(v / cell_size).long()
    out = (col < 0) | (col >= cols) | (row < 0) | (row >= rows)
    if bool(out.any()):
        b = int(out.nonzero()[0, 0])
        raise ValueError(f"grid_place_ids: position {position[b].tolist()} is outside the {cols}x{rows} grid of "
                         f"{cell_size} m cells at origin {origin} on axes {axes!r}")
    return row * cols + col


@dataclass
class PlaceConfig(MemoryConfig):
    num_places: int = 16  # P: valid place ids are 0..P-1; place p is chunk p
    place_capacity: int = 8  # C: entries one place holds (the chunk length)
    capacity: int = 64  # L: entries held in total, 1..P*C
    policy: str = "fifo"  # default eviction policy: fifo | lifo | mvfo | lvfo
    top_k: int = 4  # places read per query token (<= num_places)
    heads: int = 4  # heads of the within-place attention (must divide dim)
    pos_encoding: bool = True  # sinusoidal position of each entry within its place (0 = oldest)
    cell_size: float = 0.0  # metres; > 0 lets write take `pose` [B,4,4] and discretize its position
    grid_cols: int = 0  # grid cells per row (rows = num_places // grid_cols); used when cell_size > 0
    grid_origin_u: float = 0.0  # metres, grid corner on the first grid axis
    grid_origin_v: float = 0.0  # metres, grid corner on the second grid axis
    grid_axes: str = "xz"  # world axes of the grid plane (first -> column)

    def validate(self) -> None:
        super().validate()
        who = type(self).__name__
        for f in ("num_places", "place_capacity", "capacity", "top_k", "heads"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{who}.{f} must be > 0, got {getattr(self, f)}")
        if self.capacity > self.num_places * self.place_capacity:
            raise ValueError(f"{who}.capacity={self.capacity} exceeds num_places*place_capacity="
                             f"{self.num_places * self.place_capacity}")
        if self.policy not in POLICIES:
            raise ValueError(f"{who}.policy must be one of {POLICIES}, got {self.policy!r}")
        if self.top_k > self.num_places:
            raise ValueError(f"{who}.top_k={self.top_k} is larger than num_places={self.num_places}")
        if self.dim % self.heads:
            raise ValueError(f"{who}.dim={self.dim} is not divisible by heads={self.heads}")
        if self.cell_size < 0:
            raise ValueError(f"{who}.cell_size must be >= 0, got {self.cell_size}")
        if self.cell_size > 0 and (self.grid_cols <= 0 or self.num_places % self.grid_cols):
            raise ValueError(f"{who}.grid_cols={self.grid_cols} must be > 0 and divide num_places={self.num_places}")
        if len(self.grid_axes) != 2 or any(a not in _AXES for a in self.grid_axes) or len(set(self.grid_axes)) != 2:
            raise ValueError(f"{who}.grid_axes must be two distinct letters of 'xyz', got {self.grid_axes!r}")

    @classmethod
    def example(cls) -> PlaceConfig:
        return cls(dim=8, tokens_per_step=2, num_places=4, place_capacity=3, capacity=6, top_k=2, heads=2)


@register_memory("place")
class PlaceMemory(Memory):
    """Entries [B,P,C,N,D] grouped by place; bounded by ``capacity``; read hierarchically, places as chunks."""

    config_class = PlaceConfig
    config: PlaceConfig

    def __init__(self, config: PlaceConfig):
        super().__init__(config)
        c = config
        self.attn = ChunkAttention(c.dim, c.heads, c.top_k, c.place_capacity, c.pos_encoding)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c = self.config
        B, P, C = batch_size, c.num_places, c.place_capacity
        return {
            "tokens": torch.zeros(B, P, C, c.tokens_per_step, c.dim, device=device),
            "ids": torch.full((B, P, C), -1, dtype=torch.long, device=device),  # source step per entry
            "valid": torch.zeros(B, P, C, dtype=torch.bool, device=device),  # left-aligned per place
            "visits": torch.zeros(B, P, dtype=torch.long, device=device),  # writes per place this episode
            "step": torch.zeros(B, dtype=torch.long, device=device),  # next step id within the episode
        }

    def example_inputs(self, batch_size: int, steps: int,
                       generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        """Random tokens [B,T,N,D] and uniformly random place ids int64 [B,T]."""
        x, _ = super().example_inputs(batch_size, steps, generator)
        return x, {"place": torch.randint(0, self.config.num_places, (batch_size, steps), generator=generator)}

    # ----- input checks ----------------------------------------------------------------------------------
    def place_ids(self, place: torch.Tensor | None, pose: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """Validated place ids int64 [B] from ``place`` or, with ``cell_size > 0``, from ``pose`` [B,4,4]."""
        c = self.config
        if place is None:
            if pose is None or c.cell_size <= 0:
                raise ValueError("place: write needs place=int64 [B] (ids 0..num_places-1), or pose=[B,4,4] "
                                 "with config.cell_size > 0")
            if pose.shape != (batch_size, 4, 4):
                raise ValueError(f"place: pose must be [{batch_size},4,4], got {tuple(pose.shape)}")
            place = grid_place_ids(pose[:, :3, 3], cell_size=c.cell_size, cols=c.grid_cols,
                                   rows=c.num_places // c.grid_cols, origin=(c.grid_origin_u, c.grid_origin_v),
                                   axes=c.grid_axes)
        if not isinstance(place, torch.Tensor) or place.dtype not in _INT_DTYPES:
            got = getattr(place, "dtype", type(place))
            raise ValueError(f"place: place ids must be an integer tensor [B], got {got}")
        if place.shape != (batch_size,):
            raise ValueError(f"place: place ids must have shape [{batch_size}], got {tuple(place.shape)}")
        lo, hi = int(place.min()), int(place.max())
        if lo < 0 or hi >= c.num_places:
            raise ValueError(f"place: place id out of range [0, {c.num_places}): got min {lo}, max {hi}")
        return place.long()

    def policy_ids(self, policy: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
        """Per-row policy index int64 [B] (None = ``config.policy``); values index ``POLICIES``."""
        if policy is None:
            return torch.full((batch_size,), POLICIES.index(self.config.policy), dtype=torch.long, device=device)
        if not isinstance(policy, torch.Tensor) or policy.dtype != torch.int64 or policy.shape != (batch_size,):
            raise ValueError(f"place: policy must be int64 [{batch_size}] indexing {POLICIES}, got "
                             f"{getattr(policy, 'dtype', type(policy))} {tuple(getattr(policy, 'shape', ()))}")
        if bool(((policy < 0) | (policy >= len(POLICIES))).any()):
            raise ValueError(f"place: policy index out of range [0, {len(POLICIES)}) ({POLICIES})")
        return policy

    # ----- write: evict (if needed), then insert ----------------------------------------------------------
    @torch.no_grad()
    def write(self, state: State, item: torch.Tensor, *, place: torch.Tensor | None = None,
              pose: torch.Tensor | None = None, policy: torch.Tensor | None = None, **_: Any) -> State:
        """Store item [B,N,D] at place [B] (or the grid cell of pose [B,4,4]); evict per policy [B] if full."""
        item = self.check_tokens(item, "item").detach().to(state["tokens"].dtype)
        B, dev = item.shape[0], item.device
        c = self.config
        P, C = c.num_places, c.place_capacity
        p = self.place_ids(place, pose, B).to(dev)
        pol = self.policy_ids(policy, B, dev)
        ar_p, ar_c = torch.arange(P, device=dev), torch.arange(C, device=dev)
        at_p = ar_p == p[:, None]  # [B,P]
        visits = state["visits"] + at_p
        ids, valid = state["ids"], state["valid"]
        count = valid.sum(-1)  # [B,P]
        place_full = count.gather(1, p[:, None])[:, 0] == C
        evict = place_full | (count.sum(-1) >= c.capacity)
        cand = torch.where(place_full[:, None], at_p, count > 0)  # candidate places [B,P]
        big = torch.iinfo(torch.long).max
        newest = ids.gather(2, (count - 1).clamp(min=0)[..., None])[..., 0]
        # unique scores, so argmin/argmax never meet a tie (visit ties -> lower place id)
        victim = torch.stack([
            torch.where(cand, ids[..., 0], big).argmin(-1),  # fifo: globally oldest = oldest of its place
            torch.where(cand, newest, -1).argmax(-1),  # lifo
            torch.where(cand, visits * P + (P - 1 - ar_p), -1).argmax(-1),  # mvfo
            torch.where(cand, visits * P + ar_p, big).argmin(-1),  # lvfo
        ], -1).gather(1, pol[:, None])[:, 0]  # [B]
        pos = torch.where(pol == POLICIES.index("lifo"), count.gather(1, victim[:, None])[:, 0] - 1, 0)
        drop = evict[:, None] & (ar_p == victim[:, None])  # [B,P]
        src = (ar_c + (drop[..., None] & (ar_c >= pos[:, None, None]))).clamp(max=C - 1)  # close the gap
        tokens = state["tokens"].gather(2, src[..., None, None].expand_as(state["tokens"]))
        ids = ids.gather(2, src)
        count = count - drop.long()
        ins = at_p[..., None] & (ar_c == count.gather(1, p[:, None])[:, :, None])  # [B,P,C] new entry's slot
        valid = (ar_c < count[..., None]) | ins
        tokens = torch.where(ins[..., None, None], item[:, None, None], tokens) * valid[..., None, None]
        ids = torch.where(ins, state["step"][:, None, None], torch.where(valid, ids, -1))
        return {"tokens": tokens, "ids": ids, "valid": valid, "visits": visits, "step": state["step"] + 1}

    # ----- read: HCAM with places as chunks -------------------------------------------------------------
    def place_keys(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """Summary key per place = mean of its held tokens [B,P,D], and which places hold any [B,P]."""
        valid = state["valid"]
        n = valid.sum(-1) * self.config.tokens_per_step
        keys = (state["tokens"] * valid[..., None, None]).sum((2, 3)) / n.clamp(min=1)[..., None]
        return keys, n > 0

    def read(self, state: State, query: torch.Tensor | None = None, **_: Any) -> Readout:
        """Query [B,Q,D] (or [B,D]) -> Readout [B,Q,D]: per query token, the HCAM read over places."""
        if query is None:
            raise ValueError("place: read needs a query [B,Q,D] (step passes the current tokens)")
        q = self.check_query(query)
        B = state["valid"].shape[0]
        if q.shape[0] != B:
            raise ValueError(f"place: query has batch {q.shape[0]}, state has {B}")
        keys, has = self.place_keys(state)
        out, sel = self.attn(q, keys, state["tokens"], has, entry_mask=state["valid"])
        picked_ids = gather_chunks(state["ids"], sel.index)  # [B,Q,k,C]
        count = gather_chunks(state["valid"].sum(-1), sel.index)  # [B,Q,k]
        last = picked_ids.gather(-1, (count - 1).clamp(min=0)[..., None])[..., 0]
        span = torch.stack([picked_ids[..., 0], last], -1)
        span = torch.where(sel.valid[..., None], span, -1)
        mask = sel.valid.any(-1)
        first = torch.where(sel.valid, span[..., 0], torch.iinfo(torch.long).max).amin(-1)
        first = torch.where(mask, first, -1)
        last = torch.where(mask, span[..., 1].amax(-1), -1)
        return Readout(tokens=out, mask=mask, source_ids=first, time_span=torch.stack([first, last], -1),
                       extras={"chunk_index": sel.index, "chunk_weight": sel.weight, "chunk_span": span})
