"""Import MiniWorld headless (EGL + Mesa on the CPU), with errors that say what is missing and how to fix it.

pyglet reads ``pyglet.options['headless']`` when ``pyglet.window`` is first imported, and importing miniworld
creates pyglet's shadow GL context immediately, so the option must be set before ``import miniworld``.
``import_miniworld()`` does that. Set ``EMBODIMEM_PYGLET_HEADLESS=0`` to render through an X display instead
(e.g. under ``xvfb-run``). It also installs a faster texture loader (same texels; see ``textures``;
``EMBODIMEM_MINIWORLD_FAST_TEXTURES=0`` keeps MiniWorld's) and turns off pyglet's per-call GL error check
(``EMBODIMEM_PYGLET_DEBUG_GL=1`` keeps it). Async vector envs must not use the ``fork`` start method once GL is loaded
(the children hang); ``embodimem.envs.vector`` uses ``forkserver``.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from types import ModuleType

__all__ = ["MiniWorldUnavailable", "import_miniworld", "miniworld_available"]

_READY = False
_DOCTOR = "run `embodimem doctor` to see what is installed and what is missing"


class MiniWorldUnavailable(ImportError):
    """MiniWorld (or the GL it renders with) cannot be loaded; the message says why and how to fix it."""


def _headless_wanted() -> bool:
    return os.environ.get("EMBODIMEM_PYGLET_HEADLESS", "1").strip().lower() not in ("0", "false", "no")


def import_miniworld() -> ModuleType:
    """Import and return the ``miniworld`` package, headless through EGL unless EMBODIMEM_PYGLET_HEADLESS=0."""
    if "miniworld.miniworld" in sys.modules and _READY:
        return sys.modules["miniworld"]
    try:
        import pyglet
    except ImportError as e:
        raise MiniWorldUnavailable(
            f"MiniWorld needs pyglet<2, which is not installed ({e}); fix: pip install miniworld "
            f"(or `pip install embodimem[sims]`); {_DOCTOR}") from e
    if _headless_wanted():
        if "pyglet.window" in sys.modules and not pyglet.options.get("headless", False):
            raise MiniWorldUnavailable(
                "pyglet.window was imported before embodimem could set pyglet.options['headless'] = True, so "
                "MiniWorld would look for an X display; import embodimem's MiniWorld envs before anything that "
                "opens a pyglet window, or set EMBODIMEM_PYGLET_HEADLESS=0 to use a display (e.g. xvfb-run)")
        pyglet.options["headless"] = True
    if "pyglet.gl" not in sys.modules:  # no glGetError after every GL call (pyglet's debug default): ~10 % faster
        pyglet.options["debug_gl"] = os.environ.get("EMBODIMEM_PYGLET_DEBUG_GL", "0") == "1"
    try:
        import miniworld  # noqa: F401  (creates the shadow GL context)
        import miniworld.miniworld  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "miniworld":
            raise MiniWorldUnavailable(
                f"MiniWorld is not installed; fix: pip install miniworld (or `pip install embodimem[sims]`); "
                f"{_DOCTOR}") from e
        raise
    except Exception as e:  # pyglet raises assorted errors when no EGL/GL context can be made
        egl = ctypes.util.find_library("EGL")
        what = "libEGL was not found" if egl is None else f"libEGL ({egl}) is present but no GL context could be made"
        raise MiniWorldUnavailable(
            f"MiniWorld could not create a headless GL context: {what} ({type(e).__name__}: {e}); fix: apt-get "
            f"install libegl1 libegl-mesa0 libgl1-mesa-dri (Mesa llvmpipe renders on the CPU), or render through "
            f"a display with EMBODIMEM_PYGLET_HEADLESS=0 under xvfb-run; {_DOCTOR}") from e
    if os.environ.get("EMBODIMEM_MINIWORLD_FAST_TEXTURES", "1").strip().lower() not in ("0", "false", "no"):
        from embodimem.envs.miniworld.textures import install_fast_texture_loader

        install_fast_texture_loader()
    globals()["_READY"] = True
    return sys.modules["miniworld"]


def miniworld_available() -> tuple[bool, str]:
    """(True, '') if MiniWorld imports headless here, else (False, the reason with the fix)."""
    try:
        import_miniworld()
    except MiniWorldUnavailable as e:
        return False, str(e)
    return True, ""
