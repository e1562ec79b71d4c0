"""One English instruction per Meta-World v3 task (what a language-conditioned policy is told to do).

Written from each task's success condition in the Meta-World paper and source; one imperative sentence each.
"""

from __future__ import annotations

__all__ = ["INSTRUCTIONS", "instruction_for", "task_names"]

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut and place it onto the peg",
    "basketball-v3": "pick up the ball and dunk it into the basket",
    "bin-picking-v3": "pick up the puck from one bin and place it into the other bin",
    "box-close-v3": "pick up the box lid and place it on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top, reaching past the short wall",
    "button-press-v3": "press the button from the front",
    "button-press-wall-v3": "press the button from the front, reaching past the short wall",
    "coffee-button-v3": "push the button on the coffee machine",
    "coffee-pull-v3": "pull the mug out from under the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "rotate the dial 180 degrees",
    "disassemble-v3": "pick the nut up off the peg",
    "door-close-v3": "close the door by pushing it on its hinge",
    "door-lock-v3": "lock the door by rotating the lock clockwise",
    "door-open-v3": "open the door by pulling it on its hinge",
    "door-unlock-v3": "unlock the door by rotating the lock counter-clockwise",
    "hand-insert-v3": "insert the gripper into the hole",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open",
    "faucet-open-v3": "rotate the faucet handle counter-clockwise to open it",
    "faucet-close-v3": "rotate the faucet handle clockwise to close it",
    "hammer-v3": "pick up the hammer and hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal, going over the wall",
    "pick-out-of-hole-v3": "pick the puck up out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-back-v3": "slide the plate out of the cabinet",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "grasp the stick and push the box with it",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal, around the wall",
    "push-back-v3": "push the puck backwards to the goal",
    "reach-v3": "reach the goal position with the gripper",
    "reach-wall-v3": "reach the goal position with the gripper, going over the wall",
    "shelf-place-v3": "pick up the puck and place it onto the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "push the window open",
    "window-close-v3": "push the window closed",
}


def task_names() -> list[str]:
    """Every Meta-World v3 task name that has an instruction (sorted)."""
    return sorted(INSTRUCTIONS)


def instruction_for(task: str) -> str:
    """The instruction for a Meta-World task name (e.g. 'pick-place-v3'); unknown names raise ValueError."""
    try:
        return INSTRUCTIONS[task]
    except KeyError:
        raise ValueError(f"unknown Meta-World task {task!r}; valid tasks: {', '.join(task_names())}") from None
