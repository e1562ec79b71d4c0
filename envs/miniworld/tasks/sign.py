"""``embodimem/SignNav-v0``: read a sign, walk out of its sight, go to the object it named.

A sign on the start room's north wall shows a colour word (RED, GREEN or BLUE, drawn per episode). The three
boxes of those colours (their order drawn per episode) stand in a room reached through an L-shaped corridor,
out of sight of the sign. Touching the box of the sign's colour succeeds; touching another box, or stop, ends
the episode as a failure. The ``instruction`` observation says what to do but not which colour. A memoryless
policy enters the box room seeing the same frame whatever the sign said, so it succeeds with probability 1/3.

reset(options={"sign": 0..2}) fixes the sign's colour (index into the layout's ``params.colors``).
"""

from __future__ import annotations

import math

import numpy as np

from embodimem.envs.miniworld.base import STOP, Leg, NavTaskEnv

__all__ = ["SignNavEnv"]


class SignNavEnv(NavTaskEnv):
    """Sign-cued object navigation; see the module docstring."""

    TASK = "SignNav"
    DEFAULT_LAYOUT = "sign"
    OPTIONS = frozenset({"sign"})

    def __init__(self, layout=None, *, max_steps: int = 300, **kwargs):
        super().__init__(layout, max_steps=max_steps, **kwargs)

    def _prepare_layout(self, layout):
        objs = layout.param("objects", list)
        colors = layout.param("colors", list)
        if len(objs) != len(colors) or len(colors) < 2:
            raise ValueError(f"{layout.source}: params.objects/colors: expected as many object places as colours "
                             f"(>= 2), got {objs!r} and {colors!r}")
        layout.require_places(["start", "sign", "decision", *objs], self.TASK)
        return layout

    def _setup_task(self) -> None:
        from miniworld.entity import TextFrame

        L = self.layout
        colors = L.param("colors", list)
        n = len(colors)
        order = self.np_random.permutation(n)  # box colour per object place
        self.sign_color = self._option("sign", n)
        self._add_decor()
        size = L.param("object_size")
        self.boxes = [self._add_object("box", colors[int(order[i])], L.place(name).pos, size, where="params.colors")
                      for i, name in enumerate(L.param("objects", list))]
        self.target = int(np.nonzero(order == self.sign_color)[0][0])
        sp = L.place("sign")
        self.entities.append(TextFrame(pos=[sp.pos[0], 1.5, sp.pos[1]], dir=math.radians(sp.dir_deg or 0.0),
                                       str=colors[self.sign_color].upper(), height=L.param("letter_height")))
        self._place_start()
        self.goal_radius = self._reach(self.boxes[0].radius)
        self.route = [tuple(self.agent_pos), L.place(L.param("objects", list)[self.target]).pos]
        self.instruction = "read the sign, then go to the box of that colour"

    def _task_step(self, action: int) -> tuple[bool, bool]:
        touched = [i for i, b in enumerate(self.boxes) if self.touching(b)]
        if touched:
            i = min(touched, key=lambda k: np.linalg.norm(self.agent_pos - np.array(self.boxes[k].pos[::2])))
            return True, i == self.target
        return (True, False) if action == STOP else (False, False)

    def task_state(self) -> dict:
        """Privileged state: the sign's colour index and the target box index."""
        return {**super().task_state(), "sign": self.sign_color, "target": self.target}

    def scripted_plan(self, choice: int | None = None) -> list[Leg]:
        """Walk into the box room (the decision point), then to box ``choice`` (default: the named one)."""
        b = self.boxes[self._choice(choice, len(self.boxes))]
        dec = np.asarray(self.layout.place("decision").pos)
        return [Leg(tuple(dec), lambda e: bool(np.linalg.norm(e.agent_pos - dec) < 0.3), decision=True),
                Leg((b.pos[0], b.pos[2]), lambda e: False, target_entity=b)]
