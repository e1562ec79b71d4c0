"""Optional progress shaping on MiniWorld tasks: potential-based, cue-independent, off by default."""

from __future__ import annotations

import numpy as np
import pytest

from embodimem.envs import make_env
from embodimem.envs.miniworld.solvers import run_solver
import embodimem.envs.metrics as M


def test_off_by_default_and_sums_to_the_geodesic_start_distance():
    plain = run_solver(make_env("embodimem/TMaze-v0", delay=2), seed=0, options={"cue": 0})
    assert plain.success and sum(plain.rewards) == 1.0 and plain.rewards[-1] == 1.0
    env = make_env("embodimem/TMaze-v0", delay=2, progress_reward=0.1)
    env.reset(seed=0, options={"cue": 0})
    u = env.unwrapped
    d0 = M.shortest_path(u.grid, np.asarray(u.agent_pos), np.asarray(u.layout.place("decision").pos))[0]
    shaped = run_solver(env, seed=0, options={"cue": 0})
    assert shaped.actions == plain.actions  # shaping does not touch dynamics
    # telescoping potential: the shaping terms sum to 0.1 * (geodesic start distance to the junction)
    assert sum(shaped.rewards) - 1.0 == pytest.approx(0.1 * d0, abs=1e-6)


def test_shaping_is_the_same_whatever_the_cue():
    env = make_env("embodimem/TMaze-v0", delay=2, progress_reward=0.1)
    r0 = run_solver(env, seed=1, options={"cue": 0}, stop_at_decision=True)
    r1 = run_solver(env, seed=1, options={"cue": 1}, stop_at_decision=True)
    assert r0.actions == r1.actions and r0.rewards == r1.rewards and any(r != 0 for r in r0.rewards)


def test_bad_value_is_named():
    with pytest.raises(ValueError, match="progress_reward"):
        make_env("embodimem/TMaze-v0", progress_reward=-1.0)
