"""Fast memory envs: MiniGrid memory tasks and POPGym through embodimem's conventions."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from embodimem.envs import make_env
from embodimem.envs.fast.minigrid import MiniGridMemoryEnv, memory_task_names, oracle_action
from embodimem.envs.fast.popgym import POPGymEnv, popgym_task_names
from embodimem.types import Frame

needs_minigrid = pytest.mark.skipif(importlib.util.find_spec("minigrid") is None,
                                    reason="minigrid not installed: pip install minigrid")
needs_popgym = pytest.mark.skipif(importlib.util.find_spec("popgym") is None,
                                  reason="popgym not installed: pip install popgym")


# ------------------------------------------------------------------ MiniGrid


@pytest.fixture(scope="module")
def grid_env():
    env = MiniGridMemoryEnv("MemoryS7")
    yield env
    env.close()


@needs_minigrid
def test_minigrid_observation_convention(grid_env):
    obs, info = grid_env.reset(seed=0)
    assert obs["rgb"].shape == (56, 56, 3) and obs["rgb"].dtype == np.uint8
    assert obs["symbolic"].shape == (7, 7, 3) and obs["direction"] in range(4)
    assert "matching object" in obs["instruction"]
    assert "depth" not in obs and "pose" not in obs  # a 2D grid has no pinhole camera: documented omission
    assert info["is_success"] is False and grid_env.observation_space.contains(obs)
    f = Frame.from_obs(obs, t=0, is_first=True)
    assert f.depth is None and f.pose is None and f.instruction == [obs["instruction"]]


@needs_minigrid
@pytest.mark.parametrize("target, success", [("success", True), ("failure", False)])
def test_minigrid_is_success(grid_env, target, success):
    for seed in range(3):
        grid_env.reset(seed=seed)
        for _ in range(100):
            obs, reward, term, trunc, info = grid_env.step(oracle_action(grid_env, target))
            assert info["is_success"] is (term and success)
            if term or trunc:
                break
        assert term and info["is_success"] is success and (reward > 0) is success


@needs_minigrid
def test_minigrid_cue_is_seen_then_needed(grid_env):
    """The cue object sits in the start room; from the corridor's end the agent cannot see it any more."""
    obs, _ = grid_env.reset(seed=1)
    base = grid_env.grid_env
    assert base.success_pos != base.failure_pos
    assert set(memory_task_names()) >= {"MemoryS7", "MemoryS13", "MemoryS13Random"}


@needs_minigrid
def test_minigrid_bad_input(grid_env):
    with pytest.raises(ValueError, match="unknown MiniGrid memory task 'MemoryS8'"):
        MiniGridMemoryEnv("MemoryS8")
    grid_env.reset(seed=0)
    for bad in (3, -1, 1.5, "left", np.array([1, 2])):
        with pytest.raises(ValueError, match="outside the action space"):
            grid_env.step(bad)
    full = MiniGridMemoryEnv("MemoryS7", full_actions=True)
    assert full.action_space.n == 7
    full.close()


@needs_minigrid
def test_minigrid_speed(grid_env):
    grid_env.reset(seed=0)
    t0, n = time.perf_counter(), 300
    for i in range(n):
        _, _, term, trunc, _ = grid_env.step(i % 3)
        if term or trunc:
            grid_env.reset()
    assert n / (time.perf_counter() - t0) > 50  # hundreds of steps/s on one shared core


# ------------------------------------------------------------------ POPGym


@needs_popgym
@pytest.mark.parametrize("task, dim", [("RepeatPreviousEasy", 4), ("CountRecallEasy", 4), ("AutoencodeEasy", 6),
                                       ("PositionOnlyCartPoleEasy", 2)])
def test_popgym_vector_observation(task, dim):
    env = POPGymEnv(task)
    obs, info = env.reset(seed=0)
    assert obs["vector"].shape == (dim,) and obs["vector"].dtype == np.float32
    assert env.observation_space.contains(obs) and info["is_success"] is False
    obs2, *_ = env.step(env.action_space.sample())
    assert obs2["vector"].shape == (dim,)
    env.close()


@needs_popgym
def test_popgym_success_only_at_episode_end_for_good_play():
    """RepeatFirst: always answering the first card is perfect play (return 1.0) -> is_success on the last step."""
    env = POPGymEnv("RepeatFirstEasy")
    obs, _ = env.reset(seed=0)
    first = int(np.argmax(obs["vector"]))
    flags = []
    done = False
    while not done:
        obs, r, term, trunc, info = env.step(first)
        done = term or trunc
        flags.append(info["is_success"])
    assert info["episode_return"] == pytest.approx(1.0) and flags[-1] and not any(flags[:-1])
    # a constant wrong answer cannot reach the threshold
    obs, _ = env.reset(seed=0)
    wrong = (int(np.argmax(obs["vector"])) + 1) % 4
    done = False
    while not done:
        obs, r, term, trunc, info = env.step(wrong)
        done = term or trunc
    assert not info["is_success"] and info["episode_return"] < 0.9
    env.close()


@needs_popgym
def test_popgym_bad_input_and_registry():
    with pytest.raises(ValueError, match="unknown POPGym task 'RepeatNothing'"):
        POPGymEnv("RepeatNothing")
    with pytest.raises(ValueError, match="success_threshold"):
        POPGymEnv("RepeatFirstEasy", success_threshold=2.0)
    env = POPGymEnv("RepeatPreviousEasy")
    env.reset(seed=0)
    for bad in (4, -1, 0.5, True, np.array([0, 1])):
        with pytest.raises(ValueError, match="outside the action space"):
            env.step(bad)
    env.close()
    assert "CountRecallHard" in popgym_task_names()
    reg = make_env("POPGym-v0", task="CountRecallEasy")
    obs, info = reg.reset(seed=1)
    assert "vector" in obs and "is_success" in info
    reg.close()
    grid = make_env("MiniGridMemory-v0", task="MemoryS9")
    obs, _ = grid.reset(seed=0)
    assert obs["rgb"].shape == (56, 56, 3)
    grid.close()
