"""Run directories, JSONL metrics and atomic writes."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import torch

from embodimem.atomic import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text
from embodimem.runs import MetricsLogger, RunDir, append_jsonl, read_metrics, truncate_metrics

WHEN = datetime(2026, 1, 2, 3, 4, 5)


@dataclass
class Opt:
    lr: float = 0.1


@dataclass
class Cfg:
    name: str = "exp"
    steps: int = 100
    opt: Opt = field(default_factory=Opt)


def test_rundir_layout_and_naming(tmp_path: Path) -> None:
    run = RunDir(name="exp", root=tmp_path, timestamp=WHEN, config=Cfg())
    assert run.path == tmp_path / "exp-20260102-030405" and not run.resumed
    for d in (run.checkpoints_dir, run.eval_dir):
        assert d.is_dir()
    assert not (run.path / "videos").exists()  # eval writes its videos under eval/videos
    assert run.per_episode_path == run.path / "eval" / "per_episode.jsonl"
    assert run.summary_path == run.path / "eval" / "summary.json"
    assert run.metrics_path.name == "metrics.jsonl" and run.load_config(Cfg) == Cfg()
    assert run.checkpoint_path(1000).parent == run.checkpoints_dir
    again = RunDir(name="exp", root=tmp_path, timestamp=WHEN)  # same second: a new folder, not a clobber
    assert again.path.name == "exp-20260102-030405-1"


def test_rundir_refuses_to_clobber(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r", config=Cfg())
    with pytest.raises(FileExistsError, match="already exists and is not empty.*resume=True"):
        RunDir(tmp_path / "r")
    resumed = RunDir(tmp_path / "r", resume=True, config=Cfg())
    assert resumed.resumed and resumed.path == run.path
    assert RunDir(tmp_path / "r", resume="auto").resumed
    assert not RunDir(tmp_path / "fresh", resume="auto").resumed
    (tmp_path / "empty").mkdir()
    assert not RunDir(tmp_path / "empty").resumed  # an existing empty folder is fine
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        RunDir(tmp_path / "missing", resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        RunDir(tmp_path / "file", resume="auto")


def test_resume_with_other_config_names_fields(tmp_path: Path) -> None:
    RunDir(tmp_path / "r", config=Cfg())
    with pytest.raises(ValueError, match="differing fields: opt.lr, steps"):
        RunDir(tmp_path / "r", resume=True, config=Cfg(steps=5, opt=Opt(lr=0.2)))
    run = RunDir(tmp_path / "r", resume=True)
    run.save_config(Cfg(steps=500), ignore=["steps"])  # e.g. extending training is allowed when asked
    assert run.load_config(Cfg).steps == 500


def test_metrics_logger_writes_flushed_lines(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    log = run.metrics_logger()
    rec = log.log(1, {"loss": torch.tensor(0.5)}, lr=1e-3)
    log.log(2, loss=float("nan"), hist=torch.arange(3))
    rows = read_metrics(run.metrics_path)  # read while still open: every write is flushed
    assert [r["step"] for r in rows] == [1, 2] and rows[0] == rec
    assert rows[0]["loss"] == 0.5 and rows[0]["lr"] == 1e-3 and math.isnan(rows[1]["loss"])
    assert rows[1]["hist"] == [0, 1, 2]
    assert all(r["time"] > 1e9 and r["elapsed"] >= 0 for r in rows)
    with pytest.raises(ValueError, match="reserved"):
        log.log(3, step=4)
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.log(3, loss=1.0)


def test_read_metrics_torn_and_corrupt_lines(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')  # crash mid-write of the last line
    assert [r["step"] for r in read_metrics(p)] == [1, 2]
    p.write_text('{"step": 1}\nGARBAGE\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2"):
        read_metrics(p)
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "none.jsonl")


def test_resume_truncates_metrics_logged_after_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    with run.metrics_logger() as log:
        for s in range(1, 6):
            log.log(s, loss=float(s))
    with RunDir(tmp_path / "r", resume=True).metrics_logger(resume_step=3) as log:
        log.log(4, loss=40.0)
    rows = read_metrics(run.metrics_path)
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
    assert truncate_metrics(tmp_path / "absent.jsonl", 0) == 0


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    try:
        import torch.utils.tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed; the fallback path is not reachable")
    except ImportError:
        pass
    with pytest.warns(UserWarning, match="TensorBoard logging skipped"):
        log = MetricsLogger(tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb")
    log.log(0, x=1)
    log.close()
    assert read_metrics(tmp_path / "m.jsonl")[0]["x"] == 1


def test_eval_outputs(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    run.log_episode({"episode": 0, "success": True, "seed": 1000})
    run.log_episode({"episode": 1, "success": False, "seed": 1001})
    run.write_summary({"success_rate": torch.tensor(0.5), "n": 2})
    assert [r["seed"] for r in read_metrics(run.per_episode_path)] == [1000, 1001]
    assert json.loads(run.summary_path.read_text()) == {"success_rate": 0.5, "n": 2}
    append_jsonl(tmp_path / "x" / "y.jsonl", {"a": 1})
    assert read_metrics(tmp_path / "x" / "y.jsonl") == [{"a": 1}]


def test_atomic_writes(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")
    mask = os.umask(0o022)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask  # what open() would give, not mkstemp's 0600
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    with pytest.raises(TypeError):
        atomic_write_json(p, {"bad": object()})  # serialised before the file is touched
    assert p.read_bytes() == b"new"
    atomic_write_json(tmp_path / "sub" / "a.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "sub" / "a.json").read_text()) == {"a": [1, 2]}
    atomic_torch_save({"t": torch.ones(2)}, tmp_path / "t.pt")
    assert torch.equal(torch.load(tmp_path / "t.pt")["t"], torch.ones(2))


def test_atomic_write_crash_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"A" * 100)

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(p, b"B" * 100)
    monkeypatch.undo()
    assert p.read_bytes() == b"A" * 100
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]  # the temp file was cleaned up
