"""streaming (VideoStreaming): constant readout size, causality, memory propagation, selection vs brute force."""

from __future__ import annotations

import pytest
import torch

from embodimem.memory import make_memory
from embodimem.memory.state import state_nbytes

D, N, C, M, V, KC = 8, 2, 3, 2, 2, 4  # width, tokens/frame, clip_len, summary tokens, select, max_clips


def mem_(seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = dict(dim=D, tokens_per_step=N, clip_len=C, summary_tokens=M, select=V, max_clips=KC, num_heads=2)
    return make_memory("streaming", **{**cfg, **kw})


def run(mem, x, is_first=None, query=None):
    B, T = x.shape[:2]
    if is_first is None:
        is_first = torch.zeros(B, T, dtype=torch.bool)
        is_first[:, 0] = True
    s, outs = mem.init_state(B), []
    for i in range(T):
        r, s = mem.step(s, x[:, i], is_first=is_first[:, i])
        if query is not None:
            r = mem.read(s, query)
        outs.append((r, s))
    return outs


def test_readout_size_and_bytes_are_constant_in_video_length():
    mem = mem_().eval()
    sizes, nbytes = set(), set()
    for T in (4, 40, 400):
        r, s = run(mem, torch.randn(1, T, N, D))[-1]
        sizes.add(tuple(r.tokens.shape))
        nbytes.add(state_nbytes(s))
    R = M + 1  # global token + summary tokens
    assert sizes == {(1, V * R + (C - 1) * N, D)}
    assert nbytes == {mem.bound_bytes(1)}


def test_clip_memory_appears_at_its_last_frame_and_live_frames_before():
    mem = mem_().eval()
    x = torch.randn(1, 2 * C, N, D)
    outs = run(mem, x)
    for i, (r, s) in enumerate(outs):
        assert int(s["valid"].sum()) == (i + 1) // C
        live = r.extras["live"][0]
        n_live = (i + 1) % C
        assert int(r.mask[0, live].sum()) == n_live * N, "unfinished clip: its raw frames"
        torch.testing.assert_close(r.tokens[0, live][: n_live * N], x[0, i + 1 - n_live: i + 1].reshape(-1, D))
        ids = [j for j in range(i + 1 - n_live, i + 1) for _ in range(N)]
        assert r.source_ids[0, live][: n_live * N].tolist() == ids
    r, s = outs[C - 1]
    assert s["span"][0, -1].tolist() == [0, C - 1] and s["clip_id"][0, -1].item() == 0
    torch.testing.assert_close(s["key"][0, -1], x[0, :C].mean(dim=(0, 1)))


def test_memory_propagates_through_the_encoder_chain():
    """Clip k's memory = encode(clip k-1's memory, clip k frames), starting from the learned initial memory."""
    mem = mem_().eval()
    x = torch.randn(2, 3 * C, N, D)
    _, s = run(mem, x)[-1]
    prev = mem.init_memory.expand(2, M, D)
    with torch.no_grad():
        for k in range(3):
            prev = mem.encode_clip(prev, x[:, k * C:(k + 1) * C])
            torch.testing.assert_close(s["memory"][:, KC - 3 + k], prev, atol=1e-5, rtol=1e-5)


def test_causality_later_clips_never_change_earlier_memories():
    mem = mem_().eval()
    x = torch.randn(1, 4 * C, N, D)
    y = x.clone()
    y[:, 2 * C:] += torch.randn_like(y[:, 2 * C:])  # perturb clips 2 and 3
    _, sx = run(mem, x)[-1]
    _, sy = run(mem, y)[-1]
    assert torch.equal(sx["memory"][:, :2], sy["memory"][:, :2]), "clips 0, 1 unchanged"
    assert not torch.allclose(sx["memory"][:, 2:], sy["memory"][:, 2:])
    z = x.clone()
    z[:, 0] += torch.randn_like(z[:, 0])  # perturb clip 0: every later memory changes (propagation)
    _, sz = run(mem, z)[-1]
    assert all(not torch.allclose(sx["memory"][:, k], sz["memory"][:, k]) for k in range(4))
    # and through autograd in the training path: d memory_k / d frames of clips > k is exactly 0
    xg = x.clone().requires_grad_(True)
    mem.train()
    r, _ = mem(mem.init_state(1), xg, is_first=torch.tensor([[True] + [False] * (4 * C - 1)]))
    (g,) = torch.autograd.grad(r.tokens[0, 2 * C - 1, :V * (M + 1)].sum(), xg)  # read right after clip 1
    assert g[:, 2 * C:].abs().sum() == 0 and g[:, :2 * C].abs().sum() > 0


def test_full_bank_drops_the_oldest_clip():
    mem = mem_().eval()
    n_clips = KC + 3
    x = torch.randn(1, n_clips * C, N, D)
    _, s = run(mem, x)[-1]
    assert s["clip_id"][0].tolist() == list(range(n_clips - KC, n_clips))
    assert s["span"][0, :, 0].tolist() == [k * C for k in range(n_clips - KC, n_clips)]
    assert bool(s["valid"].all())


def brute_force_selection(keys, valid, query, V, similarity="cosine"):
    """Python ranking: highest score first, ties -> earlier clip; then the chosen V in temporal order."""
    q = query.mean(0)
    ranked = []
    for k in range(keys.shape[0]):
        if valid[k]:
            s = torch.nn.functional.cosine_similarity(q, keys[k], dim=0) if similarity == "cosine" else q @ keys[k]
            ranked.append((-float(s), k))
    ranked.sort()
    return sorted(k for _, k in ranked[:V])


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_selection_matches_brute_force_ranking(similarity):
    mem = mem_(similarity=similarity, max_clips=6, select=3).eval()
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        B = 3
        s = mem.init_state(B)
        keys = torch.randn(B, 6, D, generator=g)
        keys[:, 4] = keys[:, 1]  # exact ties: the earlier clip (1) must win over 4
        valid = torch.rand(B, 6, generator=g) < 0.8
        s.update(key=keys, valid=valid, span=torch.arange(6).expand(B, 6)[..., None].repeat(1, 1, 2))
        q = torch.randn(B, 2, D, generator=g)
        r = mem.read(s, q)
        for b in range(B):
            want = brute_force_selection(keys[b], valid[b], q[b], 3, similarity)
            got = [int(i) for i in r.extras["selected"][b] if i >= 0]
            assert got == want, (trial, b)
            ids = r.source_ids[b, : 3 * (M + 1)].view(3, M + 1)[:, 0]
            assert ids.tolist() == want + [-1] * (3 - len(want)), "temporal order, empty selections last"


def test_all_clips_selected_equals_no_selection():
    mem = mem_().eval()
    x = torch.randn(2, KC * C + 1, N, D)
    r, s = run(mem, x)[-1]
    assert bool(s["valid"].all())
    sel = mem.read(s, torch.randn(2, D), select=KC)
    every = mem.read_all(s)
    n = KC * (M + 1)
    assert torch.equal(sel.tokens[:, :n], every.tokens)
    assert torch.equal(sel.source_ids[:, :n], every.source_ids)
    assert torch.equal(sel.mask[:, :n], every.mask)


def test_no_query_selects_the_newest_clips():
    mem = mem_().eval()
    _, s = run(mem, torch.randn(1, (KC + 1) * C, N, D))[-1]
    r = mem.read(s, None)
    assert r.extras["selected"][0].tolist() == [KC - V + k for k in range(V)]


def test_differentiable_selection_in_training_only():
    mem = mem_(train_select="straight_through", tau=0.5)
    x = torch.randn(2, KC * C, N, D)
    _, s = run(mem.eval(), x)[-1]
    q = torch.randn(2, 1, D, requires_grad=True)
    hard = mem.read(s, q)
    mem.train()
    soft = mem.read(s, q)
    assert torch.equal(hard.tokens, soft.tokens)
    assert torch.equal(soft.weights[soft.mask], torch.ones(int(soft.mask.sum())))
    (g,) = torch.autograd.grad(soft.tokens.sum(), q)
    assert g.abs().sum() > 0, "the selection passes a gradient to the query"
    assert not hard.tokens.requires_grad, "eval selection is hard: no gradient path to the query"
    gum = mem_(train_select="gumbel", max_clips=8, select=2).train()
    _, s8 = run(gum.eval(), torch.randn(2, 8 * C, N, D))[-1]
    gum.train()
    picks = {tuple(gum.read(s8, q.detach()).extras["selected"].flatten().tolist()) for _ in range(20)}
    assert len(picks) > 1, "gumbel top-V is stochastic in training"
    gum.eval()
    assert len({tuple(gum.read(s8, q.detach()).extras["selected"].flatten().tolist()) for _ in range(5)}) == 1


def test_bad_inputs():
    mem = mem_()
    s = mem.init_state(2)
    with pytest.raises(ValueError, match="query must be"):
        mem.read(s, torch.randn(2, D + 1))
    with pytest.raises(ValueError, match="select"):
        mem.read(s, torch.randn(2, D), select=KC + 1)
    s = mem.write(s, torch.randn(2, N, D), t=torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="increase"):
        mem.write(s, torch.randn(2, N, D), t=torch.tensor([3, 5]))
    with pytest.raises(ValueError, match=">= 0"):
        mem.write(mem.init_state(2), torch.randn(2, N, D), t=torch.tensor([0, -2]))
    with pytest.raises(ValueError, match="select"):
        make_memory("streaming", dim=D, select=5, max_clips=4)
    with pytest.raises(ValueError, match="clip_len"):
        make_memory("streaming", dim=D, clip_len=0)
