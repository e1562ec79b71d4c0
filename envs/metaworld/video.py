"""MP4 (H.264) writing with PyAV and reading with PyAV or decord, for episode datasets.

Writing streams frames into a hidden temp file beside the target and renames it into place on ``close()``, so a
crash never leaves a truncated video under the final name. Frames are uint8 RGB [H,W,3]; H.264 in yuv420p needs
even H and W. Encoding is lossy (``crf`` 0 = near-lossless in RGB terms, 18 = visually lossless, 23 = default).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["Mp4Writer", "read_mp4", "mp4_frame_count"]


def _av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a core test dependency here
        raise ImportError("writing/reading mp4 needs PyAV: pip install av  (or the `video` extra)") from e
    return av


class Mp4Writer:
    """Stream uint8 RGB frames [H,W,3] into an H.264 mp4 at ``fps``; the file appears atomically on ``close()``."""

    def __init__(self, path: str | os.PathLike, fps: float, height: int, width: int, *, crf: int = 18,
                 preset: str = "veryfast", threads: int = 1) -> None:
        if height % 2 or width % 2 or height <= 0 or width <= 0:
            raise ValueError(f"H.264 (yuv420p) needs a positive even frame size, got {height}x{width}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf: expected 0..51, got {crf}")
        av = _av()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.height, self.width = int(height), int(width)
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": preset}
        self._stream.codec_context.thread_count = threads
        self.frames = 0
        self._closed = False

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB frame [H,W,3]."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
            raise ValueError(f"expected uint8 [{self.height},{self.width},3], got {frame.dtype} {list(frame.shape)}")
        vf = _av().VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and move the finished file into place; returns the final path."""
        if self._closed:
            return self.path
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the partial video (no file appears under the final name)."""
        if self._closed:
            return
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - an encoder in a bad state must not mask the caller's error
            pass
        self._tmp.unlink(missing_ok=True)
        self._closed = True


def read_mp4(path: str | os.PathLike, backend: str = "pyav") -> np.ndarray:
    """Decode every frame of an mp4 -> uint8 [T,H,W,3] RGB; backend 'pyav' or 'decord'."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if backend == "decord":
        try:
            import decord
        except ImportError as e:
            raise ImportError("backend='decord' needs decord: pip install decord==0.6.0") from e
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        if len(vr) == 0:
            return np.zeros((0, 0, 0, 3), np.uint8)
        return vr.get_batch(list(range(len(vr)))).asnumpy()
    if backend != "pyav":
        raise ValueError(f"backend: expected 'pyav' or 'decord', got {backend!r}")
    av = _av()
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames)


def mp4_frame_count(path: str | os.PathLike) -> int:
    """Number of decodable frames in an mp4 (decodes the stream; exact, unlike the container's estimate)."""
    av = _av()
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
