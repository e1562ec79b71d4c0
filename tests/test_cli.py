"""The console script: commands dispatch, presets load, bad commands fail with the valid names."""

from __future__ import annotations

import json
from pathlib import Path

from embodimem.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_command_lists_valid(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "frobnicate" in err and "bench" in err and "doctor" in err


def test_info_lists_registries(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "fifo" in out and "recurrent" in out


def test_bench_memory_from_preset_with_overrides(tmp_path, capsys):
    rc = main(["bench", "memory", "--config", str(ROOT / "configs" / "bench_memory.yaml"),
               "--episode-lengths", "10", "20", "--batch-sizes", "1", "2", "--read-reps", "2",
               "--no-plot", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "memory.json").read_text())
    assert data["config"]["episode_lengths"] == [10, 20] and data["config"]["dim"] == 64
    assert (tmp_path / "config.yaml").exists() and not (tmp_path / "memory.png").exists()
    assert "growth exponent" in capsys.readouterr().out


def test_every_preset_in_configs_loads():
    from embodimem.agents.ppo.config import TrainConfig
    from embodimem.bench.memory import Config as MemoryBenchConfig
    from embodimem.config import load_yaml

    presets = {"bench_memory.yaml": MemoryBenchConfig, "tmaze.yaml": TrainConfig, "object_recall.yaml": TrainConfig,
               "popgym_repeat_previous.yaml": TrainConfig}  # training presets also step: tests/agents/test_presets.py
    for f in (ROOT / "configs").glob("*.yaml"):
        assert f.name in presets, f"configs/{f.name} has no loader test"
        load_yaml(presets[f.name], f)


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["train", "--policy.memory", "nope", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown memory 'nope'" in err and "fifo" in err and "Traceback" not in err
    assert main(["eval", "--run-dir", str(tmp_path / "missing")]) == 2
    assert "config.yaml" in capsys.readouterr().err
    assert main(["bench", "memory", "--memory", "nope", "--out", str(tmp_path / "b")]) == 2


def test_bad_names_write_nothing(tmp_path):
    assert main(["train", "--env", "embodimem/Nope-v0", "--run-dir", str(tmp_path / "r")]) == 2
    assert main(["train", "--policy.memory", "nope", "--run-dir", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()
