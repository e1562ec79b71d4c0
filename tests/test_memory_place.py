"""place: eviction policies against a brute-force list oracle; the read is HCAM with places as chunks."""

from __future__ import annotations

import pytest
import torch

from embodimem.memory import make_memory
from embodimem.memory.chunk_attention import ChunkAttention
from embodimem.memory.place import POLICIES, grid_place_ids

P, C, L = 4, 3, 8  # places, entries per place, entries in total (a place can fill before the memory does)


def place_mem(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    base = dict(dim=8, tokens_per_step=2, num_places=P, place_capacity=C, capacity=L, top_k=2, heads=2)
    return make_memory("place", **{**base, **kw}).eval()


class ListOracle:
    """One env, the way research code would write it: a Python list of (step, place, tokens)."""

    def __init__(self, policy: str):
        self.policy, self.entries, self.visits, self.step = policy, [], [0] * P, 0

    def write(self, place: int, tok: torch.Tensor) -> None:
        self.visits[place] += 1
        in_place = [e for e in self.entries if e[1] == place]
        if len(in_place) == C:
            cands = in_place
        elif len(self.entries) >= L:
            cands = list(self.entries)
        else:
            cands = []
        if cands:
            if self.policy == "fifo":
                victim = min(cands, key=lambda e: e[0])
            elif self.policy == "lifo":
                victim = max(cands, key=lambda e: e[0])
            else:
                places = sorted({e[1] for e in cands})
                pick = max if self.policy == "mvfo" else min
                best = pick(self.visits[p] for p in places)
                p = min(q for q in places if self.visits[q] == best)  # ties -> lower place id
                victim = min((e for e in cands if e[1] == p), key=lambda e: e[0])
            self.entries.remove(victim)
        self.entries.append((self.step, place, tok))
        self.step += 1

    def by_place(self) -> list[list[tuple[int, torch.Tensor]]]:
        return [[(s, tok) for s, q, tok in self.entries if q == p] for p in range(P)]


def skewed_places(B: int, T: int, g: torch.Generator) -> torch.Tensor:
    """Place 0 is a hub (half the visits), so most/least-visited differ and places overflow."""
    hub = torch.rand(B, T, generator=g) < 0.5
    return torch.where(hub, 0, torch.randint(0, P, (B, T), generator=g))


@pytest.mark.parametrize("policy", [*POLICIES, "per-row"])
def test_eviction_matches_list_oracle(policy):
    mem = place_mem(policy="fifo")
    B, T = 4, 30
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, 2, 8, generator=g)
    place = skewed_places(B, T, g)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 17] = True
    if policy == "per-row":
        pol = torch.tensor([1, 3, 2, 0])
    else:
        pol = torch.full((B,), POLICIES.index(policy))
    oracles = [ListOracle(POLICIES[int(p)]) for p in pol]
    state = mem.init_state(B)
    evictions = 0
    for t in range(T):
        _, state = mem.step(state, x[:, t], is_first=is_first[:, t], place=place[:, t], policy=pol)
        for b in range(B):
            if is_first[b, t]:
                oracles[b] = ListOracle(POLICIES[int(pol[b])])
            held = len(oracles[b].entries)
            oracles[b].write(int(place[b, t]), x[b, t])
            evictions += len(oracles[b].entries) == held
            for p, want in enumerate(oracles[b].by_place()):
                n = len(want)
                assert state["valid"][b, p].tolist() == [True] * n + [False] * (C - n), (t, b, p)
                assert state["ids"][b, p, :n].tolist() == [s for s, _ in want], (t, b, p)
                if n:
                    assert torch.equal(state["tokens"][b, p, :n], torch.stack([tok for _, tok in want]))
                assert torch.all(state["tokens"][b, p, n:] == 0) and torch.all(state["ids"][b, p, n:] == -1)
            assert state["visits"][b].tolist() == oracles[b].visits
    assert evictions > 20  # both the memory bound and full places were exercised


def test_policies_keep_what_they_promise():
    """Closed-form cases: a 6-step episode into L=4 (no place overflows)."""
    places = [0, 1, 0, 2, 0, 3]  # visits: place 0 x3, others x1
    kept = {}
    for pol in POLICIES:
        mem = place_mem(place_capacity=4, capacity=4, policy=pol)
        state = mem.init_state(1)
        for p in places:
            state = mem.write(state, torch.randn(1, 2, 8), place=torch.tensor([p]))
        kept[pol] = sorted(i for i in state["ids"].flatten().tolist() if i >= 0)
    assert kept["fifo"] == [2, 3, 4, 5]
    assert kept["lifo"] == [0, 1, 2, 5]  # the first L-1 and the newest
    assert kept["mvfo"] == [1, 3, 4, 5]  # place 0 (most visited) lost its two oldest
    # step 4: fewest visits among held places 0(3),1(1),2(1) -> place 1 (lower id); step 5: place 2
    assert kept["lvfo"] == [0, 2, 4, 5]


