"""Run directories and JSONL metrics.

Layout of a run::

    runs/<name>-<YYYYmmdd-HHMMSS>/
        config.yaml          resolved config (written atomically)
        metrics.jsonl        one JSON object per line: {"step", "time", "elapsed", <metrics>}
        checkpoints/         step_0000001000.pt ... (see embodimem.checkpoint)
        eval/per_episode.jsonl, eval/summary.json, eval/videos/ (written by embodimem eval)
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from embodimem.atomic import atomic_write_json, atomic_write_text
from embodimem.checkpoint import checkpoint_name, latest_checkpoint
from embodimem.config import diff_configs, load_yaml, save_yaml, to_dict

__all__ = ["RunDir", "MetricsLogger", "read_metrics", "truncate_metrics", "append_jsonl"]

T = TypeVar("T")


class RunDir:
    """A run's folder: creates it (never clobbering a non-empty one unless resuming) and names its files."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, name: str = "run", root: str | os.PathLike[str] = "runs",
                 resume: bool | Literal["auto"] = False, config: Any = None, timestamp: datetime | None = None):
        """``path`` or ``root/<name>-<YYYYmmdd-HHMMSS>``; ``resume=True`` needs an existing run, "auto" resumes if one exists.

        ``config`` (a dataclass) is saved as ``config.yaml``; on resume it must match the saved one.
        """
        if path is None:
            if resume is True:
                raise ValueError("resume=True needs the path of the run to resume")
            path = self._fresh_path(Path(root), name, timestamp or datetime.now())
        self.path = Path(path)
        has_content = self.path.is_dir() and any(self.path.iterdir())
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"run path {self.path} exists and is not a directory")
        if resume is True and not has_content:
            raise FileNotFoundError(f"cannot resume: run directory {self.path} does not exist or is empty")
        if has_content and resume is False:
            raise FileExistsError(f"run directory {self.path} already exists and is not empty; pass resume=True "
                                  "(--resume) to continue it, or choose another path")
        self.resumed = has_content
        for d in (self.path, self.checkpoints_dir, self.eval_dir):
            d.mkdir(parents=True, exist_ok=True)
        if config is not None:
            self.save_config(config)

    @staticmethod
    def _fresh_path(root: Path, name: str, when: datetime) -> Path:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"run name must be a non-empty folder name, got {name!r}")
        base = root / f"{name}-{when:%Y%m%d-%H%M%S}"
        candidate, k = base, 1
        while candidate.exists():  # two runs started in the same second
            candidate, k = base.with_name(f"{base.name}-{k}"), k + 1
        return candidate

    # ----- paths ---------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def per_episode_path(self) -> Path:
        return self.eval_dir / "per_episode.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.eval_dir / "summary.json"

    def checkpoint_path(self, step: int) -> Path:
        """Where the checkpoint for ``step`` goes."""
        return self.checkpoints_dir / checkpoint_name(step)

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint of this run, or None."""
        return latest_checkpoint(self.checkpoints_dir)

    # ----- content -------------------------------------------------------------------------------------
    def save_config(self, config: Any, *, check_resume: bool = True, ignore: Iterable[str] = ()) -> Path:
        """Write the resolved config; when resuming, refuse a config that differs from the saved one."""
        if check_resume and self.config_path.is_file():
            import yaml

            saved = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
            new = to_dict(config) if not isinstance(config, Mapping) else dict(config)
            diffs = diff_configs(saved, new, ignore=ignore)
            if diffs:
                raise ValueError(f"run {self.path} was started with a different config; differing fields: "
                                 f"{', '.join(diffs)} (use a new run directory, or ignore those fields)")
        if isinstance(config, Mapping):
            import yaml

            return atomic_write_text(self.config_path, yaml.safe_dump(dict(config), sort_keys=False))
        return save_yaml(config, self.config_path)

    def load_config(self, cls: type[T]) -> T:
        """The saved config as dataclass ``cls``."""
        return load_yaml(cls, self.config_path)

    def metrics_logger(self, *, tensorboard: bool = False, resume_step: int | None = None) -> MetricsLogger:
        """A logger appending to ``metrics.jsonl``; ``resume_step`` first drops lines logged after that step."""
        if resume_step is not None:
            truncate_metrics(self.metrics_path, resume_step)
        return MetricsLogger(self.metrics_path, tensorboard_dir=self.path / "tb" if tensorboard else None)

    def log_episode(self, record: Mapping[str, Any]) -> None:
        """Append one evaluation episode's record to ``eval/per_episode.jsonl``."""
        append_jsonl(self.per_episode_path, record)

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Atomically write ``eval/summary.json``."""
        return atomic_write_json(self.summary_path, _jsonable(dict(summary)))

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)


def _jsonable(v: Any) -> Any:
    """Tensors / numpy scalars / Paths -> JSON values (0-d tensors become numbers)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if hasattr(v, "tolist") and callable(v.tolist):  # numpy arrays/scalars, torch tensors
        return _jsonable(v.tolist())
    if hasattr(v, "item") and callable(v.item):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON-serialisable")


def append_jsonl(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append one JSON object as a line and flush (a crash loses at most the line being written)."""
    line = json.dumps(_jsonable(dict(record)))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


class MetricsLogger:
    """JSONL metrics: one object per ``log`` call with ``step``, wall ``time`` (unix s) and ``elapsed`` (s)."""

    def __init__(self, path: str | os.PathLike[str], *, tensorboard_dir: str | os.PathLike[str] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._start = time.time()
        self._tb = None
        if tensorboard_dir is not None:
            try:  # optional: torch.utils.tensorboard needs the separate `tensorboard` package
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                warnings.warn(f"TensorBoard logging skipped ({e}); metrics still go to {self.path}", stacklevel=2)
            else:
                self._tb = SummaryWriter(log_dir=str(tensorboard_dir))

    def log(self, step: int, metrics: Mapping[str, Any] | None = None, /, **kw: Any) -> dict[str, Any]:
        """Write ``{"step", "time", "elapsed", **metrics, **kw}`` as one line, flushed; returns the record."""
        if self._file.closed:
            raise ValueError(f"MetricsLogger for {self.path} is closed")
        values = {**(metrics or {}), **kw}
        clash = [k for k in ("step", "time", "elapsed") if k in values]
        if clash:
            raise ValueError(f"metric names {clash} are reserved by MetricsLogger")
        now = time.time()
        record = {"step": int(step), "time": now, "elapsed": now - self._start, **_jsonable(values)}
        self._file.write(json.dumps(record) + "\n")  # NaN/inf are written as NaN/Infinity (Python reads them back)
        self._file.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "time", "elapsed") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, global_step=int(step))
        return record

    def close(self) -> None:
        """Close the file (and the TensorBoard writer)."""
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of a metrics JSONL file; a torn final line (crash mid-write) is skipped, others must parse."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:  # no trailing newline: the last write was interrupted
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON object ({e})") from e
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{i + 1}: expected a JSON object, got {type(rec).__name__}")
        out.append(rec)
    return out


def truncate_metrics(path: str | os.PathLike[str], step: int) -> int:
    """Drop records with ``step`` > ``step`` (logged after the checkpoint being resumed); returns how many."""
    path = Path(path)
    if not path.is_file():
        return 0
    records = read_metrics(path)
    kept = [r for r in records if not (isinstance(r.get("step"), (int, float)) and r["step"] > step)]
    dropped = len(records) - len(kept)
    text = "".join(json.dumps(r) + "\n" for r in kept)
    atomic_write_text(path, text)  # also removes a torn last line
    return dropped

