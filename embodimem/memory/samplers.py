"""Training samplers that let memory semantics in training match inference (DESIGN rule 5).

``StreamingEpisodeSampler`` yields [B,T] chunks in which each row streams whole episodes back to back: a row
continues its episode across chunks (carry the memory state from one chunk to the next), and the next
episode starts in the same row with ``is_first`` set. Episodes longer than a memory's capacity therefore
exercise eviction and merging in training -- unlike MemoryVLA's ``group`` loader, which clears the bank
every 16 frames, so its merge never runs in training.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

Episode = torch.Tensor | Mapping[str, torch.Tensor]


@dataclass
class StreamChunk:
    """One [B,T] chunk. ``data``: a tensor [B,T,...] or a dict of them (as the episodes were given).

    is_first bool [B,T]: an episode starts here (padding steps are flagged too, so a memory fed them holds
    only padding); episode int64 [B,T]: index into the episode list (-1 on padding); t int64 [B,T]: step
    within the episode (-1 on padding); valid bool [B,T]: False on padding (mask the loss with it).
    """

    data: torch.Tensor | dict[str, torch.Tensor]
    is_first: torch.Tensor
    episode: torch.Tensor
    t: torch.Tensor
    valid: torch.Tensor


class StreamingEpisodeSampler:
    """Deal episodes (tensors [T_e,...] or dicts of them) to B rows and yield [B,chunk_len] ``StreamChunk``s.

    Each ``iter()`` is one epoch: episodes are shuffled (``seed`` + epoch) and a row that finishes its episode
    takes the next one from the shared queue (rows in index order). The epoch ends at the first chunk some row
    cannot fill (``pad_last=False``, every yielded step is real data) or, with ``pad_last=True``, once every
    episode has been streamed (rows that run dry are padded with zeros, valid=False).
    """

    def __init__(self, episodes: Sequence[Episode], batch_size: int, chunk_len: int, *, shuffle: bool = True,
                 seed: int = 0, pad_last: bool = False):
        if batch_size <= 0:
            raise ValueError(f"StreamingEpisodeSampler.batch_size must be > 0, got {batch_size}")
        if chunk_len <= 0:
            raise ValueError(f"StreamingEpisodeSampler.chunk_len must be > 0, got {chunk_len}")
        if len(episodes) < batch_size and not pad_last:
            raise ValueError(f"StreamingEpisodeSampler: {len(episodes)} episodes cannot fill batch_size="
                             f"{batch_size} rows (pass pad_last=True or fewer rows)")
        self.lengths = [_length(e, i) for i, e in enumerate(episodes)]
        self.episodes = list(episodes)
        self.batch_size, self.chunk_len = batch_size, chunk_len
        self.shuffle, self.seed, self.pad_last = shuffle, seed, pad_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle of the next ``iter()`` (as with DistributedSampler)."""
        self.epoch = epoch

    def order(self) -> list[int]:
        """The episode order of the current epoch."""
        n = len(self.episodes)
        if not self.shuffle:
            return list(range(n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(n, generator=g).tolist()

    def __iter__(self) -> Iterator[StreamChunk]:
        queue = self.order()
        self.epoch += 1
        B, T = self.batch_size, self.chunk_len
        cur: list[list[int] | None] = [None] * B  # per row: [episode index, next step]
        while True:
            pieces: list[list[tuple[int, int, int]]] = []  # per row: (episode or -1, start, length)
            for b in range(B):
                need, row = T, []
                while need > 0:
                    if cur[b] is None or cur[b][1] >= self.lengths[cur[b][0]]:
                        cur[b] = [queue.pop(0), 0] if queue else None
                    if cur[b] is None:
                        if not self.pad_last:
                            return
                        row.append((-1, 0, need))
                        break
                    e, s = cur[b]
                    k = min(need, self.lengths[e] - s)
                    row.append((e, s, k))
                    cur[b][1] += k
                    need -= k
                pieces.append(row)
            if all(e < 0 for row in pieces for e, _, _ in row):
                return
            yield self._assemble(pieces)

    def _assemble(self, pieces: list[list[tuple[int, int, int]]]) -> StreamChunk:
        """Stack per-row (episode, start, length) pieces into a chunk."""
        B, T = self.batch_size, self.chunk_len
        episode = torch.full((B, T), -1, dtype=torch.long)
        t = torch.full((B, T), -1, dtype=torch.long)
        rows = []
        for b, row in enumerate(pieces):
            parts, pos = [], 0
            for e, s, k in row:
                if e >= 0:
                    parts.append(_slice(self.episodes[e], s, s + k))
                    episode[b, pos:pos + k] = e
                    t[b, pos:pos + k] = torch.arange(s, s + k)
                else:
                    parts.append(_zeros_like(self.episodes[0], k))
                pos += k
            rows.append(_cat(parts))
        valid = episode >= 0
        is_first = (t == 0) | ~valid
        return StreamChunk(data=_stack(rows), is_first=is_first, episode=episode, t=t, valid=valid)


def _length(e: Episode, i: int) -> int:
    if isinstance(e, Mapping):
        lens = {k: v.shape[0] for k, v in e.items()}
        if len(set(lens.values())) != 1:
            raise ValueError(f"episode {i}: fields disagree on the length: {lens}")
        n = next(iter(lens.values()))
    else:
        n = e.shape[0]
    if n <= 0:
        raise ValueError(f"episode {i} is empty")
    return n


def _slice(e: Episode, a: int, b: int) -> Episode:
    return {k: v[a:b] for k, v in e.items()} if isinstance(e, Mapping) else e[a:b]


def _zeros_like(e: Episode, k: int) -> Episode:
    if isinstance(e, Mapping):
        return {key: v.new_zeros(k, *v.shape[1:]) for key, v in e.items()}
    return e.new_zeros(k, *e.shape[1:])


def _cat(parts: list[Episode]) -> Episode:
    if isinstance(parts[0], Mapping):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def _stack(rows: list[Episode]) -> torch.Tensor | dict[str, torch.Tensor]:
    if isinstance(rows[0], Mapping):
        return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    return torch.stack(rows)
