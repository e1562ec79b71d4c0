"""``embodimem doctor``: every backend reported, cheap, quiet, and broken installs explained."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from embodimem import doctor
from embodimem.doctor import BackendStatus, doctor_report, format_report

EXPECTED = [
    "torch", "gymnasium", "miniworld", "mujoco", "metaworld", "open3d", "decord", "av", "transformers",
    "efficientnet-lite0", "all-minilm-l6-v2", "minigrid", "popgym", "habitat-sim", "minerl", "faiss", "ray",
]


def test_report_lists_every_backend_quickly_and_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    t0 = time.perf_counter()
    report = doctor_report()
    assert time.perf_counter() - t0 < 15
    names = [s.name for s in report]
    assert set(EXPECTED) <= set(names) and len(names) == len(set(names))
    for s in report:
        assert isinstance(s, BackendStatus) and s.detail.strip(), s
        assert s.installed or s.how_to_fix.strip(), f"{s.name} is missing but says nothing about how to fix it"
    torch_status = next(s for s in report if s.name == "torch")
    assert torch_status.installed and torch_status.version
    assert "CPU" in torch_status.detail or "CUDA" in torch_status.detail
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no junk from probes


def test_format_report_mentions_each_backend() -> None:
    statuses = [BackendStatus("torch", True, "2.13.0", "CPU"), BackendStatus("habitat-sim", False, None, "no wheel", "use conda")]
    text = format_report(statuses)
    assert "[ok ] torch" in text and "[-- ] habitat-sim" in text and "fix: use conda" in text
    assert "1/2 backends usable" in text


def test_unavailable_simulators_explain_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "_has_module", lambda name: False)
    by_name = {s.name: s for s in (doctor._check_habitat(), doctor._check_minerl())}
    assert "Python 3.11" in by_name["habitat-sim"].detail and "conda" in by_name["habitat-sim"].detail
    assert "Java 8" in by_name["minerl"].detail and "Gradle" in by_name["minerl"].detail


def _fake_dist(root: Path, dist: str, module: str, version: str, init: str) -> None:
    (root / module).mkdir()
    (root / module / "__init__.py").write_text(init)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")


def test_open3d_without_libusb_is_diagnosed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dist(tmp_path, "open3d-cpu", "open3d", "0.20.0",
               "raise ImportError('libusb-1.0.so.0: cannot open shared object file: No such file or directory')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the import probe runs in a child process
    s = doctor._check_open3d()
    assert not s.installed and s.version == "0.20.0"
    assert "libusb-1.0-0" in s.detail and s.how_to_fix == "apt-get install libusb-1.0-0"


def test_import_probe_reports_crash_and_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "crashy.py").write_text("import os, signal\nprint('noise')\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    (tmp_path / "fine.py").write_text("print('noise that must not reach the report')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    ok, msg = doctor._import_probe("crashy")
    assert not ok and "crashed" in msg
    assert doctor._import_probe("fine") == (True, "")


def test_a_failing_check_does_not_break_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    def _check_boom() -> BackendStatus:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(doctor, "_CHECKS", [_check_boom])
    (s,) = doctor_report()
    assert s.name == "boom" and not s.installed and "kaboom" in s.detail
