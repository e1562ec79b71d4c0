"""The cue manipulation task: the expert reads the cue and solves it; after the cue is gone nothing reveals it."""

from __future__ import annotations

import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before importorskip imports metaworld (and mujoco)

import numpy as np
import pytest

pytest.importorskip("metaworld", reason="metaworld not installed: pip install 'metaworld>=3'")

from embodimem.envs import make_env  # noqa: E402
from embodimem.envs.metaworld.cue_task import MetaWorldCueEnv, load_cue_layout, read_cue  # noqa: E402
from embodimem.envs.metaworld.evaluate import run_episode  # noqa: E402
from embodimem.envs.metaworld.experts import CueExpert  # noqa: E402
from embodimem.types import Frame  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = MetaWorldCueEnv(height=64, width=64)
    yield e
    e.close()


def _rollout(env, cue: int, actions: np.ndarray, seed: int = 3) -> list[dict]:
    obs, _ = env.reset(seed=seed, options={"cue": cue})
    traj = [obs]
    for a in actions:
        traj.append(env.step(a)[0])
    return traj


def test_observation_after_the_cue_is_identical_across_cue_values(env):
    k = env.cue_steps
    actions = np.random.default_rng(0).uniform(-1, 1, (k + 4, 4)).astype(np.float32)
    t0, t1 = _rollout(env, 0, actions), _rollout(env, 1, actions)
    for t in range(k):  # the cue is visible and differs
        assert not np.array_equal(t0[t]["rgb"], t1[t]["rgb"]), t
    for t in range(k, len(actions) + 1):  # then every observation is bitwise identical
        for key in ("rgb", "depth", "pose", "intrinsics", "state"):
            np.testing.assert_array_equal(t0[t][key], t1[t][key], err_msg=f"{key} at t={t}")
        assert t0[t]["instruction"] == t1[t]["instruction"]
    assert np.all(t0[k]["state"][-3:] == 0)  # the state's goal slot is hidden


def test_cue_is_visible_then_gone(env):
    obs, info = env.reset(seed=0, options={"cue": 1})
    assert info["cue_visible"] and read_cue(obs, env.layout) == 1
    for _ in range(env.cue_steps):
        obs, reward, term, trunc, info = env.step(np.zeros(4, np.float32))
        assert reward == 0.0 and not term
        assert "obj_to_target" not in info and "in_place_reward" not in info  # no goal-revealing diagnostics
    assert not info["cue_visible"]
    with pytest.raises(ValueError, match="no cue colour"):
        read_cue(obs, env.layout)
    Frame.from_obs(obs, t=env.cue_steps, is_first=False)


@pytest.mark.parametrize("cue", [0, 1])
def test_scripted_expert_reads_cue_and_succeeds(env, cue):
    ep = run_episode(env, CueExpert(env.layout), seed=11, options={"cue": cue})
    assert ep["success"] and ep["terminated"] and ep["return"] == 1.0
    assert ep["length"] < env.layout.max_episode_steps


def test_a_policy_that_ignores_the_cue_fails_half_the_time(env):
    """Always going to goal 0 (a memoryless strategy) fails when the cue said goal 1: it hits the wrong goal."""

    class Blind(CueExpert):
        def reset(self, obs=None, *, seed=None):
            self.cue = 0

    res = [run_episode(env, Blind(env.layout), seed=11, options={"cue": c}) for c in (0, 1)]
    assert res[0]["success"] and not res[1]["success"]
    assert res[1]["terminated"]  # ended at the wrong goal
    obs, info = env.reset(seed=11, options={"cue": 1})
    blind = Blind(env.layout)
    blind.reset(obs)
    done = False
    while not done:
        obs, _, term, trunc, info = env.step(blind(obs))
        done = term or trunc
    assert info["wrong_goal"] and not info["is_success"]


def test_cue_is_drawn_from_the_seed(env):
    cues = {env.reset(seed=s)[1]["cue"] for s in range(12)}
    assert cues == {0, 1}
    a, b = env.reset(seed=4)[0], env.reset(seed=4)[0]
    np.testing.assert_array_equal(a["rgb"], b["rgb"])


def test_registered_id():
    e = make_env("MetaWorldCue-v0", height=32, width=32, depth=False)
    try:
        obs, info = e.reset(seed=0)
        assert obs["rgb"].shape == (32, 32, 3) and "depth" not in obs and info["cue"] in (0, 1)
    finally:
        e.close()


def test_bad_input(env, tmp_path):
    with pytest.raises(ValueError, match=r"options\['cue'\]"):
        env.reset(seed=0, options={"cue": 2})
    with pytest.raises(ValueError, match="unknown cue layout 'nope'"):
        load_cue_layout("nope")
    with pytest.raises(ValueError, match="cue_steps"):
        MetaWorldCueEnv(cue_steps=0)

    good = json.loads(open_layout_text())

    def bad(mutate, match):
        d = json.loads(json.dumps(good))
        mutate(d)
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(d))
        with pytest.raises(ValueError, match=match) as ei:
            load_cue_layout(p)
        assert str(p) in str(ei.value)  # the message names the file

    bad(lambda d: d.pop("goals"), "missing field 'goals'")
    bad(lambda d: d.__setitem__("goals", [[0, 0.8]]), "'goals' must have shape")
    bad(lambda d: d["cue"].__setitem__("colors", [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]]), "3 colours for 2 goals")
    bad(lambda d: d["cue"].__setitem__("steps", 2.5), "'steps' must be an integer")
    bad(lambda d: d["cue"].__setitem__("colors", [[1, 0, 0, 1], [1, 0, 0, 1]]), "distinct")
    bad(lambda d: d.__setitem__("goals", [[0.0, 0.7, 0.05], [0.15, 0.8, 0.05]]), "0.15 m")
    bad(lambda d: d["camera"].__setitem__("fovy", "wide"), "'fovy' must be a number")
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_cue_layout(p)


def open_layout_text() -> str:
    import importlib.resources

    return (importlib.resources.files("embodimem.maps") / "metaworld" / "cue_pick_place.json").read_text()
