"""benchmarks/memory_agents.py: processes filling one grid side by side merge their runs; the table is mean + CI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from embodimem.stats import mean_ci

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_agents.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("memory_agents", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(success: float, ret: float) -> dict:
    return {"train": {}, "eval": {"success": success, "return": ret}, "seconds": 1.0}


def test_two_processes_merge_runs_and_commands(tmp_path, script):
    out = tmp_path / "grid.json"
    a = {"runs": {"fifo/0": _run(1.0, 2.0), "fifo/1": _run(0.5, 1.0)}, "command": "A", "env": "e"}
    b = {"runs": {"none/0": _run(0.5, 1.5), "recurrent/0": _run(0.75, 1.75)}, "command": "B", "env": "e"}
    script.save(out, a, ["fifo"], [0, 1])
    merged = script.save(out, b, ["none", "recurrent"], [0])
    disk = json.loads(out.read_text())
    assert disk == json.loads(json.dumps(merged))
    assert set(disk["runs"]) == {"fifo/0", "fifo/1", "none/0", "recurrent/0"}
    assert disk["commands"] == ["A", "B"]
    assert list(disk["table"]) == ["none", "recurrent", "fifo"]  # canonical order, whoever wrote first
    assert disk["table"]["fifo"]["seeds"] == 2
    assert disk["table"]["fifo"]["return"] == pytest.approx(list(mean_ci([2.0, 1.0])))
    mu, lo, hi = mean_ci([1.0, 0.5])
    assert disk["table"]["fifo"]["success"] == pytest.approx([mu, max(0.0, lo), min(1.0, hi)])
    # a process that saves again keeps what the other wrote in between
    a["runs"]["fifo/2"] = _run(0.0, 0.0)
    again = script.save(out, a, ["fifo"], [0, 1, 2])
    assert "none/0" in again["runs"] and again["table"]["fifo"]["seeds"] == 3
    assert again["table"]["fifo"]["memory_args"] == {}


def test_one_table_row_never_mixes_memory_args(tmp_path, script):
    runs = {"fifo/0": {**_run(1.0, 1.0), "memory_args": {"capacity": 8}},
            "fifo/1": {**_run(1.0, 1.0), "memory_args": {"capacity": 8}}}
    assert script.summarise({"runs": runs}, ["fifo"], [0, 1])["fifo"]["memory_args"] == {"capacity": 8}
    runs["fifo/1"]["memory_args"] = {"capacity": 32}
    with pytest.raises(ValueError, match="memory_args"):
        script.summarise({"runs": runs}, ["fifo"], [0, 1])


def test_parse_kv_casts_and_rejects(script):
    assert script.parse_kv(["a=1", "b=0.5", "c=x"]) == {"a": 1, "b": 0.5, "c": "x"}
    with pytest.raises(SystemExit, match="key=value"):
        script.parse_kv(["oops"])


def test_rate_intervals_are_clipped_to_0_1(script):
    runs = {f"kv/{i}": _run(s, 1.0) for i, s in enumerate([1.0, 0.0, 1.0])}
    mu, lo, hi = script.summarise({"runs": runs}, ["kv"], [0, 1, 2])["kv"]["success"]
    assert mu == pytest.approx(2 / 3) and lo == 0.0 and hi == 1.0
