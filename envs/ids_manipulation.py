"""Manipulation, fast-memory and adapter env ids; filled by those envs."""
