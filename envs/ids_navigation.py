"""Navigation env ids: MiniWorld memory tasks (headless EGL rendering on the CPU), registered lazily.

Every id emits the observation dict rgb uint8 [H,W,3], depth float32 [H,W] (metres), pose float32 [4,4]
(OpenCV camera-to-world), intrinsics float32 [3,3] and instruction (str), 64x64 by default (``obs_width`` /
``obs_height`` change it), and ``info["is_success"]`` on every step. The tasks share the actions
0 turn_left, 1 turn_right, 2 move_forward, 3 stop and end their episodes themselves (task-specific budgets).

- ``embodimem/TMaze-v0``         delayed-cue T-maze; ``delay`` (forward steps of stem, default 10) lengthens it
- ``embodimem/ObjectRecall-v0``  see the red crate, touch the beacon out of sight, come back to the crate
- ``embodimem/SignNav-v0``       read a colour on a sign, go to the box of that colour in another room
- ``embodimem/Revisit-v0``       touch the marker in the far room and return to the start (revisit trajectories)
- ``embodimem/MiniWorld-v0``     any stock MiniWorld env (``env_name="MiniWorld-Maze-v0"``) with the same obs dict
"""

from embodimem.envs.registry import register_env

_TASKS = "embodimem.envs.miniworld.tasks"

NAVIGATION_IDS = (
    register_env("TMaze-v0", f"{_TASKS}.tmaze:TMazeEnv"),
    register_env("ObjectRecall-v0", f"{_TASKS}.object_recall:ObjectRecallEnv"),
    register_env("SignNav-v0", f"{_TASKS}.sign:SignNavEnv"),
    register_env("Revisit-v0", f"{_TASKS}.revisit:RevisitEnv"),
    register_env("MiniWorld-v0", "embodimem.envs.miniworld.adapter:make_miniworld"),
)
