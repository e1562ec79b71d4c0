"""Topology graph and short-term memory against plain-Python oracles: node creation/update, traversal edges,
shortest paths (Dijkstra), STM eviction (lambda*freq - (1-lambda)*age), frequency bumps, radius + cosine read."""

from __future__ import annotations

import heapq
import math

import pytest
import torch

from embodimem.spatial.stm import ShortTermMemory
from embodimem.spatial.topology import TopologyGraph


def norm(v) -> float:
    return math.sqrt(sum(x * x for x in v))


class RefGraph:
    def __init__(self, M: int, delta: float, alpha: float, beta: float):
        self.M, self.delta, self.alpha, self.beta = M, delta, alpha, beta
        self.nodes: list[dict] = []
        self.edges: dict[tuple[int, int], list[float]] = {}
        self.current, self.overflow = -1, 0

    def update(self, v, p, step: int, cost: float) -> None:
        d = [norm([a - b for a, b in zip(v, n["emb"])]) for n in self.nodes]
        best = min(range(len(d)), key=lambda i: (d[i], i)) if d else -1
        if best < 0 or d[best] > self.delta:
            if len(self.nodes) < self.M:
                self.nodes.append({"emb": list(v), "pos": list(p), "count": 1, "first": step, "last": step})
                u = len(self.nodes) - 1
                best = None
            else:
                self.overflow += 1
        if best is not None:
            u = best
            n = self.nodes[u]
            n["count"] += 1
            n["emb"] = [a + (b - a) / n["count"] for a, b in zip(n["emb"], v)]
            n["pos"] = [a + (b - a) / n["count"] for a, b in zip(n["pos"], p)]
            n["last"] = step
        if self.current >= 0 and self.current != u:
            w = self.alpha * norm([a - b for a, b in zip(self.nodes[self.current]["pos"], self.nodes[u]["pos"])]) \
                + self.beta * cost
            for e in ((self.current, u), (u, self.current)):
                rec = self.edges.setdefault(e, [0.0, 0])
                rec[1] += 1
                rec[0] += (w - rec[0]) / rec[1]
        self.current = u


def test_graph_updates_match_oracle():
    M, D, B, T = 6, 4, 2, 60
    graph = TopologyGraph(M, D, delta=0.5, alpha=1.0, beta=0.5)
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(B, 9, D, generator=g) * 3  # 9 places > M nodes: creation, updates and overflow
    st = graph.init_state(B)
    refs = [RefGraph(M, 0.5, 1.0, 0.5) for _ in range(B)]
    for t in range(T):
        which = torch.randint(0, 9, (B,), generator=g)
        v = protos[torch.arange(B), which] + 0.05 * torch.randn(B, D, generator=g)
        p = which[:, None].float() * torch.tensor([1.0, 0.5, 0.0]) + 0.1 * torch.randn(B, 3, generator=g)
        cost = torch.rand(B, generator=g)
        st = graph.update(st, v, p, torch.full((B,), t), cost)
        for b in range(B):
            refs[b].update(v[b].tolist(), p[b].tolist(), t, float(cost[b]))
    for b, ref in enumerate(refs):
        n = len(ref.nodes)
        assert st["node_valid"][b].tolist() == [True] * n + [False] * (M - n)
        torch.testing.assert_close(st["node_emb"][b, :n], torch.tensor([x["emb"] for x in ref.nodes]))
        torch.testing.assert_close(st["node_pos"][b, :n], torch.tensor([x["pos"] for x in ref.nodes]))
        assert st["node_count"][b, :n].tolist() == [x["count"] for x in ref.nodes]
        assert st["node_first"][b, :n].tolist() == [x["first"] for x in ref.nodes]
        assert st["node_last"][b, :n].tolist() == [x["last"] for x in ref.nodes]
        assert int(st["node_current"][b]) == ref.current and int(st["node_overflow"][b]) == ref.overflow > 0
        edges = {(i, j) for i in range(M) for j in range(M) if st["edge_n"][b, i, j] > 0}
        assert edges == set(ref.edges)
        for (i, j), (w, cnt) in ref.edges.items():
            assert int(st["edge_n"][b, i, j]) == cnt
            assert float(st["edge_w"][b, i, j]) == pytest.approx(w, rel=1e-4, abs=1e-5)


