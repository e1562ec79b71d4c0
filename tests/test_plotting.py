"""Learning-curve aggregation: mean and t-interval over seeds, grouped by a config field."""

import numpy as np
import pytest
import yaml

from embodimem.plotting import PlotConfig, curves, plot
from embodimem.runs import MetricsLogger


def _run(tmp_path, name, memory, ys):
    d = tmp_path / name
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump({"policy": {"memory": memory}}))
    with MetricsLogger(d / "metrics.jsonl") as log:
        for i, y in enumerate(ys):
            log.log(100 * (i + 1), success_rate=y)
    return d


def test_groups_and_interval(tmp_path):
    runs = [_run(tmp_path, "a", "fifo", [0.0, 0.5, 1.0]), _run(tmp_path, "b", "fifo", [0.0, 0.7, 1.0]),
            _run(tmp_path, "c", "none", [0.5, 0.5, 0.5])]
    c = curves(PlotConfig(runs=runs, points=3))
    assert set(c) == {"fifo", "none"}
    np.testing.assert_allclose(c["fifo"]["mean"], [0.0, 0.6, 1.0])
    half = 12.706 * np.std([0.5, 0.7], ddof=1) / np.sqrt(2)
    assert c["fifo"]["hi"][1] == pytest.approx(0.6 + half)
    assert int(c["none"]["n"]) == 1 and c["none"]["lo"][0] == c["none"]["hi"][0] == 0.5
    out = plot(PlotConfig(runs=runs, out=tmp_path / "p.png"))
    assert out.stat().st_size > 1000


def test_missing_metric_is_named(tmp_path):
    r = _run(tmp_path, "a", "fifo", [0.1])
    with pytest.raises(ValueError, match="episode_return"):
        curves(PlotConfig(runs=[r], metric="episode_return"))
    with pytest.raises(ValueError, match="at least one run"):
        curves(PlotConfig(runs=[]))
