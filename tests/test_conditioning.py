"""Oracle tests for embodimem.conditioning: gate fusion, cross-attention adapter, prefix tokens."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from embodimem.conditioning import (
    CrossAttention,
    CrossAttentionConfig,
    GateFusion,
    GateFusionConfig,
    PrefixTokens,
    PrefixTokensConfig,
    available_conditioners,
    make_conditioner,
)
from embodimem.memory.base import Readout

D, DM = 8, 6  # query / memory widths (different on purpose, so a mixed-up projection fails)
DT = torch.float64  # oracle comparisons in float64 keep tolerances tight


def readout(B=3, K=5, T=None, dm=DM, p_valid=0.6, seed=0, pose_dim=None) -> Readout:
    """Random readout with some masked slots; source_ids -1 where masked (the memory convention)."""
    g = torch.Generator().manual_seed(seed)
    lead = (B,) if T is None else (B, T)
    mask = torch.rand(*lead, K, generator=g) < p_valid
    ids = torch.randint(0, 50, (*lead, K), generator=g).masked_fill(~mask, -1)
    r = Readout(tokens=torch.randn(*lead, K, dm, generator=g, dtype=DT), mask=mask, source_ids=ids,
                positions=torch.randn(*lead, K, 3, generator=g, dtype=DT))
    if pose_dim:
        r.extras["pose"] = torch.randn(*lead, K, pose_dim, generator=g, dtype=DT)
    return r


def with_mask(r: Readout, mask: torch.Tensor) -> Readout:
    return Readout(r.tokens, mask, r.source_ids.masked_fill(~mask, -1), positions=r.positions, extras=r.extras)


def xavier_(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random, training-like weights for every parameter (including zero-initialised gates and biases)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (1.0 / math.sqrt(max(p.shape[-1], 1))))
    return module


def cross_attention(**kw) -> CrossAttention:
    kw = {"dim": D, "memory_dim": DM, "num_heads": 2, **kw}
    return xavier_(CrossAttention(CrossAttentionConfig(**kw)).to(DT)).eval()


def sinusoid_ref(v: float, dim: int, max_period: float) -> torch.Tensor:
    half = dim // 2
    f = [max_period ** (-i / half) for i in range(half)]
    return torch.tensor([math.sin(v * fi) for fi in f] + [math.cos(v * fi) for fi in f], dtype=DT)


def brute_force_attention(m: CrossAttention, x: torch.Tensor, r: Readout, current_t=None, pose=None
                          ) -> torch.Tensor:
    """Per-row, per-head softmax attention over the valid slots only; x [B,Q,D] -> memory contribution."""
    c, hd = m.config, m.head_dim
    out = torch.zeros(x.shape[0], x.shape[1], c.dim, dtype=DT)
    for b in range(x.shape[0]):
        valid = r.mask[b].nonzero().flatten().tolist()
        if not valid:
            continue  # empty memory: contribution 0
        tok = r.tokens[b, valid]
        keys_in = tok.clone()
        for j, s in enumerate(valid):
            if c.time_embed != "none":
                v = float(r.source_ids[b, s])
                v = v if c.time_embed == "source_id" else float(current_t[b]) - v
                keys_in[j] += m.time_embed.mlp(sinusoid_ref(v, c.time_dim, c.max_period))
            if c.pose_dim:
                p = r.positions[b, s] if pose is None else pose[b, s]
                keys_in[j] += m.pose_embed(p)
        q, k, v = m.q_proj(x[b]), m.k_proj(keys_in), m.v_proj(tok)  # values from the raw tokens
        heads = []
        for h in range(c.num_heads):
            sl = slice(h * hd, (h + 1) * hd)
            w = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(hd), dim=-1)
            heads.append(w @ v[:, sl])
        out[b] = m.o_proj(torch.cat(heads, dim=-1))
    return out


# ----- registry and validation ----------------------------------------------------------------------------
def test_registry_and_unknown_name():
    assert {"gate", "cross_attention", "prefix"} <= set(available_conditioners())
    assert isinstance(make_conditioner("gate", dim=4), GateFusion)
    assert isinstance(make_conditioner(CrossAttentionConfig(dim=4, num_heads=2), residual=False), CrossAttention)
    assert isinstance(make_conditioner(PrefixTokensConfig(memory_dim=3, model_dim=5)), PrefixTokens)
    with pytest.raises(ValueError, match="cross_attention, gate, prefix"):
        make_conditioner("nope")


@pytest.mark.parametrize("name, kw, match", [
    ("cross_attention", {"dim": 6, "num_heads": 4}, "num_heads"),
    ("cross_attention", {"time_embed": "abs"}, "time_embed"),
    ("cross_attention", {"time_dim": 7}, "time_dim"),
    ("cross_attention", {"dropout": 1.0}, "dropout"),
    ("gate", {"summary": "max"}, "summary"),
    ("gate", {"summary": "mean", "time_embed": "age"}, "attention"),
    ("prefix", {"max_tokens": 0}, "max_tokens"),
])
def test_bad_config_raises(name, kw, match):
    with pytest.raises(ValueError, match=match):
        make_conditioner(name, **kw)


def test_bad_inputs_raise_naming_the_argument():
    m = cross_attention(time_embed="age", pose_dim=3)
    r = readout()
    with pytest.raises(ValueError, match="x must be"):
        m(torch.randn(3, D + 1, dtype=DT), r, current_t=60)  # wrong query width
    with pytest.raises(ValueError, match="x must be"):
        m(torch.randn(2, D, dtype=DT), r, current_t=60)  # mismatched B
    with pytest.raises(ValueError, match="memory_dim"):
        m(torch.randn(3, D, dtype=DT), readout(dm=DM + 1), current_t=60)
    with pytest.raises(ValueError, match="current_t"):
        m(torch.randn(3, D, dtype=DT), r)  # age needs the current step
    with pytest.raises(ValueError, match="current_t"):
        m(torch.randn(3, D, dtype=DT), r, current_t=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="positions"):
        m(torch.randn(3, D, dtype=DT), Readout(r.tokens, r.mask, r.source_ids), current_t=60)
    with pytest.raises(ValueError, match="readout.mask"):
        m(torch.randn(3, D, dtype=DT), Readout(r.tokens, r.mask[:, :-1], r.source_ids[:, :-1]), current_t=60)


# ----- cross-attention --------------------------------------------------------------------------------------
@pytest.mark.parametrize("time_embed", ["none", "age", "source_id"])
@pytest.mark.parametrize("pose", ["none", "positions", "feature"])
@pytest.mark.parametrize("qdim", [True, False])
def test_cross_attention_equals_brute_force(time_embed, pose, qdim):
    pose_dim = {"none": 0, "positions": 3, "feature": 5}[pose]
    m = cross_attention(time_embed=time_embed, pose_dim=pose_dim, head_dim=3)  # inner width 6 != D
    r = readout(B=4, K=6, pose_dim=5)
    r.mask[2] = False  # one empty row
    feat = r.extras["pose"] if pose == "feature" else None
    t = torch.tensor([60, 55, 70, 80])
    x = torch.randn(4, 3, D, dtype=DT) if qdim else torch.randn(4, D, dtype=DT)
    xq = x if qdim else x[:, None]
    ref = brute_force_attention(m, xq, r, current_t=t, pose=feat)
    a = m.attend(x, r, current_t=t, pose=feat)
    out = m(x, r, current_t=t, pose=feat)
    if not qdim:
        ref = ref[:, 0]
    torch.testing.assert_close(a, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, F.layer_norm(x + ref, (D,), m.norm.weight, m.norm.bias), rtol=1e-10, atol=1e-10)


def test_cross_attention_masked_slots_have_no_effect():
    m = cross_attention(time_embed="age", pose_dim=3)
    r = readout(B=3, K=6)
    x = torch.randn(3, 2, D, dtype=DT)
    base = m(x, r, current_t=60)
    junk = Readout(r.tokens.clone(), r.mask, r.source_ids.clone(), positions=r.positions.clone())
    junk.tokens[~r.mask] = float("nan")
    junk.tokens[~r.mask, 0] = 1e9
    junk.source_ids[~r.mask] = 10**12
    junk.positions[~r.mask] = float("inf")
    assert torch.equal(m(x, junk, current_t=60), base)


def test_key_embeddings_do_not_touch_values():
    m = cross_attention(time_embed="age", pose_dim=3)
    r = readout(B=3, K=5, p_valid=1.0)
    x = torch.randn(3, 2, D, dtype=DT)
    one = torch.zeros(3, 5, dtype=torch.bool)
    one[torch.arange(3), torch.tensor([0, 2, 4])] = True
    r1 = with_mask(r, one)
    # a single valid slot gets softmax weight 1: output = o_proj(v_proj(token)), whatever the keys are
    expect = m.o_proj(m.v_proj(r.tokens[one]))[:, None].expand(3, 2, D)
    for t in (50, 80, 1000):
        moved = Readout(r1.tokens, r1.mask, r1.source_ids, positions=r1.positions * 7 + 3)
        torch.testing.assert_close(m.attend(x, moved, current_t=t), expect, rtol=1e-12, atol=1e-12)
    # with several valid slots the embeddings do reach the keys, so the output moves
    assert not torch.allclose(m.attend(x, r, current_t=60), m.attend(x, r, current_t=90))
    # (a shift shared by all slots would cancel in the softmax, so scale instead)
    moved = Readout(r.tokens, r.mask, r.source_ids, positions=r.positions * 2.0)
    assert not torch.allclose(m.attend(x, r, current_t=60), m.attend(x, moved, current_t=60))


def test_cross_attention_slot_permutation_invariance():
    m = cross_attention(time_embed="source_id", pose_dim=3)
    r = readout(B=3, K=7)
    x = torch.randn(3, 2, D, dtype=DT)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(3))
    rp = Readout(r.tokens[:, perm], r.mask[:, perm], r.source_ids[:, perm], positions=r.positions[:, perm])
    torch.testing.assert_close(m(x, rp), m(x, r), rtol=1e-12, atol=1e-12)


def test_cross_attention_eval_is_deterministic_and_dropout_free():
    m = cross_attention(dropout=0.5)
    ref = cross_attention(dropout=0.0)
    ref.load_state_dict(m.state_dict())
    r = readout(B=4, K=8, p_valid=1.0)
    x = torch.randn(4, 3, D, dtype=DT)
    assert torch.equal(m(x, r), m(x, r))
    torch.testing.assert_close(m(x, r), ref(x, r), rtol=1e-12, atol=1e-12)
    m.train()
    torch.manual_seed(0)
    assert not torch.allclose(m(x, r), ref(x, r))  # dropout is live in training


# ----- gate fusion ------------------------------------------------------------------------------------------
def gate(summary="mean", **kw) -> GateFusion:
    return GateFusion(GateFusionConfig(dim=D, memory_dim=DM, summary=summary, num_heads=2, **kw)).to(DT).eval()


def test_gate_is_half_at_init():
    m = gate()
    x, mem = torch.randn(4, 3, D, dtype=DT) * 10, torch.randn(4, 3, D, dtype=DT) * 10
    out, g = m.fuse(x, mem)
    assert torch.equal(g, torch.full_like(g, 0.5))
    torch.testing.assert_close(out, 0.5 * (x + mem), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("perturb", [False, True])
def test_gate_output_between_inputs(perturb):
    m = gate()
    if perturb:
        xavier_(m.gate, seed=5)
        with torch.no_grad():
            m.gate.weight.mul_(20.0)  # saturate some gates toward 0 or 1
    g0 = torch.Generator().manual_seed(7)
    x, mem = torch.randn(64, 3, D, generator=g0, dtype=DT) * 5, torch.randn(64, 3, D, generator=g0, dtype=DT) * 5
    out, g = m.fuse(x, mem)
    lo, hi = torch.minimum(x, mem), torch.maximum(x, mem)
    eps = 1e-12 * (lo.abs() + hi.abs() + 1)
    assert bool(((out >= lo - eps) & (out <= hi + eps)).all())
    # and it is exactly the documented formula
    g_ref = torch.sigmoid(torch.cat([x, mem], -1) @ m.gate.weight.T + m.gate.bias)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, g_ref * mem + (1 - g_ref) * x, rtol=1e-10, atol=1e-10)
    if perturb:  # the perturbation really moved the gates, some close to saturation
        assert bool(((g - 0.5).abs() > 0.45).any())


@pytest.mark.parametrize("qdim", [True, False])
def test_gate_mean_summary_oracle(qdim):
    m = xavier_(gate(), seed=2)
    r = readout(B=4, K=5)
    x = torch.randn(4, 2, D, dtype=DT) if qdim else torch.randn(4, D, dtype=DT)
    out = m(x, r)
    xq = x if qdim else x[:, None]
    for b in range(4):
        valid = r.mask[b]
        if not valid.any():
            torch.testing.assert_close(out[b], x[b])
            continue
        summ = m.mem_proj(r.tokens[b, valid].mean(0)).expand(xq.shape[1], D)
        g = torch.sigmoid(m.gate(torch.cat([xq[b], summ], -1)))
        ref = g * summ + (1 - g) * xq[b]
        torch.testing.assert_close(out[b], ref if qdim else ref[0], rtol=1e-10, atol=1e-10)


def test_gate_attention_summary_uses_cross_attention_read():
    m = xavier_(gate("attention", time_embed="age"), seed=4)
    r = readout(B=3, K=5)
    x = torch.randn(3, 2, D, dtype=DT)
    t = torch.tensor([60, 61, 62])
    summ = brute_force_attention(m.attn, x, r, current_t=t)
    ref, _ = m.fuse(x, summ)
    has = r.mask.any(-1)
    torch.testing.assert_close(m(x, r, current_t=t)[has], ref[has], rtol=1e-10, atol=1e-10)
    out = m(x, r, current_t=t)
    lo, hi = torch.minimum(x, summ), torch.maximum(x, summ)
    assert bool(((out >= lo - 1e-12) & (out <= hi + 1e-12)).all())


# ----- prefix tokens ----------------------------------------------------------------------------------------
def prefix(**kw) -> PrefixTokens:
    return xavier_(PrefixTokens(PrefixTokensConfig(memory_dim=DM, model_dim=D, **kw)).to(DT)).eval()


def test_prefix_tokens_oracle():
    m = prefix(time_embed="age")
    r = readout(B=3, K=5)
    t = torch.tensor([60, 70, 80])
    tok, mask = m(r, current_t=t)
    assert tok.shape == (3, 5, D) and torch.equal(mask, r.mask)
    for b in range(3):
        for s in range(5):
            if not r.mask[b, s]:
                assert torch.equal(tok[b, s], torch.zeros(D, dtype=DT))
                continue
            age = float(t[b] - r.source_ids[b, s])
            ref = m.proj(r.tokens[b, s]) + m.type_embed + m.time_embed.mlp(sinusoid_ref(age, 32, 10000.0))
            torch.testing.assert_close(tok[b, s], ref, rtol=1e-10, atol=1e-10)


def test_prefix_fixed_length_drops_oldest_and_pads():
    m = prefix(max_tokens=3, type_embed=False)
    tokens = torch.randn(3, 5, DM, dtype=DT)
    ids = torch.tensor([[4, 9, 2, 7, 7], [1, 2, 3, 4, 5], [0, 5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    tok, out_mask = m(Readout(tokens, mask, ids.masked_fill(~mask, -1)))
    # row 0: newest three are ids 9, 7, 7 (slots 1, 3, 4), kept in readout order; row 1: 2 valid + 1 pad
    keep = {0: [1, 3, 4], 1: [1, 4], 2: []}
    for b, slots in keep.items():
        assert out_mask[b].tolist() == [True] * len(slots) + [False] * (3 - len(slots))
        torch.testing.assert_close(tok[b, :len(slots)], m.proj(tokens[b, slots]), rtol=1e-12, atol=1e-12)
        assert torch.equal(tok[b, len(slots):], torch.zeros(3 - len(slots), D, dtype=DT))
    # tie on id 7: slot 3 (lower index) wins over slot 4 when only two fit
    m2 = prefix(max_tokens=2, type_embed=False)
    m2.load_state_dict(m.state_dict())
    tok2, _ = m2(Readout(tokens[:1], mask[:1], ids[:1]))
    torch.testing.assert_close(tok2[0], m.proj(tokens[0, [1, 3]]), rtol=1e-12, atol=1e-12)


def test_prefix_masked_slots_have_no_effect():
    m = prefix(time_embed="source_id", max_tokens=4)
    r = readout(B=3, K=6)
    base = m(r)
    junk = Readout(r.tokens.clone(), r.mask, r.source_ids.clone())
    junk.tokens[~r.mask] = float("nan")
    junk.source_ids[~r.mask] = 10**9  # would be "newest" if masks were ignored
    out = m(junk)
    assert torch.equal(out.tokens, base.tokens) and torch.equal(out.mask, base.mask)


# ----- shared contracts: sequence readouts, empty memory, batch independence, gradients ----------------------
def all_conditioners():
    return {
        "cross_attention": cross_attention(time_embed="age", pose_dim=3),
        "gate_mean": xavier_(gate("mean"), seed=3),
        "gate_attention": xavier_(gate("attention", time_embed="age", pose_dim=3), seed=3),
        "prefix": prefix(time_embed="age", max_tokens=4),
    }


def apply(name, m, x, r, t):
    return m(r, current_t=t) if name == "prefix" else m(x, r, current_t=t)


@pytest.mark.parametrize("name", ["cross_attention", "gate_mean", "gate_attention", "prefix"])
@pytest.mark.parametrize("qdim", [True, False])
def test_sequence_equals_per_step(name, qdim):
    m = all_conditioners()[name]
    B, T = 2, 4
    r = readout(B=B, T=T, K=5)
    r.mask[1, 2] = False  # an empty step inside the sequence
    x = torch.randn(B, T, 3, D, dtype=DT) if qdim else torch.randn(B, T, D, dtype=DT)
    t = torch.arange(T)[None].expand(B, T) + 60
    seq = apply(name, m, x, r, t)
    steps = [apply(name, m, x[:, i], r.map(lambda v, i=i: v[:, i]), t[:, i]) for i in range(T)]
    if name == "prefix":
        torch.testing.assert_close(seq.tokens, torch.stack([s.tokens for s in steps], 1), rtol=1e-12, atol=1e-12)
        assert torch.equal(seq.mask, torch.stack([s.mask for s in steps], 1))
    else:
        torch.testing.assert_close(seq, torch.stack(steps, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("K", [0, 5])
def test_empty_memory(K):
    r = readout(B=3, K=K)
    r = with_mask(r, torch.zeros(3, K, dtype=torch.bool))
    x = torch.randn(3, 2, D, dtype=DT)
    for residual, norm in [(True, False), (True, True), (False, False)]:
        m = cross_attention(time_embed="age", pose_dim=3, residual=residual, norm=norm)
        assert torch.equal(m.attend(x, r, current_t=60), torch.zeros_like(x))  # no memory contribution
        out = m(x, r, current_t=60)
        query_path = x if residual else torch.zeros_like(x)
        assert torch.equal(out, F.layer_norm(query_path, (D,), m.norm.weight, m.norm.bias) if norm else query_path)
    for g in (xavier_(gate("mean"), seed=3), xavier_(gate("attention", time_embed="age"), seed=3)):
        assert torch.equal(g(x, r, current_t=60), x)  # gate forced to 0
    _, gate_values = g.fuse(x, x + 1, torch.zeros(3, 1, dtype=torch.bool))
    assert torch.equal(gate_values, torch.zeros_like(gate_values))
    for L in (None, 4):
        tok, mask = prefix(time_embed="age", max_tokens=L)(r, current_t=60)
        assert tok.shape == (3, L or K, D) and not mask.any() and bool(torch.isfinite(tok).all())


@pytest.mark.parametrize("name", ["cross_attention", "gate_mean", "gate_attention", "prefix"])
def test_rows_independent_of_empty_rows(name):
    m = all_conditioners()[name]
    r = readout(B=3, K=5, p_valid=1.0)
    mask = r.mask.clone()
    mask[1] = False
    r = with_mask(r, mask)
    x = torch.randn(3, 2, D, dtype=DT)
    t = torch.tensor([60, 61, 62])
    full = apply(name, m, x, r, t)
    for b in (0, 2):
        solo = apply(name, m, x[b:b + 1], r.map(lambda v, b=b: v[b:b + 1]), t[b:b + 1])
        if name == "prefix":
            torch.testing.assert_close(full.tokens[b:b + 1], solo.tokens, rtol=1e-12, atol=1e-12)
        else:
            torch.testing.assert_close(full[b:b + 1], solo, rtol=1e-12, atol=1e-12)
        assert bool(torch.isfinite(full.tokens if name == "prefix" else full).all())


@pytest.mark.parametrize("name", ["cross_attention", "gate_mean", "gate_attention", "prefix"])
def test_gradients_reach_query_and_valid_memory_only(name):
    m = all_conditioners()[name].train()
    r = readout(B=3, K=4)  # K <= prefix max_tokens, so no valid slot is truncated away
    r.mask[1] = False
    r.mask[0, 0], r.mask[0, 1] = True, False
    r.tokens.requires_grad_(True)
    x = torch.randn(3, 2, D, dtype=DT, requires_grad=True)
    out = apply(name, m, x, r, torch.tensor([60, 61, 62]))
    ((out.tokens if name == "prefix" else out) ** 2).sum().backward()
    g = r.tokens.grad
    assert bool(torch.isfinite(g).all()) and bool((g[r.mask].abs().sum(-1) > 0).all())
    assert torch.equal(g[~r.mask], torch.zeros_like(g[~r.mask]))
    if name != "prefix":
        assert bool(torch.isfinite(x.grad).all()) and bool((x.grad.abs().sum(-1) > 0).all())
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in m.parameters() if p.requires_grad)
