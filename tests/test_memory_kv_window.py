"""kv_window against brute force: a plain-loop float64 transformer that recomputes every step from scratch.

The reference knows nothing about caches: at step t, head h attends to the steps j <= t of the episode that
``visible(h, t, j)`` allows (all of them for full causal attention; j < s or t - j < window for sink+window).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from embodimem.memory import make_memory
from embodimem.memory.kv_attention import gather_slots, kept, pack
from embodimem.memory.state import state_nbytes


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops in OpenMP regions cost milliseconds on a shared 2-core machine; pin one thread here."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    base = dict(dim=8, tokens_per_step=3, layers=2, heads=2, sink=2, recent=3)
    return make_memory("kv_window", **{**base, **kw}).eval()


def rope_ref(x: torch.Tensor, pos: int, base: float) -> torch.Tensor:
    """RoPE as complex rotation of (x_i, x_{i+dh/2}) by pos * base^(-2i/dh); x [...,dh] float64."""
    dh = x.shape[-1]
    inv = base ** (-torch.arange(dh // 2, dtype=torch.float64) * 2.0 / dh)
    z = torch.complex(x[..., : dh // 2], x[..., dh // 2:]) * torch.polar(torch.ones_like(inv), pos * inv)
    return torch.cat([z.real, z.imag], dim=-1)


def reference(mem, x: torch.Tensor, visible) -> torch.Tensor:
    """Outputs [T,P,D] for one episode x [T,P,D], every step recomputed over the steps it may see."""
    c = mem.config
    D, H = c.dim, c.heads
    dh = D // H
    hs = [x[t].double() for t in range(x.shape[0])]
    W = {k: v.detach().double() for k, v in mem.state_dict().items()}
    for i in range(c.layers):
        w = {k.split(".", 2)[2]: v for k, v in W.items() if k.startswith(f"blocks.{i}.")}
        qs, ks, vs = [], [], []
        for t, h in enumerate(hs):
            a = F.layer_norm(h, (D,), w["ln1.weight"], w["ln1.bias"])
            qkv = a @ w["qkv.weight"].T + w["qkv.bias"]  # [P,3D] = [q | k | v], heads contiguous in each
            q, k, v = (qkv[:, j * D:(j + 1) * D].reshape(-1, H, dh) for j in range(3))
            qs.append(rope_ref(q, t, c.rope_base))
            ks.append(rope_ref(k, t, c.rope_base))
            vs.append(v)
        new = []
        for t, h in enumerate(hs):
            heads = []
            for hh in range(H):
                js = [j for j in range(t + 1) if visible(hh, t, j)]
                K = torch.cat([ks[j][:, hh] for j in js])
                V = torch.cat([vs[j][:, hh] for j in js])
                heads.append(torch.softmax(qs[t][:, hh] @ K.T / dh ** 0.5, dim=-1) @ V)
            h = h + torch.cat(heads, dim=-1) @ w["proj.weight"].T + w["proj.bias"]
            a = F.layer_norm(h, (D,), w["ln2.weight"], w["ln2.bias"])
            m = F.gelu(a @ w["mlp.0.weight"].T + w["mlp.0.bias"], approximate="tanh")
            new.append(h + m @ w["mlp.2.weight"].T + w["mlp.2.bias"])
        hs = new
    return torch.stack([F.layer_norm(h, (D,), W["ln_out.weight"], W["ln_out.bias"]) for h in hs]).float()


def full_causal(h, t, j):
    return True


def sink_window(mem):
    """Per-head visibility of the config: streaming heads keep s + r, retrieval heads s + (max_steps - s)."""
    c = mem.config
    ret = c.retrieval_heads or [False] * c.heads
    return lambda h, t, j: j < c.sink or t - j < (c.max_steps - c.sink if ret[h] else c.recent)


def run_steps(mem, x, is_first, state=None):
    state = mem.init_state(x.shape[0]) if state is None else state
    outs = []
    for t in range(x.shape[1]):
        r, state = mem.step(state, x[:, t], is_first=is_first[:, t])
        outs.append(r)
    return outs, state


def expected_ids(S: int, s: int, r: int) -> list[int]:
    return sorted(set(range(min(s, S))) | set(range(max(0, S - r), S)))


@pytest.mark.parametrize("s,r", [(0, 1), (0, 3), (2, 3), (4, 1), (3, 5)])
def test_retained_indices_are_sink_plus_window(s, r):
    M = s + r + 2
    mem = build(sink=s, recent=r, retrieval_heads=[False, True], max_steps=M, layers=1, tokens_per_step=1)
    x = torch.randn(1, 3 * M, 1, 8)
    state = mem.init_state(1)
    for S in range(1, 3 * M + 1):
        rd, state = mem.step(state, x[:, S - 1], is_first=torch.tensor([S == 1]))
        for prefix, window in (("", r), ("full_", M - s)):
            ids, valid = state[prefix + "ids"][0], state[prefix + "valid"][0]
            assert ids[valid].tolist() == expected_ids(S, s, window), (S, prefix)  # time-ordered slots
            assert torch.all(ids[~valid] == -1)
            assert all(ids[j] in (j, -1) for j in range(s)), "sink slot j holds step j"
            assert ids[-1] == S - 1 or S <= s, "past the sink, the newest step is the last slot"
            assert torch.equal(rd.extras["retained_ids" + ("_full" if prefix else "")][0], ids)
        assert rd.source_ids[0].tolist() == [S - 1] and rd.time_span[0, 0].tolist() == [0 if s else max(0, S - M), S - 1]


def test_trim_is_idempotent():
    mem = build(sink=2, recent=3, retrieval_heads=[True, False], max_steps=6)
    x = torch.randn(2, 14, 3, 8)
    is_first = torch.zeros(2, 14, dtype=torch.bool)
    is_first[:, 0] = is_first[1, 9] = True
    state = mem.init_state(2)
    for t in range(14):
        _, state = mem.step(state, x[:, t], is_first=is_first[:, t])
        once = mem.trim(state)
        assert all(torch.equal(once[k], state[k]) for k in state), "a produced state is already trimmed"
        twice = mem.trim(once)
        assert all(torch.equal(once[k], twice[k]) for k in state)
    # trimming an untrimmed history (every step 0..S-1 held) twice equals trimming it once
    for S in range(1, 20):
        hist_ids = torch.arange(S)[None]
        data = torch.randn(1, S, 4)
        n = torch.tensor([S - 1])
        src, ids, valid = pack(hist_ids, torch.ones(1, S, dtype=torch.bool), n, 2, 5)
        packed = gather_slots(data, src, valid)
        assert ids[valid].tolist() == expected_ids(S, 2, 3)
        src2, ids2, valid2 = pack(ids, valid & kept(ids, n[:, None], 2, 5), n, 2, 5)
        assert torch.equal(ids2, ids) and torch.equal(valid2, valid)
        assert torch.equal(gather_slots(packed, src2, valid2), packed)
        assert torch.equal(packed[valid], data[0, ids[valid]])


@pytest.mark.parametrize("kw", [dict(sink=2, recent=4), dict(sink=0, recent=5, layers=3), dict(sink=6, recent=1)])
def test_cache_equals_full_causal_attention_while_it_holds_everything(kw):
    mem = build(**kw)
    S = mem.config.sink + mem.config.recent
    x = torch.randn(2, S, 3, 8)
    is_first = torch.zeros(2, S, dtype=torch.bool)
    is_first[:, 0] = True
    outs, _ = run_steps(mem, x, is_first)
    r_fwd, _ = mem(mem.init_state(2), x, is_first=is_first)
    for b in range(2):
        ref = reference(mem, x[b], full_causal)
        for t in range(S):
            torch.testing.assert_close(outs[t].tokens[b], ref[t], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(r_fwd.tokens[b], ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kw", [
    dict(),  # streaming heads only
    dict(sink=0, recent=2),  # pure sliding window
    dict(retrieval_heads=[False, True], max_steps=7),  # DuoAttention split, retrieval cache overflows at 7
    dict(heads=4, dim=16, retrieval_heads=[True, False, True, False], max_steps=9, chunk_steps=4),  # interleaved
])
def test_matches_sink_window_reference_with_resets(kw):
    """Step and forward (from a held state, across chunks and an episode boundary) equal the masked reference."""
    mem = build(**kw)
    D, T = mem.config.dim, 22
    x = torch.randn(2, T, 3, D)
    is_first = torch.zeros(2, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 13] = True
    outs, state = run_steps(mem, x[:, :4], is_first[:, :4])
    outs2, state_step = run_steps(mem, x[:, 4:], is_first[:, 4:], state)
    r_fwd, state_fwd = mem(state, x[:, 4:], is_first=is_first[:, 4:])
    outs += outs2
    vis = sink_window(mem)
    for b, bounds in ((0, [(0, T)]), (1, [(0, 13), (13, T)])):
        for a, e in bounds:
            ref = reference(mem, x[b, a:e], vis)
            for t in range(a, e):
                torch.testing.assert_close(outs[t].tokens[b], ref[t - a], atol=2e-5, rtol=1e-4)
                assert outs[t].source_ids[b].tolist() == [t - a] * 3
                if t >= 4:
                    torch.testing.assert_close(r_fwd.tokens[b, t - 4], ref[t - a], atol=2e-5, rtol=1e-4)
    for k in state_step:
        torch.testing.assert_close(state_step[k], state_fwd[k], atol=1e-5, rtol=1e-5)


def test_all_retrieval_heads_equal_full_attention():
    T = 16
    full = build(sink=1, recent=2, retrieval_heads=[True, True], max_steps=T, seed=3)
    stream = build(sink=1, recent=2, seed=3)  # same weights, streaming heads only
    x = torch.randn(1, T, 3, 8)
    is_first = torch.zeros(1, T, dtype=torch.bool)
    is_first[:, 0] = True
    ref = reference(full, x[0], full_causal)
    outs, state = run_steps(full, x, is_first)
    for t in range(T):
        torch.testing.assert_close(outs[t].tokens[0], ref[t], atol=2e-5, rtol=1e-4)
    r_fwd, _ = full(full.init_state(1), x, is_first=is_first)
    torch.testing.assert_close(r_fwd.tokens[0], ref, atol=2e-5, rtol=1e-4)
    assert state["full_ids"][0].tolist() == list(range(T))
    # guard against a vacuous pass: the streaming-only memory diverges once steps are evicted
    outs_s, _ = run_steps(stream, x, is_first)
    torch.testing.assert_close(outs_s[2].tokens, outs[2].tokens, atol=2e-5, rtol=1e-4)
    assert (outs_s[T - 1].tokens - outs[T - 1].tokens).abs().max() > 1e-3


def test_retrieval_heads_beyond_max_steps_keep_sink_and_last_steps():
    mem = build(sink=2, recent=2, retrieval_heads=[True, False], max_steps=6, tokens_per_step=1, layers=1)
    x = torch.randn(1, 15, 1, 8)
    is_first = torch.zeros(1, 15, dtype=torch.bool)
    is_first[:, 0] = True
    _, state = run_steps(mem, x, is_first)
    assert state["full_ids"][0].tolist() == [0, 1, 11, 12, 13, 14]
    assert state["ids"][0].tolist() == [0, 1, 13, 14]


def test_positions_of_retained_steps_never_change():
    """Cached (rotated) K/V and ids of a step stay bit-identical until it is evicted; keys carry their own step."""
    mem = build(sink=2, recent=3, layers=1, heads=1)
    T = 15
    x = torch.randn(1, T, 3, 8)
    state, first_seen = mem.init_state(1), {}
    for t in range(T):
        _, state = mem.step(state, x[:, t], is_first=torch.tensor([t == 0]))
        ids, kv = state["ids"][0], state["kv"][0, 0]  # layer 0: [C,P,2,H,dh]
        for slot, j in enumerate(ids.tolist()):
            if j < 0:
                continue
            first_seen.setdefault(j, kv[slot].clone())
            assert torch.equal(kv[slot], first_seen[j]), f"step {j} changed while cached at step {t}"
    # the held key of step j is the raw key rotated by j, whatever was evicted since
    blk = mem.blocks[0]
    for slot, j in enumerate(state["ids"][0].tolist()):
        raw = (blk.qkv(blk.ln1(x[0, j])))[:, 8:16].double().reshape(3, 1, 8)
        torch.testing.assert_close(state["kv"][0, 0, slot, :, 0].double(), rope_ref(raw, j, mem.config.rope_base),
                                   atol=1e-5, rtol=1e-5)


def test_read_with_query_attends_to_the_cache():
    mem = build(retrieval_heads=[False, True], max_steps=6)
    x = torch.randn(2, 9, 3, 8)
    is_first = torch.zeros(2, 9, dtype=torch.bool)
    is_first[:, 0] = True
    empty = mem.read(mem.init_state(2), torch.randn(2, 4, 8))
    assert not empty.mask.any() and torch.all(empty.source_ids == -1) and torch.isfinite(empty.tokens).all()
    state = mem.init_state(2)
    for t in range(9):
        r, state = mem.step(state, x[:, t], is_first=is_first[:, t])
        assert torch.equal(mem.read(state).tokens, r.tokens)
        torch.testing.assert_close(mem.read(state, x[:, t]).tokens, r.tokens, atol=1e-6, rtol=1e-6)
    probe = mem.read(state, torch.randn(2, 5, 8))
    assert probe.tokens.shape == (2, 5, 8) and probe.source_ids.tolist() == [[8] * 5] * 2
    with pytest.raises(ValueError, match="query"):
        mem.read(state, torch.randn(2, 3, 9))
    bad = torch.randn(2, 3, 8)
    bad[1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        mem.read(state, bad)


@pytest.mark.parametrize("kw,field", [
    (dict(recent=0), "recent"), (dict(recent=0, sink=0), "capacity"), (dict(sink=-1), "sink"),
    (dict(layers=0), "layers"), (dict(heads=3), "heads"), (dict(dim=6, heads=2), "even"),
    (dict(retrieval_heads=[True]), "retrieval_heads"), (dict(retrieval_heads=[True, False], max_steps=4), "max_steps"),
    (dict(max_steps=10), "max_steps"), (dict(chunk_steps=0), "chunk_steps"),
])
def test_bad_config_raises_naming_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        build(**kw)


def test_bytes_constant_in_episode_length_and_smaller_with_streaming_heads():
    mem = build(retrieval_heads=[True, False], max_steps=12)
    x = torch.randn(2, 1, 3, 8)
    state = mem.init_state(2)
    sizes = []
    with torch.no_grad():
        for t in range(300):
            state = mem.write(state, x[:, 0])
            if t in (4, 299):
                sizes.append(state_nbytes(state))
    assert sizes[0] == sizes[1] == mem.bound_bytes(2)
    all_ret = build(retrieval_heads=[True, True], max_steps=12)
    assert mem.bound_bytes(2) < all_ret.bound_bytes(2), "streaming heads must hold fewer bytes than retrieval heads"


def test_gradients_reach_in_sequence_steps_it_can_see_and_no_others():
    mem = build(sink=1, recent=2, layers=1, heads=1).train()
    x = torch.randn(1, 8, 3, 8, requires_grad=True)
    is_first = torch.zeros(1, 8, dtype=torch.bool)
    is_first[:, 0] = True
    r, state = mem(mem.init_state(1), x, is_first=is_first)
    assert not any(v.requires_grad for v in state.values())
    r.tokens[0, 7].sum().backward()  # step 7 sees steps {0} U {6, 7}
    g = x.grad[0].abs().sum((-1, -2))
    assert (g[[0, 6, 7]] > 0).all() and (g[1:6] == 0).all()
    assert mem.blocks[0].qkv.weight.grad is not None
    rs, _ = mem.step(mem.init_state(1), x[:, 0].detach(), is_first=torch.tensor([True]))
    assert rs.tokens.requires_grad, "a step's readout keeps the graph to the weights"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    mem = build(retrieval_heads=[False, True], max_steps=6)
    x = torch.randn(2, 12, 3, 8)
    is_first = torch.zeros(2, 12, dtype=torch.bool)
    is_first[:, 0] = is_first[1, 7] = True
    r_cpu, s_cpu = mem(mem.init_state(2), x, is_first=is_first)
    gpu = mem.to("cuda")
    outs, s_gpu = run_steps(gpu, x.cuda(), is_first.cuda(), gpu.init_state(2, device="cuda"))
    for t in range(12):
        torch.testing.assert_close(outs[t].tokens.cpu(), r_cpu.tokens[:, t], atol=1e-4, rtol=1e-4)
    assert all(torch.equal(s_gpu[k].cpu(), s_cpu[k]) for k in ("ids", "valid", "full_ids", "step"))
