"""Atomic file writes: write a temp file in the target's folder, fsync it, then ``os.replace`` it into place.

A crash (or an exception) mid-write leaves the previous file untouched and no partial file under the
final name, because ``os.replace`` within one filesystem is atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_torch_save"]


def _current_umask() -> int:
    # os.umask can only be read by setting it; do it once at import, before any threads exist.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every OS/filesystem allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path`` for writing; on clean exit fsync + rename it to ``path``, else delete it."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports mode 'wb' or 'w', got {mode!r}")
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600; keep the old file's mode, or what a plain open() would have given.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, encoding=encoding if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(folder)


def _write_with(path: str | os.PathLike[str], writer: Callable[[IO[Any]], None], mode: str = "wb") -> Path:
    with atomic_open(path, mode, encoding="utf-8" if mode == "w" else None) as f:
        writer(f)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``; returns the path."""
    return _write_with(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically replace ``path`` with ``text`` (UTF-8); returns the path."""
    return _write_with(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Atomically write ``obj`` as JSON (serialised before the file is touched, so bad input changes nothing)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
    return atomic_write_text(path, text)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj, path)`` that never leaves a half-written file under ``path``."""
    import torch  # local: keeps this module importable without paying torch's import time

    return _write_with(path, lambda f: torch.save(obj, f))
