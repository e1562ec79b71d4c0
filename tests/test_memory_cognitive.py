"""cognitive (MemoryVLA's PCMB) against its per-stream list reference, closed forms and hand-built cases;
plus the StreamingEpisodeSampler that makes merging happen in training."""

from __future__ import annotations

import itertools

import pytest
import torch

from embodimem.bench.reference.cognitive_lists import CognitiveListReference
from embodimem.memory import make_memory
from embodimem.memory.samplers import StreamingEpisodeSampler
from embodimem.memory.state import clone_state, state_nbytes, states_equal

D, K, L = 8, 3, 4  # width, tokens per step (N=2 perceptual + 1 cognitive), capacity


def mem_(seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = dict(dim=D, tokens_per_step=K, capacity=L, read_layers=1, num_heads=2, ffn_mult=2, time_dim=8)
    return make_memory("cognitive", **{**cfg, **kw})


def run(mem, x, is_first, t=None):
    s, outs = mem.init_state(x.shape[0]), []
    for i in range(x.shape[1]):
        r, s = mem.step(s, x[:, i], is_first=is_first[:, i], **({} if t is None else {"t": t[:, i]}))
        outs.append((r, s))
    return outs


MODES = list(itertools.product(["merge", "fifo"], ["count", "equal"], ["independent", "joint"]))


@pytest.mark.parametrize("consolidation,weighting,merge_on", MODES)
def test_matches_list_reference(consolidation, weighting, merge_on):
    """Every write and read equals MemoryVLA's dict-of-lists structure run one stream at a time."""
    mem = mem_(consolidation=consolidation, merge_weighting=weighting, merge_on=merge_on).eval()
    B, T = 3, 25
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, K, D, generator=g)
    is_first = torch.rand(B, T, generator=g) < 0.1
    is_first[:, 0] = True
    ref = CognitiveListReference(mem.config, B, memory=mem)
    s, s_donated = mem.init_state(B), mem.init_state(B)
    for i in range(T):
        r, s = mem.step(s, x[:, i], is_first=is_first[:, i])
        s_donated = mem.write(mem.reset(s_donated, is_first[:, i]), x[:, i], donate=True)
        ref.write(x[:, i], is_first=is_first[:, i])
        want, got = ref.as_state(), {**s, **mem.time_ordered(s)}
        for k in ("count", "span", "valid", "merges"):
            assert torch.equal(want[k], got[k]), (k, i)
        torch.testing.assert_close(got["tokens"], want["tokens"], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(r.tokens, torch.stack(ref.read(x[:, i])), atol=1e-5, rtol=1e-5)
        assert all(torch.equal(s[k], s_donated[k]) for k in s), "donate=True gives identical results"
        # the similarities kept in the state equal recomputed adjacent cosines of the held entries
        pos = got["tokens"]
        for b in range(B):
            for j in range(L - int(s["valid"][b].sum()) + 1, L):
                torch.testing.assert_close(s["sim"][b, j], mem.bank_similarity(pos[b, j - 1:j], pos[b, j:j + 1])[0])
    if consolidation == "merge":
        assert int(s["merges"].sum()) > 0


@pytest.mark.parametrize("consolidation", ["merge", "fifo"])
def test_functional_write_leaves_input_untouched_and_donate_matches(consolidation):
    """The default write returns new tensors (its input state is intact); donate=True updates in place, same result.
    Identical entries make every merge kind happen: with the new item (p = L-1) and beside it (p = L-2)."""
    mem = mem_(consolidation=consolidation)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4 * L, K, D, generator=g)
    x[0, L + 1:] = x[0, L]  # row 0: repeats of one frame
    s = mem.init_state(3)
    for i in range(x.shape[1]):
        snapshot = clone_state(s)
        out = mem.write(s, x[:, i])
        assert states_equal(s, snapshot), "write mutated its input"
        assert states_equal(mem.write(clone_state(s), x[:, i], donate=True), out)
        # the cached unit tokens of the newest entry equal the newest entry's, normalised
        newest = mem.time_ordered(out)["tokens"][:, -1]
        assert torch.equal(out["unit_newest"], newest / newest.norm(dim=-1, keepdim=True).clamp_min(1e-8))
        s = out


