"""Optional simulator adapters (habitat-sim, MineRL, Memory Maze, ViZDoom, ManiSkill3) in embodimem's conventions.

Each module imports its simulator only when an env is constructed (ImportError with install instructions
otherwise) and exposes pure conversion functions -- camera conventions to OpenCV poses, depth encodings to metres,
action mappings -- that are tested without the simulator. Importing this package imports no simulator.
"""

ADAPTERS = {
    "habitat": "embodimem.envs.adapters.habitat:HabitatNavEnv",
    "minerl": "embodimem.envs.adapters.minerl:MineRLEnv",
    "memory_maze": "embodimem.envs.adapters.memory_maze:MemoryMazeEnv",
    "vizdoom": "embodimem.envs.adapters.vizdoom:ViZDoomEnv",
    "maniskill": "embodimem.envs.adapters.maniskill:ManiSkillEnv",
}