def dijkstra(adj: dict[int, dict[int, float]], src: int) -> dict[int, float]:
    dist, heap = {src: 0.0}, [(0.0, src)]
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist.get(u, math.inf):
            continue
        for v, w in adj.get(u, {}).items():
            if d + w < dist.get(v, math.inf):
                dist[v] = d + w
                heapq.heappush(heap, (d + w, v))
    return dist


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shortest_paths_match_dijkstra(seed):
    B, M = 3, 9
    g = torch.Generator().manual_seed(seed)
    graph = TopologyGraph(M, 2, delta=0.1)
    st = graph.init_state(B)
    valid = torch.rand(B, M, generator=g) < 0.85
    w = torch.rand(B, M, M, generator=g) * 5
    w = (w + w.transpose(1, 2)) / 2
    edge = (torch.rand(B, M, M, generator=g) < 0.3).triu(1)
    edge = (edge | edge.transpose(1, 2)) & valid[:, :, None] & valid[:, None, :]
    st.update(node_valid=valid, edge_w=torch.where(edge, w, 0.0), edge_n=edge.long())
    D, _ = graph.all_pairs(st)
    for b in range(B):
        adj: dict[int, dict[int, float]] = {}
        for i, j in edge[b].nonzero().tolist():
            adj.setdefault(i, {})[j] = float(w[b, i, j])
        for s in range(M):
            want = dijkstra(adj, s) if valid[b, s] else {}
            for t in range(M):
                expect = want.get(t, math.inf)
                assert float(D[b, s, t]) == pytest.approx(expect, rel=1e-9, abs=1e-6)
                length, path = graph.shortest_path(st, torch.full((B,), s), torch.full((B,), t))
                nodes = [n for n in path[b].tolist() if n >= 0]
                if expect == math.inf:
                    assert nodes == [] and float(length[b]) == math.inf
                    continue
                assert nodes[0] == s and nodes[-1] == t and len(set(nodes)) == len(nodes)
                hops = sum(adj[u][v] for u, v in zip(nodes, nodes[1:]))  # every hop is an edge
                assert hops == pytest.approx(expect, rel=1e-6, abs=1e-6)


class RefSTM:
    def __init__(self, K: int, lam: float):
        self.K, self.lam, self.slots, self.evicted = K, lam, [None] * K, 0

    def update(self, key: int, emb, pos, node: int, node_pos, step: int) -> None:
        if key < 0:
            return
        absp = lambda e: [a + r for a, r in zip(node_pos[e["node"]], e["rel"])]  # noqa: E731
        for e in self.slots:
            if e is not None and e["key"] == key:
                e["freq"] += 1
                e["emb"] = [a + (b - a) / e["freq"] for a, b in zip(e["emb"], emb)]
                a_old = absp(e)
                a_new = [a + (b - a) / e["freq"] for a, b in zip(a_old, pos)]
                e["node"], e["rel"], e["last"] = node, [a - b for a, b in zip(a_new, node_pos[node])], step
                return
        free = [i for i, e in enumerate(self.slots) if e is None]
        if free:
            i = free[0]
        else:
            score = [self.lam * e["freq"] - (1 - self.lam) * (step - e["last"]) for e in self.slots]
            i = min(range(self.K), key=lambda j: (score[j], j))
            self.evicted += 1
        self.slots[i] = {"key": key, "emb": list(emb), "node": node, "freq": 1, "first": step, "last": step,
                         "rel": [a - b for a, b in zip(pos, node_pos[node])]}

    def read(self, q, qpos, node_pos, radius: float, k: int, tau: float):
        cands = []
        for i, e in enumerate(self.slots):
            if e is None:
                continue
            p = [a + r for a, r in zip(node_pos[e["node"]], e["rel"])]
            if sum((a - b) ** 2 for a, b in zip(p, qpos)) <= radius * radius:
                cos = sum(a * b for a, b in zip(e["emb"], q)) / max(norm(e["emb"]) * norm(q), 1e-8)
                cands.append((-cos, i))
        top = sorted(cands)[:k]
        return [i for _, i in top], [-c for c, _ in top], bool(top) and -top[0][0] >= tau


def test_stm_eviction_frequency_and_read_match_oracle():
    B, K, D, M, T = 2, 5, 6, 4, 80
    stm = ShortTermMemory(K, D, lam=0.5, radius=1.5, k=3, tau=0.3)
    g = torch.Generator().manual_seed(0)
    st = stm.init_state(B)
    refs = [RefSTM(K, 0.5) for _ in range(B)]
    embs = torch.randn(B, 12, D, generator=g)
    for t in range(T):
        key = torch.randint(-1, 12, (B,), generator=g)  # key -1 writes nothing; 12 keys > K slots
        emb = embs[torch.arange(B), key.clamp(min=0)] + 0.1 * torch.randn(B, D, generator=g)
        pos = torch.rand(B, 3, generator=g) * 3
        node = torch.randint(0, M, (B,), generator=g)
        node_pos = torch.rand(B, M, 3, generator=g) * 3  # nodes drift: entries move with their anchor
        st = stm.update(st, key, emb, pos, node, node_pos, torch.full((B,), t))
        q, qpos = torch.randn(B, D, generator=g), torch.rand(B, 3, generator=g) * 3
        slots, sims, found, hit = stm.read(st, q, qpos, node_pos)
        for b in range(B):
            refs[b].update(int(key[b]), emb[b].tolist(), pos[b].tolist(), int(node[b]), node_pos[b].tolist(), t)
            want_slots, want_sims, want_hit = refs[b].read(q[b].tolist(), qpos[b].tolist(), node_pos[b].tolist(),
                                                           1.5, 3, 0.3)
            assert [s for s in slots[b].tolist() if s >= 0] == want_slots
            torch.testing.assert_close(sims[b, :len(want_slots)], torch.tensor(want_sims), atol=1e-5, rtol=1e-5)
            assert bool(hit[b]) == want_hit
    for b, ref in enumerate(refs):
        held = [e for e in ref.slots if e is not None]
        assert st["stm_key"][b].tolist() == [e["key"] if e else -1 for e in ref.slots]
        assert st["stm_freq"][b].tolist() == [e["freq"] if e else 0 for e in ref.slots]
        assert st["stm_first"][b, st["stm_valid"][b]].tolist() == [e["first"] for e in held]
        assert int(st["stm_evicted"][b]) == ref.evicted > 0


