"""Checkpoints resume exactly (weights, optimizer, RNG), survive crashes mid-save, and refuse other configs."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from embodimem.checkpoint import (
    CheckpointError, checkpoint_name, latest_checkpoint, load_checkpoint, prune_checkpoints, read_checkpoint,
    save_checkpoint,
)
from embodimem.seeding import episode_seeds, get_rng_state, rank_seed, seed_everything, set_rng_state


@dataclass
class OptimCfg:
    lr: float = 1e-2


@dataclass
class RunCfg:
    hidden: int = 8
    optim: OptimCfg = field(default_factory=OptimCfg)


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2))


def _draws() -> tuple[torch.Tensor, np.ndarray, list[float]]:
    return torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)]


def _same_draws(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    """A step that consumes every RNG: torch (data + dropout), numpy (noise), python (lr jitter)."""
    for _ in range(steps):
        x = torch.randn(16, 4) + torch.from_numpy(np.random.randn(16, 4).astype(np.float32))
        for g in opt.param_groups:
            g["lr"] = 1e-2 * (1 + 0.1 * random.random())
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    seed_everything(0)
    model = _model()
    opt = torch.optim.Adam(model.parameters())
    _train(model, opt, 3)
    ckpt = save_checkpoint(tmp_path / checkpoint_name(3), model=model, optimizer=opt, counters={"step": 3, "episodes": 7},
                           config=RunCfg(), extra={"memory_state": {"keys": torch.ones(2, 3)}})
    _train(model, opt, 3)  # the uninterrupted run continues
    expected_params = [p.detach().clone() for p in model.parameters()]
    expected_draws = _draws()

    seed_everything(123)  # a "new process": different init, different RNG
    model2 = _model()
    opt2 = torch.optim.Adam(model2.parameters())
    _draws()
    loaded = load_checkpoint(ckpt, model=model2, optimizer=opt2, expected_config=RunCfg())
    assert loaded.counters == {"step": 3, "episodes": 7}
    assert torch.equal(loaded.extra["memory_state"]["keys"], torch.ones(2, 3))
    assert loaded.config == {"hidden": 8, "optim": {"lr": 0.01}}
    _train(model2, opt2, 3)
    for p, q in zip(model2.parameters(), expected_params):
        assert torch.equal(p, q)
    assert _same_draws(_draws(), expected_draws)


def test_rng_restore_next_draws_equal(tmp_path: Path) -> None:
    seed_everything(5)
    _draws()
    model = _model()
    save_checkpoint(tmp_path / "c.pt", model=model, counters={"step": 1})
    expected = _draws()
    _draws()
    load_checkpoint(tmp_path / "c.pt", model=model, restore_rng=False)
    assert not _same_draws(_draws(), expected)
    load_checkpoint(tmp_path / "c.pt", model=model)
    assert _same_draws(_draws(), expected)
    state = get_rng_state()
    after = _draws()
    set_rng_state(state)
    assert _same_draws(_draws(), after)


def test_crash_during_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    path = save_checkpoint(tmp_path / "ckpt.pt", model=model, counters={"step": 1})
    before = path.read_bytes()
    real_save = torch.save

    def crash_midway(obj: object, f: object, *a: object, **kw: object) -> None:
        f.write(b"PK\x03\x04 half a zip")  # some bytes reach the disk, then the process "dies"
        raise RuntimeError("simulated crash during save")

    monkeypatch.setattr(torch, "save", crash_midway)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save_checkpoint(path, model=model, counters={"step": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind
    assert load_checkpoint(path, model=_model()).counters == {"step": 1}
    assert latest_checkpoint(tmp_path) == path


def test_incompatible_config_names_fields_and_leaves_model(tmp_path: Path) -> None:
    model = _model()
    save_checkpoint(tmp_path / "c.pt", model=model, counters={"step": 0}, config=RunCfg(),
                    memory_config={"name": "fifo", "capacity": 8})
    other = _model()
    before = [p.detach().clone() for p in other.parameters()]
    with pytest.raises(ValueError, match=r"incompatible config; differing fields: hidden, optim.lr"):
        load_checkpoint(tmp_path / "c.pt", model=other, expected_config=RunCfg(hidden=4, optim=OptimCfg(lr=0.5)))
    assert all(torch.equal(p, q) for p, q in zip(other.parameters(), before))
    with pytest.raises(ValueError, match=r"memory_config; differing fields: capacity"):
        load_checkpoint(tmp_path / "c.pt", model=other, expected_memory_config={"name": "fifo", "capacity": 16})
    loaded = load_checkpoint(tmp_path / "c.pt", model=other, expected_config=RunCfg(optim=OptimCfg(lr=0.5)),
                             ignore_config_fields=["optim.lr"])
    assert loaded.memory_config == {"name": "fifo", "capacity": 8}
    save_checkpoint(tmp_path / "noconf.pt", model=model, counters={})
    with pytest.raises(ValueError, match="saved without a config"):
        load_checkpoint(tmp_path / "noconf.pt", model=other, expected_config=RunCfg())


def test_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    model = _model()
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt", model=model)
    good = save_checkpoint(tmp_path / "good.pt", model=model, counters={"step": 1})
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "trunc.pt", model=model)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an embodimem checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="do not fit this model"):
        load_checkpoint(good, model=nn.Linear(3, 3))
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(good, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_save_refuses_unsafe_extra(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"extra.arr: ndarray"):
        save_checkpoint(tmp_path / "c.pt", model=_model(), counters={}, extra={"arr": np.zeros(3)})
    assert not (tmp_path / "c.pt").exists()


def test_scheduler_round_trip(tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        opt.step()
        sched.step()
    save_checkpoint(tmp_path / "c.pt", model=model, optimizer=opt, scheduler=sched, counters={"step": 3})
    opt2 = torch.optim.SGD(model.parameters(), lr=1.0)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    load_checkpoint(tmp_path / "c.pt", model=model, optimizer=opt2, scheduler=sched2)
    assert sched2.get_last_lr() == sched.get_last_lr() == [0.125]


def test_latest_and_prune(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None and latest_checkpoint(tmp_path / "missing") is None
    for step in (9, 10, 2):
        (tmp_path / f"step_{step}.pt").write_bytes(b"x")  # unpadded names still sort by step
    (tmp_path / ".step_99.pt.abc.tmp").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_10.pt"
    assert checkpoint_name(10) == "step_0000000010.pt"
    assert [p.name for p in prune_checkpoints(tmp_path, keep=2)] == ["step_2.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step_10.pt", "step_9.pt"]
    with pytest.raises(ValueError):
        prune_checkpoints(tmp_path, keep=0)


def test_seeding_helpers() -> None:
    assert episode_seeds(1000, 4, 0) == [1000, 1001, 1002, 1003]
    assert episode_seeds(1000, 4, 2) == [1008, 1009, 1010, 1011]  # LeRobot: start + batch_ix*n_envs + i
    ranks = [episode_seeds(0, 3, 1, rank=r, world_size=2) for r in range(2)]
    assert ranks == [[6, 7, 8], [9, 10, 11]]  # ranks never share an episode seed
    assert rank_seed(42, 0) == 42
    seeds = {rank_seed(42, r) for r in range(64)}
    assert len(seeds) == 64 and all(0 <= s < 2**32 for s in seeds)
    assert rank_seed(42, 3) == rank_seed(42, 3) and rank_seed(42, 1) != rank_seed(43, 1)
    with pytest.raises(ValueError):
        seed_everything(-1)
    with pytest.raises(ValueError):
        episode_seeds(0, 0, 0)
    with pytest.raises(ValueError):
        episode_seeds(0, 2, 0, rank=2, world_size=2)
    seed_everything(3)
    a = _draws()
    seed_everything(3)
    assert _same_draws(a, _draws())


def test_deterministic_flag_sets_torch_mode() -> None:
    was = torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(was)
