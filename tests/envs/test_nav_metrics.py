"""Navigation metrics against hand-computed cases (pure numpy; no simulator)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embodimem.envs.metrics import (
    OccupancyGrid, distance_to_goal, dtw, ndtw, path_length, sdtw, shortest_path, soft_spl, spl, success,
    wilson_interval,
)
from embodimem.envs.miniworld.layout import parse_layout


def test_success():
    assert success(0.1, 0.2) is True
    assert success(0.1, 0.2, stopped=False) is False
    assert success(0.2, 0.2) is False  # strictly inside the threshold, as habitat
    np.testing.assert_array_equal(success([0.1, 0.3, 0.0], 0.2, [True, True, False]), [True, False, False])


def test_spl_hand_cases():
    assert spl(1, 10.0, 12.5) == pytest.approx(0.8)  # a detour of 2.5 m on a 10 m shortest path
    assert spl(1, 10.0, 10.0) == pytest.approx(1.0)
    assert spl(1, 10.0, 8.0) == pytest.approx(1.0)  # shorter than the grid's geodesic: capped at 1
    assert spl(0, 10.0, 10.0) == 0.0
    assert spl(1, 0.0, 0.0) == 1.0 and spl(1, 0.0, 3.0) == 0.0
    np.testing.assert_allclose(spl([1, 1, 0], [4.0, 3.0, 5.0], [5.0, 6.0, 5.0]), [0.8, 0.5, 0.0])


def test_soft_spl_hand_cases():
    assert soft_spl(2.5, 10.0, 12.5) == pytest.approx(0.75 * 0.8)  # 75 % of the way, 20 % detour
    assert soft_spl(0.0, 10.0, 10.0) == pytest.approx(1.0)
    assert soft_spl(12.0, 10.0, 30.0) == 0.0  # ended farther than it started
    assert soft_spl(0.0, 0.0, 0.0) == 1.0


def test_path_length_and_distance_to_goal():
    assert path_length([[0, 0], [3, 4], [3, 0]]) == pytest.approx(9.0)
    assert path_length([[1, 1]]) == 0.0
    assert distance_to_goal([0, 0], [3, 4]) == pytest.approx(5.0)


def test_dtw_ndtw_sdtw_hand_cases():
    R = np.array([[0, 0], [1, 0], [2, 0]], dtype=float)
    assert dtw(R, R) == 0.0 and ndtw(R, R, 3.0) == 1.0
    assert dtw(R + [0, 1], R) == pytest.approx(3.0)  # each of the 3 points 1 m off
    assert ndtw(R + [0, 1], R, 1.0) == pytest.approx(math.exp(-1.0))  # exp(-3 / (3 * 1))
    assert dtw([[0, 0], [2, 0]], R) == pytest.approx(1.0)  # (1,0) matched to (0,0) or (2,0): cost 1
    assert dtw([[0, 0], [0, 0], [1, 0], [2, 0], [2, 0]], R) == 0.0  # pauses cost nothing on the path
    # order matters: the same points walked backwards
    assert dtw(R[::-1], R) == pytest.approx(2 + 0 + 2 + 0 * 1)  # (2,0)-(0,0) 2, (1,0)-(1,0) 0, (0,0)-(2,0) 2
    assert ndtw(R[::-1], R, 3.0) == pytest.approx(math.exp(-4 / 9))
    assert sdtw(R + [0, 1], R, 1.0, success_=True) == pytest.approx(math.exp(-1.0))
    assert sdtw(R, R, 1.0, success_=False) == 0.0


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.236590, abs=1e-5), pytest.approx(0.763410, abs=1e-5))
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.277540, abs=1e-5)
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.722460, abs=1e-5) and hi == 1.0
    lo, hi = wilson_interval(45, 50, z=2.576)  # 99 %
    assert lo < 0.9 < hi and hi - lo > wilson_interval(45, 50)[1] - wilson_interval(45, 50)[0]


def test_shortest_path_hand_cases():
    free = np.ones((20, 20), dtype=bool)
    grid = OccupancyGrid(free, (0.0, 0.0), 0.1)
    length, pts = shortest_path(grid, [0.25, 0.25], [1.75, 1.05])
    assert length == pytest.approx(math.hypot(1.5, 0.8)) and len(pts) == 2  # open map: the straight line
    free[5:15, 10] = False  # a wall x in [1.0, 1.1], z in [0.5, 1.5]
    grid = OccupancyGrid(free, (0.0, 0.0), 0.1)
    length, pts = shortest_path(grid, [0.5, 1.0], [1.5, 1.0])
    # over the wall's top end: (0.5,1)->(1.0,0.5)->(1.1,0.5)->(1.5,1)
    assert length == pytest.approx(math.hypot(0.5, 0.5) + 0.1 + math.hypot(0.4, 0.5), abs=1e-3)
    np.testing.assert_allclose(pts[[0, -1]], [[0.5, 1.0], [1.5, 1.0]])
    assert distance_to_goal([0.5, 1.0], [1.5, 1.0], grid) == pytest.approx(length)
    free[:, 10] = False  # now the wall splits the map
    grid = OccupancyGrid(free, (0.0, 0.0), 0.1)
    assert shortest_path(grid, [0.5, 1.0], [1.5, 1.0])[0] == math.inf


def test_shortest_path_on_a_layout_around_a_doorjamb():
    """Two 5 x 5 m rooms, a 1 m doorway at the north end of the shared wall, agent radius 0.4 m. The geodesic
    from (2.5, 2.5) to (7.5, 2.5) wraps the jamb's 0.4 m disc: two tangents and an arc, by hand 6.3182 m."""
    rooms = [{"name": "a", "x": [0, 5], "z": [0, 5]}, {"name": "b", "x": [5, 10], "z": [0, 5]}]
    head = {"format": "embodimem.miniworld.layout", "version": 1, "name": "two", "rooms": rooms}
    layout = parse_layout({**head, "openings": [{"rooms": ["a", "b"], "z": [0, 1]}]})
    d_c = math.hypot(2.5, 1.5)  # start/goal to the jamb end (5, 1)
    tangent = math.sqrt(d_c**2 - 0.4**2)
    arc = 2 * math.pi - 2 * math.atan2(2.5, 1.5) - 2 * math.acos(0.4 / d_c)
    exact = 2 * tangent + 0.4 * arc
    assert exact == pytest.approx(6.3182, abs=1e-4)
    for res, tol in ((0.1, 0.06), (0.025, 0.02)):  # within about one cell, converging with the resolution
        got = shortest_path(layout.free_space(res, 0.4), [2.5, 2.5], [7.5, 2.5])[0]
        assert exact - 0.005 < got < exact + tol, (res, got)
    # straight through an aligned doorway: exactly the Euclidean distance
    aligned = parse_layout({**head, "openings": [{"rooms": ["a", "b"], "z": [2, 3]}]})
    assert shortest_path(aligned.free_space(0.05, 0.4), [2.5, 2.5], [7.5, 2.5])[0] == pytest.approx(5.0)


