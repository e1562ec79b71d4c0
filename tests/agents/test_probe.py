"""Decision probe: the logistic probe against constructed oracles, and the walk's memoryless invariants."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embodimem.agents.ppo.probe import ProbeConfig, probe, probe_accuracy


def test_probe_accuracy_finds_a_planted_signal_and_not_noise():
    rng = np.random.default_rng(0)
    n, groups = 64, np.repeat(np.arange(32), 2)
    y = np.tile([0, 1], 32)
    noise = 10.0 * rng.normal(size=(n, 10))
    signal = noise.copy()
    # a tiny feature (raw scale 1e-2, next to others of scale 10) that separates the cue: standardising finds it
    signal[:, 3] = 0.01 * (2 * y - 1) + 0.002 * rng.normal(size=n)
    assert probe_accuracy(signal, y, groups) == 1.0
    assert probe_accuracy(noise, y, groups) < 0.75
    y4 = np.tile([0, 1, 2, 3], 16)  # multinomial: four cue values, one-hot planted
    x4 = rng.normal(size=(64, 6))
    x4[np.arange(64), y4] += 8.0  # separable by a wide margin
    assert probe_accuracy(x4, y4, np.repeat(np.arange(16), 4)) == 1.0


def test_folds_hold_whole_groups():
    """Features identical within a seed (what a memoryless policy sees at the decision point): exactly chance,
    because every cue value of a seed sits in the same test fold and gets the same prediction."""
    rng = np.random.default_rng(1)
    per_seed = rng.normal(size=(20, 5))
    x = np.repeat(per_seed, 2, axis=0)
    assert probe_accuracy(x, np.tile([0, 1], 20), np.repeat(np.arange(20), 2), folds=5) == 0.5


def test_probe_accuracy_bad_input():
    with pytest.raises(ValueError, match="folds"):
        probe_accuracy(np.zeros((4, 2)), np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]), folds=3)
    with pytest.raises(ValueError, match=r"\[n,F\]"):
        probe_accuracy(np.zeros(4), np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]))


def _run_dir(tmp_path, memory: str, env: str = "embodimem/TMaze-v0", env_args=None):
    from embodimem.agents.ppo.config import TrainConfig
    from embodimem.config import save_yaml

    cfg = TrainConfig(env=env, env_args=env_args if env_args is not None else
                      {"delay": 0, "obs_width": 16, "obs_height": 16, "forward_step": 0.3, "turn_step": 30.0})
    cfg.policy.memory = memory
    cfg.policy.memory_tokens = "pooled"
    save_yaml(cfg, tmp_path / "config.yaml")
    return tmp_path


@pytest.fixture
def miniworld():
    from embodimem.envs.miniworld.headless import miniworld_available

    ok, why = miniworld_available()
    if not ok:
        pytest.skip(why)


def test_memoryless_policy_is_exactly_at_chance_at_the_decision(tmp_path, miniworld):
    res = probe(ProbeConfig(run_dir=_run_dir(tmp_path, "none"), untrained=True, episodes=8))
    acc = res["accuracy"]
    assert res["option"] == "cue" and res["values"] == 2 and res["seeds"] + len(res["skipped_seeds"]) == 8
    assert acc["decision_frame"] == 0.5 and acc["policy_input"] == 0.5 and res["action_dependence"] == 0.0
    assert acc["first_frame"] > 0.8  # the cue box is in view at the start
    assert "memory_readout" not in acc
    assert json.loads((tmp_path / "probe_untrained.json").read_text())["accuracy"] == acc


def test_memory_policy_probes_every_feature(tmp_path, miniworld):
    res = probe(ProbeConfig(run_dir=_run_dir(tmp_path, "fifo"), untrained=True, episodes=8, out=tmp_path / "p.json"))
    assert set(res["accuracy"]) == {"first_frame", "decision_frame", "memory_readout", "policy_input"}
    assert res["accuracy"]["decision_frame"] == 0.5  # the memory cannot change what the frame is
    assert 0.0 <= res["action_dependence"] <= 1.0 and (tmp_path / "p.json").exists()


def test_probe_bad_input(tmp_path, miniworld):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        probe(ProbeConfig(run_dir=_run_dir(tmp_path, "none"), episodes=8))
    with pytest.raises(ValueError, match="episodes >= folds"):
        probe(ProbeConfig(run_dir=tmp_path, untrained=True, episodes=2))
    popgym = _run_dir(tmp_path / "p", "none", env="embodimem/POPGym-v0", env_args={"task": "RepeatPreviousEasy"})
    with pytest.raises(ValueError, match="not a MiniWorld memory task"):
        probe(ProbeConfig(run_dir=popgym, untrained=True, episodes=8))
