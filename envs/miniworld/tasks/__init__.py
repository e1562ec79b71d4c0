"""MiniWorld memory tasks: T-maze (delayed cue), object recall, sign navigation, revisit tour.

Each module imports MiniWorld (headless GL) on import; ``embodimem.envs.ids_navigation`` registers them lazily.
"""
