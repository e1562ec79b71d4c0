"""Manipulation, fast-memory and adapter env ids (entry points are strings: nothing heavy is imported here).

- ``embodimem/MetaWorld-v0`` (kwarg ``task``, default pick-place-v3): Meta-World 3.x with RGB-D, pose, intrinsics.
- ``embodimem/MetaWorldCue-v0`` (kwarg ``layout``): the cue memory task (a light shows which goal, then goes out).
- ``embodimem/MiniGridMemory-v0`` (kwarg ``task``, default MemoryS7), ``embodimem/POPGym-v0`` (kwarg ``task``,
  default RepeatPreviousEasy): fast memory tasks.
- Optional simulators (the package must be installed): ``embodimem/Habitat-v0`` (kwarg ``scene``),
  ``embodimem/MineRL-v0``, ``embodimem/MemoryMaze-v0``, ``embodimem/ViZDoom-v0``, ``embodimem/ManiSkill-v0``.
"""

from embodimem.envs.registry import register_env

register_env("MetaWorld-v0", "embodimem.envs.metaworld.adapter:MetaWorldEnv")
register_env("MetaWorldCue-v0", "embodimem.envs.metaworld.cue_task:MetaWorldCueEnv")
register_env("MiniGridMemory-v0", "embodimem.envs.fast.minigrid:MiniGridMemoryEnv")
register_env("POPGym-v0", "embodimem.envs.fast.popgym:POPGymEnv")
register_env("Habitat-v0", "embodimem.envs.adapters.habitat:HabitatNavEnv")
register_env("MineRL-v0", "embodimem.envs.adapters.minerl:MineRLEnv")
register_env("MemoryMaze-v0", "embodimem.envs.adapters.memory_maze:MemoryMazeEnv")
register_env("ViZDoom-v0", "embodimem.envs.adapters.vizdoom:ViZDoomEnv")
register_env("ManiSkill-v0", "embodimem.envs.adapters.maniskill:ManiSkillEnv")
