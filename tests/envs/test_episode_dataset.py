"""Episode dataset: round trip (npz + mp4 + metadata), atomic writes, validation, and the record script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV not installed: pip install av")

from embodimem.envs.metaworld.dataset import (  # noqa: E402
    CODEBASE_VERSION,
    EpisodeDataset,
    EpisodeWriter,
    depth_to_mm,
    mm_to_depth,
)
from embodimem.envs.metaworld.video import Mp4Writer, read_mp4  # noqa: E402
from embodimem.types import Frame  # noqa: E402

H = W = 32
CAMS = ["front", "wrist"]


def _image(t: int, cam: int) -> np.ndarray:
    """A smooth, moving colour gradient (H.264-friendly, so decoded frames stay close to the originals)."""
    y, x = np.mgrid[0:H, 0:W]
    r = (x * 6 + t * 5) % 256
    g = (y * 6 + cam * 60) % 256
    b = np.full_like(x, (t * 20) % 256)
    return np.stack([r, g, b], -1).astype(np.uint8)


def _obs(t: int) -> dict:
    views = {}
    for i, c in enumerate(CAMS):
        pose = np.eye(4, dtype=np.float32)
        pose[:3, 3] = [t * 0.01, i, 0.5]
        views[c] = {"rgb": _image(t, i), "depth": np.full((H, W), 0.5 + 0.001 * t + i, np.float32),
                    "pose": pose, "intrinsics": np.array([[30, 0, 16], [0, 30, 16], [0, 0, 1]], np.float32)}
    obs = dict(views[CAMS[0]])
    obs["state"] = np.arange(5, dtype=np.float32) + t
    obs["cameras"] = views
    return obs


def _write_episode(w: EpisodeWriter, T: int, task: str, seed: int, success: bool) -> dict:
    w.start_episode(task=task, seed=seed, env_task="synthetic")
    for t in range(T):
        w.add_step(_obs(t), np.full(4, t, np.float32), reward=float(t == T - 1), terminated=success and t == T - 1,
                   is_success=success and t == T - 1)
    return w.end_episode()


def test_round_trip(tmp_path):
    root = tmp_path / "ds"
    w = EpisodeWriter(root, fps=10, cameras=CAMS, height=H, width=W)
    e0 = _write_episode(w, 7, "stack the cups", seed=3, success=True)
    e1 = _write_episode(w, 5, "open the drawer", seed=4, success=False)
    assert (e0["episode_index"], e1["episode_index"]) == (0, 1)

    ds = EpisodeDataset(root)
    assert len(ds) == 2 and ds.num_frames == 12 and ds.cameras == CAMS and ds.fps == 10
    assert [t["task"] for t in ds.tasks] == ["stack the cups", "open the drawer"]
    assert ds.info["codebase_version"] == CODEBASE_VERSION and ds.info["total_episodes"] == 2
    assert ds.episodes[0]["success"] is True and ds.episodes[1]["success"] is False
    assert ds.info["features"]["depth.front"] == {"dtype": "uint16", "shape": [H, W]}
    assert (root / "videos" / "wrist" / "episode_000001.mp4").is_file()

    ep = ds.load_episode(0)
    assert ep["task"] == "stack the cups" and ep["action"].shape == (7, 4)
    np.testing.assert_array_equal(ep["action"][:, 0], np.arange(7))
    np.testing.assert_array_equal(ep["is_first"], np.arange(7) == 0)
    np.testing.assert_array_equal(ep["is_last"], np.arange(7) == 6)
    np.testing.assert_array_equal(ep["is_success"], np.arange(7) == 6)
    np.testing.assert_allclose(ep["timestamp"], np.arange(7) / 10, atol=1e-6)
    np.testing.assert_array_equal(ep["state"][3], np.arange(5) + 3)
    for i, c in enumerate(CAMS):
        assert ep[f"rgb.{c}"].shape == (7, H, W, 3) and ep[f"rgb.{c}"].dtype == np.uint8
        truth = np.stack([_image(t, i) for t in range(7)]).astype(np.float32)
        assert np.abs(ep[f"rgb.{c}"] - truth).mean() < 4.0  # lossy H.264, but close
        np.testing.assert_allclose(ep[f"depth.{c}"][:, 0, 0], 0.5 + 0.001 * np.arange(7) + i, atol=5e-4)
        np.testing.assert_array_equal(ep[f"pose.{c}"][2, :3, 3], np.array([0.02, i, 0.5], np.float32))
    with pytest.raises(IndexError, match="out of range"):
        ds.load_episode(5)
    # decord decodes the same frames
    pytest.importorskip("decord")
    np.testing.assert_array_equal(ds.load_episode(1, backend="decord")["rgb.front"], ds.load_episode(1)["rgb.front"])


def test_frames_iterator_builds_frames(tmp_path):
    w = EpisodeWriter(tmp_path, fps=10, cameras=CAMS, height=H, width=W)
    _write_episode(w, 4, "t", seed=0, success=True)
    frames = list(EpisodeDataset(tmp_path).frames(0, "wrist"))
    assert len(frames) == 4 and frames[0]["is_first"] and not frames[1]["is_first"]
    f = Frame.from_obs(frames[2], t=frames[2]["t"], is_first=frames[2]["is_first"])
    assert f.instruction == ["t"] and float(f.depth[0, 0, 0]) == pytest.approx(1.502, abs=5e-4)


def test_crash_mid_episode_leaves_earlier_episodes_readable(tmp_path):
    root = tmp_path / "ds"
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_episode_dataset import _write_episode, _obs, CAMS, H, W
        from embodimem.envs.metaworld.dataset import EpisodeWriter
        w = EpisodeWriter({str(root)!r}, fps=10, cameras=CAMS, height=H, width=W)
        _write_episode(w, 4, "a", 0, True)
        _write_episode(w, 3, "b", 1, False)
        w.start_episode(task="c", seed=2)
        for t in range(5):
            w.add_step(_obs(t), np.zeros(4, np.float32), 0.0)
        os._exit(3)  # a hard crash: no cleanup, no exception handlers
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    ds = EpisodeDataset(root)
    assert len(ds) == 2 and [e["task"] for e in ds.episodes] == ["a", "b"]
    assert ds.load_episode(1)["rgb.front"].shape == (3, H, W, 3)
    assert not (root / "videos" / "front" / "episode_000002.mp4").exists()
    assert not (root / "data" / "episode_000002.npz").exists()
    # a new writer resumes at index 2 and overwrites nothing
    w = EpisodeWriter(root, fps=10, cameras=CAMS, height=H, width=W)
    assert _write_episode(w, 2, "c", 2, True)["episode_index"] == 2
    assert len(EpisodeDataset(root)) == 3


def test_abort_and_exceptions_leave_no_partial_files(tmp_path):
    w = EpisodeWriter(tmp_path, fps=10, cameras=["front"], height=H, width=W)
    w.start_episode(task="x")
    w.add_step(_obs(0)["cameras"]["front"] | {"state": np.zeros(2)}, np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="uint8"):
        w.add_step({"rgb": np.zeros((H, W, 3), np.float32), "depth": np.zeros((H, W)), "pose": np.eye(4),
                    "intrinsics": np.eye(3)}, np.zeros(2), 0.0)
    w.abort_episode()
    assert not list(tmp_path.rglob("*.mp4")) and not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(RuntimeError, match="start_episode"):
        w.add_step(_obs(0), np.zeros(2), 0.0)


def test_append_must_match_and_bad_metadata_is_named(tmp_path):
    w = EpisodeWriter(tmp_path, fps=10, cameras=CAMS, height=H, width=W)
    _write_episode(w, 2, "a", 0, True)
    with pytest.raises(ValueError, match="existing dataset"):
        EpisodeWriter(tmp_path, fps=30, cameras=CAMS, height=H, width=W)
    eps = tmp_path / "meta" / "episodes.jsonl"
    good = eps.read_text()
    eps.write_text(good + "{oops\n")
    with pytest.raises(ValueError, match=r"episodes.jsonl: line 2 is not valid JSON"):
        EpisodeDataset(tmp_path)
    eps.write_text(json.dumps({"episode_index": 0}) + "\n")
    with pytest.raises(ValueError, match="missing field 'length'"):
        EpisodeDataset(tmp_path)
    eps.write_text(good)
    # a video shorter than the episode is caught
    bad = Mp4Writer(tmp_path / "videos" / "front" / "episode_000000.mp4", 10, H, W)
    bad.write(_image(0, 0))
    bad.close()
    with pytest.raises(ValueError, match="1 video frames, episodes.jsonl says 2"):
        EpisodeDataset(tmp_path).load_episode(0)
    info = tmp_path / "meta" / "info.json"
    info.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="info.json: field 'format'"):
        EpisodeDataset(tmp_path)


def test_depth_encoding():
    d = np.array([0.0, 0.0004, 0.0006, 1.2344, 65.534, 65.6, np.inf, np.nan, -1.0], np.float32)
    mm = depth_to_mm(d)
    assert mm.dtype == np.uint16
    assert mm.tolist() == [0, 0, 1, 1234, 65534, 0, 0, 0, 0]  # 0 = no reading, beyond 65.534 m too
    np.testing.assert_allclose(mm_to_depth(mm)[3], 1.2344, atol=5e-4)


def test_mp4_rejects_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        Mp4Writer(tmp_path / "x.mp4", 10, 31, 32)
    w = Mp4Writer(tmp_path / "y.mp4", 10, H, W)
    w.abort()
    assert not (tmp_path / "y.mp4").exists()
    with pytest.raises(FileNotFoundError):
        read_mp4(tmp_path / "y.mp4")


def test_record_script_writes_expert_demos(tmp_path):
    pytest.importorskip("metaworld")
    from embodimem.envs.metaworld.record import main

    out = tmp_path / "demos"
    assert main(["--task", "reach-v3", "--episodes", "2", "--out", str(out), "--size", "32", "--max-steps", "150"]) == 0
    ds = EpisodeDataset(out)
    assert len(ds) == 2 and all(e["success"] for e in ds.episodes)
    assert ds.episodes[0]["env_task"] == "reach-v3" and ds.tasks[0]["task"].startswith("reach")
    ep = ds.load_episode(1)
    assert ep["state"].shape[1] == 39 and ep["rgb.corner4"].shape[1:] == (32, 32, 3) and ep["is_success"][-1]
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        main(["--task", "nope", "--episodes", "1", "--out", str(tmp_path / "x")])
