"""Navigation env ids (MiniWorld memory tasks); filled by the navigation envs."""
