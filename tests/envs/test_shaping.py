"""Optional progress shaping on MiniWorld tasks: potential-based, cue-independent, memoised, off by default."""

from __future__ import annotations

import numpy as np
import pytest

import embodimem.envs.metrics as M
from embodimem.envs import make_env
from embodimem.envs.miniworld.solvers import run_solver


def _cell_centre(u, pos) -> np.ndarray:
    row, col = u.grid.cells(pos)
    return np.asarray(u.grid.origin) + (np.array([col, row]) + 0.5) * u.grid.resolution


def _oracle_potential(u, pos, targets, extra=0.0) -> float:
    """Minus the geodesic metres from the centre of pos's cell to the nearest target (fresh shortest paths)."""
    c = _cell_centre(u, pos)
    return -(min(M.shortest_path(u.grid, c, np.asarray(t))[0] for t in targets) + extra)


def test_tmaze_shaping_telescopes_to_the_oracle_potential_difference_and_keeps_dynamics():
    plain = run_solver(make_env("embodimem/TMaze-v0", delay=2), seed=0, options={"cue": 0})
    assert plain.success and sum(plain.rewards) == 1.0 and plain.rewards[-1] == 1.0
    env = make_env("embodimem/TMaze-v0", delay=2, progress_reward=0.1)
    env.reset(seed=0, options={"cue": 0})
    u = env.unwrapped
    arms = [u.layout.place("goal_left").pos, u.layout.place("goal_right").pos]
    phi0 = _oracle_potential(u, u.agent_pos, arms)
    shaped = run_solver(env, seed=0, options={"cue": 0})
    assert shaped.actions == plain.actions  # shaping does not touch dynamics
    phiT = _oracle_potential(u, u.agent_pos, arms)
    assert phi0 < -5.0 and phiT > -1.0  # from the start room to inside the goal region
    assert sum(shaped.rewards) - 1.0 == pytest.approx(0.1 * (phiT - phi0), abs=1e-9)


def test_shaping_is_the_same_whatever_the_cue():
    env = make_env("embodimem/TMaze-v0", delay=2, progress_reward=0.1)
    r0 = run_solver(env, seed=1, options={"cue": 0}, stop_at_decision=True)
    r1 = run_solver(env, seed=1, options={"cue": 1}, stop_at_decision=True)
    assert r0.actions == r1.actions and r0.rewards == r1.rewards and any(r != 0 for r in r0.rewards)
    env = make_env("embodimem/ObjectRecall-v0", progress_reward=0.1)
    r0 = run_solver(env, seed=1, options={"target": 0}, stop_at_decision=True)
    r3 = run_solver(env, seed=1, options={"target": 3}, stop_at_decision=True)
    assert r0.actions == r3.actions and r0.rewards == r3.rewards and sum(r0.rewards) > 0.3


def test_object_recall_shaping_guides_to_the_beacon_then_to_any_crate():
    env = make_env("embodimem/ObjectRecall-v0", progress_reward=0.1)
    env.reset(seed=2, options={"target": 1})
    u = env.unwrapped
    crates = [np.array([c.pos[0], c.pos[2]]) for c in u.crates]
    beacon = np.asarray(u.layout.place("beacon").pos)
    extra = min(M.shortest_path(u.grid, beacon, c)[0] for c in crates)
    phi0 = _oracle_potential(u, u.agent_pos, [beacon], extra)
    roll = run_solver(env, seed=2, options={"target": 1})
    assert roll.success and u.phase == 1
    phiT = _oracle_potential(u, u.agent_pos, crates)
    assert sum(roll.rewards) - 1.0 == pytest.approx(0.1 * (phiT - phi0), abs=1e-9)
    assert sum(roll.rewards) - 1.0 > 0.1 * 10  # more than 10 m of progress over the two legs


def test_memoised_potential_equals_a_fresh_shortest_path_per_cell():
    env = make_env("embodimem/TMaze-v0", delay=2, progress_reward=0.1)
    u = env.unwrapped
    run_solver(env, seed=3, options={"cue": 1}, stop_at_decision=True)
    assert len(u._potential_cache) > 10
    arms = [u.layout.place("goal_left").pos, u.layout.place("goal_right").pos]
    for (phase, row, col), d in list(u._potential_cache.items())[:20]:
        centre = np.asarray(u.grid.origin) + (np.array([col, row]) + 0.5) * u.grid.resolution
        assert phase == 0 and d == min(M.shortest_path(u.grid, centre, np.asarray(a))[0] for a in arms)


def test_without_the_stop_action_the_space_has_three_actions_and_stop_is_rejected():
    env = make_env("embodimem/TMaze-v0", delay=2, stop_action=False)
    assert env.action_space.n == 3
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"Discrete\(3\)"):
        env.step(3)
    assert run_solver(env, seed=0, options={"cue": 0}).success  # the T-maze solver never needs stop


def test_bad_value_is_named():
    with pytest.raises(ValueError, match="progress_reward"):
        make_env("embodimem/TMaze-v0", progress_reward=-1.0)
