"""The memory benchmark harness: works for every registered memory, writes JSON + PNG, exponents are right."""

from __future__ import annotations

import json
import math

import pytest

from embodimem.bench.common import percentile as _percentile, slope as _slope
from embodimem.bench.memory import MemoryBenchConfig, run, summarize
from embodimem.memory import available_memories


def test_slope_recovers_known_exponents():
    Ts = [100, 1000, 10000]
    assert _slope(Ts, [5.0, 5.0, 5.0]) == pytest.approx(0.0)
    assert _slope(Ts, [3 * t for t in Ts]) == pytest.approx(1.0)
    assert _slope(Ts, [math.sqrt(t) for t in Ts]) == pytest.approx(0.5)
    assert _slope([100], [1.0]) is None


def test_percentile_nearest_rank():
    xs = list(range(1, 101))
    assert _percentile(xs, 50) == 50 and _percentile(xs, 95) == 95 and _percentile(xs, 100) == 100


def test_summarize_batch_efficiency():
    rows = [
        {"T": 10, "B": 1, "write_env_steps_per_s": 100.0, "bytes_per_env": 8.0, "read_ms_p50": 1.0},
        {"T": 10, "B": 4, "write_env_steps_per_s": 200.0, "bytes_per_env": 8.0, "read_ms_p50": 1.0},
        {"T": 100, "B": 1, "write_env_steps_per_s": 100.0, "bytes_per_env": 80.0, "read_ms_p50": 10.0},
        {"T": 100, "B": 4, "write_env_steps_per_s": 400.0, "bytes_per_env": 80.0, "read_ms_p50": 10.0},
    ]
    s = summarize(rows)
    assert s["batch_scaling_efficiency"]["10"]["4"] == pytest.approx(0.5)
    assert s["batch_scaling_efficiency"]["100"]["4"] == pytest.approx(1.0)
    assert s["growth_in_T"]["1"]["bytes_exponent"] == pytest.approx(1.0)


def test_run_every_registered_memory(tmp_path):
    cfg = MemoryBenchConfig(memory=["all"], episode_lengths=[20, 60], batch_sizes=[1, 3], dim=8,
                            tokens_per_step=2, read_reps=3, out=tmp_path)
    res = run(cfg, command="test")
    data = json.loads((tmp_path / "memory.json").read_text())
    assert (tmp_path / "memory.png").stat().st_size > 1000
    assert set(data["memories"]) == set(available_memories())
    for name, m in data["memories"].items():
        assert len(m["rows"]) == 4
        for r in m["rows"]:
            assert r["write_env_steps_per_s"] > 0 and r["read_ms_p95"] >= r["read_ms_p50"] > 0
            assert r["bytes_per_env"] <= r["bound_bytes_per_env"]
        # fixed-capacity memories: bytes per env do not grow with T
        assert m["growth_in_T"]["1"]["bytes_exponent"] == pytest.approx(0.0, abs=1e-9)
    assert res["memories"].keys() == data["memories"].keys()


def test_unknown_memory_name_fails_before_running(tmp_path):
    with pytest.raises(ValueError, match="valid names"):
        run(MemoryBenchConfig(memory=["nope"], out=tmp_path))
    assert not (tmp_path / "memory.json").exists()
