"""fifo against a brute-force per-env Python list (the way research code does it)."""

from __future__ import annotations

import pytest
import torch

from embodimem.memory import make_memory


def oracle(x: torch.Tensor, is_first: torch.Tensor, L: int):
    """Per env, per step: the list of (step id, tokens) of the last L steps since the episode began."""
    B, T = is_first.shape
    out = []
    for b in range(B):
        held, step, per_t = [], 0, []
        for t in range(T):
            if is_first[b, t]:
                held, step = [], 0
            held = (held + [(step, x[b, t])])[-L:]
            step += 1
            per_t.append(list(held))
        out.append(per_t)
    return out


@pytest.mark.parametrize("L", [1, 3, 8])
def test_fifo_matches_list_oracle(L):
    torch.manual_seed(0)
    mem = make_memory("fifo", dim=4, tokens_per_step=2, capacity=L)
    B, T = 3, 15
    x = torch.randn(B, T, 2, 4)
    is_first = torch.rand(B, T) < 0.15
    is_first[:, 0] = True
    ref = oracle(x, is_first, L)
    for path in ("step", "forward"):
        if path == "forward":
            r, _ = mem(mem.init_state(B), x, is_first=is_first)
        state, rs = mem.init_state(B), []
        for t in range(T):
            if path == "step":
                rt, state = mem.step(state, x[:, t], is_first=is_first[:, t])
            else:
                rt = r.map(lambda v: v[:, t])
            for b in range(B):
                held = ref[b][t]
                valid = rt.mask[b]
                assert int(valid.sum()) == 2 * len(held)
                # right-aligned, oldest first: the valid tokens are the last 2*len(held) slots
                got = rt.tokens[b][valid].view(len(held), 2, 4)
                want = torch.stack([tok for _, tok in held])
                torch.testing.assert_close(got, want)
                ids = rt.source_ids[b][valid].view(len(held), 2)[:, 0]
                assert ids.tolist() == [s for s, _ in held]
                assert bool(valid[-2:].all()), "the newest step is the last slot"


def test_forward_keeps_gradients_for_in_sequence_tokens():
    mem = make_memory("fifo", dim=3, tokens_per_step=1, capacity=4)
    x = torch.randn(1, 6, 1, 3, requires_grad=True)
    is_first = torch.zeros(1, 6, dtype=torch.bool)
    is_first[0, 0] = True
    is_first[0, 3] = True
    r, _ = mem(mem.init_state(1), x, is_first=is_first)
    r.tokens[0, 5].sum().backward()  # readout at t=5 holds steps 3,4,5 (episode restarted at 3)
    g = x.grad[0, :, 0].abs().sum(-1)
    assert (g[3:] > 0).all() and (g[:3] == 0).all()


def test_capacity_zero_and_explicit_ids():
    with pytest.raises(ValueError, match="capacity"):
        make_memory("fifo", dim=4, capacity=0)
    mem = make_memory("fifo", dim=2, capacity=3)
    state = mem.init_state(1)
    for frame_id in (10, 20, 30, 40):
        r, state = mem.step(state, torch.ones(1, 2), is_first=torch.tensor([frame_id == 10]), t=torch.tensor([frame_id]))
    assert r.source_ids[0].tolist() == [20, 30, 40]
