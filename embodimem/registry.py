"""One registry type for memories, encoders and conditioners: name -> class, built-ins imported lazily.

A registered class carries ``name`` and a typed ``config_class`` (a dataclass with a ``name`` ClassVar);
``build`` accepts that config, a name plus field overrides, or a dict with a ``name`` key.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes of one ``kind`` by name; ``builtin`` maps names to the modules that register them."""

    def __init__(self, kind: str, base: type, builtin: dict[str, str] | None = None):
        self.kind, self.base = kind, base
        self.builtin = dict(builtin or {})
        self._classes: dict[str, Any] = {}

    def register(self, name: str):
        """Class decorator: register a subclass of ``base`` (and its ``config_class``) under ``name``."""

        def deco(cls: Any) -> Any:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"register_{self.kind}({name!r}) expects a {self.base.__name__} subclass, got {cls!r}")
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._classes[name].__qualname__}")
            cls.name = name
            cls.config_class.name = name
            self._classes[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        """Every name ``build`` accepts."""
        return sorted(set(self.builtin) | set(self._classes))

    def get(self, name: str) -> Any:
        """The class registered as ``name`` (imports its module on first use); unknown names list the valid ones."""
        if name not in self._classes and name in self.builtin:
            importlib.import_module(self.builtin[name])
        if name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        return self._classes[name]

    def config_class(self, name: str) -> type:
        return self.get(name).config_class

    def config(self, name: str, fields: dict[str, Any]) -> Any:
        """The typed config of ``name`` from plain fields (unknown fields raise, naming them)."""
        cls = self.config_class(name)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"{self.kind} {name!r} config has unknown fields {unknown}; known: {sorted(known)}")
        return cls(**fields)

    def config_from_dict(self, d: dict[str, Any]) -> Any:
        """Inverse of ``config.to_dict()``: a dict with a ``name`` key."""
        d = dict(d)
        name = d.pop("name", None)
        if name is None:
            raise ValueError(f"{self.kind} config dict needs a 'name' field")
        return self.config(name, d)

    def build(self, config: Any, **overrides: Any) -> Any:
        """An instance from its config, a name plus field overrides, or a dict with a ``name`` key."""
        if isinstance(config, dict):
            config = self.config_from_dict({**config, **overrides})
        elif isinstance(config, str):
            config = self.config(config, overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        name = getattr(config, "name", "")
        if not name:
            raise ValueError(f"{type(config).__name__} is not the config of a registered {self.kind}")
        return self.get(name)(config)