def test_stm_evicts_low_frequency_and_old_entries():
    stm = ShortTermMemory(3, 2, lam=0.5, radius=10.0, k=1, tau=0.9)
    st = stm.init_state(1)
    node_pos = torch.zeros(1, 1, 3)
    zero = torch.zeros(1, dtype=torch.long)

    def put(key: int, t: int):
        return stm.update(st, torch.tensor([key]), torch.tensor([[1.0, float(key)]]), torch.zeros(1, 3), zero,
                          node_pos, torch.tensor([t]))

    for t, key in enumerate([10, 11, 12, 10, 10]):  # key 10 is re-inserted: frequency 3, not a new entry
        st = put(key, t)
    assert st["stm_key"].tolist() == [[10, 11, 12]] and st["stm_freq"].tolist() == [[3, 1, 1]]
    # scores at t=5: 0.5*3 - 0.5*1 = 1.0, 0.5*1 - 0.5*4 = -1.5, 0.5*1 - 0.5*3 = -1.0 -> key 11 goes
    st = put(13, 5)
    assert st["stm_key"].tolist() == [[10, 13, 12]] and int(st["stm_evicted"]) == 1
    torch.testing.assert_close(stm.scores(st, torch.tensor([6])), torch.tensor([[0.5, 0.0, -1.5]], dtype=torch.float64))
    # equal scores -> the lower slot is evicted
    st = stm.update(stm.init_state(1), torch.tensor([1]), torch.ones(1, 2), torch.zeros(1, 3), zero, node_pos, zero)
    for key in (2, 3, 4):
        st = stm.update(st, torch.tensor([key]), torch.ones(1, 2), torch.zeros(1, 3), zero, node_pos, zero)
    assert st["stm_key"].tolist() == [[4, 2, 3]]


def test_stm_read_radius_is_inclusive_and_below_tau_misses():
    stm = ShortTermMemory(2, 2, radius=1.0, k=2, tau=0.8)
    st = stm.init_state(1)
    zero = torch.zeros(1, dtype=torch.long)
    node_pos = torch.tensor([[[5.0, 0.0, 0.0]]])
    for key, emb, x in ((1, [1.0, 0.0], 6.0), (2, [0.0, 1.0], 7.5)):
        pos = torch.tensor([[x, 0.0, 0.0]])
        st = stm.update(st, torch.tensor([key]), torch.tensor([emb]), pos, zero, node_pos, zero)
    assert st["stm_rel"][0, 0].tolist() == [1.0, 0.0, 0.0]  # stored relative to the anchor node
    slots, sims, found, hit = stm.read(st, torch.tensor([[1.0, 0.0]]), torch.tensor([[5.0, 0.0, 0.0]]), node_pos)
    assert slots.tolist() == [[0, -1]] and bool(hit)  # distance exactly 1.0 is inside; 2.5 is not
    slots, sims, found, hit = stm.read(st, torch.tensor([[1.0, 1.0]]), torch.tensor([[7.0, 0.0, 0.0]]), node_pos)
    assert slots.tolist() == [[0, 1]] and not bool(hit)  # best cosine 0.707 < tau: the caller falls back
    moved = node_pos + torch.tensor([10.0, 0.0, 0.0])  # the anchor moved: its entries moved with it
    slots, *_ = stm.read(st, torch.tensor([[1.0, 0.0]]), torch.tensor([[5.0, 0.0, 0.0]]), moved)
    assert slots.tolist() == [[-1, -1]]


def test_parameter_validation():
    with pytest.raises(ValueError, match="max_nodes"):
        TopologyGraph(0, 4, 0.5)
    with pytest.raises(ValueError, match="non-negative"):
        TopologyGraph(4, 4, 0.5, alpha=-1.0)
    with pytest.raises(ValueError, match="k <= size"):
        ShortTermMemory(2, 4, k=3)
    with pytest.raises(ValueError, match="lam"):
        ShortTermMemory(4, 4, lam=1.5, k=2)
