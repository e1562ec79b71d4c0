"""A batched semantic topology graph (Mem4Nav-style): nodes are places, edges are traversals.

State (leading dim B; M = max_nodes):
  node_emb float [B,M,D], node_pos float [B,M,3]  running means of the embeddings / positions assigned to a node
  node_count int64 [B,M], node_valid bool [B,M], node_first/node_last int64 [B,M]  (merge count, time span)
  edge_w float [B,M,M], edge_n int64 [B,M,M]     symmetric; edge_w is the running mean of the traversal
                                                   weights alpha*|p_u - p_v| + beta*cost, edge_n their number
  node_current int64 [B]  node of the latest observation (-1 before the first)
  node_overflow int64 [B] observations that wanted a new node while all M were taken

Update rule per observation (v, p): u* = argmin over valid nodes of |v - emb_u| (L2; ties -> lower index).
If there is no node or that distance is > delta, a new node takes the lowest free index (emb = v, pos = p);
if none is free the observation joins u* and ``node_overflow`` counts it. Otherwise u*'s emb and pos move
to the running means. Then, if the previous current node exists and differs, the edge (previous, new) gets
the weight computed from the *updated* node positions. Shortest paths: Floyd-Warshall over nodes (a loop
over nodes, vectorized over envs); among equal-length paths the one Floyd-Warshall finds first is kept
(intermediate nodes are tried in increasing index order and only a strictly shorter path replaces one).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

State = dict[str, Tensor]

__all__ = ["TopologyGraph"]


class TopologyGraph:
    """Static parameters plus functional ops on the graph's entries of a state dict."""

    KEYS = ("node_emb", "node_pos", "node_count", "node_valid", "node_first", "node_last", "edge_w", "edge_n",
            "node_current", "node_overflow")

    def __init__(self, max_nodes: int, dim: int, delta: float, alpha: float = 1.0, beta: float = 0.5):
        if max_nodes <= 0:
            raise ValueError(f"TopologyGraph.max_nodes must be > 0, got {max_nodes}")
        if not delta >= 0 or not alpha >= 0 or not beta >= 0:
            raise ValueError(f"TopologyGraph: delta, alpha, beta must be >= 0 (non-negative edge weights), "
                             f"got delta={delta}, alpha={alpha}, beta={beta}")
        self.max_nodes, self.dim, self.delta, self.alpha, self.beta = max_nodes, dim, delta, alpha, beta

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Empty graph for ``batch_size`` envs."""
        B, M = batch_size, self.max_nodes
        i64 = dict(dtype=torch.int64, device=device)
        return {
            "node_emb": torch.zeros(B, M, self.dim, device=device),
            "node_pos": torch.zeros(B, M, 3, device=device),
            "node_count": torch.zeros(B, M, **i64),
            "node_valid": torch.zeros(B, M, dtype=torch.bool, device=device),
            "node_first": torch.full((B, M), -1, **i64),
            "node_last": torch.full((B, M), -1, **i64),
            "edge_w": torch.zeros(B, M, M, device=device),
            "edge_n": torch.zeros(B, M, M, **i64),
            "node_current": torch.full((B,), -1, **i64),
            "node_overflow": torch.zeros(B, **i64),
        }

    @torch.no_grad()
    def update(self, state: State, emb: Tensor, pos: Tensor, step: Tensor, cost: Tensor | None = None) -> State:
        """Assign observation embedding emb [B,D] at position pos [B,3] (metres); traversal cost [B] >= 0."""
        M = self.max_nodes
        valid = state["node_valid"]
        emb = emb.to(state["node_emb"].dtype)
        pos = pos.to(state["node_pos"].dtype)
        d = (state["node_emb"] - emb[:, None]).norm(dim=-1).masked_fill(~valid, math.inf)
        best_d, nearest = d.min(dim=1)  # the first minimum: ties -> lower index
        has_free = ~valid.all(1)
        want_new = ~(best_d <= self.delta)  # also True for an empty graph (inf)
        u = torch.where(want_new & has_free, valid.long().argmin(1), nearest)  # argmin of 0/1 = first free slot
        ar = torch.arange(M, device=emb.device)
        at = ar == u[:, None]  # [B,M]
        count = state["node_count"] + at
        n = count.gather(1, u[:, None]).to(emb.dtype)[..., None]  # [B,1,1]
        fresh = at & ~valid  # a new node starts from zero, so its running mean is exactly the observation
        e0 = state["node_emb"].masked_fill(fresh[..., None], 0.0)
        p0 = state["node_pos"].masked_fill(fresh[..., None], 0.0)
        node_emb = torch.where(at[..., None], e0 + (emb[:, None] - e0) / n, e0)
        node_pos = torch.where(at[..., None], p0 + (pos[:, None] - p0) / n, p0)
        # traversal edge from the previous node (-1 matches no index); weights use the updated positions
        prev = state["node_current"]
        at_prev = (ar == prev[:, None]) & (prev != u)[:, None]
        e = at_prev[:, :, None] & at[:, None, :]
        e = e | e.transpose(1, 2)
        gap = ((node_pos * at_prev[..., None]).sum(1) - (node_pos * at[..., None]).sum(1)).norm(dim=-1)
        w = self.alpha * gap if cost is None else self.alpha * gap + self.beta * cost.to(gap.dtype)
        edge_n = state["edge_n"] + e
        ew = state["edge_w"]
        edge_w = torch.where(e, ew + (w[:, None, None] - ew) / edge_n.clamp(min=1), ew)
        return {
            "node_emb": node_emb,
            "node_pos": node_pos,
            "node_count": count,
            "node_valid": valid | at,
            "node_first": torch.where(fresh, step[:, None], state["node_first"]),
            "node_last": torch.where(at, step[:, None], state["node_last"]),
            "edge_w": edge_w,
            "edge_n": edge_n,
            "node_current": u,
            "node_overflow": state["node_overflow"] + (want_new & ~has_free),
        }

    @staticmethod
    def all_pairs(state: State) -> tuple[Tensor, Tensor]:
        """Floyd-Warshall: (dist float64 [B,M,M], inf = unreachable; next hop int64 [B,M,M], -1 = none)."""
        valid, n = state["node_valid"], state["edge_n"]
        B, M = valid.shape
        dev = valid.device
        eye = torch.eye(M, dtype=torch.bool, device=dev)[None]
        edge = n > 0
        D = torch.where(edge, state["edge_w"].to(torch.float64), torch.full((B, M, M), math.inf, device=dev,
                                                                             dtype=torch.float64))
        both = valid[:, :, None] & valid[:, None, :]
        D = torch.where(eye & both, torch.zeros_like(D), D)
        ar = torch.arange(M, device=dev)
        nxt = torch.where(edge | (eye & both), ar[None, None, :].expand(B, M, M), torch.full_like(n, -1))
        for k in range(M):  # a loop over nodes (static M), vectorized over envs and node pairs
            via = D[:, :, k:k + 1] + D[:, k:k + 1, :]
            better = via < D
            D = torch.where(better, via, D)
            nxt = torch.where(better, nxt[:, :, k:k + 1].expand(B, M, M), nxt)
        return D, nxt

    @staticmethod
    def shortest_path(state: State, src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
        """Shortest path src [B] -> dst [B]: (length float64 [B], inf if none; nodes int64 [B,M], -1 padded)."""
        D, nxt = TopologyGraph.all_pairs(state)
        B, M = state["node_valid"].shape
        src, dst = src.long(), dst.long()
        ok = (src >= 0) & (src < M) & (dst >= 0) & (dst < M)
        s, t = src.clamp(0, M - 1), dst.clamp(0, M - 1)
        rows = torch.arange(B, device=src.device)
        length = torch.where(ok, D[rows, s, t], torch.full_like(D[:, 0, 0], math.inf))
        reach = torch.isfinite(length)
        path = torch.full((B, M), -1, dtype=torch.int64, device=src.device)
        cur, alive = s, reach
        for i in range(M):  # a simple path visits at most M nodes
            path[:, i] = torch.where(alive, cur, path[:, i])
            alive = alive & (cur != t)
            cur = torch.where(alive, nxt[rows, cur, t], cur)
        return length, path
