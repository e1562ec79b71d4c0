"""hcam: oracle tests of the HCAM algorithm (Lampinen et al. 2021) against closed forms and brute force."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from embodimem.memory import make_memory
from embodimem.memory.chunk_attention import ChunkAttention, gather_chunks


def hcam(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    base = dict(dim=8, tokens_per_step=2, chunk_size=3, num_chunks=4, top_k=2, heads=2)
    return make_memory("hcam", **{**base, **kw}).eval()


def write_all(mem, x):
    """Write x [B,T,N,D] step by step into a fresh state."""
    state = mem.init_state(x.shape[0])
    for t in range(x.shape[1]):
        state = mem.write(state, x[:, t])
    return state


def mha_value(attn: ChunkAttention, v: torch.Tensor) -> torch.Tensor:
    """The within-chunk MHA applied to a single token: out_proj(W_v v + b_v)."""
    w_v, b_v = attn.mha.in_proj_weight.chunk(3)[2], attn.mha.in_proj_bias.chunk(3)[2]
    return F.linear(F.linear(v, w_v, b_v), attn.mha.out_proj.weight, attn.mha.out_proj.bias)


def test_partial_chunk_is_not_readable_until_c_writes_then_key_is_mean():
    mem = hcam(chunk_size=3)
    x = torch.randn(2, 3, 2, 8)
    q = torch.randn(2, 5, 8)
    state = mem.init_state(2)
    for t in range(2):
        state = mem.write(state, x[:, t])
    r = mem.read(state, q)
    Q, C, N = 5, 3, 2
    assert r.tokens.shape == (2, Q + C * N, 8)
    assert not r.mask[:, :Q].any() and torch.equal(r.tokens[:, :Q], torch.zeros(2, Q, 8))
    assert torch.equal(r.source_ids[:, :Q], torch.full((2, Q), -1))
    # the partial chunk (2 steps) is returned verbatim, right-aligned, oldest first
    assert r.mask[:, Q:].tolist() == [[False] * 2 + [True] * 4] * 2
    torch.testing.assert_close(r.tokens[:, Q + 2:], x[:, :2].flatten(1, 2), rtol=0, atol=0)
    assert r.source_ids[0, Q:].tolist() == [-1, -1, 0, 0, 1, 1]
    assert not state["valid"].any()
    state = mem.write(state, x[:, 2])  # the C-th write completes the chunk
    assert state["valid"][:, -1].all() and not state["valid"][:, :-1].any()
    torch.testing.assert_close(state["chunks"][:, -1], x, rtol=0, atol=0)
    torch.testing.assert_close(state["keys"][:, -1], x.mean((1, 2)))
    assert state["ids"][0, -1].tolist() == [0, 1, 2] and state["fill"].tolist() == [0, 0]
    r = mem.read(state, q)
    assert r.mask[:, :Q].all() and not r.mask[:, Q:].any()
    assert r.time_span[0, 0].tolist() == [0, 2]


def test_full_bank_drops_the_oldest_chunk():
    mem = hcam(chunk_size=3, num_chunks=4)
    T = (4 + 2) * 3 + 1  # six chunks and one partial step
    state = write_all(mem, torch.randn(1, T, 2, 8))
    ids = state["ids"][0]
    assert state["valid"][0].all()
    assert ids.tolist() == [[6, 7, 8], [9, 10, 11], [12, 13, 14], [15, 16, 17]]  # chunks 0 and 1 dropped
    assert state["fill"].item() == 1 and state["acc_ids"][0].tolist() == [-1, -1, 18]


def test_c1_k_eq_m_equals_flat_attention_over_summaries():
    """P1: chunks of one token, every chunk read -> one softmax over the M summaries."""
    M = 5
    mem = hcam(tokens_per_step=1, chunk_size=1, num_chunks=M, top_k=M)
    x = torch.randn(2, M, 1, 8)
    q = torch.randn(2, 3, 8)
    r = mem.read(write_all(mem, x), q)
    a = mem.attn
    m = x[:, :, 0]  # [B,M,D]: each chunk's only token, and its key
    logits = a.q_proj(q) @ a.k_proj(m).transpose(1, 2) / math.sqrt(8)
    want = torch.softmax(logits, -1) @ mha_value(a, m + a.pe[0])
    torch.testing.assert_close(r.tokens[:, :3], want, rtol=1e-5, atol=1e-5)


def test_single_chunk_equals_plain_multi_head_attention():
    """P2: M=1 -> nn.MultiheadAttention over the chunk's C*N tokens (plus within-chunk positions)."""
    mem = hcam(chunk_size=4, num_chunks=1, top_k=1)
    x = torch.randn(2, 6, 2, 8)  # steps 0-3 form the chunk, 4-5 stay partial
    q = torch.randn(2, 3, 8)
    r = mem.read(write_all(mem, x), q)
    kv = (x[:, :4] + mem.attn.pe[:4, None]).flatten(1, 2)
    want, _ = mem.attn.mha(q, kv, kv, need_weights=False)
    torch.testing.assert_close(r.tokens[:, :3], want, rtol=1e-5, atol=1e-5)


