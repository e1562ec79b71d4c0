"""The memory contract, run over every registered memory (a new memory is held to it automatically)."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from embodimem.memory import (
    Readout,
    available_memories,
    config_from_dict,
    make_memory,
    memory_config_class,
)
from embodimem.memory.state import index_rows, state_nbytes

# Extra variants beyond each memory's ``example()`` config (name, overrides).
VARIANTS = [("recurrent", {"cell": "lstm"})]
CASES = [(n, {}) for n in available_memories()] + VARIANTS
IDS = [n + "".join(f"-{k}={v}" for k, v in o.items()) for n, o in CASES]


def build(name: str, overrides: dict, seed: int = 0):
    torch.manual_seed(seed)
    cfg = dataclasses.replace(memory_config_class(name).example(), **overrides)
    return make_memory(cfg)


def inputs(mem, B: int, T: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x, kw = mem.example_inputs(B, T, g)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    return x, is_first, kw


def at(kw: dict, t: int) -> dict:
    return {k: v[:, t] for k, v in kw.items()}


def rows(kw: dict, idx: torch.Tensor) -> dict:
    return {k: v.index_select(0, idx) for k, v in kw.items()}


def run_steps(mem, state, x, is_first, kw):
    outs = []
    for t in range(x.shape[1]):
        r, state = mem.step(state, x[:, t], is_first=is_first[:, t], **at(kw, t))
        outs.append(r)
    return Readout.stack(outs, dim=1), state


def assert_readout_close(a: Readout, b: Readout, atol: float = 1e-5):
    ta, tb = a.tensors(), b.tensors()
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].shape == tb[k].shape, k
        if ta[k].is_floating_point():
            # compare only where valid; masked slots may hold anything finite
            torch.testing.assert_close(ta[k], tb[k], atol=atol, rtol=1e-5, msg=k)
        else:
            assert torch.equal(ta[k], tb[k]), k


def assert_state_close(a: dict, b: dict, atol: float = 1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-5, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    return request.param


def test_readout_shapes_and_provenance(case):
    mem = build(*case)
    B, T = 3, 7
    x, is_first, kw = inputs(mem, B, T)
    state = mem.init_state(B)
    for t in range(T):
        r, state = mem.step(state, x[:, t], is_first=is_first[:, t], **at(kw, t))
        K = r.tokens.shape[1]
        assert r.tokens.shape == (B, K, mem.readout_dim)
        assert r.mask.dtype == torch.bool and r.mask.shape == (B, K)
        assert r.source_ids.dtype == torch.long and r.source_ids.shape == (B, K)
        assert torch.all(r.source_ids[~r.mask] == -1), "masked slots must carry source id -1"
        assert torch.all(r.source_ids[r.mask] <= t), "a slot cannot come from a future step"
        assert bool(r.mask.any(dim=1).all()), "after a write every row holds something"
        assert torch.isfinite(r.tokens).all()


def test_step_equals_forward(case):
    mem = build(*case)
    B, T = 3, 12
    x, is_first, kw = inputs(mem, B, T)
    is_first[0, 5] = True  # an episode boundary inside the sequence
    is_first[2, 9] = True
    # start from a non-empty state so the held slots take part
    x0, f0, kw0 = inputs(mem, B, 4, seed=7)
    _, state0 = run_steps(mem, mem.init_state(B), x0, f0, kw0)
    r_step, s_step = run_steps(mem, state0, x, is_first, kw)
    r_fwd, s_fwd = mem(state0, x, is_first=is_first, **kw)
    assert_readout_close(r_step, r_fwd)
    assert_state_close(s_step, s_fwd)


def test_batched_equals_each_row_alone(case):
    mem = build(*case)
    B, T = 3, 9
    x, is_first, kw = inputs(mem, B, T)
    is_first[1, 4] = True
    r_all, s_all = run_steps(mem, mem.init_state(B), x, is_first, kw)
    for b in range(B):
        i = torch.tensor([b])
        r_b, s_b = run_steps(mem, mem.init_state(1), x[i], is_first[i], rows(kw, i))
        assert_readout_close(r_all.map(lambda v: v.index_select(0, i)), r_b)
        assert_state_close(index_rows(s_all, i), s_b)


def test_is_first_resets_only_its_rows(case):
    mem = build(*case)
    B, T, k = 3, 10, 6
    x, is_first, kw = inputs(mem, B, T)
    r_plain, _ = run_steps(mem, mem.init_state(B), x, is_first, kw)
    reset = is_first.clone()
    reset[1, k] = True
    r_reset, _ = run_steps(mem, mem.init_state(B), x, reset, kw)
    # untouched rows: identical outputs
    keep = torch.tensor([0, 2])
    assert_readout_close(r_plain.map(lambda v: v.index_select(0, keep)), r_reset.map(lambda v: v.index_select(0, keep)))
    # reset row from step k on: equals a fresh state fed only steps k..T-1
    i = torch.tensor([1])
    f_fresh = torch.zeros(1, T - k, dtype=torch.bool)
    f_fresh[:, 0] = True
    kw_tail = {n: v[i, k:] for n, v in kw.items()}
    r_fresh, _ = run_steps(mem, mem.init_state(1), x[i, k:], f_fresh, kw_tail)
    assert_readout_close(r_reset.map(lambda v: v[i, k:]), r_fresh)


def test_batch_permutation_equivariance(case):
    mem = build(*case)
    B, T = 4, 8
    x, is_first, kw = inputs(mem, B, T)
    is_first[2, 3] = True
    perm = torch.tensor([2, 0, 3, 1])
    r, s = run_steps(mem, mem.init_state(B), x, is_first, kw)
    r_p, s_p = run_steps(mem, mem.init_state(B), x[perm], is_first[perm], rows(kw, perm))
    assert_readout_close(r.map(lambda v: v.index_select(0, perm)), r_p)
    assert_state_close(index_rows(s, perm), s_p)


def test_state_dict_round_trip_is_exact(case):
    name, overrides = case
    mem = build(name, overrides)
    B, T = 2, 9
    x, is_first, kw = inputs(mem, B, T)
    _, state = run_steps(mem, mem.init_state(B), x[:, :5], is_first[:, :5], {k: v[:, :5] for k, v in kw.items()})
    buf = io.BytesIO()
    torch.save({"config": mem.config.to_dict(), "module": mem.state_dict(), "memory_state": state}, buf)
    buf.seek(0)
    blob = torch.load(buf, weights_only=True)
    mem2 = make_memory(config_from_dict(blob["config"]))
    mem2.load_state_dict(blob["module"])
    state2 = blob["memory_state"]
    assert state2.keys() == state.keys()
    assert all(torch.equal(state[k], state2[k]) and state[k].dtype == state2[k].dtype for k in state)
    tail = {k: v[:, 5:] for k, v in kw.items()}
    r1, s1 = run_steps(mem, state, x[:, 5:], is_first[:, 5:], tail)
    r2, s2 = run_steps(mem2, state2, x[:, 5:], is_first[:, 5:], tail)
    assert all(torch.equal(a, b) for a, b in zip(r1.tensors().values(), r2.tensors().values()))
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_writes_keep_no_autograd_graph(case):
    mem = build(*case)
    B, T = 2, 6
    x, is_first, kw = inputs(mem, B, T)
    x.requires_grad_(True)
    state = mem.init_state(B)
    state = mem.write(state, x[:, 0], **at(kw, 0))
    assert not any(v.requires_grad for v in state.values()), "write stored a graph"
    r, state = mem.step(state, x[:, 1], is_first=is_first[:, 1], **at(kw, 1))
    assert not any(v.requires_grad for v in state.values()), "step returned a state with a graph"
    r, state = mem(state, x[:, 2:], is_first=is_first[:, 2:], **{k: v[:, 2:] for k, v in kw.items()})
    assert not any(v.requires_grad for v in state.values()), "forward returned a state with a graph"


def test_eval_mode_is_deterministic(case):
    mem = build(*case).eval()
    B, T = 2, 8
    x, is_first, kw = inputs(mem, B, T)
    with torch.no_grad():
        r1, s1 = run_steps(mem, mem.init_state(B), x, is_first, kw)
        r2, s2 = run_steps(mem, mem.init_state(B), x, is_first, kw)
    assert all(torch.equal(a, b) for a, b in zip(r1.tensors().values(), r2.tensors().values()))
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_memory_bound_respected_over_10k_steps(case):
    mem = build(*case).eval()
    B, T = 2, 10_000
    bound = mem.bound_bytes(B)
    assert bound > 0
    g = torch.Generator().manual_seed(3)
    x, kw = mem.example_inputs(B, 100, g)
    state = mem.init_state(B)
    no_reset = torch.zeros(B, dtype=torch.bool)
    with torch.no_grad():
        for t in range(T):
            j = t % 100
            _, state = mem.step(state, x[:, j], is_first=no_reset, **at(kw, j))
            if t % 1000 == 999:
                assert state_nbytes(state) <= bound, f"step {t + 1}: {state_nbytes(state)} B > declared {bound} B"
    stats = mem.stats(state)
    assert stats["bytes"] == state_nbytes(state)


def test_bad_inputs_raise_clear_errors(case):
    mem = build(*case)
    c = mem.config
    state = mem.init_state(2)
    ok = torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="width"):
        mem.step(state, torch.randn(2, c.tokens_per_step, c.dim + 1), is_first=ok)
    bad = torch.randn(2, c.tokens_per_step, c.dim)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mem.step(state, bad, is_first=ok)
    with pytest.raises(ValueError, match="is_first"):
        mem.step(state, torch.randn(2, c.tokens_per_step, c.dim), is_first=torch.zeros(2))
    with pytest.raises(ValueError, match="is_first"):
        mem.step(state, torch.randn(2, c.tokens_per_step, c.dim), is_first=torch.zeros(3, dtype=torch.bool))


def test_unknown_memory_lists_valid_names():
    with pytest.raises(ValueError) as e:
        make_memory("no-such-memory")
    for name in available_memories():
        assert name in str(e.value)


def test_config_round_trip_and_unknown_field():
    for name in available_memories():
        cfg = memory_config_class(name).example()
        assert config_from_dict(cfg.to_dict()) == cfg
        with pytest.raises(ValueError, match="bogus"):
            config_from_dict({**cfg.to_dict(), "bogus": 1})
