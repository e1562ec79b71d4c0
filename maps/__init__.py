"""Data: maze/scene layouts and episode sets for the built-in tasks (read with importlib.resources)."""
