"""Vector envs: autoreset modes and is_first, per-episode seeds, Frame batches, sync == async."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from embodimem.envs.miniworld.headless import miniworld_available
from embodimem.envs.vector import EpisodeTracker, frames_from_vec_obs, make_vec_env

ok, why = miniworld_available()
needs_miniworld = pytest.mark.skipif(not ok, reason=why)

ENV = "embodimem/TMaze-v0"
KW = {"delay": 0, "max_steps": 4}  # short episodes: every 4th step ends them (truncation)


def test_episode_tracker_rules():
    same = EpisodeTracker(2, "same_step")
    first, t = same.reset()
    assert first.tolist() == [True, True] and t.tolist() == [0, 0]
    first, t = same.step([False, True], [False, False])  # env 1 ended: its returned obs starts the next episode
    assert first.tolist() == [False, True] and t.tolist() == [1, 0]
    first, t = same.step([False, False], [True, False])
    assert first.tolist() == [True, False] and t.tolist() == [0, 1]

    nxt = EpisodeTracker(2, "next_step")
    nxt.reset()
    first, t = nxt.step([False, True], [False, False])  # env 1 returned its last obs
    assert first.tolist() == [False, False] and t.tolist() == [1, 1]
    first, t = nxt.step([False, False], [False, False])  # ... and now its reset obs
    assert first.tolist() == [False, True] and t.tolist() == [2, 0]

    off = EpisodeTracker(2, "disabled")
    off.reset()
    first, _ = off.step([True, False], [False, False])
    assert not first.any()
    first, t = off.reset(np.array([True, False]))  # the caller resets env 0 with a mask
    assert first.tolist() == [True, False] and t.tolist() == [0, 1]
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        EpisodeTracker(2, "sometimes")


@needs_miniworld
def test_same_step_autoreset_seeds_and_frames():
    envs = make_vec_env(ENV, 2, "sync", seed=7, env_kwargs=KW)
    obs, info = envs.reset()
    assert info["episode_seed"].tolist() == [7, 8]
    tr = EpisodeTracker(2, "same_step")
    first, t = tr.reset()
    frame = frames_from_vec_obs(obs, first, t)
    assert frame.batch_size == 2 and frame.is_first.all() and frame.depth.shape == (2, 64, 64)
    assert frame.instruction[0].startswith("remember")
    for step in range(1, 5):
        obs, rew, term, trunc, info = envs.step(np.array([2, 0]))
        first, t = tr.step(term, trunc)
    assert trunc.all() and first.all() and t.tolist() == [0, 0]
    assert info["_final_info"].all() and "is_success" in info["final_info"]
    assert "metrics" in info["final_info"] and info["final_info"]["metrics"]["path_length"][0] > 0
    assert info["episode_seed"].tolist() == [9, 10]  # episode k of env i: 7 + i + 2k
    fresh = gym.make(ENV, **KW)  # the first obs of the new episode is that seed's reset obs
    for i, s in enumerate(info["episode_seed"]):
        o, _ = fresh.reset(seed=int(s))
        assert np.array_equal(o["rgb"], obs["rgb"][i]) and np.array_equal(o["pose"], obs["pose"][i])
    frame = frames_from_vec_obs(obs, first, t)
    assert frame.is_first.all()
    assert [log for log in envs.get_attr("seed_log")] == [[7, 9], [8, 10]]
    envs.close()


@needs_miniworld
def test_next_step_autoreset():
    envs = make_vec_env(ENV, 1, "sync", seed=3, env_kwargs=KW, autoreset_mode="next_step")
    envs.reset()
    tr = EpisodeTracker(1, "next_step")
    tr.reset()
    for _ in range(4):
        obs, _, term, trunc, info = envs.step(np.array([2]))
        first, _ = tr.step(term, trunc)
    assert trunc[0] and not first[0]  # the last observation of episode 0
    obs, _, term, trunc, info = envs.step(np.array([2]))  # ignored action; the reset
    first, t = tr.step(term, trunc)
    assert first[0] and t[0] == 0 and info["episode_seed"][0] == 4
    o, _ = gym.make(ENV, **KW).reset(seed=4)
    assert np.array_equal(o["rgb"], obs["rgb"][0])
    envs.close()


@needs_miniworld
def test_async_matches_sync():
    actions = [np.array([2, 1]), np.array([0, 2]), np.array([2, 2]), np.array([1, 0]), np.array([2, 2])]
    out = {}
    for mode in ("sync", "async"):
        envs = make_vec_env(ENV, 2, mode, seed=11, env_kwargs=KW)
        obs, _ = envs.reset()
        seq = [obs["rgb"].copy()]
        for a in actions:
            obs, _, _, _, info = envs.step(a)
            seq.append(obs["rgb"].copy())
        out[mode] = (np.stack(seq), info["episode_seed"].copy())
        envs.close()
    assert np.array_equal(out["sync"][0], out["async"][0])
    assert out["sync"][1].tolist() == out["async"][1].tolist() == [13, 14]


def test_bad_input():
    with pytest.raises(ValueError, match="unknown env 'embodimem/Nowhere-v0'"):
        make_vec_env("embodimem/Nowhere-v0", 2)
    with pytest.raises(ValueError, match="mode must be 'sync' or 'async'"):
        make_vec_env(ENV, 2, "threads")
    with pytest.raises(ValueError, match="num_envs must be an int >= 1"):
        make_vec_env(ENV, 0)
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        make_vec_env(ENV, 1, autoreset_mode="later")
    with pytest.raises(ValueError, match="is_first must have shape"):
        frames_from_vec_obs({"rgb": np.zeros((2, 4, 4, 3), np.uint8)}, [True])
    with pytest.raises(ValueError, match="'rgb' entry"):
        frames_from_vec_obs(np.zeros((2, 4, 4, 3)), [True, True])


@needs_miniworld
def test_bench_envs_smoke(tmp_path):
    from embodimem.bench.envs import Config, format_table, run

    cfg = Config(envs=["TMaze-v0"], steps=10, warmup=2, num_envs=2, modes=["sync"], out=tmp_path, plot=False)
    res = run(cfg, command="test")
    row = res["envs"]["embodimem/TMaze-v0"]
    assert row["single"]["steps_per_s"] > 0 and row["sync"]["ratio_to_single"] > 0
    assert (tmp_path / "envs.json").exists() and "TMaze-v0" in format_table(res)
    with pytest.raises(ValueError, match="unknown env"):
        run(Config(envs=["Nope-v0"], out=tmp_path), command="test")
