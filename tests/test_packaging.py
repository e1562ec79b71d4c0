"""pyproject lists every package (a missing one installs fine in editable mode and breaks a real wheel)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"embodimem": "embodimem", "embodimem.envs": "envs", "embodimem.agents": "agents", "embodimem.maps": "maps"}


def packages_on_disk() -> set[str]:
    found = set()
    for name, folder in MAPPED.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            parts = [] if str(rel) == "." else list(rel.parts)
            if any(p.startswith((".", "__")) for p in parts):
                continue
            if name == "embodimem" and parts and parts[0] in ("envs", "agents", "maps"):
                continue
            found.add(".".join([name, *parts]))
    return found


def test_pyproject_lists_every_package():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = packages_on_disk()
    assert on_disk - listed == set(), f"add to pyproject [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert listed - on_disk == set(), f"listed but missing on disk: {sorted(listed - on_disk)}"
    assert cfg["package-dir"] == MAPPED
