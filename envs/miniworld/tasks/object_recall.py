"""``embodimem/ObjectRecall-v0``: see an object early, lose sight of it behind walls, come back to it.

Four crates stand along the hall's north wall. At the start the target crate (drawn per episode) is red and
the others grey. The agent must first touch the blue beacon at the end of an L-shaped corridor: the hall is out
of sight from there, and touching it turns the red crate grey, so all crates look the same from then on. Then
it must return and touch the crate that was red (success) -- touching any other crate ends the episode as a
failure; stop (action 3) succeeds only while touching the target after the beacon. A memoryless policy
stands at the beacon seeing the same frame whatever the target, so it picks the right crate with probability
1/4.

reset(options={"target": 0..3}) fixes the target slot (west to east).
"""

from __future__ import annotations

import numpy as np

from embodimem.envs import metrics as M
from embodimem.envs.miniworld.base import STOP, Leg, NavTaskEnv

__all__ = ["ObjectRecallEnv"]


class ObjectRecallEnv(NavTaskEnv):
    """Object recall behind walls; see the module docstring."""

    TASK = "ObjectRecall"
    DEFAULT_LAYOUT = "object_recall"
    OPTIONS = frozenset({"target"})

    def __init__(self, layout=None, *, max_steps: int = 400, **kwargs):
        super().__init__(layout, max_steps=max_steps, **kwargs)

    def _prepare_layout(self, layout):
        slots = layout.param("slots", list)
        if len(slots) < 2:
            raise ValueError(f"{layout.source}: params.slots: expected >= 2 slot place names, got {slots!r}")
        layout.require_places(["start", "beacon", *slots], self.TASK)
        return layout

    def _setup_task(self) -> None:
        L = self.layout
        slots = [L.place(n).pos for n in L.param("slots", list)]
        size = L.param("crate_size")
        self.target = self._option("target", len(slots))
        self._add_decor()
        self._crate_color = L.param("crate_color", str)
        self.crates = [self._add_object("box", L.param("target_color", str) if i == self.target else
                                        self._crate_color, p, size, where="params.target_color/crate_color")
                       for i, p in enumerate(slots)]
        self.beacon = self._add_object("box", L.param("beacon_color", str), L.place("beacon").pos, size,
                                       where="params.beacon_color")
        self._place_start()
        self.goal_radius = self._reach(self.crates[0].radius)
        self.route = [tuple(self.agent_pos), L.place("beacon").pos, slots[self.target]]
        self.route_radii = [self._reach(self.beacon.radius)]
        self.instruction = (f"look at the {L.param('target_color', str)} crate, touch the "
                            f"{L.param('beacon_color', str)} box, then come back to the crate that was "
                            f"{L.param('target_color', str)}")

    def _hide_target(self) -> None:
        from miniworld.entity import COLORS

        c = self.crates[self.target]
        c.color = self._crate_color
        c.color_vec = np.clip(COLORS[self._crate_color] + self.params.sample(None, "obj_color_bias"), 0, 1)

    def _task_step(self, action: int) -> tuple[bool, bool]:
        if self.phase == 0:
            if self.touching(self.beacon):
                self.phase = 1
                self._hide_target()
            return (True, False) if action == STOP else (False, False)
        touched = [i for i, c in enumerate(self.crates) if self.touching(c)]
        if touched:
            i = min(touched, key=lambda k: np.linalg.norm(self.agent_pos - np.array(self.crates[k].pos[::2])))
            return True, i == self.target
        return (True, False) if action == STOP else (False, False)

    def _shaping_targets(self) -> tuple[list[np.ndarray], float]:
        """The beacon (plus the walk from it to the nearest crate), then every crate alike."""
        crates = [np.array([c.pos[0], c.pos[2]]) for c in self.crates]
        if self.phase == 0:
            beacon = np.asarray(self.layout.place("beacon").pos)
            if not hasattr(self, "_beacon_to_crate"):  # the layout is fixed: one set of shortest paths per env
                self._beacon_to_crate = min(M.shortest_path(self.grid, beacon, c)[0] for c in crates)
            return [beacon], self._beacon_to_crate
        return crates, 0.0

    def task_state(self) -> dict:
        """Privileged state: target slot, phase (1 after the beacon)."""
        return {**super().task_state(), "target": self.target}

    def scripted_plan(self, choice: int | None = None) -> list[Leg]:
        """Touch the beacon (the decision point), then crate ``choice`` (default: the target)."""
        c = self.crates[self._choice(choice, len(self.crates))]
        return [Leg(tuple(self.route[1]), lambda e: e.phase >= 1, decision=True, target_entity=self.beacon),
                Leg((c.pos[0], c.pos[2]), lambda e: False, target_entity=c)]
