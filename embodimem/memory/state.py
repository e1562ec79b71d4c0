"""Memory state: a flat ``dict[str, Tensor]`` whose tensors all have leading dim B.

A plain dict is a pytree (torch.utils._pytree), saves with ``torch.save``, indexes by env with one line
and has no hidden attributes -- the DreamerV3 "carry" pattern.
"""

from __future__ import annotations

import torch

State = dict[str, torch.Tensor]


def batch_size_of(state: State) -> int:
    """Leading dim shared by every tensor in the state."""
    sizes = {v.shape[0] for v in state.values()}
    if len(sizes) != 1:
        raise ValueError(f"state tensors disagree on the batch dim: {sorted(sizes)}")
    return sizes.pop()


def where_rows(mask: torch.Tensor, a: State, b: State) -> State:
    """Row-wise select: rows with mask[b]=True come from ``a``, the rest from ``b``. mask: bool [B]."""
    out = {}
    for k, vb in b.items():
        va = a[k]
        m = mask.view(-1, *([1] * (vb.dim() - 1)))
        out[k] = torch.where(m, va, vb)
    return out


def index_rows(state: State, index: torch.Tensor) -> State:
    """Gather rows (envs) of every tensor: index int64 [B'] (e.g. a batch permutation)."""
    return {k: v.index_select(0, index) for k, v in state.items()}


def detach_state(state: State) -> State:
    """Cut the autograd graph from every tensor (truncated BPTT boundary)."""
    return {k: v.detach() for k, v in state.items()}


def state_nbytes(state: State) -> int:
    """Total bytes held by the state's tensors."""
    return sum(v.numel() * v.element_size() for v in state.values())


def clone_state(state: State) -> State:
    return {k: v.clone() for k, v in state.items()}


def states_equal(a: State, b: State) -> bool:
    """Exact equality (same keys, dtypes, shapes and values; NaN never appears in valid state)."""
    if a.keys() != b.keys():
        return False
    return all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)