def test_k_eq_m_is_not_full_attention_when_chunks_hold_more_than_one_token():
    """Guard against a wrong port: softmax over summaries x softmax within chunks != one softmax over all."""
    M = 4
    mem = hcam(chunk_size=3, num_chunks=M, top_k=M)
    x = torch.randn(2, 3 * M, 2, 8)
    q = torch.randn(2, 3, 8)
    r = mem.read(write_all(mem, x), q)
    pe = mem.attn.pe[torch.arange(3 * M) % 3]  # the same within-chunk positions, one attention over all
    kv = (x + pe[:, None]).flatten(1, 2)
    full, _ = mem.attn.mha(q, kv, kv, need_weights=False)
    assert (r.tokens[:, :3] - full).abs().max() > 1e-3


def test_contents_of_unselected_chunks_have_no_effect():
    """P4: changing what unselected chunks hold (not their keys) leaves the read bit-identical."""
    mem = hcam(chunk_size=3, num_chunks=6, top_k=2)
    state = write_all(mem, torch.randn(2, 18, 2, 8))
    q = torch.randn(2, 1, 8)
    r = mem.read(state, q)
    picked = torch.zeros(2, 6, dtype=torch.bool)
    picked.scatter_(1, r.extras["chunk_index"].flatten(1), True)
    assert (~picked).sum(1).min() >= 4
    other = dict(state)
    noise = 100 * torch.randn_like(state["chunks"])
    other["chunks"] = torch.where(picked[..., None, None, None], state["chunks"], noise)
    r2 = mem.read(other, q)
    assert torch.equal(r.tokens, r2.tokens) and torch.equal(r.extras["chunk_index"], r2.extras["chunk_index"])


def test_chunk_order_does_not_matter():
    """P5: permuting chunk slots permutes the selected indices and nothing else."""
    mem = hcam(chunk_size=3, num_chunks=5, top_k=2)
    state = write_all(mem, torch.randn(2, 15, 2, 8))
    q = torch.randn(2, 4, 8)
    perm = torch.tensor([3, 0, 4, 2, 1])
    permuted = {k: (v[:, perm] if k in ("chunks", "keys", "ids", "valid") else v) for k, v in state.items()}
    r, rp = mem.read(state, q), mem.read(permuted, q)
    torch.testing.assert_close(r.tokens, rp.tokens, rtol=1e-5, atol=1e-6)
    assert torch.equal(perm[rp.extras["chunk_index"]], r.extras["chunk_index"])
    assert torch.equal(r.time_span, rp.time_span)


def test_ties_go_to_the_older_chunk_and_extra_picks_are_invalid():
    mem = hcam(chunk_size=2, num_chunks=3, top_k=1)
    step = torch.randn(1, 1, 2, 8)
    state = write_all(mem, step.expand(1, 6, 2, 8))  # three identical chunks: identical keys
    r = mem.read(state, torch.randn(1, 2, 8))
    assert r.extras["chunk_index"].flatten().tolist() == [0, 0]
    mem = hcam(chunk_size=2, num_chunks=3, top_k=3)  # k=3 but one readable chunk
    r = mem.read(write_all(mem, torch.randn(1, 3, 2, 8)), torch.randn(1, 1, 8))
    assert r.extras["chunk_index"][0, 0].tolist() == [2, -1, -1]
    assert r.extras["chunk_weight"][0, 0].tolist() == [1.0, 0.0, 0.0]


def test_no_step_reads_a_future_step():
    mem = hcam(chunk_size=2, num_chunks=3, top_k=2)
    B, T, t0 = 2, 14, 8
    x = torch.randn(B, T, 2, 8)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    r, _ = mem(mem.init_state(B), x, is_first=is_first)
    y = x.clone()
    y[:, t0:] = torch.randn(B, T - t0, 2, 8)
    r2, _ = mem(mem.init_state(B), y, is_first=is_first)
    for k, v in r.tensors().items():
        assert torch.equal(v[:, :t0], r2.tensors()[k][:, :t0]), k
    steps = torch.arange(T)[None, :, None]
    assert torch.all(r.source_ids[r.mask] <= steps.expand_as(r.source_ids)[r.mask])
    assert torch.all(r.extras["chunk_span"][..., 1] <= torch.arange(T)[None, :, None, None])