def test_read_is_the_hcam_read_with_places_as_chunks():
    """The same ChunkAttention class and weights give the same read as hcam over equivalent chunks."""
    mem = place_mem(place_capacity=3, capacity=12)
    hcam = make_memory("hcam", dim=8, tokens_per_step=2, chunk_size=3, num_chunks=P, top_k=2, heads=2).eval()
    assert type(mem.attn) is ChunkAttention and type(hcam.attn) is ChunkAttention
    hcam.attn.load_state_dict(mem.attn.state_dict())
    x = torch.randn(2, 3 * P, 2, 8)
    s_p, s_h = mem.init_state(2), hcam.init_state(2)
    for t in range(3 * P):  # place p receives steps 3p..3p+2: exactly hcam's chunk p
        s_p = mem.write(s_p, x[:, t], place=torch.full((2,), t // 3))
        s_h = hcam.write(s_h, x[:, t])
    q = torch.randn(2, 5, 8)
    r_p, r_h = mem.read(s_p, q), hcam.read(s_h, q)
    torch.testing.assert_close(r_p.tokens, r_h.tokens[:, :5], rtol=1e-5, atol=1e-6)
    assert torch.equal(r_p.extras["chunk_index"], r_h.extras["chunk_index"])
    assert torch.equal(r_p.time_span, r_h.time_span[:, :5]) and torch.equal(r_p.source_ids, r_h.source_ids[:, :5])


def test_partially_filled_places_mask_their_empty_entries():
    mem = place_mem(top_k=1)
    state = mem.init_state(1)
    toks = torch.randn(2, 2, 8)
    for i, p in enumerate([2, 2]):
        state = mem.write(state, toks[i : i + 1], place=torch.tensor([p]))
    q = torch.randn(1, 3, 8)
    r = mem.read(state, q)
    kv = (toks + mem.attn.pe[:2, None]).reshape(1, 4, 8)
    want, _ = mem.attn.mha(q, kv, kv, need_weights=False)
    torch.testing.assert_close(r.tokens, want, rtol=1e-5, atol=1e-6)
    assert r.extras["chunk_index"].flatten().tolist() == [2, 2, 2] and r.time_span[0, 0].tolist() == [0, 1]


def test_ties_go_to_the_lower_place_id():
    mem = place_mem(top_k=1)
    state = mem.init_state(1)
    tok = torch.randn(1, 2, 8)
    for p in (3, 1, 2):  # identical contents -> identical keys
        state = mem.write(state, tok, place=torch.tensor([p]))
    r = mem.read(state, torch.randn(1, 2, 8))
    assert r.extras["chunk_index"].flatten().tolist() == [1, 1]


def test_place_from_pose_grid():
    mem = place_mem(num_places=6, cell_size=0.5, grid_cols=3, grid_origin_u=-1.0, grid_origin_v=0.0)
    pose = torch.eye(4).repeat(2, 1, 1)
    pose[0, :3, 3] = torch.tensor([-0.9, 5.0, 0.1])  # col 0, row 0
    pose[1, :3, 3] = torch.tensor([0.4, -2.0, 0.7])  # col 2, row 1 -> 5
    state = mem.write(mem.init_state(2), torch.randn(2, 2, 8), pose=pose)
    assert state["valid"][0, 0, 0] and state["valid"][1, 5, 0]
    assert grid_place_ids(pose[:, :3, 3], cell_size=0.5, cols=3, rows=2, origin=(-1.0, 0.0)).tolist() == [0, 5]
    pose[1, 0, 3] = 0.6  # col 3: off the grid
    with pytest.raises(ValueError, match="outside the 3x2 grid"):
        mem.write(state, torch.randn(2, 2, 8), pose=pose)


def test_bad_inputs():
    mem = place_mem()
    state = mem.init_state(2)
    item = torch.randn(2, 2, 8)
    with pytest.raises(ValueError, match=r"out of range \[0, 4\)"):
        mem.write(state, item, place=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"out of range \[0, 4\)"):
        mem.step(state, item, is_first=torch.zeros(2, dtype=torch.bool), place=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="needs place"):
        mem.write(state, item)
    with pytest.raises(ValueError, match="integer"):
        mem.write(state, item, place=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        mem.write(state, item, place=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="policy"):
        mem.write(state, item, place=torch.tensor([0, 1]), policy=torch.tensor([0, 4]))
    state = mem.write(state, item, place=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"query must be \[B,Q,8\]"):
        mem.read(state, torch.randn(2, 1, 9))
    for kw, msg in [({"capacity": 0}, "capacity must be > 0"), ({"num_places": 0}, "num_places"),
                    ({"place_capacity": 0}, "place_capacity"), ({"capacity": 13}, "exceeds num_places"),
                    ({"top_k": 5}, "top_k=5 is larger than num_places=4"), ({"policy": "lru"}, "policy"),
                    ({"cell_size": 1.0, "grid_cols": 3}, "grid_cols"), ({"grid_axes": "xx"}, "grid_axes")]:
        with pytest.raises(ValueError, match=msg):
            place_mem(**kw)


def test_forward_with_per_row_policy_equals_stepping():
    mem = place_mem()
    B, T = 3, 20
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, T, 2, 8, generator=g)
    place = skewed_places(B, T, g)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    pol = torch.tensor([3, 2, 1])
    r, s = mem(mem.init_state(B), x, is_first=is_first, place=place, policy=pol)
    state = mem.init_state(B)
    for t in range(T):
        rt, state = mem.step(state, x[:, t], is_first=is_first[:, t], place=place[:, t], policy=pol)
        assert torch.equal(rt.tokens, r.tokens[:, t]) and torch.equal(rt.source_ids, r.source_ids[:, t])
    assert all(torch.equal(s[k], state[k]) for k in s)
