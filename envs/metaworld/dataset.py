"""An on-disk episode dataset close to LeRobotDataset (per-step arrays + one mp4 per camera + JSON metadata).

Layout (``T`` = episode length, ``XXXXXX`` = zero-padded episode index)::

    root/meta/info.json                  format, codebase_version, fps, cameras, features {name: dtype, shape},
                                         depth encoding, video codec, totals
    root/meta/episodes.jsonl             one line per finished episode: episode_index, length, task, task_index,
                                         env_task, seed, success, data_path, video_paths
    root/meta/tasks.jsonl                task_index, task (the instruction text)
    root/data/episode_XXXXXX.npz         per-step arrays (below), ``np.savez_compressed``
    root/videos/<camera>/episode_XXXXXX.mp4   RGB frames, H.264 yuv420p, T frames at fps

Per-step arrays (step t = the observation before action t, the action, and what that action led to -- LeRobot's
``next.*`` fields): ``frame_index`` int64 [T]; ``timestamp`` float32 [T] seconds (t / fps); ``action`` float32
[T,A]; ``state`` float32 [T,S]; ``reward`` float32 [T]; ``is_first`` bool [T] (t == 0); ``is_last`` bool [T];
``is_terminal`` bool [T] (terminated, not truncated, after action t); ``is_success`` bool [T] (``info['is_success']``
after action t); per camera ``depth.<cam>`` uint16 [T,H,W] millimetres (0 = no reading; depths >= 65.535 m are
stored as 0; rounding error <= 0.5 mm), ``pose.<cam>`` float32 [T,4,4] OpenCV camera-to-world (metres) and
``intrinsics.<cam>`` float32 [T,3,3] pixels. The final observation after the last action is not stored.

Differences from LeRobotDataset v3: npz instead of parquet, one data file and one video per episode (v3 packs many
episodes per file), depth and camera geometry as extra features. Writes are atomic: each file is written to a
hidden temp name and renamed, and an episode exists only once its line is in ``episodes.jsonl`` (written last),
so a crash mid-episode leaves every earlier episode readable and the next writer reuses the index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embodimem.atomic import atomic_open, atomic_write_json, atomic_write_text
from embodimem.envs.metaworld.video import Mp4Writer, read_mp4

__all__ = ["EpisodeWriter", "EpisodeDataset", "FORMAT", "CODEBASE_VERSION", "depth_to_mm", "mm_to_depth"]

FORMAT = "embodimem-episodes"
CODEBASE_VERSION = "v3.0-embodimem.1"  # "close to LeRobotDataset v3.0", first revision of our variant
_MAX_MM = 65535


def depth_to_mm(depth: np.ndarray) -> np.ndarray:
    """Depth float [...] metres -> uint16 [...] millimetres (0 = no reading; >= 65.535 m and non-finite -> 0)."""
    d = np.asarray(depth, dtype=np.float64)
    mm = np.rint(np.where(np.isfinite(d), d, 0.0) * 1000.0)
    mm = np.where((mm < 0) | (mm >= _MAX_MM), 0, mm)
    return mm.astype(np.uint16)


def mm_to_depth(mm: np.ndarray) -> np.ndarray:
    """uint16 [...] millimetres -> float32 [...] metres (0 stays 0 = no reading)."""
    return np.asarray(mm, dtype=np.float32) / 1000.0


def _ep_name(i: int) -> str:
    return f"episode_{i:06d}"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {n} is not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}: line {n} is not a JSON object")
        rows.append(row)
    return rows


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _need(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ValueError(f"{where}: missing field {key!r}")
    return d[key]


class EpisodeWriter:
    """Record episodes into ``root`` (created, or appended to if its ``info.json`` matches fps/cameras/size).

    Use ``start_episode`` -> ``add_step`` x T -> ``end_episode``. ``add_step`` takes an env observation dict
    (rgb/depth/pose/intrinsics/state; multi-camera envs under ``obs['cameras'][name]``) taken *before* the action.
    """

    def __init__(self, root: str | os.PathLike, *, fps: float, cameras: Sequence[str], height: int, width: int,
                 depth: bool = True, crf: int = 18, robot_type: str = "sawyer") -> None:
        if not cameras:
            raise ValueError("cameras: need at least one camera")
        if fps <= 0:
            raise ValueError(f"fps: expected > 0, got {fps}")
        self.root = Path(root)
        self.fps, self.cameras = float(fps), list(cameras)
        self.height, self.width, self.depth, self.crf = int(height), int(width), bool(depth), int(crf)
        self.robot_type = robot_type
        meta = self.root / "meta"
        self._info_path, self._eps_path = meta / "info.json", meta / "episodes.jsonl"
        self._tasks_path = meta / "tasks.jsonl"
        self._features: dict[str, dict[str, Any]] | None = None
        if self._info_path.exists():
            ds = EpisodeDataset(self.root)
            want = {"fps": self.fps, "cameras": self.cameras, "height": self.height, "width": self.width,
                    "depth": self.depth}
            have = {k: ds.info.get(k) for k in want}
            if have != want:
                raise ValueError(f"{self._info_path}: existing dataset has {have}, this writer wants {want}")
            self._features = ds.info["features"]
            self._episodes, self._tasks = ds.episodes, ds.tasks
        else:
            self._episodes, self._tasks = [], []
        self._cur: dict[str, Any] | None = None

    # ------------------------------------------------------------------ episodes

    @property
    def num_episodes(self) -> int:
        """Finished episodes in the dataset."""
        return len(self._episodes)

    def start_episode(self, *, task: str, seed: int | None = None, env_task: str | None = None,
                      **extra: Any) -> int:
        """Begin episode ``num_episodes`` with its instruction text ``task``; returns its index."""
        if self._cur is not None:
            raise RuntimeError("start_episode: the previous episode was not ended (call end_episode or abort_episode)")
        idx = len(self._episodes)
        name = _ep_name(idx)
        videos = {c: Mp4Writer(self.root / "videos" / c / f"{name}.mp4", self.fps, self.height, self.width,
                               crf=self.crf) for c in self.cameras}
        self._cur = {"index": idx, "task": task, "seed": seed, "env_task": env_task, "extra": extra,
                     "videos": videos, "steps": {}}
        return idx

    def _views(self, obs: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        if "cameras" in obs:
            views = obs["cameras"]
            missing = [c for c in self.cameras if c not in views]
            if missing:
                raise ValueError(f"add_step: obs['cameras'] lacks {missing}; it has {list(views)}")
            return {c: views[c] for c in self.cameras}
        if len(self.cameras) != 1:
            raise ValueError(f"add_step: {len(self.cameras)} cameras configured but obs has no 'cameras' entry")
        return {self.cameras[0]: obs}

    def add_step(self, obs: Mapping[str, Any], action: Any, reward: float, *, terminated: bool = False,
                 is_success: bool = False, **extra: Any) -> None:
        """Append step t: obs before the action, the action, and the reward / termination / success it led to."""
        cur = self._cur
        if cur is None:
            raise RuntimeError("add_step: call start_episode first")
        row: dict[str, Any] = {
            "action": np.asarray(action, np.float32).reshape(-1),
            "state": np.asarray(obs.get("state", np.zeros(0)), np.float32).reshape(-1),
            "reward": np.float32(reward),
            "is_terminal": bool(terminated),
            "is_success": bool(is_success),
        }
        for c, v in self._views(obs).items():
            rgb = np.asarray(v["rgb"])
            cur["videos"][c].write(rgb)  # validates dtype and size
            row[f"pose.{c}"] = np.asarray(v["pose"], np.float32)
            row[f"intrinsics.{c}"] = np.asarray(v["intrinsics"], np.float32)
            if self.depth:
                if v.get("depth") is None:
                    raise ValueError(f"add_step: camera {c!r} has no depth but the dataset records depth")
                row[f"depth.{c}"] = depth_to_mm(np.asarray(v["depth"]).reshape(self.height, self.width))
        for k, val in extra.items():
            row[k] = np.asarray(val)
        steps = cur["steps"]
        if steps and set(steps) != set(row):
            raise ValueError(f"add_step: fields changed within an episode: {sorted(set(steps) ^ set(row))}")
        for k, val in row.items():
            steps.setdefault(k, []).append(val)

    def abort_episode(self) -> None:
        """Drop the current episode (its temp files are removed; nothing is recorded)."""
        if self._cur is not None:
            for w in self._cur["videos"].values():
                w.abort()
            self._cur = None

    def end_episode(self, *, success: bool | None = None) -> dict[str, Any]:
        """Finish the episode: write its npz and videos, then its ``episodes.jsonl`` line; returns that line."""
        cur = self._cur
        if cur is None:
            raise RuntimeError("end_episode: no episode in progress")
        steps = cur["steps"]
        T = len(steps.get("action", []))
        if T == 0:
            self.abort_episode()
            raise ValueError("end_episode: the episode has no steps")
        arrays = {k: np.stack(v) for k, v in steps.items()}
        arrays["frame_index"] = np.arange(T, dtype=np.int64)
        arrays["timestamp"] = (np.arange(T) / self.fps).astype(np.float32)
        arrays["is_first"] = np.arange(T) == 0
        arrays["is_last"] = np.arange(T) == T - 1
        features = {k: {"dtype": str(a.dtype), "shape": list(a.shape[1:])} for k, a in sorted(arrays.items())}
        for c in self.cameras:
            features[f"rgb.{c}"] = {"dtype": "video", "shape": [self.height, self.width, 3],
                                    "video": {"codec": "h264", "pix_fmt": "yuv420p", "crf": self.crf}}
        if self._features is not None and features != self._features:
            self.abort_episode()
            raise ValueError(f"end_episode: features differ from the dataset's: {features} vs {self._features}")
        name = _ep_name(cur["index"])
        data_rel = f"data/{name}.npz"
        try:
            with atomic_open(self.root / data_rel, "wb") as f:
                np.savez_compressed(f, **arrays)  # zip-deflate: depth maps shrink ~5-10x
            video_rel = {c: str(w.close().relative_to(self.root)) for c, w in cur["videos"].items()}
        except BaseException:
            self.abort_episode()
            raise
        ok = bool(arrays["is_success"].any()) if success is None else bool(success)
        task_index = next((t["task_index"] for t in self._tasks if t["task"] == cur["task"]), None)
        if task_index is None:
            task_index = len(self._tasks)
            self._tasks.append({"task_index": task_index, "task": cur["task"]})
        line = {"episode_index": cur["index"], "length": T, "task": cur["task"], "task_index": task_index,
                "env_task": cur["env_task"], "seed": cur["seed"], "success": ok, "data_path": data_rel,
                "video_paths": video_rel, **cur["extra"]}
        self._features = features
        self._cur = None
        # Order matters: tasks and info first, episodes.jsonl (which makes the episode exist) last.
        _write_jsonl(self._tasks_path, self._tasks)
        self._write_info(extra_frames=T)
        _write_jsonl(self._eps_path, [*self._episodes, line])
        self._episodes.append(line)
        return line

    def _write_info(self, extra_frames: int = 0) -> None:
        info = {
            "format": FORMAT, "codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type, "fps": self.fps,
            "cameras": self.cameras, "height": self.height, "width": self.width, "depth": self.depth,
            "depth_encoding": "uint16 millimetres along the optical axis; 0 = no reading" if self.depth else None,
            "pose_convention": "OpenCV camera-to-world (x right, y down, z forward), metres",
            "total_episodes": len(self._episodes) + 1,
            "total_frames": sum(e["length"] for e in self._episodes) + extra_frames,
            "total_tasks": len(self._tasks),
            "data_path": "data/episode_{episode_index:06d}.npz",
            "video_path": "videos/{camera}/episode_{episode_index:06d}.mp4",
            "features": self._features,
        }
        atomic_write_json(self._info_path, info)

    def close(self) -> None:
        """Abort an unfinished episode (finished ones are already on disk)."""
        self.abort_episode()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EpisodeDataset:
    """Read a dataset written by :class:`EpisodeWriter`; malformed metadata raises ValueError naming the file."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"not an episode dataset (no {info_path})")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{info_path}: not valid JSON ({e})") from None
        if not isinstance(self.info, dict):
            raise ValueError(f"{info_path}: expected a JSON object")
        if _need(self.info, "format", str(info_path)) != FORMAT:
            raise ValueError(f"{info_path}: field 'format' is {self.info['format']!r}, expected {FORMAT!r}")
        for k in ("codebase_version", "fps", "cameras", "height", "width", "depth", "features"):
            _need(self.info, k, str(info_path))
        self.fps = float(self.info["fps"])
        self.cameras: list[str] = list(self.info["cameras"])
        eps_path = self.root / "meta" / "episodes.jsonl"
        self.episodes = _read_jsonl(eps_path)
        for n, e in enumerate(self.episodes):
            for k in ("episode_index", "length", "task", "data_path", "video_paths"):
                _need(e, k, f"{eps_path} (episode line {n + 1})")
            if e["episode_index"] != n:
                raise ValueError(f"{eps_path}: line {n + 1} has episode_index {e['episode_index']}, expected {n}")
        self.tasks = _read_jsonl(self.root / "meta" / "tasks.jsonl")

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        """Total steps over all episodes."""
        return sum(int(e["length"]) for e in self.episodes)

    def _meta(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode {i} out of range: the dataset has {len(self)} episodes")
        return self.episodes[i]

    def load_episode(self, i: int, *, video: bool = True, backend: str = "pyav") -> dict[str, Any]:
        """Episode ``i`` as arrays: npz fields, ``depth.<cam>`` in float32 metres, ``rgb.<cam>`` uint8 [T,H,W,3].

        Lengths are checked against ``episodes.jsonl``: a short or long array or video raises ValueError.
        """
        meta = self._meta(i)
        T = int(meta["length"])
        path = self.root / meta["data_path"]
        with np.load(path) as z:
            out: dict[str, Any] = {k: z[k] for k in z.files}
        for k, a in out.items():
            if len(a) != T:
                raise ValueError(f"{path}: field {k!r} has {len(a)} steps, episodes.jsonl says {T}")
            if k.startswith("depth."):
                out[k] = mm_to_depth(a)
        if video:
            for c, rel in meta["video_paths"].items():
                frames = read_mp4(self.root / rel, backend=backend)
                if len(frames) != T:
                    raise ValueError(f"{self.root / rel}: {len(frames)} video frames, episodes.jsonl says {T}")
                out[f"rgb.{c}"] = frames
        out["task"], out["episode_index"] = meta["task"], meta["episode_index"]
        return out

    def frames(self, i: int, camera: str | None = None, *, backend: str = "pyav") -> Iterator[dict[str, Any]]:
        """Obs dicts of episode ``i``: rgb, depth (m), pose, intrinsics, instruction, state, action, t, is_first."""
        cam = camera or self.cameras[0]
        if cam not in self.cameras:
            raise ValueError(f"unknown camera {cam!r}; the dataset has {self.cameras}")
        ep = self.load_episode(i, backend=backend)
        for t in range(len(ep["action"])):
            yield {
                "rgb": ep[f"rgb.{cam}"][t],
                "depth": ep[f"depth.{cam}"][t] if f"depth.{cam}" in ep else None,
                "pose": ep[f"pose.{cam}"][t],
                "intrinsics": ep[f"intrinsics.{cam}"][t],
                "instruction": ep["task"],
                "state": ep["state"][t],
                "action": ep["action"][t],
                "t": int(ep["frame_index"][t]),
                "is_first": bool(ep["is_first"][t]),
            }
