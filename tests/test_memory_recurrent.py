"""recurrent against torch's own GRU/LSTM run row by row with manual resets."""

from __future__ import annotations

import pytest
import torch

from embodimem.memory import make_memory


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_matches_manual_cell_with_resets(cell):
    torch.manual_seed(0)
    mem = make_memory("recurrent", dim=5, tokens_per_step=3, hidden=7, cell=cell)
    B, T = 2, 9
    x = torch.randn(B, T, 3, 5)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 4] = True
    r, _ = mem(mem.init_state(B), x, is_first=is_first)
    for b in range(B):
        h = c = torch.zeros(1, 7)
        for t in range(T):
            if is_first[b, t]:
                h = c = torch.zeros(1, 7)
            inp = x[b, t].mean(0, keepdim=True)
            if cell == "gru":
                h = mem.cell(inp, h)
            else:
                h, c = mem.cell(inp, (h, c))
            torch.testing.assert_close(r.tokens[b, t, 0], h[0])


def test_bptt_inside_chunk_stops_at_episode_boundary():
    mem = make_memory("recurrent", dim=4, hidden=6)
    x = torch.randn(1, 6, 1, 4, requires_grad=True)
    is_first = torch.zeros(1, 6, dtype=torch.bool)
    is_first[0, 0] = True
    is_first[0, 3] = True
    r, state = mem(mem.init_state(1), x, is_first=is_first)
    r.tokens[0, 5].sum().backward()
    g = x.grad[0, :, 0].abs().sum(-1)
    assert (g[3:] > 0).all() and (g[:3] == 0).all()
    assert not any(v.requires_grad for v in state.values())


def test_step_readout_has_grad_to_params_but_state_does_not():
    mem = make_memory("recurrent", dim=4, hidden=6)
    r, state = mem.step(mem.init_state(2), torch.randn(2, 4), is_first=torch.ones(2, dtype=torch.bool))
    r.tokens.sum().backward()
    assert mem.cell.weight_ih.grad is not None and mem.cell.weight_ih.grad.abs().sum() > 0
    assert r.tokens.shape == (2, 1, 6) and mem.readout_dim == 6


def test_bad_config():
    with pytest.raises(ValueError, match="cell"):
        make_memory("recurrent", dim=4, cell="rnn")
    with pytest.raises(ValueError, match="hidden"):
        make_memory("recurrent", dim=4, hidden=0)