@pytest.mark.parametrize("consolidation", ["merge", "fifo"])
def test_bank_length_is_min_t_L(consolidation):
    mem = mem_(consolidation=consolidation)
    x = torch.randn(2, 3 * L, K, D)
    f = torch.zeros(2, 3 * L, dtype=torch.bool)
    f[:, 0] = True
    for i, (r, s) in enumerate(run(mem, x, f)):
        assert s["valid"].sum(1).tolist() == [min(i + 1, L)] * 2
        assert bool(s["valid"][:, L - 1].all()), "right-aligned: the newest slot is always used"


def test_fifo_keeps_the_last_L_steps_in_order():
    mem = mem_(consolidation="fifo")
    T = 11
    x = torch.randn(1, T, K, D)
    _, s = run(mem, x, torch.tensor([[True] + [False] * (T - 1)]))[-1]
    s = mem.time_ordered(s)
    torch.testing.assert_close(s["tokens"][0], x[0, T - L:])
    assert s["span"][0, :, 0, 0].tolist() == list(range(T - L, T))
    assert s["count"].eq(1).all()


def test_merged_pair_is_the_most_similar_adjacent_pair():
    """Hand-built bank: entries 1 and 2 are nearly parallel, so the write that overflows merges exactly them."""
    mem = mem_(merge_on="joint")
    base = torch.eye(D)[:4]  # orthogonal directions: cosine 0 between different entries
    entries = [base[0], base[1], base[1] + 0.01 * base[2], base[3], base[0] + base[3] * 5]
    x = torch.stack([e.expand(K, D) for e in entries])[None]  # [1,5,K,D]
    f = torch.tensor([[True, False, False, False, False]])
    _, s = run(mem, x, f)[-1]
    assert s["merges"].item() == 1
    s = mem.time_ordered(s)
    assert s["span"][0, :, 0].tolist() == [[0, 0], [1, 2], [3, 3], [4, 4]]
    assert s["count"][0, :, 0].tolist() == [1, 2, 1, 1]
    torch.testing.assert_close(s["tokens"][0, 1], (x[0, 1] + x[0, 2]) / 2)


def test_ties_merge_the_lowest_index_pair():
    mem = mem_()
    v = torch.randn(K, D)
    x = v.expand(1, L + 3, K, D).clone()  # identical entries: every adjacent pair ties
    f = torch.zeros(1, L + 3, dtype=torch.bool)
    f[:, 0] = True
    outs = run(mem, x, f)
    s = mem.time_ordered(outs[L][1])  # first overflow: pair (0, 1) merges
    assert s["span"][0, :, 0].tolist() == [[0, 1], [2, 2], [3, 3], [4, 4]]
    s = mem.time_ordered(outs[L + 2][1])
    assert s["span"][0, :, 1].tolist() == [[0, 3], [4, 4], [5, 5], [6, 6]]  # same rule, cognitive bank
    assert s["count"][0, :, 0].tolist() == [4, 1, 1, 1]


