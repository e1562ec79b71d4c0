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
    with pytest.raises(ValueError, match="keep_bias"):
        make_memory("recurrent", dim=4, keep_bias=100.0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_keep_bias_sets_the_fraction_of_state_kept_per_step(cell):
    """With weights and the other biases zeroed, the init leaves only keep_bias: a GRU keeps sigmoid(b) * h
    (z = sigmoid(b), candidate tanh(0) = 0); an LSTM keeps sigmoid(b) * c (forget gate sigmoid(b), g = 0)."""
    b = 2.5
    mem = make_memory("recurrent", dim=3, hidden=5, cell=cell, keep_bias=b)
    plain = make_memory("recurrent", dim=3, hidden=5, cell=cell)
    bias = mem.cell.bias_ih.detach().clone()
    with torch.no_grad():
        for p in (mem.cell.weight_ih, mem.cell.weight_hh, mem.cell.bias_hh):
            p.zero_()
        mem.cell.bias_ih.zero_()
        mem.cell.bias_ih[5:10] = b
    h0, c0 = torch.randn(2, 5), torch.randn(2, 5)
    x = torch.randn(2, 3)
    keep = torch.sigmoid(torch.tensor(b))
    if cell == "gru":
        torch.testing.assert_close(mem.cell(x, h0), keep * h0)
    else:
        _, c1 = mem.cell(x, (h0, c0))
        torch.testing.assert_close(c1, keep * c0)
    # the init shifted exactly the keep gate's slice of a default-initialised bias (range of U(-1/sqrt(H), ..))
    bound = 5 ** -0.5
    assert ((bias[5:10] - b).abs() <= bound).all() and (bias[:5].abs() <= bound).all()
    assert plain.config.keep_bias == 0.0 and (plain.cell.bias_ih.abs() <= bound).all()
