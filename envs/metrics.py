"""Navigation metrics as pure functions, the map's shortest path they rely on, and a binomial confidence interval.

Definitions (Anderson et al. 2018 "On Evaluation of Embodied Navigation Agents"; Ilharco et al. 2019 for nDTW;
habitat-lab's Success / SPL / SoftSPL / DistanceToGoal measures):

- success       S = stopped and d_T < threshold (d_T: distance to the goal when the episode ends).
- SPL           S * d0 / max(d0, p), d0 = shortest-path (geodesic) distance from start to goal, p = length of the
                path the agent actually walked. By convention SPL = S when d0 = p = 0.
- soft-SPL      max(0, 1 - d_T / d0) * d0 / max(d0, p): progress instead of success, no STOP needed (1 if d0 = 0).
- nDTW          exp(-DTW(Q, R) / (|R| * d_th)), DTW with Euclidean point distances, |R| = number of points of the
                reference path R, d_th = the success threshold (VLN-CE's convention).
- SDTW          S * nDTW.
- Wilson        ``wilson_interval(successes, n, z=1.96)`` -> (low, high), the score interval of a success rate
                (``embodimem.stats.wilson_interval``, re-exported here; (0, 1) when n = 0).

Geodesic distances come from ``shortest_path`` on an ``OccupancyGrid`` (True = the agent's centre may be there,
i.e. walls already inflated by the agent radius). It is an any-angle shortest path: a visibility graph over the
convex corners of the blocked cells, so straight-line distances are exact (no 8-connected grid bias); its error
is about one cell. Positions are 2-D floor coordinates (for MiniWorld: (x, z) in metres).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from embodimem.stats import wilson_interval  # re-exported: one implementation for every suite

__all__ = [
    "OccupancyGrid", "distance_to_goal", "dtw", "ndtw", "path_length", "sdtw", "shortest_path", "soft_spl", "spl",
    "success", "wilson_interval",
]

_EPS = 1e-9


def _points(x, name: str, dims: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < dims or a.shape[0] == 0 or not np.isfinite(a).all():
        raise ValueError(f"{name}: expected a non-empty finite [N, D>={dims}] array of positions, got shape {a.shape}")
    return a


def _nonneg(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError(f"{name}: expected finite values >= 0 (metres), got {x!r}")
    return a


def _out(a: np.ndarray):
    return float(a) if a.ndim == 0 else a


# --------------------------------------------------------------------------- per-episode metrics


def success(distance, threshold: float, stopped=True):
    """Success (bool or bool [N]): stopped and distance (metres, scalar or [N]) < threshold (metres)."""
    d = _nonneg(distance, "distance")
    if not threshold > 0:
        raise ValueError(f"threshold: expected > 0 metres, got {threshold!r}")
    s = (d < threshold) & np.asarray(stopped, dtype=bool)
    return bool(s) if s.ndim == 0 else s


def spl(success_, shortest: float, path: float):
    """SPL (float or [N]): success * shortest / max(shortest, path); shortest and path lengths in metres."""
    s = np.asarray(success_, dtype=np.float64)
    d0, p = _nonneg(shortest, "shortest"), _nonneg(path, "path")
    den = np.maximum(d0, p)
    return _out(s * np.where(den > 0, d0 / np.where(den > 0, den, 1.0), 1.0))


def soft_spl(final_distance, shortest: float, path: float):
    """Soft-SPL (float or [N]): max(0, 1 - final_distance / shortest) * shortest / max(shortest, path), metres."""
    dT, d0, p = _nonneg(final_distance, "final_distance"), _nonneg(shortest, "shortest"), _nonneg(path, "path")
    progress = np.where(d0 > 0, np.maximum(0.0, 1.0 - dT / np.where(d0 > 0, d0, 1.0)), 1.0)
    den = np.maximum(d0, p)
    return _out(progress * np.where(den > 0, d0 / np.where(den > 0, den, 1.0), 1.0))


def path_length(positions) -> float:
    """Length (metres) of a polyline of positions [T, D]: the sum of its step lengths."""
    p = _points(positions, "positions", dims=1)
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())


def distance_to_goal(position, goal, grid: OccupancyGrid | None = None) -> float:
    """Distance (metres) from position [2] to goal [2]: geodesic on ``grid`` if given, else straight-line."""
    p, g = _points([position], "position")[0, :2], _points([goal], "goal")[0, :2]
    if grid is None:
        return float(np.linalg.norm(p - g))
    return shortest_path(grid, p, g)[0]


def dtw(query, reference) -> float:
    """Dynamic time warping distance between paths query [N, D] and reference [M, D] (Euclidean point cost)."""
    q, r = _points(query, "query", 1), _points(reference, "reference", 1)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query/reference: different point dimensions {q.shape[1]} and {r.shape[1]}")
    cost = np.linalg.norm(q[:, None, :] - r[None, :, :], axis=-1)
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for k in range(2, n + m + 1):  # anti-diagonals i + j = k only depend on the two before them
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        acc[i, j] = cost[i - 1, j - 1] + np.minimum(np.minimum(acc[i - 1, j], acc[i, j - 1]), acc[i - 1, j - 1])
    return float(acc[n, m])


def ndtw(query, reference, threshold: float) -> float:
    """nDTW in [0, 1]: exp(-DTW(query [N,D], reference [M,D]) / (M * threshold)); threshold in metres (VLN: 3.0)."""
    if not threshold > 0:
        raise ValueError(f"threshold: expected > 0 metres, got {threshold!r}")
    r = _points(reference, "reference", 1)
    return float(math.exp(-dtw(query, r) / (len(r) * threshold)))


def sdtw(query, reference, threshold: float, success_) -> float:
    """SDTW = success * nDTW(query [N,D], reference [M,D], threshold metres)."""
    return float(bool(success_)) * ndtw(query, reference, threshold)


# --------------------------------------------------------------------------- the map and its shortest paths


@dataclass(frozen=True, eq=False)
class OccupancyGrid:
    """A 2-D free-space map: free bool [R, C] (True = the agent's centre may be there), cell size in metres.

    Cell (r, c) covers a in [a0 + c*res, a0 + (c+1)*res) and b in [b0 + r*res, b0 + (r+1)*res), where
    origin = (a0, b0) and points are (a, b) floor coordinates (MiniWorld: a = x, b = z). Outside is blocked.
    """

    free: np.ndarray
    origin: tuple[float, float]
    resolution: float

    def __post_init__(self) -> None:
        f = np.asarray(self.free)
        if f.ndim != 2 or f.dtype != bool or 0 in f.shape:
            raise ValueError(f"OccupancyGrid.free: expected a non-empty bool [R, C] array, got {f.dtype} {f.shape}")
        if not (self.resolution > 0 and math.isfinite(self.resolution)):
            raise ValueError(f"OccupancyGrid.resolution: expected > 0 metres, got {self.resolution!r}")
        if len(self.origin) != 2 or not all(math.isfinite(v) for v in self.origin):
            raise ValueError(f"OccupancyGrid.origin: expected two finite numbers, got {self.origin!r}")
        object.__setattr__(self, "free", f)
        object.__setattr__(self, "origin", (float(self.origin[0]), float(self.origin[1])))

    def cells(self, points) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) int arrays [...] of the cells containing points [..., 2] (may be outside the grid)."""
        p = np.asarray(points, dtype=np.float64)
        col = np.floor((p[..., 0] - self.origin[0]) / self.resolution).astype(np.int64)
        row = np.floor((p[..., 1] - self.origin[1]) / self.resolution).astype(np.int64)
        return row, col

    def is_free(self, points) -> np.ndarray:
        """Bool [...]: points [..., 2] fall in a free cell of the grid."""
        row, col = self.cells(points)
        R, C = self.free.shape
        inside = (row >= 0) & (row < R) & (col >= 0) & (col < C)
        out = np.zeros(row.shape, dtype=bool)
        out[inside] = self.free[row[inside], col[inside]]
        return out

    def nearest_free(self, point) -> np.ndarray:
        """The point [2] itself if free, else the centre of the nearest free cell (ValueError if none is free)."""
        p = np.asarray(point, dtype=np.float64)[:2]
        if self.is_free(p):
            return p
        rows, cols = np.nonzero(self.free)
        if rows.size == 0:
            raise ValueError("OccupancyGrid: no free cell")
        centres = np.stack([self.origin[0] + (cols + 0.5) * self.resolution,
                            self.origin[1] + (rows + 0.5) * self.resolution], axis=1)
        return centres[np.argmin(((centres - p) ** 2).sum(1))]

    def line_of_sight(self, a, b) -> np.ndarray:
        """Bool [...]: the segments a [..., 2] -> b [..., 2] stay in free cells (sampled every resolution/4)."""
        a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
        flat_a, flat_b = a.reshape(-1, 2), b.reshape(-1, 2)
        out = np.ones(len(flat_a), dtype=bool)
        n = np.ceil(np.linalg.norm(flat_b - flat_a, axis=1) / (0.25 * self.resolution)).astype(np.int64) + 1
        for k in np.unique(n):  # segments of similar length share one [S, k] sample array
            idx = np.nonzero(n == k)[0]
            for chunk in np.array_split(idx, max(1, len(idx) * int(k) // 200_000 + 1)):
                t = np.linspace(0.0, 1.0, int(k))[None, :, None]
                pts = flat_a[chunk, None] + t * (flat_b[chunk, None] - flat_a[chunk, None])
                out[chunk] = self.is_free(pts).all(1)
        return out.reshape(a.shape[:-1])

    @cached_property
    def _corners(self) -> np.ndarray:
        """Convex corners of the blocked region [N, 2] (where shortest paths bend), nudged into free space."""
        f = np.pad(self.free, 1, constant_values=False)
        tl, tr, bl, br = f[:-1, :-1], f[:-1, 1:], f[1:, :-1], f[1:, 1:]  # the 4 cells around each grid vertex
        blocked = (~tl).astype(int) + (~tr) + (~bl) + (~br)
        rows, cols = np.nonzero(blocked == 1)
        # unit diagonal pointing away from the single blocked cell, into the free cell opposite it
        da = np.where(~tl[rows, cols] | ~bl[rows, cols], 1.0, -1.0)
        db = np.where(~tl[rows, cols] | ~tr[rows, cols], 1.0, -1.0)
        eps = 1e-3 * self.resolution
        pts = np.stack([self.origin[0] + cols * self.resolution + eps * da,
                        self.origin[1] + rows * self.resolution + eps * db], axis=1)
        return pts[self.is_free(pts)]

    @cached_property
    def _corner_graph(self) -> np.ndarray:
        """Pairwise straight-line distances [N, N] between mutually visible corners (inf where not visible)."""
        c = self._corners
        n = len(c)
        dist = np.full((n, n), np.inf)
        if n:
            i, j = np.triu_indices(n, k=1)
            vis = self.line_of_sight(c[i], c[j])
            d = np.linalg.norm(c[i] - c[j], axis=1)
            dist[i[vis], j[vis]] = d[vis]
            dist[j[vis], i[vis]] = d[vis]
        return dist


def shortest_path(grid: OccupancyGrid, start, goal) -> tuple[float, np.ndarray]:
    """Geodesic (length metres, waypoints [K, 2] from start to goal) on ``grid``; (inf, [start]) if unreachable.

    start / goal [2] off the free space are first moved to the nearest free cell centre (the returned path
    starts/ends at the given points; the length counts from the moved points).
    """
    if not isinstance(grid, OccupancyGrid):
        raise ValueError(f"shortest_path: grid must be an OccupancyGrid, got {type(grid).__name__}")
    s0, g0 = _points([start], "start")[0, :2], _points([goal], "goal")[0, :2]
    s, g = grid.nearest_free(s0), grid.nearest_free(g0)
    if bool(grid.line_of_sight(s, g)):
        return float(np.linalg.norm(g - s)), np.stack([s0, g0])
    c = grid._corners
    n = len(c)
    # nodes: corners 0..n-1, start n, goal n+1
    dist = np.full((n + 2, n + 2), np.inf)
    dist[:n, :n] = grid._corner_graph
    for k, p in ((n, s), (n + 1, g)):
        if n:
            vis = grid.line_of_sight(np.broadcast_to(p, c.shape), c)
            d = np.where(vis, np.linalg.norm(c - p, axis=1), np.inf)
            dist[k, :n] = d
            dist[:n, k] = d
    best = np.full(n + 2, np.inf)
    prev = np.full(n + 2, -1)
    done = np.zeros(n + 2, dtype=bool)
    best[n] = 0.0
    for _ in range(n + 2):  # dense Dijkstra: O(N^2) with vectorized relaxations
        u = int(np.argmin(np.where(done, np.inf, best)))
        if done[u] or not np.isfinite(best[u]):
            break
        done[u] = True
        if u == n + 1:
            break
        cand = best[u] + dist[u]
        better = (cand < best) & ~done
        best[better] = cand[better]
        prev[better] = u
    if not np.isfinite(best[n + 1]):
        return math.inf, s0[None].copy()
    chain = [n + 1]
    while chain[-1] != n:
        chain.append(int(prev[chain[-1]]))
    nodes = np.concatenate([c, s[None], g[None]])[chain[::-1]]
    nodes[0], nodes[-1] = s0, g0
    return float(best[n + 1]), nodes