def test_episode_boundary_hides_earlier_chunks():
    mem = hcam(chunk_size=2, num_chunks=3, top_k=2)
    B, T, s = 2, 13, 7
    x = torch.randn(B, T, 2, 8)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[0, s] = True
    r, state = mem(mem.init_state(B), x, is_first=is_first)
    fresh = torch.zeros(1, T - s, dtype=torch.bool)
    fresh[:, 0] = True
    r_tail, state_tail = mem(mem.init_state(1), x[:1, s:], is_first=fresh)
    for k, v in r_tail.tensors().items():
        torch.testing.assert_close(r.tensors()[k][:1, s:], v, rtol=1e-5, atol=1e-6, msg=k)
    for k, v in state_tail.items():
        torch.testing.assert_close(state[k][:1], v, rtol=1e-5, atol=1e-6, msg=k)


def test_memory_is_read_under_stop_gradient():
    mem = hcam(chunk_size=2, num_chunks=4, top_k=2).train()
    x = torch.randn(1, 9, 2, 8, requires_grad=True)
    is_first = torch.zeros(1, 9, dtype=torch.bool)
    is_first[0, 0] = True
    r, _ = mem(mem.init_state(1), x, is_first=is_first)
    assert r.mask[0, 8, :2].all()
    r.tokens[0, 8, :2].sum().backward()  # the attended tokens at step 8 (queries = step 8's tokens)
    g = x.grad[0].abs().sum((1, 2))
    assert g[8] > 0 and torch.all(g[:8] == 0), "chunk contents and keys must not receive gradient"
    assert mem.attn.q_proj.weight.grad.abs().sum() > 0 and mem.attn.mha.in_proj_weight.grad.abs().sum() > 0


def test_chunk_attention_direct_api_matches_memory_read():
    mem = hcam(chunk_size=3, num_chunks=4, top_k=2)
    state = write_all(mem, torch.randn(2, 12, 2, 8))
    q = torch.randn(2, 3, 8)
    out, sel = mem.attn(q, state["keys"], state["chunks"], state["valid"])
    r = mem.read(state, q)
    assert torch.equal(out, r.tokens[:, :3]) and torch.equal(sel.index, r.extras["chunk_index"])
    assert torch.equal(gather_chunks(state["ids"], sel.index)[..., 0].amin(-1), r.source_ids[:, :3])


def test_bad_inputs():
    with pytest.raises(ValueError, match="top_k=5 is larger than num_chunks=4"):
        hcam(top_k=5)
    for field in ("chunk_size", "num_chunks", "top_k", "heads"):
        with pytest.raises(ValueError, match=field):
            hcam(**{field: 0})
    with pytest.raises(ValueError, match="divisible"):
        hcam(heads=3)
    mem = hcam()
    state = write_all(mem, torch.randn(2, 4, 2, 8))
    with pytest.raises(ValueError, match=r"query must be \[B,Q,8\]"):
        mem.read(state, torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="needs a query"):
        mem.read(state)
    with pytest.raises(ValueError, match="batch"):
        mem.read(state, torch.randn(3, 1, 8))
    with pytest.raises(ValueError, match="top_k=3 exceeds"):
        two_chunks = torch.randn(1, 2, 8)
        ChunkAttention(8, 2, 3, 4).select(torch.randn(1, 1, 8), two_chunks, torch.ones(1, 2, dtype=torch.bool))


def test_bench_attention_smoke(tmp_path):
    from embodimem.bench.attention import Config, format_table, run

    res = run(Config(episode_lengths=[64, 256], dim=16, heads=2, tokens_per_step=2, read_reps=3, out=tmp_path))
    data = json.loads((tmp_path / "attention.json").read_text())
    assert (tmp_path / "attention.png").stat().st_size > 1000
    assert [r["T"] for r in data["rows"]] == [64, 256]
    for row in data["rows"]:
        assert row["top_k"] * row["chunk_size"] <= row["T"] / 16
        assert row["hcam_ms_p50"] > 0 and row["full_ms_p50"] > 0 and row["speedup"] > 0
    assert "hcam" in format_table(res)
