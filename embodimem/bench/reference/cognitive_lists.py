"""MemoryVLA's Perceptual-Cognitive Memory Bank the way the released code stores it: per bank, a dict
episode id -> Python list of entries, updated one sample at a time.

Written from the description of the released algorithm (shihao1895/MemoryVLA, ``vla/memory_vla.py``), not
copied. Each entry is ``[t_first, t_last, count, feat]`` (the release keeps ``(timestep, feat)``; the span and
count are carried so this doubles as the oracle of ``embodimem.memory.cognitive``; ``t_first`` is the
release's timestep). Per sample and bank: append a clone, then ``while len(bank) > L``: the mean per-token
cosine of each adjacent pair (one pair at a time, ``.item()`` each, as released), merge the argmax pair
(first maximum) -- or keep the last L for ``fifo``. ``merge_weighting="equal"`` is the release's 0.5/0.5
average; ``"count"`` the size-weighted mean.

Retrieval runs per stream too: the stream's lists are stacked into a one-row, unpadded state and handed to
the batched memory's unchecked core read (``CognitiveMemory.fuse``), as the release calls its retrieval
module once per sample.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from embodimem.memory.cognitive import CognitiveConfig, CognitiveMemory

Entry = list  # [t_first: int, t_last: int, count: int, feat: Tensor [M,D]]


class CognitiveListReference:
    """B streams; ``per``/``cog`` map episode id -> list of entries; every call loops over the streams."""

    def __init__(self, config: CognitiveConfig, batch_size: int, device: torch.device | str = "cpu",
                 memory: CognitiveMemory | None = None):
        config.validate()
        self.config = config
        self.device = torch.device(device)
        self.N = config.tokens_per_step - 1
        # the retrieval module (a fresh one in eval mode if none is given: same cost, other weights)
        self.memory = memory if memory is not None else CognitiveMemory(config).to(self.device).eval()
        self.per: dict[int, list[Entry]] = {}
        self.cog: dict[int, list[Entry]] = {}
        self.episode = list(range(batch_size))  # stream b currently plays episode self.episode[b]
        self.next_episode = batch_size
        self.step = [0] * batch_size
        self.merges = [0] * batch_size

    # ----- write ----------------------------------------------------------------------------------------
    def write(self, item: torch.Tensor, t: torch.Tensor | None = None, is_first: torch.Tensor | None = None,
              **_: Any) -> None:
        """item [B,N+1,D] (last token cognitive); id = ``t[b]`` or the step count; ``is_first`` starts an episode."""
        firsts = [False] * len(self.episode) if is_first is None else is_first.tolist()
        ids = None if t is None else t.tolist()
        for b in range(len(self.episode)):
            if firsts[b]:  # the release clears a bank entry when the stream's episode id changes
                self.per.pop(self.episode[b], None)
                self.cog.pop(self.episode[b], None)
                self.episode[b], self.next_episode = self.next_episode, self.next_episode + 1
                self.step[b] = self.merges[b] = 0
            ep = self.episode[b]
            ts = self.step[b] if ids is None else ids[b]
            per, cog = self.per.setdefault(ep, []), self.cog.setdefault(ep, [])
            per.append([ts, ts, 1, item[b, : self.N].detach().clone()])
            cog.append([ts, ts, 1, item[b, self.N:].detach().clone()])
            self._consolidate(b, per, cog)
            self.step[b] += 1

    def _consolidate(self, b: int, per: list[Entry], cog: list[Entry]) -> None:
        L = self.config.capacity
        while len(per) > L:
            if self.config.consolidation == "fifo":
                per[:] = per[-L:]
                cog[:] = cog[-L:]
                continue
            s_per, s_cog = self._adjacent_sims(per), self._adjacent_sims(cog)
            if self.config.merge_on == "joint":
                i = int(torch.argmax((self.N * s_per + s_cog) / (self.N + 1)))
                i_per = i_cog = i
            else:
                i_per, i_cog = int(torch.argmax(s_per)), int(torch.argmax(s_cog))
            self._merge(per, i_per)
            self._merge(cog, i_cog)
            self.merges[b] += 1

    @staticmethod
    def _adjacent_sims(bank: list[Entry]) -> torch.Tensor:
        """Mean per-token cosine of adjacent entries [len(bank) - 1], pair by pair with a host sync each, as
        the release computes it (then ``torch.tensor(sims)``: float32)."""
        sims = []
        for i in range(len(bank) - 1):
            sims.append(F.cosine_similarity(bank[i][3], bank[i + 1][3], dim=-1).mean().item())
        return torch.tensor(sims)

    def _merge(self, bank: list[Entry], i: int) -> None:
        """Replace entries i, i+1 by their (size-weighted or 0.5/0.5) average."""
        a, b = bank[i], bank[i + 1]
        if self.config.merge_weighting == "count":
            w = a[2] / (a[2] + b[2])
            feat = a[3] * w + b[3] * (1.0 - w)
        else:
            feat = a[3] * 0.5 + b[3] * 0.5
        bank[i] = [a[0], b[1], a[2] + b[2], feat]
        del bank[i + 1]

    # ----- read -----------------------------------------------------------------------------------------
    def stream_state(self, b: int) -> dict[str, torch.Tensor]:
        """Stream b's lists as a one-row, unpadded state (entries L' = len(list), oldest first)."""
        per, cog = self.per.get(self.episode[b], []), self.cog.get(self.episode[b], [])
        n = len(per)
        D = self.config.dim
        if n:
            tokens = torch.cat([torch.stack([e[3] for e in per]), torch.stack([e[3] for e in cog])], 1)
        else:
            tokens = torch.zeros(0, self.N + 1, D, device=self.device)
        count = torch.tensor([[p[2], c[2]] for p, c in zip(per, cog)], dtype=torch.long).view(n, 2)
        span = torch.tensor([[[p[0], p[1]], [c[0], c[1]]] for p, c in zip(per, cog)], dtype=torch.long).view(n, 2, 2)
        last = per[-1][1] if n else -1
        return {"tokens": tokens[None], "count": count[None].to(self.device), "span": span[None].to(self.device),
                "valid": torch.ones(1, n, dtype=torch.bool, device=self.device),
                "last_id": torch.tensor([last], device=self.device)}

    @torch.no_grad()
    def read(self, query: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per stream: fused tokens [N+1,D] for query [B,N+1,D], one retrieval call per stream."""
        if query is None:
            raise ValueError("CognitiveListReference.read needs the working-memory query [B,N+1,D]")
        out = []
        for b in range(len(self.episode)):
            s = self.stream_state(b)
            # an empty bank reads back the query itself (the release returns q)
            out.append(self.memory.fuse(s, query[b:b + 1]).tokens[0] if s["valid"].shape[1] else query[b])
        return out

    def as_state(self) -> dict[str, torch.Tensor]:
        """All streams padded to capacity, right-aligned (the batched bank's layout), for exact comparison."""
        c = self.config
        L = c.capacity
        rows = []
        for b in range(len(self.episode)):
            s = self.stream_state(b)
            n = s["valid"].shape[1]
            pad = L - n
            rows.append({
                "tokens": F.pad(s["tokens"], (0, 0, 0, 0, pad, 0)),
                "count": F.pad(s["count"], (0, 0, pad, 0)),
                "span": F.pad(s["span"], (0, 0, 0, 0, pad, 0), value=-1),
                "valid": F.pad(s["valid"], (pad, 0)),
                "merges": torch.tensor([self.merges[b]]),
            })
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}

    def nbytes_per_stream(self) -> list[int]:
        """Tensor bytes held by each stream's entries (both banks)."""
        out = []
        for ep in self.episode:
            entries = self.per.get(ep, []) + self.cog.get(ep, [])
            out.append(sum(e[3].numel() * e[3].element_size() for e in entries))
        return out


def make_reference(config: CognitiveConfig, batch_size: int, device: torch.device | str = "cpu"
                   ) -> CognitiveListReference:
    """The benchmark's entry point (see embodimem.bench.reference)."""
    return CognitiveListReference(config, batch_size, device)
