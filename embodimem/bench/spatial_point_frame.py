"""Point-frame rows of ``embodimem bench spatial``.

Also runnable alone: ``python -m embodimem.bench.spatial_point_frame [--quick] [--out DIR]``.

Two measurements of the ``point_frame`` memory on analytic scenes (embodimem.spatial.analytic_room):
1. Retrieval latency: fill one env's cloud to ``cached_points`` points by walking a long corridor, then time
   ``read`` (projection, z-buffer, votes, top-k, readout) for depth images of each ``resolutions`` size.
2. Stored bytes against episode length: bytes actually held (valid points and keyframes; the allocation is
   fixed) on a looping walk (must plateau), on an exploring corridor walk (grows with the observed area,
   reported as the number of distinct voxels any frame saw) and on an out-and-back walk (grows on the way
   out, flat on the way back: area, not time).

``run_rows(cfg)`` reads only these attributes of ``cfg`` (any object; missing ones take the defaults of
``Config`` below): device, seed, read_reps, cached_points, resolutions, episode_lengths, bytes_hw, quick.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from embodimem.bench.common import header, save_figure, save_results, sync
from embodimem.geometry import intrinsics_from_fov
from embodimem.memory import make_memory
from embodimem.memory.point_frame import PointFrameConfig
from embodimem.spatial.analytic_room import Room, explore_poses, loop_poses, render_depth
from embodimem.spatial.voxel_hash import voxel_keys

CORRIDOR = Room(lo=(-1.03, -2.97, -0.04), hi=(1000.07, 3.02, 2.47),
                boxes=tuple(((x + 0.07, y, -0.04), (x + 0.61, y + 0.53, 2.47))
                            for x in range(3, 300, 6) for y in (-1.9, 1.1)))  # pillars: every 6 m, both sides


@dataclass
class Config:
    """Point-frame retrieval latency and stored bytes; results in ``out``/spatial_point_frame.json (+ .png)."""

    cached_points: int = 100_000  # cloud size for the latency rows
    resolutions: list[int] = field(default_factory=lambda: [64, 128])  # square depth images read at
    read_reps: int = 100  # timed reads per resolution
    episode_lengths: list[int] = field(default_factory=lambda: [100, 250, 500, 1000, 2000])
    bytes_hw: int = 32  # depth resolution of the bytes trajectories
    quick: bool = False  # smoke mode: 20k points, episodes up to 200 steps
    device: str = "cpu"
    threads: int = 1  # torch intra-op threads (1 = stable timings on a shared machine)
    seed: int = 0
    out: Path = Path("runs/bench-spatial-point-frame")
    plot: bool = True


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def _frames(room: Room, poses: torch.Tensor, hw: int, dev: torch.device):
    K = intrinsics_from_fov(hw, hw, 90.0).expand(len(poses), 3, 3).contiguous()
    return render_depth(room, poses, K, (hw, hw)).to(dev), poses.to(dev), K.to(dev)


@torch.no_grad()
def latency_rows(cached_points: int, resolutions: list[int], reps: int, dev: torch.device) -> list[dict[str, Any]]:
    """Fill the cloud to ``cached_points`` along the corridor, then time reads at each resolution (B=1)."""
    mem = make_memory(PointFrameConfig(dim=64, tokens_per_step=16, voxel_size=0.05, extent=1024.0,
                                       max_points=cached_points, max_keyframes=256, top_k=8))
    poses = explore_poses(4000, speed=0.15)
    st = mem.init_state(1, dev)
    x = torch.zeros(1, 16, 64, device=dev)
    i = 0
    while int(st["valid"].sum()) < cached_points:
        if i == len(poses):
            raise RuntimeError(f"the corridor walk ran out before {cached_points} points were cached")
        if i % 16 == 0:  # render lazily, 16 frames at a time
            depth, pose, K = _frames(CORRIDOR, poses[i:i + 16], 128, dev)
        j = i % 16
        st = mem.write(st, x, depth=depth[j:j + 1], pose=pose[j:j + 1], intrinsics=K[j:j + 1])
        i += 1
    q = pose[j:j + 1]
    rows = []
    for r in resolutions:
        Kr = intrinsics_from_fov(r, r, 90.0, device=dev)[None]
        for occlusion in ("zbuffer", "none"):
            m = make_memory(dataclasses.replace(mem.config, occlusion=occlusion))
            lat = []
            for j in range(reps + 5):
                sync(dev)
                t0 = time.perf_counter()
                out = m.read(st, pose=q, intrinsics=Kr, hw=(r, r))
                sync(dev)
                lat.append(time.perf_counter() - t0)
            lat = lat[5:]
            rows.append({"bench": "point_frame", "case": "retrieval", "hw": f"{r}x{r}", "occlusion": occlusion,
                         "cached_points": int(st["valid"].sum()), "keyframes": int(st["kf_valid"].sum()),
                         "frames_written": i, "retrieved": int((out.extras["slot"] >= 0).sum()),
                         "visible_votes": int(m.votes(st, pose=q, intrinsics=Kr, hw=(r, r)).sum()),
                         "read_ms_p50": 1e3 * _pct(lat, 50), "read_ms_p95": 1e3 * _pct(lat, 95),
                         "read_ms_min": 1e3 * min(lat)})
    return rows


@torch.no_grad()
def bytes_rows(lengths: list[int], hw: int, dev: torch.device) -> list[dict[str, Any]]:
    """Bytes held after T steps of a looping walk (small room) and of an exploring walk (corridor)."""
    T = max(lengths)
    cfg = PointFrameConfig(dim=64, tokens_per_step=16, voxel_size=0.2, extent=1024.0, max_points=300_000,
                           max_keyframes=2048, top_k=8)
    trajectories = {
        "loop": (Room(boxes=(((0.93, 0.88, -0.04), (1.31, 1.27, 2.47)),)),
                 loop_poses(T, step_rad=2 * math.pi / 23.7, pitch=-0.3)),
        "explore": (CORRIDOR, explore_poses(T, speed=0.1)),
        "out_and_back": (CORRIDOR, out_and_back_poses(T, speed=0.1)),
    }
    rows = []
    for name, (room, poses) in trajectories.items():
        mem = make_memory(cfg)
        st = mem.init_state(1, dev)
        x = torch.zeros(1, 16, 64, device=dev)
        seen = torch.empty(0, dtype=torch.long, device=dev)
        for start in range(0, T, 250):  # render in chunks to bound memory
            depth, pose, K = _frames(room, poses[start:start + 250], hw, dev)
            for j in range(len(pose)):
                st = mem.write(st, x, depth=depth[j:j + 1], pose=pose[j:j + 1], intrinsics=K[j:j + 1])
                keys = voxel_keys(*_points(depth[j:j + 1], pose[j:j + 1], K[j:j + 1]), cfg.voxel_size)
                seen = torch.unique(torch.cat([seen, keys[keys != torch.iinfo(torch.long).max]]))
                t = start + j + 1
                if t in lengths:
                    s = mem.stats(st)
                    rows.append({"bench": "point_frame", "case": "bytes", "trajectory": name, "T": t,
                                 "used_bytes_per_env": s["used_bytes_per_env"], "points": int(s["points_mean"]),
                                 "keyframes": int(s["keyframes_mean"]), "observed_voxels": int(seen.numel()),
                                 "allocated_bytes_per_env": s["bytes_per_env"],
                                 "points_dropped": int(s["points_dropped"]),
                                 "keyframes_evicted": int(s["keyframes_evicted"])})
    return rows


def out_and_back_poses(T: int, speed: float) -> torch.Tensor:
    """Walk the corridor for T/2 steps, turn around and walk back the same way (cameras face -x)."""
    out = explore_poses((T + 1) // 2, speed=speed)
    back = out.flip(0)[: T // 2] @ torch.diag(torch.tensor([-1.0, 1.0, -1.0, 1.0]))  # yaw 180 deg about camera y
    return torch.cat([out, back])


def _points(depth, pose, K):
    from embodimem.geometry import backproject_depth

    p, ok = backproject_depth(depth, K, pose)
    return p.reshape(1, -1, 3), ok.reshape(1, -1)


def run_rows(cfg: Any = None) -> list[dict[str, Any]]:
    """All point-frame rows (retrieval latency, then stored bytes); see the module docstring for ``cfg``."""
    d = Config()
    get = (lambda n: getattr(cfg, n, getattr(d, n))) if cfg is not None else (lambda n: getattr(d, n))
    dev = torch.device(get("device"))
    torch.manual_seed(get("seed"))
    quick = bool(get("quick"))
    pts = 20_000 if quick else int(get("cached_points"))
    lengths = [50, 100, 200] if quick else list(get("episode_lengths"))
    return (latency_rows(pts, list(get("resolutions")), 10 if quick else int(get("read_reps")), dev)
            + bytes_rows(lengths, int(get("bytes_hw")), dev))


def _exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x (0 = plateau, 1 = linear)."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(xs, ys) if a > 0 and b > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth exponents of used bytes in T (second half of the lengths) and in observed voxels (where those grew
    by more than 10%), per trajectory."""
    out = {}
    for name in sorted({x["trajectory"] for x in rows if "trajectory" in x}):
        r = sorted((x for x in rows if x.get("trajectory") == name), key=lambda x: x["T"])
        tail = r[len(r) // 2:]
        grew = len(r) > 1 and r[-1]["observed_voxels"] > 1.1 * r[0]["observed_voxels"]
        by_voxels = _exponent([x["observed_voxels"] for x in r], [x["used_bytes_per_env"] for x in r])
        out[name] = {"bytes_exponent_in_T_tail": _exponent([x["T"] for x in tail],
                                                           [x["used_bytes_per_env"] for x in tail]),
                     "bytes_exponent_in_observed_voxels": by_voxels if grew else None}
    return out


def run(cfg: Config, command: str = "") -> dict[str, Any]:
    """Standalone run: write ``out``/spatial_point_frame.json (+ .png) atomically and return the results."""
    torch.set_num_threads(cfg.threads)
    rows = run_rows(cfg)
    res = {**header("spatial_point_frame", cfg, command, cfg.device), "rows": rows, "summary": summarize(rows)}
    return save_results(res, cfg, "spatial_point_frame", plot)


def format_table(res: dict[str, Any]) -> str:
    """Plain-text tables of the latency and bytes rows."""
    lines = [f"{'point_frame retrieval':<24}{'hw':>9}{'occlusion':>10}{'points':>9}{'p50 ms':>9}{'p95 ms':>9}"
             f"{'min ms':>9}"]
    for r in (x for x in res["rows"] if x["case"] == "retrieval"):
        lines.append(f"{'':<24}{r['hw']:>9}{r['occlusion']:>10}{r['cached_points']:>9}"
                     f"{r['read_ms_p50']:>9.3f}{r['read_ms_p95']:>9.3f}{r.get('read_ms_min', float('nan')):>9.3f}")
    lines.append(f"{'point_frame bytes':<20}{'T':>7}{'used B/env':>12}{'points':>9}{'keyframes':>10}"
                 f"{'obs. voxels':>12}")
    for r in (x for x in res["rows"] if x["case"] == "bytes"):
        lines.append(f"  {r['trajectory']:<18}{r['T']:>7}{r['used_bytes_per_env']:>12.0f}{r['points']:>9}"
                     f"{r['keyframes']:>10}{r['observed_voxels']:>12}")
    for name, s in res.get("summary", summarize(res["rows"])).items():
        f = lambda v: "n/a" if v is None else f"{v:+.2f}"  # noqa: E731
        lines.append(f"  {name}: bytes growth exponent in T (tail) {f(s['bytes_exponent_in_T_tail'])}, "
                     f"in observed voxels {f(s['bytes_exponent_in_observed_voxels'])}")
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    """Two panels: retrieval latency per resolution; used bytes against T for both trajectories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    lat = [r for r in res["rows"] if r["case"] == "retrieval"]
    labels = [f"{r['hw']}\n{r['occlusion']}" for r in lat]
    ax[0].bar(labels, [r["read_ms_p50"] for r in lat],
              yerr=[[0] * len(lat), [r["read_ms_p95"] - r["read_ms_p50"] for r in lat]])
    ax[0].set_title(f"point-to-frame read, {lat[0]['cached_points'] if lat else 0} points (p50, p95 bar)")
    ax[0].set_ylabel("ms")
    for name in ("loop", "explore", "out_and_back"):
        r = sorted((x for x in res["rows"] if x.get("trajectory") == name), key=lambda x: x["T"])
        ax[1].plot([x["T"] for x in r], [x["used_bytes_per_env"] for x in r], marker="o", label=name)
    ax[1].set_xscale("log")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("episode length T")
    ax[1].set_ylabel("bytes held per env")
    ax[1].legend()
    ax[1].grid(alpha=0.3)
    save_figure(fig, path)


if __name__ == "__main__":
    import shlex
    import sys

    import tyro

    c = tyro.cli(Config, args=sys.argv[1:], prog="python -m embodimem.bench.spatial_point_frame")
    cmd = "python -m embodimem.bench.spatial_point_frame " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    r = run(c, command=cmd)
    print(format_table(r))
    print(f"results in {c.out}/")
