"""``embodimem bench spatial``: the octree store against open3d, and stored bytes against episode length.

1. Insert: N points (on the faces of a ``scene_size`` cube, 1 cm noise, so leaves repeat like fused depth)
   into an empty ``VoxelStore`` in one call, against open3d's ``Octree.convert_from_point_cloud`` (max depth
   chosen so its leaves are no larger than ours) and ``KDTreeFlann`` construction on the same points. Also
   one incremental insert of a ``frame_points`` frame into the full store (its cost is O(leaves held)).
2. Radius query: occupied leaves within ``radius`` of points near the surfaces. Ours: one batched call over
   ``queries`` queries (per-query time = total / Q) and single-query calls. open3d: ``KDTreeFlann
   .search_radius_vector_3d`` per query over our leaf centres (the same question), and an ``Octree`` radius
   search by pruned ``traverse`` (Python callbacks; few queries). Hit counts are cross-checked.
3. Bytes: the ``octree`` memory on a looping walk (must plateau), an exploring corridor walk (grows with the
   area seen: reported against the number of distinct leaf cells any frame observed) and an out-and-back
   walk (grows on the way out, flat on the way back although time goes on).
Point-frame rows come from ``embodimem.bench.spatial_point_frame.run_rows(cfg)`` when that module exists.
Ratios (ours / open3d) are measured in the same run; absolute times depend on the machine.
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embodimem.bench.common import finish_axes, header, percentile, save_figure, save_results, slope, sync
from embodimem.spatial.morton import MortonGrid
from embodimem.spatial.voxel_store import VoxelStore


@dataclass
class Config:
    """Octree vs open3d (insert, radius query) and bytes vs T; results in ``out``/spatial.json and spatial.png."""

    point_counts: list[int] = field(default_factory=lambda: [100_000, 1_000_000])  # N points inserted
    scene_size: float = 10.0  # metres: points lie on the faces of a cube of this edge centred at the origin
    leaf_size: float = 0.05  # metres
    radius: float = 0.2  # metres, radius queries
    queries: int = 256  # radius queries per N (ours batched; open3d KDTreeFlann one by one)
    single_reps: int = 50  # timed single-query calls of ours
    octree_queries: int = 20  # open3d Octree radius queries (Python traversal: slow)
    frame_points: int = 10_000  # points of the incremental insert into the full store
    repeats: int = 3  # insert/build timings: best of this many
    episode_lengths: list[int] = field(default_factory=lambda: [100, 250, 500, 1000])  # bytes checkpoints (T)
    traj_leaf_size: float = 0.1  # metres, leaves of the memory on the trajectories
    traj_capacity: int = 131072  # leaves per env on the trajectories (large enough that nothing is evicted)
    bytes_hw: int = 32  # depth resolution on the trajectories
    quick: bool = False  # smoke mode: 20k points, 64 queries, episodes up to 60 steps
    point_frame: bool = True  # add embodimem.bench.spatial_point_frame rows if that module exists
    device: str = "cpu"
    threads: int = 1  # torch intra-op threads (1 = stable timings on a shared machine)
    seed: int = 0
    out: Path = Path("runs/bench-spatial")
    plot: bool = True


def surface_points(n: int, size: float, g: torch.Generator, noise: float = 0.01) -> torch.Tensor:
    """n points float64 [n,3] uniformly on the 6 faces of the cube [-size/2, size/2]^3, plus Gaussian noise."""
    face = torch.randint(0, 6, (n,), generator=g)
    p = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * size
    axis = face % 3
    p[torch.arange(n), axis] = torch.where(face < 3, -size / 2, size / 2).double()
    return p + noise * torch.randn(n, 3, generator=g, dtype=torch.float64)


def _best(fn, reps: int, dev: torch.device) -> tuple[float, Any]:
    """Best wall time (s) of ``reps`` calls, and the last result."""
    best, out = math.inf, None
    for _ in range(max(1, reps)):
        sync(dev)
        t0 = time.perf_counter()
        out = fn()
        sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best, out


def _o3d_radius_octree(octree, q: np.ndarray, r: float) -> int:
    """Points within r of q found by a pruned DFS over an open3d Octree (exact; Python callbacks)."""
    import open3d as o3d

    hits = [0]
    r2 = r * r

    def visit(node, info) -> bool:
        lo = np.asarray(info.origin)
        d = np.clip(q, lo, lo + info.size) - q  # nearest point of the node's box
        if float(d @ d) > r2:
            return True  # prune: the box is out of reach
        if isinstance(node, o3d.geometry.OctreeLeafNode):
            pts = visit.points[node.indices]
            hits[0] += int((((pts - q) ** 2).sum(1) <= r2).sum())
        return False

    visit.points = np.asarray(octree_points[id(octree)])
    octree.traverse(visit)
    return hits[0]


octree_points: dict[int, np.ndarray] = {}  # open3d Octree leaves keep indices only: the points they index


def store_rows(cfg: Config, dev: torch.device) -> list[dict[str, Any]]:
    """Insert and radius-query rows, one per N."""
    import open3d as o3d

    g = torch.Generator().manual_seed(cfg.seed)
    grid = MortonGrid.centered((0.0, 0.0, 0.0), cfg.leaf_size)
    rows = []
    for n in ([20_000] if cfg.quick else cfg.point_counts):
        pts = surface_points(n, cfg.scene_size, g)
        store = VoxelStore(grid, n + cfg.frame_points, 0)
        x = pts[None].to(dev)
        mask = torch.ones(1, n, dtype=torch.bool, device=dev)
        step0 = torch.zeros(1, dtype=torch.long, device=dev)
        t_ins, st = _best(lambda: store.insert(store.init_state(1, dev), x, None, mask, step0), cfg.repeats, dev)
        leaves = int(st["valid"].sum())
        frame = surface_points(cfg.frame_points, cfg.scene_size, g)[None].to(dev)
        fmask = torch.ones(1, cfg.frame_points, dtype=torch.bool, device=dev)
        t_frame, _ = _best(lambda: store.insert(st, frame, None, fmask, step0 + 1), cfg.repeats, dev)
        # open3d on the same points
        t0 = time.perf_counter()
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.numpy()))
        t_conv = time.perf_counter() - t0
        depth = max(1, math.ceil(math.log2(cfg.scene_size * 1.1 / cfg.leaf_size)))
        cpu = torch.device("cpu")

        def build_octree():
            oc = o3d.geometry.Octree(max_depth=depth)
            oc.convert_from_point_cloud(pcd, size_expand=0.01)
            return oc

        t_oct, _ = _best(build_octree, min(cfg.repeats, 2), cpu)
        t_kd, _ = _best(lambda: o3d.geometry.KDTreeFlann(pcd), cfg.repeats, cpu)
        # radius queries over the occupied leaves (the same question for every method)
        Q = 64 if cfg.quick else cfg.queries
        qpts = pts[torch.randint(0, n, (Q,), generator=g)] + 0.05 * torch.randn(Q, 3, generator=g, dtype=torch.float64)
        qd = qpts[None].to(dev)
        t_batch, (_, _, count) = _best(lambda: store.radius(st, qd, cfg.radius), cfg.repeats, dev)
        single = []
        for i in range(min(cfg.single_reps, Q)):
            t, _ = _best(lambda: store.radius(st, qd[:, i:i + 1], cfg.radius), 1, dev)
            single.append(t)
        centres = store.centers(st)[0][st["valid"][0]].cpu().numpy()
        cpcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(centres))
        kd = o3d.geometry.KDTreeFlann(cpcd)
        kd_lat, kd_counts = [], []
        for q in qpts.numpy():
            t0 = time.perf_counter()
            k, _, _ = kd.search_radius_vector_3d(q, cfg.radius)
            kd_lat.append(time.perf_counter() - t0)
            kd_counts.append(k)
        oc = o3d.geometry.Octree(max_depth=depth)
        oc.convert_from_point_cloud(cpcd, size_expand=0.01)
        octree_points[id(oc)] = centres
        oc_lat, oc_counts = [], []
        for q in qpts.numpy()[: cfg.octree_queries]:
            t0 = time.perf_counter()
            oc_counts.append(_o3d_radius_octree(oc, q, cfg.radius))
            oc_lat.append(time.perf_counter() - t0)
        octree_points.pop(id(oc))
        ours = count[0].cpu().tolist()
        rows.append({
            "N": n, "leaves": leaves, "octree_depth": depth,
            "insert_s": t_ins, "insert_points_per_s": n / t_ins,
            "frame_insert_ms": 1e3 * t_frame, "frame_points": cfg.frame_points,
            "o3d_octree_build_s": t_oct, "o3d_octree_points_per_s": n / t_oct,
            "o3d_kdtree_build_s": t_kd, "o3d_kdtree_points_per_s": n / t_kd, "o3d_numpy_to_cloud_s": t_conv,
            "insert_speedup_vs_o3d_octree": t_oct / t_ins, "insert_speedup_vs_o3d_kdtree": t_kd / t_ins,
            "queries": Q, "radius": cfg.radius, "mean_hits": float(np.mean(ours)),
            "radius_batched_us_per_query": 1e6 * t_batch / Q,
            "radius_single_us_p50": 1e6 * percentile(single, 50),
            "radius_single_us_p95": 1e6 * percentile(single, 95),
            "o3d_kdtree_radius_us_p50": 1e6 * percentile(kd_lat, 50),
            "o3d_octree_radius_us_p50": 1e6 * percentile(oc_lat, 50) if oc_lat else None,
            "batched_speedup_vs_o3d_kdtree": percentile(kd_lat, 50) / (t_batch / Q),
            "single_speedup_vs_o3d_kdtree": percentile(kd_lat, 50) / percentile(single, 50),
            "counts_agree_kdtree": ours == kd_counts,
            "counts_agree_octree": ours[: len(oc_counts)] == oc_counts,
        })
    return rows


def trajectory(kind: str, T: int, hw: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Tokens [1,T,4,16] and depth/pose/intrinsics [1,T,...] for a loop, explore or out-and-back walk."""
    from embodimem.geometry import intrinsics_from_fov
    from embodimem.spatial.analytic_room import Room, explore_poses, loop_poses, render_depth

    if kind == "loop":
        room, poses = Room(), loop_poses(T, step_rad=2 * math.pi / 24)
    else:
        room = Room(lo=(-1.03, -1.52, -0.04), hi=(0.1 * T + 10.07, 1.49, 2.47))
        if kind == "explore":
            poses = explore_poses(T, speed=0.1)
        else:  # out and back: the second half retraces the first
            out = explore_poses((T + 1) // 2, speed=0.1)
            poses = torch.cat([out, out.flip(0)[: T - len(out)]])
    K = intrinsics_from_fov(hw, hw, 90.0).expand(T, 3, 3).contiguous()
    depth = render_depth(room, poses, K, (hw, hw))
    proj = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    x = torch.sin(poses[:, :3, 3] @ proj)[:, None].expand(T, 4, 16)
    return x[None], {"depth": depth[None], "pose": poses[None], "intrinsics": K[None]}


@torch.no_grad()
def bytes_rows(cfg: Config, dev: torch.device) -> list[dict[str, Any]]:
    """Bytes the octree memory holds at each checkpoint T of each trajectory (one episode per trajectory)."""
    from embodimem.memory import make_memory

    lengths = [20, 40, 60] if cfg.quick else sorted(cfg.episode_lengths)
    mem = make_memory("octree", dim=16, tokens_per_step=4, leaf_size=cfg.traj_leaf_size,
                      capacity=cfg.traj_capacity, max_nodes=64, stm_size=32).to(dev).eval()
    rows = []
    for kind in ("loop", "explore", "out_and_back"):
        x, kw = trajectory(kind, lengths[-1], cfg.bytes_hw)
        x, kw = x.to(dev), {k: v.to(dev) for k, v in kw.items()}
        state = mem.init_state(1, dev)
        seen: set[int] = set()
        spent = 0.0  # seconds inside write only (not the observed-cell bookkeeping below)
        for t in range(lengths[-1]):
            kt = {k: v[:, t] for k, v in kw.items()}
            sync(dev)
            t0 = time.perf_counter()
            state = mem.write(state, x[:, t], **kt)
            sync(dev)
            spent += time.perf_counter() - t0
            pts = mem.backproject(kt["depth"], kt["intrinsics"], kt["pose"])
            code, inside, _ = mem.store.locate(pts)
            seen.update(code[inside & (kt["depth"].reshape(1, -1) > 0)].unique().tolist())
            if t + 1 in lengths:
                s = mem.stats(state)
                rows.append({"trajectory": kind, "T": t + 1, "used_bytes_per_env": s["bytes_used_per_env"],
                             "state_bytes_per_env": s["state_bytes_per_env"], "leaves": s["leaves_mean"],
                             "observed_voxels": len(seen), "nodes": s["nodes_mean"],
                             "leaves_evicted": s["leaves_evicted"],
                             "write_ms_per_step": 1e3 * spent / (t + 1)})
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth exponents of used bytes: in T over the second half of the checkpoints, and in observed voxels."""
    out = {}
    for kind in ("loop", "explore", "out_and_back"):
        r = sorted((x for x in rows if x["trajectory"] == kind), key=lambda x: x["T"])
        tail = r[len(r) // 2:]
        out[kind] = {"bytes_exponent_in_T_tail": slope([x["T"] for x in tail],
                                                        [x["used_bytes_per_env"] for x in tail]),
                     "bytes_exponent_in_observed_voxels": slope([x["observed_voxels"] for x in r],
                                                                 [x["used_bytes_per_env"] for x in r])}
    return out


def run(cfg: Config, command: str = "") -> dict[str, Any]:
    """Run all parts, write ``out``/spatial.json (+ spatial.png) atomically, return the results."""
    from embodimem.spatial.open3d_io import require_open3d

    require_open3d()  # the comparison needs it: fail before any work, with the install hint
    torch.set_num_threads(cfg.threads)
    dev = torch.device(cfg.device)
    res: dict[str, Any] = {**header("spatial", cfg, command, dev), "store": store_rows(cfg, dev)}
    res["bytes"] = bytes_rows(cfg, dev)
    res["bytes_summary"] = summarize(res["bytes"])
    if cfg.point_frame and importlib.util.find_spec("embodimem.bench.spatial_point_frame") is not None:
        from embodimem.bench import spatial_point_frame

        rows = spatial_point_frame.run_rows(cfg)
        summ = getattr(spatial_point_frame, "summarize", None)
        res["point_frame"] = {"rows": rows, "summary": summ(rows) if summ else None}
    else:
        res["point_frame"] = {"skipped": "disabled" if not cfg.point_frame else
                              "embodimem.bench.spatial_point_frame is not present"}
    return save_results(res, cfg, "spatial", plot)


def _f(x: Any, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def format_table(res: dict[str, Any]) -> str:
    """Plain-text tables: insert and radius query vs open3d, bytes vs T, point-frame rows."""
    lines = [f"{'N':>9}{'leaves':>9}{'ours pts/s':>12}{'o3d oct':>10}{'o3d kd':>10}{'x oct':>7}{'x kd':>7}"
             f"{'frame ms':>10}{'batch us/q':>11}{'single us':>10}{'kd us':>8}{'oct us':>9}{'agree':>7}"]
    for r in res["store"]:
        lines.append(f"{r['N']:>9}{r['leaves']:>9}{r['insert_points_per_s']:>12.3g}"
                     f"{r['o3d_octree_points_per_s']:>10.3g}"
                     f"{r['o3d_kdtree_points_per_s']:>10.3g}{r['insert_speedup_vs_o3d_octree']:>7.2f}"
                     f"{r['insert_speedup_vs_o3d_kdtree']:>7.2f}{r['frame_insert_ms']:>10.1f}"
                     f"{r['radius_batched_us_per_query']:>11.1f}{r['radius_single_us_p50']:>10.0f}"
                     f"{r['o3d_kdtree_radius_us_p50']:>8.1f}{_f(r['o3d_octree_radius_us_p50'], '.0f'):>9}"
                     f"{str(r['counts_agree_kdtree'] and r['counts_agree_octree']):>7}")
    lines.append(f"{'trajectory':<14}{'T':>6}{'used bytes':>12}{'leaves':>9}{'observed':>10}{'nodes':>7}"
                 f"{'evicted':>8}{'ms/step':>9}")
    for r in res["bytes"]:
        lines.append(f"{r['trajectory']:<14}{r['T']:>6}{r['used_bytes_per_env']:>12.0f}{r['leaves']:>9.0f}"
                     f"{r['observed_voxels']:>10}{r['nodes']:>7.0f}{r['leaves_evicted']:>8.0f}"
                     f"{r['write_ms_per_step']:>9.2f}")
    for kind, s in res["bytes_summary"].items():
        lines.append(f"  {kind}: bytes exponent in T (tail) {_f(s['bytes_exponent_in_T_tail'], '+.2f')}, "
                     f"in observed voxels {_f(s['bytes_exponent_in_observed_voxels'], '+.2f')}")
    pf = res.get("point_frame", {})
    if "rows" in pf:
        lines.append("point_frame:")
        for r in pf["rows"]:
            lines.append("  " + "  ".join(f"{k}={_f(v) if isinstance(v, float) else v}" for k, v in r.items()))
    else:
        lines.append(f"point_frame: skipped ({pf.get('skipped')})")
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    """Four panels: insert throughput, radius latency (vs N), used bytes vs T, used bytes vs observed voxels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    s = res["store"]
    N = [r["N"] for r in s]
    for key, label in (("insert_points_per_s", "ours (VoxelStore.insert)"),
                       ("o3d_octree_points_per_s", "open3d Octree"), ("o3d_kdtree_points_per_s", "open3d KDTreeFlann")):
        ax[0, 0].plot(N, [r[key] for r in s], marker="o", label=label)
    for key, label in (("radius_batched_us_per_query", "ours, batched (per query)"),
                       ("radius_single_us_p50", "ours, one query"), ("o3d_kdtree_radius_us_p50", "open3d KDTreeFlann"),
                       ("o3d_octree_radius_us_p50", "open3d Octree (traverse)")):
        ax[0, 1].plot(N, [r[key] for r in s], marker="o", label=label)
    for kind in ("loop", "explore", "out_and_back"):
        rb = [r for r in res["bytes"] if r["trajectory"] == kind]
        ax[1, 0].plot([r["T"] for r in rb], [r["used_bytes_per_env"] for r in rb], marker="o", label=kind)
        ax[1, 1].plot([r["observed_voxels"] for r in rb], [r["used_bytes_per_env"] for r in rb], marker="o", label=kind)
    finish_axes(ax.flat, [("insert throughput (points/s)", "N points"), ("radius query latency (us)", "N points"),
                          ("used bytes per env", "episode length T"), ("used bytes per env", "observed leaf cells")])
    fig.suptitle(f"embodimem bench spatial  ({res['machine']['device']}, torch {res['machine']['torch']})")
    save_figure(fig, path)
