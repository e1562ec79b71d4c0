"""Every training preset in configs/ loads, validates, builds its env and policy, and takes a step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from embodimem.agents.ppo import TrainConfig
from embodimem.agents.ppo.policy import MemoryPolicy
from embodimem.agents.ppo.train import make_vector_env, obs_to_torch
from embodimem.config import load_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PRESETS = sorted(p for p in CONFIGS.glob("*.yaml") if "env" in (yaml.safe_load(p.read_text()) or {}))


def test_the_presets_are_found():
    assert {p.stem for p in PRESETS} >= {"tmaze", "object_recall", "popgym_repeat_previous"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
@pytest.mark.parametrize("memory", ["none", "fifo"])
def test_preset_builds_and_steps(path, memory):
    cfg = load_yaml(TrainConfig, path)
    cfg.validate()
    cfg.num_envs, cfg.policy.memory = 2, memory
    envs = make_vector_env(cfg, None)
    try:
        policy = MemoryPolicy(cfg.policy, envs.single_observation_space, envs.single_action_space)
        obs_np, _ = envs.reset(seed=[0, 1])
        obs = obs_to_torch(obs_np, policy.obs_keys, torch.device("cpu"))
        mem = policy.init_memory(2)
        with torch.no_grad():
            logits, value, mem = policy.act(obs, mem, torch.ones(2, dtype=torch.bool))
        assert logits.shape == (2, envs.single_action_space.n) and torch.isfinite(logits).all()
        envs.step(logits.argmax(-1).numpy())
    finally:
        envs.close()
