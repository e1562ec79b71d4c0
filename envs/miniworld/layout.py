"""MiniWorld layouts as JSON data (``maps/miniworld/*.json``): schema validation, geometry, and building the world.

Coordinates are MiniWorld's floor plane in metres: x (dir 0 walks +x) and z (dir +90 degrees walks -z); y is
up. A layout is a set of axis-aligned rectangular rooms that touch along shared edges, openings (doorways) in
those shared edges, named places, and free-form task parameters:

    {"format": "embodimem.miniworld.layout", "version": 1, "name": "tmaze", "description": "...",
     "wall_height": 2.74, "textures": {"wall": "brick_wall", "floor": "asphalt", "ceiling": "concrete_tiles"},
     "rooms": [{"name": "start", "x": [0, 3], "z": [0, 3], "wall": "...optional texture..."}, ...],
     "openings": [{"rooms": ["start", "hall"], "x": [0, 1.5]}, ...],   # "x": span on an edge of constant z;
                                                                       # "z": span on an edge of constant x
     "places": {"start": {"pos": [1.5, 2.0], "dir_deg": 90}, "cue": {"pos": [1.5, 0.5]}},
     "params": {...}, "stretch": {"axis": "x", "at": 3.0}}              # stretch: optional, see ``stretched``

Any malformed file raises ``LayoutError`` (a ValueError) naming the file and the offending field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from embodimem.envs.metrics import OccupancyGrid

__all__ = ["Layout", "LayoutError", "Opening", "Place", "Room", "available_layouts", "load_layout", "parse_layout"]

FORMAT = "embodimem.miniworld.layout"
VERSION = 1
DEFAULT_TEXTURES = {"wall": "concrete", "floor": "floor_tiles_bw", "ceiling": "concrete_tiles"}
_TOL = 1e-6


class LayoutError(ValueError):
    """A malformed layout; the message names the file and the field."""


@dataclass(frozen=True)
class Room:
    """An axis-aligned room: x = (min, max), z = (min, max) in metres, and its textures."""

    name: str
    x: tuple[float, float]
    z: tuple[float, float]
    wall: str
    floor: str
    ceiling: str


@dataclass(frozen=True)
class Opening:
    """A doorway between two touching rooms: ``span`` (min, max) along ``axis`` on their shared edge."""

    rooms: tuple[str, str]
    axis: str  # "x": the shared edge has constant z; "z": constant x
    span: tuple[float, float]


@dataclass(frozen=True)
class Place:
    """A named floor point (x, z) in metres, with an optional heading in degrees (0 = +x, 90 = -z)."""

    pos: tuple[float, float]
    dir_deg: float | None = None


@dataclass(frozen=True)
class Layout:
    """A validated layout (see the module docstring); ``source`` names where it came from, for errors."""

    name: str
    source: str
    rooms: tuple[Room, ...]
    openings: tuple[Opening, ...]
    places: dict[str, Place]
    params: dict[str, Any] = field(default_factory=dict)
    wall_height: float = 2.74
    stretch: tuple[str, float] | None = None
    description: str = ""

    # ------------------------------------------------------------------ lookup

    def room(self, name: str) -> Room:
        """The room called ``name`` (LayoutError listing the rooms otherwise)."""
        for r in self.rooms:
            if r.name == name:
                return r
        raise LayoutError(f"{self.source}: rooms: no room {name!r}; rooms are {[r.name for r in self.rooms]}")

    def place(self, name: str) -> Place:
        """The place called ``name`` (LayoutError listing the places otherwise)."""
        if name not in self.places:
            raise LayoutError(f"{self.source}: places: missing place {name!r} (layout {self.name!r} has "
                              f"{sorted(self.places)})")
        return self.places[name]

    def param(self, name: str, kind: type = float) -> Any:
        """Task parameter ``params[name]`` checked to be of ``kind`` (LayoutError naming it otherwise)."""
        if name not in self.params:
            raise LayoutError(f"{self.source}: params.{name}: missing (layout {self.name!r})")
        v = self.params[name]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) if kind is float \
            else isinstance(v, kind)
        if not ok:
            raise LayoutError(f"{self.source}: params.{name}: expected {kind.__name__}, got {v!r}")
        return float(v) if kind is float else v

    def require_places(self, names: list[str], task: str) -> None:
        """LayoutError naming the file if any of ``names`` is not a place of this layout."""
        missing = [n for n in names if n not in self.places]
        if missing:
            raise LayoutError(f"{self.source}: places: task {task} needs places {missing}, missing from "
                              f"layout {self.name!r}")

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min_x, max_x, min_z, max_z) over all rooms, metres."""
        return (min(r.x[0] for r in self.rooms), max(r.x[1] for r in self.rooms),
                min(r.z[0] for r in self.rooms), max(r.z[1] for r in self.rooms))

    def contains(self, p) -> bool:
        """Whether floor point p = (x, z) lies inside some room."""
        return any(r.x[0] <= p[0] <= r.x[1] and r.z[0] <= p[1] <= r.z[1] for r in self.rooms)

    # ------------------------------------------------------------------ geometry

    def stretched(self, amount: float) -> Layout:
        """Copy with everything beyond ``stretch.at`` on ``stretch.axis`` moved out by ``amount`` metres."""
        if self.stretch is None:
            raise LayoutError(f"{self.source}: stretch: layout {self.name!r} declares no stretch axis")
        if not (math.isfinite(amount) and amount >= 0):
            raise ValueError(f"stretched: amount must be a finite number >= 0 metres, got {amount!r}")
        axis, at = self.stretch

        def mv(v: float) -> float:
            return v + amount if v > at + _TOL else v

        rooms = tuple(replace(r, x=(mv(r.x[0]), mv(r.x[1]))) if axis == "x" else
                      replace(r, z=(mv(r.z[0]), mv(r.z[1]))) for r in self.rooms)
        openings = tuple(replace(o, span=(mv(o.span[0]), mv(o.span[1]))) if o.axis == axis else o
                         for o in self.openings)
        ai = 0 if axis == "x" else 1
        places = {k: replace(p, pos=tuple(mv(v) if i == ai else v for i, v in enumerate(p.pos)))
                  for k, p in self.places.items()}
        return replace(self, rooms=rooms, openings=openings, places=places)

    def _edge_of(self, room: Room, o: Opening) -> tuple[int, float]:
        """(MiniWorld edge index 0 east, 1 north, 2 west, 3 south; edge coordinate) of ``o`` on ``room``."""
        other = self.room(o.rooms[1] if o.rooms[0] == room.name else o.rooms[0])
        if o.axis == "x":  # shared edge of constant z
            if abs(room.z[1] - other.z[0]) < _TOL:
                return 3, room.z[1]
            return 1, room.z[0]
        if abs(room.x[1] - other.x[0]) < _TOL:
            return 0, room.x[1]
        return 2, room.x[0]

    def wall_segments(self) -> np.ndarray:
        """Wall segments float64 [N, 2, 2] ((x, z) endpoints, metres): room edges minus the openings."""
        segs = []
        for r in self.rooms:
            cuts: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 2: [], 3: []}
            for o in self.openings:
                if r.name in o.rooms:
                    cuts[self._edge_of(r, o)[0]].append(o.span)
            edges = {0: ("z", r.x[1], r.z), 1: ("x", r.z[0], r.x), 2: ("z", r.x[0], r.z), 3: ("x", r.z[1], r.x)}
            for e, (along, const, (lo, hi)) in edges.items():
                pos = lo
                for a, b in sorted(cuts[e]) + [(hi, hi)]:
                    if a - pos > _TOL:
                        seg = [(pos, const), (a, const)] if along == "x" else [(const, pos), (const, a)]
                        segs.append(seg)
                    pos = max(pos, b)
        return np.asarray(segs, dtype=np.float64).reshape(-1, 2, 2)

    def free_space(self, resolution: float = 0.1, radius: float = 0.4) -> OccupancyGrid:
        """Occupancy grid of where a disc of ``radius`` metres can stand: inside a room, >= radius from walls."""
        if not resolution > 0 or not radius >= 0:
            raise ValueError(f"free_space: resolution must be > 0 and radius >= 0, got {resolution}, {radius}")
        x0, x1, z0, z1 = self.bounds
        C, R = int(math.ceil((x1 - x0) / resolution)), int(math.ceil((z1 - z0) / resolution))
        xs = x0 + (np.arange(C) + 0.5) * resolution
        zs = z0 + (np.arange(R) + 0.5) * resolution
        P = np.stack(np.meshgrid(xs, zs, indexing="xy"), -1).reshape(-1, 2)  # row-major: rows along z
        inside = np.zeros(len(P), dtype=bool)
        for r in self.rooms:
            inside |= (P[:, 0] > r.x[0]) & (P[:, 0] < r.x[1]) & (P[:, 1] > r.z[0]) & (P[:, 1] < r.z[1])
        segs = self.wall_segments()
        a, ab = segs[:, 0], segs[:, 1] - segs[:, 0]
        ok = inside.copy()
        idx = np.nonzero(inside)[0]
        for chunk in np.array_split(idx, max(1, len(idx) // 20_000 + 1)):
            ap = P[chunk, None, :] - a[None]
            t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
            d = np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(1)
            ok[chunk] = d >= radius
        return OccupancyGrid(ok.reshape(R, C), (x0, z0), resolution)

    # ------------------------------------------------------------------ MiniWorld

    def build(self, env) -> dict[str, Any]:
        """Add the rooms and openings to a MiniWorldEnv inside its ``_gen_world``; returns {room name: Room}."""
        from miniworld.utils import get_file_path

        for i, r in enumerate(self.rooms):
            for key in ("wall", "floor", "ceiling"):
                name = getattr(r, key)
                if not Path(get_file_path("textures", f"{name}_1", "png")).exists():
                    raise LayoutError(f"{self.source}: rooms[{i}].{key}: unknown MiniWorld texture {name!r}")
        built = {}
        for r in self.rooms:
            built[r.name] = env.add_rect_room(min_x=r.x[0], max_x=r.x[1], min_z=r.z[0], max_z=r.z[1],
                                              wall_tex=r.wall, floor_tex=r.floor, ceil_tex=r.ceiling,
                                              wall_height=self.wall_height)
        for o in self.openings:
            for name in o.rooms:
                edge, _ = self._edge_of(self.room(name), o)
                lim = {"min_x": o.span[0], "max_x": o.span[1]} if o.axis == "x" else \
                    {"min_z": o.span[0], "max_z": o.span[1]}
                built[name].add_portal(edge, **lim)
        return built


# --------------------------------------------------------------------------- parsing and validation


def _num(v: Any, where: str, src: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise LayoutError(f"{src}: {where}: expected a finite number, got {v!r}")
    return float(v)


def _pair(v: Any, where: str, src: str, increasing: bool = True) -> tuple[float, float]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise LayoutError(f"{src}: {where}: expected [a, b], got {v!r}")
    a, b = _num(v[0], where, src), _num(v[1], where, src)
    if increasing and not a < b:
        raise LayoutError(f"{src}: {where}: expected [min, max] with min < max, got {list(v)}")
    return a, b


def _str(v: Any, where: str, src: str) -> str:
    if not isinstance(v, str) or not v:
        raise LayoutError(f"{src}: {where}: expected a non-empty string, got {v!r}")
    return v


def parse_layout(data: Any, source: str = "<dict>") -> Layout:
    """Validate a layout dict (as loaded from JSON) and build a ``Layout``; LayoutError names source and field."""
    src = source
    if not isinstance(data, dict):
        raise LayoutError(f"{src}: expected a JSON object at the top level, got {type(data).__name__}")
    known = {"format", "version", "name", "description", "wall_height", "textures", "rooms", "openings", "places",
             "params", "stretch"}
    extra = sorted(set(data) - known)
    if extra:
        raise LayoutError(f"{src}: unknown top-level field(s) {extra}; valid: {sorted(known)}")
    if data.get("format") != FORMAT:
        raise LayoutError(f"{src}: format: expected {FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != VERSION:
        raise LayoutError(f"{src}: version: expected {VERSION}, got {data.get('version')!r}")
    name = _str(data.get("name"), "name", src)
    tex = dict(DEFAULT_TEXTURES)
    t = data.get("textures", {})
    if not isinstance(t, dict) or set(t) - set(tex):
        raise LayoutError(f"{src}: textures: expected an object with keys among {sorted(tex)}, got {t!r}")
    tex.update({k: _str(v, f"textures.{k}", src) for k, v in t.items()})
    wall_height = _num(data.get("wall_height", 2.74), "wall_height", src)
    if wall_height <= 0:
        raise LayoutError(f"{src}: wall_height: expected > 0 metres, got {wall_height}")

    rooms_raw = data.get("rooms")
    if not isinstance(rooms_raw, list) or not rooms_raw:
        raise LayoutError(f"{src}: rooms: expected a non-empty list of rooms, got {rooms_raw!r}")
    rooms: list[Room] = []
    for i, r in enumerate(rooms_raw):
        w = f"rooms[{i}]"
        if not isinstance(r, dict):
            raise LayoutError(f"{src}: {w}: expected an object, got {r!r}")
        bad = sorted(set(r) - {"name", "x", "z", "wall", "floor", "ceiling"})
        if bad:
            raise LayoutError(f"{src}: {w}: unknown field(s) {bad}")
        rn = _str(r.get("name"), f"{w}.name", src)
        if any(q.name == rn for q in rooms):
            raise LayoutError(f"{src}: {w}.name: duplicate room name {rn!r}")
        rooms.append(Room(rn, _pair(r.get("x"), f"{w}.x", src), _pair(r.get("z"), f"{w}.z", src),
                          *(_str(r.get(k, tex[k]), f"{w}.{k}", src) for k in ("wall", "floor", "ceiling"))))
    for i, a in enumerate(rooms):
        for j in range(i):
            b = rooms[j]
            if min(a.x[1], b.x[1]) - max(a.x[0], b.x[0]) > _TOL and min(a.z[1], b.z[1]) - max(a.z[0], b.z[0]) > _TOL:
                raise LayoutError(f"{src}: rooms[{i}]: room {a.name!r} overlaps room {b.name!r}")
    by_name = {r.name: r for r in rooms}

    if not isinstance(data.get("openings", []), list):
        raise LayoutError(f"{src}: openings: expected a list of {{'rooms': [a, b], 'x' or 'z': [min, max]}}")
    openings: list[Opening] = []
    for i, o in enumerate(data.get("openings", [])):
        w = f"openings[{i}]"
        if not isinstance(o, dict) or "rooms" not in o or len([k for k in ("x", "z") if k in o]) != 1 \
                or set(o) - {"rooms", "x", "z"}:
            raise LayoutError(f"{src}: {w}: expected {{'rooms': [a, b], 'x' or 'z': [min, max]}}, got {o!r}")
        pair = o["rooms"]
        if not isinstance(pair, list) or len(pair) != 2 or any(p not in by_name for p in pair) or pair[0] == pair[1]:
            raise LayoutError(f"{src}: {w}.rooms: expected two different room names among {sorted(by_name)}, "
                              f"got {pair!r}")
        axis = "x" if "x" in o else "z"
        span = _pair(o[axis], f"{w}.{axis}", src)
        ra, rb = by_name[pair[0]], by_name[pair[1]]
        other = "z" if axis == "x" else "x"
        ea, eb = getattr(ra, other), getattr(rb, other)
        if not (abs(ea[1] - eb[0]) < _TOL or abs(ea[0] - eb[1]) < _TOL):
            raise LayoutError(f"{src}: {w}: rooms {pair[0]!r} and {pair[1]!r} do not share an edge of constant "
                              f"{other} (an opening given by '{axis}' needs one)")
        for rr in (ra, rb):
            lo, hi = getattr(rr, axis)
            if span[0] < lo - _TOL or span[1] > hi + _TOL:
                raise LayoutError(f"{src}: {w}.{axis}: span {list(span)} is outside room {rr.name!r} "
                                  f"({axis} in [{lo}, {hi}])")
        openings.append(Opening((pair[0], pair[1]), axis, span))

    places_raw = data.get("places", {})
    if not isinstance(places_raw, dict):
        raise LayoutError(f"{src}: places: expected an object of name -> {{'pos': [x, z], 'dir_deg': deg}}")
    places: dict[str, Place] = {}
    tmp = Layout(name, src, tuple(rooms), tuple(openings), {})
    for k, p in places_raw.items():
        w = f"places.{k}"
        if not isinstance(p, dict) or "pos" not in p or set(p) - {"pos", "dir_deg"}:
            raise LayoutError(f"{src}: {w}: expected {{'pos': [x, z], 'dir_deg': optional degrees}}, got {p!r}")
        pos = _pair(p["pos"], f"{w}.pos", src, increasing=False)
        if not tmp.contains(pos):
            raise LayoutError(f"{src}: {w}.pos: {list(pos)} is not inside any room")
        d = None if p.get("dir_deg") is None else _num(p["dir_deg"], f"{w}.dir_deg", src)
        places[k] = Place(pos, d)

    params = data.get("params", {})
    if not isinstance(params, dict):
        raise LayoutError(f"{src}: params: expected an object, got {params!r}")
    stretch = data.get("stretch")
    if stretch is not None:
        if not isinstance(stretch, dict) or stretch.get("axis") not in ("x", "z") or set(stretch) != {"axis", "at"}:
            raise LayoutError(f"{src}: stretch: expected {{'axis': 'x' or 'z', 'at': number}}, got {stretch!r}")
        stretch = (stretch["axis"], _num(stretch["at"], "stretch.at", src))
    description = data.get("description", "")
    if not isinstance(description, str):
        raise LayoutError(f"{src}: description: expected a string")
    return Layout(name, src, tuple(rooms), tuple(openings), places, dict(params), wall_height, stretch, description)


def available_layouts() -> list[str]:
    """Names of the layouts shipped in ``embodimem.maps`` (maps/miniworld/*.json)."""
    d = resources.files("embodimem.maps").joinpath("miniworld")
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".json"))


def load_layout(name_or_path: str | Path) -> Layout:
    """A shipped layout by name (e.g. "tmaze") or a JSON file path; LayoutError/ValueError on bad input."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"layout file {str(p)!r} does not exist")
        text, src = p.read_text(), str(p)
    else:
        name = str(name_or_path)
        f = resources.files("embodimem.maps").joinpath("miniworld", f"{name}.json")
        if not f.is_file():
            raise ValueError(f"unknown layout {name!r}; shipped layouts: {', '.join(available_layouts())} "
                             f"(or pass a path to a .json file)")
        text, src = f.read_text(), f"maps/miniworld/{name}.json"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LayoutError(f"{src}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    return parse_layout(data, src)
