"""MiniWorld, embodimem's embedded default 3D simulator: headless (EGL + Mesa on the CPU) memory tasks.

- ``headless``     import MiniWorld without a display; clear errors naming what is missing
- ``adapter``      observation dicts (rgb, metric depth, OpenCV camera-to-world pose, intrinsics, instruction)
- ``layout``       JSON layouts in ``maps/miniworld`` (schema, validation, walls, free-space grid, building)
- ``base``         ``NavTaskEnv``, the task base: discrete actions, info, episode metrics (SPL, nDTW, ...)
- ``tasks``        T-maze, object recall, sign navigation, revisit tour (registered in ``envs/ids_navigation``)
- ``solvers``      scripted solvers with privileged state (prove solvability, mark decision points)
- ``revisit``      scripted revisit trajectories with depth and poses, and their revisit pairs
- ``textures``     a faster texture loader (same texels)

Nothing here imports MiniWorld (or GL) until an env is made or ``headless.import_miniworld`` is called.
"""
