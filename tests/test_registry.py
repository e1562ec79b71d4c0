"""The shared registry: lazy built-ins, clear errors, every way to build."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

import pytest

from embodimem.registry import Registry


@dataclass
class ThingConfig:
    size: int = 1
    name: ClassVar[str] = ""


class Thing:
    config_class = ThingConfig
    name = ""

    def __init__(self, config):
        self.config = config


def test_register_build_and_errors():
    reg = Registry("thing", Thing)

    @reg.register("a")
    class A(Thing):
        config_class = type("AConfig", (ThingConfig,), {"__annotations__": {}})

    assert reg.names() == ["a"] and A.name == "a" and A.config_class.name == "a"
    assert reg.build("a", size=3).config.size == 3
    assert reg.build({"name": "a", "size": 4}).config.size == 4
    assert reg.build(A.config_class(size=5)).config.size == 5
    with pytest.raises(ValueError, match="valid names: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="unknown fields \\['sise'\\]"):
        reg.build("a", sise=3)
    with pytest.raises(TypeError, match="Thing subclass"):
        reg.register("c")(int)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(type("B", (Thing,), {"config_class": ThingConfig}))
    with pytest.raises(ValueError, match="'name'"):
        reg.config_from_dict({"size": 1})


def test_builtins_import_lazily():
    import subprocess

    code = ("import sys, embodimem.memory as m; assert 'embodimem.memory.hcam' not in sys.modules; "
            "assert 'hcam' in m.available_memories(); assert 'embodimem.memory.hcam' not in sys.modules; "
            "assert m.memory_class('hcam').name == 'hcam'; assert 'embodimem.memory.hcam' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