def test_size_weighted_mean_of_everything_written_is_conserved():
    mem = mem_()
    B, T = 2, 60
    x = torch.randn(B, T, K, D)
    f = torch.zeros(B, T, dtype=torch.bool)
    f[:, 0] = True
    for i, (_, s) in enumerate(run(mem, x, f)):
        cnt = s["count"]  # [B,L,2]
        per = (s["tokens"][:, :, :K - 1] * cnt[..., 0, None, None]).sum(1)
        cog = (s["tokens"][:, :, K - 1] * cnt[..., 1, None]).sum(1)
        torch.testing.assert_close(per, x[:, : i + 1, :K - 1].sum(1), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(cog, x[:, : i + 1, K - 1].sum(1), atol=1e-4, rtol=1e-5)
        assert cnt.sum(1).tolist() == [[i + 1, i + 1]] * B
    # the released 0.5/0.5 average does not conserve it (an old summary weighs as much as one new frame)
    eq = mem_(merge_weighting="equal")
    _, s = run(eq, x, f)[-1]
    per = (s["tokens"][:, :, :K - 1] * s["count"][..., 0, None, None]).sum(1)
    assert (per - x[:, :, :K - 1].sum(1)).abs().max() > 1e-3


def test_spans_partition_the_episode_and_cover_merged_pairs():
    mem = mem_()
    B, T = 3, 40
    x = torch.randn(B, T, K, D)
    f = torch.rand(B, T) < 0.05
    f[:, 0] = True
    start = torch.zeros(B, dtype=torch.long)
    for i, (r, s) in enumerate(run(mem, x, f)):
        start = torch.where(f[:, i], torch.full_like(start, i), start)
        s = {**s, **mem.time_ordered(s)}
        for b in range(B):
            v = s["valid"][b]
            for bank in range(2):
                sp = s["span"][b, v, bank]  # [n,2], time order
                assert sp[0, 0] == 0 and sp[-1, 1] == i - start[b], "entries cover the episode so far"
                assert torch.equal(sp[1:, 0], sp[:-1, 1] + 1), "adjacent entries are contiguous"
                assert torch.equal(s["count"][b, v, bank], sp[:, 1] - sp[:, 0] + 1), "count = frames spanned"
        assert torch.equal(r.source_ids[:, 0], i - start)
        assert torch.equal(r.time_span[:, 0, 0], torch.zeros(B, dtype=torch.long))


def test_frame_ids_from_t_and_bad_indices():
    mem = mem_()
    s = mem.init_state(2)
    s = mem.write(s, torch.randn(2, K, D), t=torch.tensor([5, 10]))
    assert mem.time_ordered(s)["span"][:, -1, 0, 0].tolist() == [5, 10]
    with pytest.raises(ValueError, match="increase"):
        mem.write(s, torch.randn(2, K, D), t=torch.tensor([6, 10]))  # row 1 repeats its frame index
    with pytest.raises(ValueError, match=">= 0"):
        mem.write(mem.init_state(2), torch.randn(2, K, D), t=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="integer"):
        mem.write(s, torch.randn(2, K, D), t=torch.tensor([7.0, 11.0]))
    with pytest.raises(ValueError, match="query must be"):
        mem.read(s, torch.randn(2, K, D + 1))  # wrong width
    with pytest.raises(ValueError, match="tokens_per_step"):
        mem.read(s, torch.randn(2, K + 1, D))
    with pytest.raises(ValueError, match="tokens_per_step"):
        make_memory("cognitive", dim=D, tokens_per_step=1)
    with pytest.raises(ValueError, match="capacity"):
        make_memory("cognitive", dim=D, tokens_per_step=K, capacity=0)


def test_eval_read_is_deterministic_even_with_dropout():
    mem = mem_(dropout=0.5)
    x = torch.randn(2, 6, K, D)
    f = torch.zeros(2, 6, dtype=torch.bool)
    f[:, 0] = True
    _, s = run(mem.eval(), x, f)[-1]
    q = torch.randn(2, K, D)
    assert torch.equal(mem.read(s, q).tokens, mem.read(s, q).tokens)
    mem.train()
    torch.manual_seed(0)
    a = mem.read(s, q).tokens
    b = mem.read(s, q).tokens
    assert not torch.equal(a, b), "dropout is active in training mode"


def test_empty_bank_reads_back_the_query_masked():
    mem = mem_()
    q = torch.randn(2, K, D)
    r = mem.read(mem.init_state(2), q)
    assert torch.equal(r.tokens, q) and not r.mask.any() and (r.source_ids == -1).all()


def test_time_embedding_is_added_to_keys_only():
    mem = mem_(time_embed="age").eval()
    x = torch.randn(1, 5, K, D)
    _, s = run(mem, x, torch.tensor([[True] + [False] * 4]))[-1]
    seen = {}
    blk = mem.per_reader.blocks[0]
    hooks = [getattr(blk, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, i[0])) for n in "kv"]
    mem.read(s, x[:, -1])
    for h in hooks:
        h.remove()
    raw = s["tokens"][:, :, :K - 1].reshape(1, -1, D)
    assert torch.equal(seen["v"], raw), "values are the raw bank tokens"
    assert not torch.allclose(seen["k"], raw), "keys carry the time embedding"
    # shifting every time stamp changes an age-embedded read, but not one without time embedding
    shifted = {**s, "span": s["span"] - 1}
    assert not torch.allclose(mem.read(s, x[:, -1]).tokens, mem.read(shifted, x[:, -1]).tokens)
    plain = mem_(time_embed="none").eval()
    assert torch.equal(plain.read(s, x[:, -1]).tokens, plain.read(shifted, x[:, -1]).tokens)


def test_gate_starts_at_one_half():
    """W = b = 0 at init: fused = (x + m) / 2 with m the retrieval blocks' output."""
    mem = mem_().eval()
    x = torch.randn(2, 5, K, D)
    f = torch.zeros(2, 5, dtype=torch.bool)
    f[:, 0] = True
    r, s = run(mem, x, f)[-1]
    reader, q = mem.cog_reader, x[:, -1, K - 1:]
    valid = s["valid"]
    entries = s["tokens"][:, :, K - 1:]
    times = (s["last_id"][:, None] - s["span"][:, :, 1, 0]).float()
    ang = times[..., None] * reader.freqs
    k_in = (entries + reader.time_mlp(torch.cat([ang.sin(), ang.cos()], -1))[:, :, None]).reshape(2, L, D)
    m = reader.blocks[0](q, k_in, entries.reshape(2, L, D), valid[:, None, None])
    torch.testing.assert_close(r.tokens[:, K - 1:], (q + m) / 2)


