"""Fast memory environments for tests and quick experiments: MiniGrid memory tasks and POPGym (thousands of steps/s).

``from embodimem.envs.fast.minigrid import MiniGridMemoryEnv``; ``from embodimem.envs.fast.popgym import POPGymEnv``.
Submodules import their simulator lazily, so importing this package costs nothing.
"""
