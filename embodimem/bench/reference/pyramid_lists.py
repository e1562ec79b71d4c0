"""VideoChat-Online's ``HierarchicalMemoryBank`` the way the released code stores it: per stream, per level, a
Python list of ``{"tokens": [1,D,h,w], "index": frame id}`` dicts, one stream at a time.

Written from the description of the released algorithm (MCG-NJU/VideoChat-Online, MIT), not copied. Two
modes:

* ``released=False`` (default): the semantics ``embodimem.memory.pyramid`` documents, on the released data
  structure. This is the benchmark baseline and the oracle of tests/test_memory_pyramid.py.
* ``released=True``: the release's behaviour, defects included, for tests that pin them down: adjacency is
  list (insertion) order, a cascade stops after one level (the recursive call gets no next level), a
  capacity-0 level appends without bound, a full capacity-1 level raises (argmax of no pairs), and
  ``clear`` raises AttributeError (it clears a ``cls_token_cache`` that does not exist).

Entry pooling is ``F.adaptive_avg_pool2d`` and the eviction resize ``F.interpolate(bilinear,
align_corners=False)``, as released.
"""

from __future__ import annotations

import bisect
from typing import Any

import torch
import torch.nn.functional as F

from embodimem.memory.pyramid import PyramidConfig


class PyramidLists:
    """One stream's pyramid: ``groups[l]["frames"]`` lists {"tokens" [1,D,h,w], "index", "entry", "cls_token"}.

    ``cls_token`` [1,D] is the mean of the frame's tokens when it arrived (the release stores it, unused)."""

    def __init__(self, capacities: tuple[int, ...], grids: tuple[tuple[int, int], ...], strides: tuple[int, ...],
                 released: bool = False):
        self.groups = [{"frames": [], "capacity": c, "grid": tuple(g)} for c, g in zip(capacities, grids)]
        self.strides = tuple(strides)
        self.released = released

    def level_of(self, index: int) -> int:
        """First level whose stride divides the frame id, else the last (the release's ``tokens_arrange``)."""
        return next((l for l, s in enumerate(self.strides) if index % s == 0), len(self.strides) - 1)

    def update(self, frame: torch.Tensor, index: int) -> None:
        """Add frame [1,D,h,w] (input grid) with frame id ``index``."""
        l = self.level_of(index)
        grid = self.groups[l]["grid"]
        tokens = frame if tuple(frame.shape[-2:]) == grid else F.adaptive_avg_pool2d(frame, grid)
        self._update(l, tokens, index, l, tokens.mean(dim=(2, 3)), depth=0)

    def _most_similar(self, frames: list[dict[str, Any]]) -> int:
        keys = torch.cat([f["tokens"].mean(dim=(2, 3)) for f in frames], dim=0)
        sims = F.cosine_similarity(keys[1:], keys[:-1], dim=1)
        return int(torch.argmax(sims))  # first maximal index: the earliest pair

    def _update(self, l: int, tokens: torch.Tensor, index: int, entry: int, cls_token: torch.Tensor,
                depth: int) -> None:
        g = self.groups[l]
        frames, cap = g["frames"], g["capacity"]
        has_next = l + 1 < len(self.groups)
        if cap == 0 and not self.released:  # holds nothing: pass straight on
            if has_next:
                self._update(l + 1, self._resize(tokens, l + 1), index, entry, cls_token, depth)
            return
        if len(frames) >= cap and cap > 0:
            i = 0 if (len(frames) == 1 and not self.released) else self._most_similar(frames)
            old = frames.pop(i)
            if has_next and (depth == 0 or not self.released):  # the release cascades one level only
                self._update(l + 1, self._resize(old["tokens"], l + 1), old["index"], old["entry"],
                             old["cls_token"], depth + 1)
        item = {"tokens": tokens, "index": index, "entry": entry, "cls_token": cls_token}
        if self.released or not frames or frames[-1]["index"] < index:
            frames.append(item)
        else:  # an older frame cascaded in: keep time order, so "adjacent" means temporally adjacent
            frames.insert(bisect.bisect([f["index"] for f in frames], index), item)

    def _resize(self, tokens: torch.Tensor, l: int) -> torch.Tensor:
        grid = self.groups[l]["grid"]
        if tuple(tokens.shape[-2:]) == grid:
            return tokens
        return F.interpolate(tokens, size=grid, mode="bilinear", align_corners=False)

    def output_by_time_order(self) -> tuple[list[torch.Tensor], list[int]]:
        """Every held frame sorted by frame id: tokens [1,h*w,D] each, and the ids."""
        frames = sorted((f for g in self.groups for f in g["frames"]), key=lambda f: f["index"])
        return [f["tokens"].flatten(2, 3).permute(0, 2, 1) for f in frames], [f["index"] for f in frames]

    def held(self) -> list[tuple[int, int, int]]:
        """(frame id, level, entry level) of every held frame, sorted by id."""
        out = [(f["index"], l, f["entry"]) for l, g in enumerate(self.groups) for f in g["frames"]]
        return sorted(out)

    def clear(self) -> None:
        for g in self.groups:
            g["frames"].clear()
        if self.released:
            self.cls_token_cache.clear()  # the release's clear(): this attribute never exists

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for g in self.groups for f in g["frames"]
                   for v in (f["tokens"], f["cls_token"]))


class PyramidListReference:
    """B streams, each a ``PyramidLists``, written one stream at a time (the per-stream baseline)."""

    def __init__(self, config: PyramidConfig, batch_size: int, device: torch.device | str = "cpu",
                 released: bool = False):
        config.validate()
        self.config = config
        self.device = torch.device(device)
        self.released = released
        self.banks = [self._new_bank() for _ in range(batch_size)]
        self.step = [0] * batch_size

    def _new_bank(self) -> PyramidLists:
        c = self.config
        return PyramidLists(c.capacities, c.grids, c.strides, self.released)

    def write(self, item: torch.Tensor, t: torch.Tensor | None = None, is_first: torch.Tensor | None = None,
              **_: Any) -> None:
        """item [B,N,D]; frame id = ``t[b]`` or the stream's step counter; ``is_first[b]`` clears stream b first."""
        h, w = self.config.input_grid
        firsts = [False] * len(self.banks) if is_first is None else is_first.tolist()
        ids = None if t is None else t.tolist()
        for b, bank in enumerate(self.banks):
            if firsts[b]:  # a fresh bank, as the release builds one per video (its clear() raises)
                bank = self.banks[b] = self._new_bank()
                self.step[b] = 0
            frame = item[b].t().reshape(1, -1, h, w)  # [N,D] -> [1,D,h,w] (a copy, as a fresh ViT output is)
            bank.update(frame, self.step[b] if ids is None else ids[b])
            self.step[b] += 1

    def read(self, query: torch.Tensor | None = None) -> list[tuple[torch.Tensor, list[int]]]:
        """Per stream: (tokens [K_b,D] in time order, frame ids). The release has no query-dependent read."""
        out = []
        for bank in self.banks:
            toks, ids = bank.output_by_time_order()
            out.append((torch.cat(toks, dim=1)[0] if toks else torch.zeros(0, self.config.dim), ids))
        return out

    def nbytes_per_stream(self) -> list[int]:
        return [bank.nbytes() for bank in self.banks]


def make_reference(config: PyramidConfig, batch_size: int, device: torch.device | str = "cpu") -> PyramidListReference:
    """The benchmark's entry point (see embodimem.bench.reference)."""
    return PyramidListReference(config, batch_size, device)
