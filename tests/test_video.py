"""mp4 round trip: frames written with PyAV decode back close to the originals; bad input is refused."""

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV (the video extra) is not installed")

from embodimem.video import read_frames, write_mp4  # noqa: E402


def test_round_trip_is_close_and_atomic(tmp_path):
    T, H, W = 12, 48, 64
    frames = np.zeros((T, H, W, 3), np.uint8)
    for t in range(T):
        frames[t, :, 4 * t:4 * t + 8] = (200, 60, 30)  # a moving bar
    p = write_mp4(tmp_path / "v.mp4", list(frames), fps=10, crf=10)
    got = read_frames(p)
    assert got.shape == frames.shape
    assert np.abs(got.astype(int) - frames.astype(int)).mean() < 4.0
    assert np.argmax(got[5].mean(axis=(0, 2))) // 4 == 5  # the bar is where it was written
    assert not list(tmp_path.glob(".*tmp*"))
    assert read_frames(p, every=4).shape[0] == 3


def test_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "a.mp4", [np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(tmp_path / "a.mp4", [])
    with pytest.raises(ValueError, match="differs"):
        write_mp4(tmp_path / "a.mp4", [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)])
    assert not (tmp_path / "a.mp4").exists()
