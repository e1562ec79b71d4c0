"""embodimem.envs: where frames come from (simulator adapters, built-in memory tasks, suites, metrics).

Importing this package registers every built-in env id (strings only; simulators load on ``make``).
"""

from embodimem.envs.registry import available_envs, make_env, register_env, resolve_env_id
from embodimem.envs import ids_navigation as _ids_navigation  # noqa: F401  (registers navigation ids)
from embodimem.envs import ids_manipulation as _ids_manipulation  # noqa: F401  (registers manipulation/fast/adapter ids)

__all__ = ["available_envs", "make_env", "register_env", "resolve_env_id"]
