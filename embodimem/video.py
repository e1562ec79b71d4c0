"""Video I/O: H.264 mp4 writing with PyAV (atomic), sequential reading with PyAV or decord.

Streaming readers decode sequentially and subsample: random access (``get_batch``) on long-GOP video is an
order of magnitude slower on CPU (see docs in shared notes on decoding speed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np


def _av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the extra
        raise ImportError("video I/O needs PyAV: pip install 'embodimem[video]'") from e
    return av


def write_mp4(path: str | os.PathLike[str], frames: Sequence[np.ndarray], fps: int = 10, crf: int = 23) -> Path:
    """Write uint8 RGB frames [H,W,3] (even sizes are padded) to an H.264 mp4, atomically."""
    av = _av()
    if len(frames) == 0:
        raise ValueError("write_mp4: no frames")
    first = np.asarray(frames[0])
    if first.dtype != np.uint8 or first.ndim != 3 or first.shape[2] != 3:
        raise ValueError(f"write_mp4: frames must be uint8 [H,W,3], got {first.dtype} {first.shape}")
    H, W = first.shape[:2]
    H2, W2 = H + H % 2, W + W % 2  # yuv420p needs even sizes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    try:
        with av.open(str(tmp), mode="w") as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = W2, H2, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for f in frames:
                f = np.asarray(f)
                if f.shape != first.shape:
                    raise ValueError(f"write_mp4: frame shape {f.shape} differs from the first {first.shape}")
                if (H2, W2) != (H, W):
                    f = np.pad(f, ((0, H2 - H), (0, W2 - W), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def iter_frames(path: str | os.PathLike[str], every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Decode sequentially, yielding (frame index, uint8 RGB [H,W,3]) for every ``every``-th frame."""
    av = _av()
    if every < 1:
        raise ValueError(f"iter_frames: every must be >= 1, got {every}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"no video at {path}")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i % every == 0:
                yield i, frame.to_ndarray(format="rgb24")


def read_frames(path: str | os.PathLike[str], every: int = 1) -> np.ndarray:
    """All (subsampled) frames as uint8 [T,H,W,3]."""
    frames = [f for _, f in iter_frames(path, every)]
    if not frames:
        raise ValueError(f"{path}: no decodable frames")
    return np.stack(frames)
