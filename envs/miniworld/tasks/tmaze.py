"""``embodimem/TMaze-v0``: a memory T-maze whose cue is seen only at the start, with a delay you can lengthen.

The agent starts in a room facing a cue box (green or red, drawn per episode). A bent connector leads to the
stem, then to the T junction; the start room cannot be seen from the junction (nor from the stem past its
first metre). Green means the left (north) arm, red the right (south) arm. Entering either arm's end region
(``goal_radius`` 1 m around its end) ends the episode; success iff it is the cued arm. ``delay`` adds
``delay`` forward steps of stem (delay * forward_step metres) between the cue and the decision, and 2 * delay
steps to the step budget. A memoryless policy reaches the junction seeing the same frame whatever the cue,
so it succeeds with probability 1/2.

reset(options={"cue": 0 or 1}) fixes the cue (0 = green/left, 1 = red/right); the draw from the seed happens
anyway, so the rest of the episode (start jitter) is the same for both cues.
"""

from __future__ import annotations

import numpy as np

from embodimem.envs.miniworld.base import STOP, Leg, NavTaskEnv
from embodimem.envs.miniworld.layout import Layout

__all__ = ["TMazeEnv"]


class TMazeEnv(NavTaskEnv):
    """Delayed-cue T-maze; see the module docstring."""

    TASK = "TMaze"
    DEFAULT_LAYOUT = "tmaze"
    OPTIONS = frozenset({"cue"})

    def __init__(self, delay: int = 10, layout: str | Layout | None = None, *, max_steps: int | None = None,
                 **kwargs):
        if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)) or not 0 <= delay <= 10_000:
            raise ValueError(f"TMaze: delay must be an int number of forward steps in [0, 10000], got {delay!r}")
        self.delay = int(delay)
        steps = max_steps if max_steps is not None else 200 + 2 * self.delay
        super().__init__(layout, max_steps=steps, **kwargs)

    def _prepare_layout(self, layout: Layout) -> Layout:
        layout.require_places(["start", "cue", "decision", "goal_left", "goal_right"], self.TASK)
        colors = layout.param("cue_colors", list)
        if len(colors) != 2:
            raise ValueError(f"{layout.source}: params.cue_colors: expected 2 colours (left, right), got {colors!r}")
        return layout.stretched(self.delay * self._fwd)

    def _setup_task(self) -> None:
        L = self.layout
        colors = L.param("cue_colors", list)
        self.cue = self._option("cue", 2)
        self._add_decor()
        self.cue_box = self._add_object("box", colors[self.cue], L.place("cue").pos, L.params.get("cue_size", 0.6),
                                        where="params.cue_colors")
        self._place_start()
        self.goals = [L.place("goal_left").pos, L.place("goal_right").pos]
        self.goal_radius = L.param("goal_radius")
        self.route = [tuple(self.agent_pos), self.goals[self.cue]]
        self.instruction = (f"remember the colour of the box: {colors[0]} means the left arm, "
                            f"{colors[1]} means the right arm")

    def _task_step(self, action: int) -> tuple[bool, bool]:
        d = [float(np.linalg.norm(self.agent_pos - np.asarray(g))) for g in self.goals]
        for side in (0, 1):
            if d[side] < self.goal_radius:
                return True, side == self.cue
        return (True, False) if action == STOP else (False, False)

    def _shaping_targets(self) -> tuple[list[np.ndarray], float]:
        """Both arm ends, whatever the cue: shaping leads to the junction and into an arm, never a given one."""
        return [np.asarray(g) for g in self.goals], 0.0

    def task_state(self) -> dict:
        """Privileged state: cue (0 left / 1 right) and the goal."""
        return {**super().task_state(), "cue": self.cue}

    def scripted_plan(self, choice: int | None = None) -> list[Leg]:
        """Walk to the junction (the decision point), then into arm ``choice`` (default: the cued arm)."""
        k = self._choice(choice, 2)
        dec = np.asarray(self.layout.place("decision").pos)
        return [Leg(tuple(dec), lambda e: bool(np.linalg.norm(e.agent_pos - dec) < 0.3), decision=True),
                Leg(self.goals[k], lambda e: False)]
