"""Interval helpers against closed forms and reference values."""

import math

import pytest

from embodimem.stats import mean_ci, t_quantile_975, wilson_interval


def test_wilson_reference_values():
    # 8/10 successes: the textbook Wilson 95% interval is (0.490, 0.943)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)


def test_mean_ci_closed_form():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    half = 4.303 * math.sqrt(1.0 / 3)  # sample sd 1, t(2) = 4.303
    assert m == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert mean_ci([5.0]) == (5.0, 5.0, 5.0)
    assert t_quantile_975(1000) == 1.96
    with pytest.raises(ValueError):
        mean_ci([])
