"""``embodimem/Revisit-v0``: leave a place and come back to it (for spatial memories and world models).

The agent starts in room A, among landmark objects. It must touch the marker in room B, reached through an
L-shaped corridor (room A is out of sight from the marker), then return to within ``return_radius`` (0.5 m)
of where it started and stop (action 3): success. Stop anywhere else ends the episode as a failure. The
scripted solver also looks around (a full turn) at the start, at the marker and on return before stopping,
which is what ``embodimem.envs.miniworld.revisit`` records as revisit trajectories.
"""

from __future__ import annotations

import math

import numpy as np

from embodimem.envs.miniworld.base import STOP, Leg, NavTaskEnv

__all__ = ["RevisitEnv"]


class RevisitEnv(NavTaskEnv):
    """Go to the marker and come back; see the module docstring."""

    TASK = "Revisit"
    DEFAULT_LAYOUT = "revisit"

    def __init__(self, layout=None, *, max_steps: int = 600, **kwargs):
        super().__init__(layout, max_steps=max_steps, **kwargs)

    def _prepare_layout(self, layout):
        layout.require_places(["start", "marker"], self.TASK)
        return layout

    def _setup_task(self) -> None:
        L = self.layout
        self._add_decor()
        self.marker = self._add_object("ball", L.param("marker_color", str), L.place("marker").pos, 0.6,
                                       where="params.marker_color")
        self._place_start()
        self.start_pos = tuple(self.agent_pos)
        self.goal_radius = L.param("return_radius")
        self.route = [self.start_pos, L.place("marker").pos, self.start_pos]
        self.route_radii = [self._reach(self.marker.radius)]
        self.instruction = f"touch the {L.param('marker_color', str)} ball, then return to where you started"

    def _task_step(self, action: int) -> tuple[bool, bool]:
        if self.phase == 0 and self.touching(self.marker):
            self.phase = 1
        if action == STOP:
            return True, self.phase == 1 and self._near_goal()
        return False, False

    def scripted_plan(self, look_around: bool = True) -> list[Leg]:
        """Look around, touch the marker, look around, come back, look around, stop (``spin`` = one full turn)."""
        spin = int(math.ceil(360.0 / self._turn)) if look_around else 0
        start = np.asarray(self.start_pos)
        return [Leg(self.start_pos, lambda e: True, spin=spin),
                Leg(tuple(self.route[1]), lambda e: e.phase >= 1, target_entity=self.marker, spin=spin),
                Leg(self.start_pos, lambda e: bool(np.linalg.norm(e.agent_pos - start) < 0.25), spin=spin,
                    stop_after=True)]