def test_spl_with_the_map_geodesic():
    """SPL of a walked polyline against the grid's shortest path (the wall case above)."""
    free = np.ones((20, 20), dtype=bool)
    free[5:15, 10] = False
    grid = OccupancyGrid(free, (0.0, 0.0), 0.1)
    d0 = shortest_path(grid, [0.5, 1.0], [1.5, 1.0])[0]
    walked = [[0.5, 1.0], [0.5, 0.3], [1.5, 0.3], [1.5, 1.0]]  # a wider detour: 0.7 + 1.0 + 0.7 = 2.4 m
    assert spl(True, d0, path_length(walked)) == pytest.approx(d0 / 2.4)


def test_bad_input_is_named():
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no trials: the defined, uninformative interval
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="shortest: expected finite values >= 0"):
        spl(1, -1.0, 2.0)
    with pytest.raises(ValueError, match="distance: expected finite"):
        success(float("nan"), 0.2)
    with pytest.raises(ValueError, match="threshold: expected > 0"):
        ndtw([[0, 0]], [[0, 0]], 0.0)
    with pytest.raises(ValueError, match="query: expected a non-empty finite"):
        dtw(np.zeros((0, 2)), [[0, 0]])
    with pytest.raises(ValueError, match="OccupancyGrid.free"):
        OccupancyGrid(np.ones((3, 3)), (0, 0), 0.1)
    with pytest.raises(ValueError, match="grid must be an OccupancyGrid"):
        shortest_path(np.ones((3, 3), bool), [0, 0], [1, 1])
