"""merge (MA-LMM's token-position-wise memory bank compression) against a per-stream, per-position list oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from embodimem.memory import make_memory
from embodimem.memory.merge import MergeConfig
from embodimem.memory.state import clone_state, states_equal


def oracle_step(bank: list[list[list]], x: torch.Tensor, fid: int, L: int) -> None:
    """One write to one stream: bank[n] = [[value [D], count, first, last], ...] in time order, per position n."""
    for n, slots in enumerate(bank):
        slots.append([x[n].clone(), 1, fid, fid])
        if len(slots) > L:
            sims = [float(F.cosine_similarity(slots[i][0], slots[i + 1][0], dim=0)) for i in range(len(slots) - 1)]
            k = max(range(len(sims)), key=lambda i: (sims[i], -i))  # most similar; ties -> earliest pair
            (xa, ca, fa, _), (xb, cb, _, lb) = slots[k], slots[k + 1]
            slots[k : k + 2] = [[(xa * ca + xb * cb) / (ca + cb), ca + cb, fa, lb]]


def stream(B: int, T: int, N: int, D: int, seed: int, p_reset: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, N, D, generator=g)
    is_first = torch.rand(B, T, generator=g) < p_reset
    is_first[:, 0] = True
    return x, is_first


def check_against(mem, state, banks) -> None:
    c = mem.config
    r = mem.read(state)
    B = r.mask.shape[0]
    tok = r.tokens.view(B, c.capacity, c.tokens_per_step, c.dim)
    cnt = r.extras["counts"].view(B, c.capacity, c.tokens_per_step)
    span = r.time_span.view(B, c.capacity, c.tokens_per_step, 2)
    for b in range(B):
        held = len(banks[b][0])
        assert int(r.mask[b].sum()) == held * c.tokens_per_step and bool(r.mask[b, : held * c.tokens_per_step].all())
        for n, slots in enumerate(banks[b]):
            for j, (v, cn, first, last) in enumerate(slots):
                torch.testing.assert_close(tok[b, j, n], v, atol=1e-5, rtol=1e-5)
                assert int(cnt[b, j, n]) == cn and span[b, j, n].tolist() == [first, last], (b, j, n)


@pytest.mark.parametrize("L,N", [(1, 2), (3, 4), (6, 3)])
def test_matches_per_position_list_oracle_with_resets(L, N):
    mem = make_memory("merge", dim=5, tokens_per_step=N, capacity=L)
    B, T = 3, 24
    x, is_first = stream(B, T, N, 5, seed=L)
    banks = [[[] for _ in range(N)] for _ in range(B)]
    last = [-1] * B
    state = mem.init_state(B)
    for t in range(T):
        fid = torch.tensor([0 if is_first[b, t] else last[b] + 1 + (b == 2) for b in range(B)])  # row 2: gaps
        for b in range(B):
            if is_first[b, t]:
                banks[b] = [[] for _ in range(N)]
            oracle_step(banks[b], x[b, t], int(fid[b]), L)
            last[b] = int(fid[b])
        _, state = mem.step(state, x[:, t], is_first=is_first[:, t], t=fid)
        check_against(mem, state, banks)
        steps_since_reset = torch.tensor([len(banks[b][0]) for b in range(B)])
        assert torch.equal(state["valid"].sum(1), steps_since_reset.clamp(max=L)), "bank length min(t, L)"


def test_positions_merge_different_pairs_and_shift():
    mem = make_memory("merge", dim=2, tokens_per_step=2, capacity=2)
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    frames = [torch.stack([e0, e0]), torch.stack([e1, e0 + 0.1 * e1]), torch.stack([e1, e1])]
    state = mem.init_state(1)
    for f in frames:
        state = mem.write(state, f[None])
    span = state["span"][0]
    # position 0: frames 1 and 2 are equal -> they merge into slot 1; frame 0 stays in slot 0
    assert span[:, 0].tolist() == [[0, 0], [1, 2]] and state["counts"][0, :, 0].tolist() == [1, 2]
    # position 1: frames 0 and 1 are the similar pair -> slot 0 holds their weighted mean, frame 2 shifts to slot 1
    assert span[:, 1].tolist() == [[0, 1], [2, 2]] and state["counts"][0, :, 1].tolist() == [2, 1]
    torch.testing.assert_close(state["tokens"][0, 0, 1], (e0 + e0 + 0.1 * e1) / 2)
    torch.testing.assert_close(state["tokens"][0, 1, 1], e1)


def test_size_weighted_mean_is_conserved_and_spans_tile_time():
    mem = make_memory("merge", dim=6, tokens_per_step=5, capacity=4)
    B, T = 2, 300
    x, _ = stream(B, T, 5, 6, seed=3, p_reset=0.0)
    state = mem.init_state(B)
    for t in range(T):
        state = mem.write(state, x[:, t])
    c = state["counts"].to(torch.float64)
    held = (state["tokens"].double() * c[..., None]).sum(1)  # [B,N,D]
    torch.testing.assert_close(held, x.double().sum(1), atol=1e-3, rtol=1e-5)
    assert torch.equal(state["counts"].sum(1), torch.full((B, 5), T))
    first, last = state["span"][..., 0], state["span"][..., 1]
    assert bool((first <= last).all())
    assert bool((first[:, 0] == 0).all()) and bool((last[:, -1] == T - 1).all())
    assert torch.equal(first[:, 1:], last[:, :-1] + 1), "each position's slots cover consecutive, disjoint spans"
    assert torch.equal(last - first + 1, state["counts"]), "a merged span covers exactly the frames merged"


def test_ties_merge_the_earliest_pair():
    mem = make_memory("merge", dim=3, tokens_per_step=2, capacity=3)
    state = mem.init_state(1)
    for _ in range(9):  # identical frames (and exact means): every adjacent pair ties at every position
        state = mem.write(state, torch.ones(1, 2, 3))
    assert state["counts"][0].tolist() == [[7, 7], [1, 1], [1, 1]]
    assert state["span"][0, :, 0].tolist() == [[0, 6], [7, 7], [8, 8]]


def test_unmerged_slots_stay_bit_exact():
    mem = make_memory("merge", dim=4, tokens_per_step=1, capacity=3)
    e = torch.eye(4)
    state = mem.init_state(1)
    for f in (e[0], e[1], e[1] * 3.0 + 1e-3, e[2] * 7.123456789):  # frames 1 and 2 merge; 0 and 3 stay
        state = mem.write(state, f.view(1, 1, 4))
    assert torch.equal(state["tokens"][0, 0, 0], e[0]) and torch.equal(state["tokens"][0, 2, 0], e[2] * 7.123456789)


def test_write_is_functional_and_clear_reset():
    mem = make_memory(MergeConfig.example())
    x, _ = stream(2, 12, 3, 8, seed=4)
    state = mem.init_state(2)
    for t in range(9):
        state = mem.write(state, x[:, t])
    snap = clone_state(state)
    mem.write(state, x[:, 9])
    assert states_equal(state, snap), "write mutated its input"
    assert states_equal(mem.clear(state), mem.init_state(2))
    half = mem.reset(state, torch.tensor([False, True]))
    assert half["valid"][1].sum() == 0 and torch.equal(half["tokens"][0], state["tokens"][0])


def test_bad_inputs_and_config():
    mem = make_memory(MergeConfig.example())
    state = mem.write(mem.init_state(2), torch.randn(2, 3, 8), t=torch.tensor([4, 0]))
    with pytest.raises(ValueError, match="query"):
        mem.read(state, torch.randn(2, 3, 5))
    for bad in ([5, -1], [4, 1], [6, 0]):
        with pytest.raises(ValueError, match="strictly increase"):
            mem.write(state, torch.randn(2, 3, 8), t=torch.tensor(bad))
    with pytest.raises(ValueError, match="tokens"):
        mem.write(state, torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="capacity"):
        make_memory("merge", dim=4, capacity=0)


def test_bytes_per_stream_constant_in_T():
    mem = make_memory(MergeConfig.example())
    x, _ = stream(2, 60, 3, 8, seed=5, p_reset=0.0)
    state, sizes = mem.init_state(2), set()
    for t in range(60):
        state = mem.write(state, x[:, t])
        sizes.add(mem.stats(state)["bytes"])
    assert sizes == {mem.bound_bytes(2)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cfg = MergeConfig.example()
    cpu, gpu = make_memory(cfg), make_memory(cfg).cuda()
    x, is_first = stream(3, 25, 3, 8, seed=6)
    r_cpu, _ = cpu(cpu.init_state(3), x, is_first=is_first)
    r_gpu, _ = gpu(gpu.init_state(3, device="cuda"), x.cuda(), is_first=is_first.cuda())
    assert torch.equal(r_cpu.time_span, r_gpu.time_span.cpu())
    torch.testing.assert_close(r_cpu.tokens, r_gpu.tokens.cpu(), atol=1e-5, rtol=1e-5)