def test_forward_trains_the_reader_and_keeps_bytes_constant():
    mem = mem_()
    x = torch.randn(2, 9, K, D, requires_grad=True)
    f = torch.zeros(2, 9, dtype=torch.bool)
    f[:, 0] = True
    r, s = mem(mem.init_state(2), x, is_first=f)
    r.tokens.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in mem.named_parameters() if "time_mlp" in n or "blocks" in n)
    sizes = []
    for T in (3, 30, 300):
        _, s = mem(mem.init_state(2), torch.randn(2, T, K, D), is_first=torch.zeros(2, T, dtype=torch.bool))
        sizes.append(state_nbytes(s))
    assert len(set(sizes)) == 1 and sizes[0] == mem.bound_bytes(2)


# ----- StreamingEpisodeSampler -------------------------------------------------------------------------------
def episodes(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, K, D, generator=g) for n in lengths]


def test_sampler_streams_whole_episodes_per_row():
    eps = episodes([7, 3, 9, 4, 6])
    smp = StreamingEpisodeSampler(eps, batch_size=2, chunk_len=4, pad_last=True, seed=3)
    chunks = list(smp)
    seen = {}
    for ch in chunks:
        assert ch.data.shape == (2, 4, K, D)
        for b in range(2):
            for i in range(4):
                e, t = int(ch.episode[b, i]), int(ch.t[b, i])
                assert bool(ch.is_first[b, i]) == (t <= 0)
                if e >= 0:
                    assert torch.equal(ch.data[b, i], eps[e][t])
                    seen.setdefault(e, []).append((b, t))
    assert sorted(seen) == list(range(5)), "every episode streamed"
    for e, steps in seen.items():
        assert [t for _, t in steps] == list(range(len(eps[e]))), "whole episode, in order"
        assert len({b for b, _ in steps}) == 1, "an episode stays in its row"
    drop = list(StreamingEpisodeSampler(eps, batch_size=2, chunk_len=4, seed=3))
    assert all(bool(c.valid.all()) for c in drop) and len(drop) < len(chunks)
    with pytest.raises(ValueError, match="batch_size"):
        StreamingEpisodeSampler(eps, batch_size=9, chunk_len=4)


def test_training_with_the_streaming_sampler_merges_like_inference():
    """Episodes longer than L: streamed training merges (MemoryVLA's group loader never does), and the fused
    tokens of a streamed training pass equal step-by-step inference over the same episode."""
    eps = episodes([3 * L, 2 * L + 1, 3 * L + 2, 2 * L])
    mem = mem_()
    opt = torch.optim.SGD(mem.parameters(), lr=1e-3)
    smp = StreamingEpisodeSampler(eps, batch_size=2, chunk_len=L - 1, shuffle=False, pad_last=True)

    def train_epoch(group: bool) -> int:
        state, merges = mem.init_state(2), 0
        for ch in smp:
            is_first = ch.is_first.clone()
            if group:  # MemoryVLA's group loader: a fresh bank for every group of <= L frames
                is_first[:, 0] = True
            r, state = mem(state, ch.data, is_first=is_first)
            loss = (r.tokens.square().mean(-1).mean(-1) * ch.valid).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            merges += int(r.extras["merges"].amax(1).sum())
        return merges

    mem.train()
    assert train_epoch(group=False) > 0
    assert train_epoch(group=True) == 0
    mem.eval()
    with torch.no_grad():
        state, streamed = mem.init_state(2), {}
        for ch in smp:
            r, state = mem(state, ch.data, is_first=ch.is_first)
            for b, i in zip(*torch.nonzero(ch.valid, as_tuple=True)):
                streamed[(int(ch.episode[b, i]), int(ch.t[b, i]))] = r.tokens[b, i]
        for e, ep in enumerate(eps):
            out = run(mem, ep[None], torch.tensor([[True] + [False] * (len(ep) - 1)]))
            for t, (r, _) in enumerate(out):
                torch.testing.assert_close(streamed[(e, t)], r.tokens[0], atol=1e-5, rtol=1e-5)
