"""Typed dataclass configs <-> plain dicts <-> YAML, with strict typed reconstruction and config diffs.

Dataclasses are the source of truth (the CLI is built from them with tyro); YAML files are serialised
dataclasses. ``to_dict`` gives YAML-safe values (tuples -> lists, Enums -> values, Paths -> str).
``from_dict`` rebuilds the typed object and fails loudly: unknown keys and wrong types raise
``ConfigError`` (a ``ValueError`` and a ``TypeError``) naming the dotted field path.

Polymorphic fields: a dataclass with a ``name`` (a ``ClassVar[str]`` or a str field with a default) is
written with its ``name``; on load, that key picks the member of a ``Union`` of dataclasses, or a
subclass of the declared class (e.g. a field typed ``MemoryConfig`` holding a registered subclass).
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
from collections import abc
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union

import yaml

from embodimem.atomic import atomic_write_text

__all__ = [
    "ConfigError", "to_dict", "from_dict", "save_yaml", "load_yaml", "dump_yaml",
    "diff_configs", "format_config", "print_config",
]

T = TypeVar("T")
_MISSING = dataclasses.MISSING


class ConfigError(ValueError, TypeError):
    """A config does not match its dataclass (unknown key, wrong type, missing field)."""


# ----- dataclass -> plain --------------------------------------------------------------------------


def discriminator(cls: type) -> str | None:
    """The ``name`` that identifies a config class in a dict (ClassVar or str field default), or None."""
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    if "name" in fields:
        default = fields["name"].default
        return default if isinstance(default, str) and default else None
    value = getattr(cls, "name", None)
    return value if isinstance(value, str) and value else None


def _has_classvar_name(cls: type) -> bool:
    field_names = {f.name for f in dataclasses.fields(cls)}
    return "name" not in field_names and discriminator(cls) is not None


def to_dict(dc: Any) -> dict[str, Any]:
    """A dataclass instance as a nested dict of YAML-safe values (field order kept)."""
    if not dataclasses.is_dataclass(dc) or isinstance(dc, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(dc).__name__}")
    return _plain(dc, "")


def _plain(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        if _has_classvar_name(type(value)):
            out["name"] = discriminator(type(value))  # so a polymorphic field can be rebuilt as this subclass
        for f in dataclasses.fields(value):
            out[f.name] = _plain(getattr(value, f.name), _join(path, f.name))
        return out
    if isinstance(value, enum.Enum):
        return _plain(value.value, path)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, (str, int, float, bool)):
                raise TypeError(f"config field {path or '<root>'}: dict key {k!r} is not a str/int/float/bool")
        return {k: _plain(v, _join(path, str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(items)]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        return _plain(item(), path)
    raise TypeError(f"config field {path or '<root>'}: {type(value).__name__} is not YAML-serialisable")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# ----- plain -> dataclass --------------------------------------------------------------------------


def from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
    """Rebuild dataclass ``cls`` from a nested dict; raises ConfigError naming unknown keys or bad fields."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    return _build(cls, d, "")


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)  # resolves each base's annotations in that base's own module
    except NameError as e:
        raise TypeError(f"cannot resolve the type annotations of {cls.__qualname__}: {e} "
                        "(define config classes at module level)") from e


def _subclass_by_name(cls: type, name: str) -> type | None:
    """A dataclass subclass of ``cls`` (any depth) whose discriminator is ``name``."""
    stack, seen = list(cls.__subclasses__()), set()
    while stack:
        sub = stack.pop()
        if sub in seen:
            continue
        seen.add(sub)
        if dataclasses.is_dataclass(sub) and discriminator(sub) == name:
            return sub
        stack.extend(sub.__subclasses__())
    return None


def _build(cls: type, d: Any, path: str) -> Any:
    where = path or "<root>"
    if isinstance(d, cls):
        return d
    if not isinstance(d, Mapping):
        raise ConfigError(f"config field {where}: expected a mapping for {cls.__name__}, got {type(d).__name__} {d!r}")
    d = dict(d)
    if _has_classvar_name(cls) and "name" in d:
        name = d.pop("name")
        if name != discriminator(cls):
            sub = _subclass_by_name(cls, name) if isinstance(name, str) else None
            if sub is None:
                raise ConfigError(f"config field {where}: name {name!r} is not {cls.__name__} "
                                  f"({discriminator(cls)!r}) nor a known subclass of it")
            cls = sub
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise ConfigError(f"config field {where}: unknown key(s) {unknown} for {cls.__name__} "
                          f"(valid: {sorted(fields)})")
    missing = [n for n, f in fields.items()
               if n not in d and f.default is _MISSING and f.default_factory is _MISSING]
    if missing:
        raise ConfigError(f"config field {where}: missing required field(s) {missing} for {cls.__name__}")
    hints = _type_hints(cls)
    kwargs = {k: _convert(hints.get(k, Any), v, _join(path, k)) for k, v in d.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # __post_init__ validation: say where it happened
        raise ConfigError(f"config field {where} ({cls.__name__}): {e}") from e


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _convert(tp: Any, value: Any, path: str) -> Any:
    if tp is Any or tp is object:
        return value
    if isinstance(tp, TypeVar):
        return value
    if typing.get_origin(tp) is typing.Annotated:
        return _convert(typing.get_args(tp)[0], value, path)
    if typing.get_origin(tp) is typing.ClassVar:
        raise ConfigError(f"config field {path} is a ClassVar and cannot be set")
    if tp is None or tp is type(None):
        if value is None:
            return None
        raise _type_error(path, "None", value)
    if _is_union(tp):
        return _convert_union(typing.get_args(tp), value, path)
    if typing.get_origin(tp) is Literal:
        options = typing.get_args(tp)
        for opt in options:
            if value == opt and type(value) is type(opt):
                return opt
        raise ConfigError(f"config field {path}: {value!r} is not one of {list(options)}")
    origin = typing.get_origin(tp)
    if origin is not None:
        return _convert_generic(tp, origin, typing.get_args(tp), value, path)
    if isinstance(tp, type):
        return _convert_class(tp, value, path)
    if isinstance(tp, str):
        raise TypeError(f"config field {path}: unresolved forward reference {tp!r}")
    return value  # typing constructs we do not model (e.g. Callable): keep the value as is


def _convert_class(tp: type, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            if isinstance(value, str) and value in tp.__members__:
                return tp[value]
            raise ConfigError(f"config field {path}: {value!r} is not a valid {tp.__name__} "
                              f"(one of {[m.value for m in tp]})") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(path, "bool", value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(path, "int", value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)  # YAML writes 1.0 as 1.0, but hand-written files say 1
        raise _type_error(path, "float", value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(path, "str", value)
    if issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)):
            return tp(value)
        raise _type_error(path, "path string", value)
    if tp in (list, tuple, set, frozenset):
        if isinstance(value, (list, tuple, set, frozenset)):
            return tp(value)
        raise _type_error(path, tp.__name__, value)
    if tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _type_error(path, "dict", value)
    if isinstance(value, tp):
        return value
    raise _type_error(path, tp.__name__, value)


_SEQUENCES = (list, tuple, set, frozenset, abc.Sequence, abc.MutableSequence, abc.Set, abc.Collection, abc.Iterable)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)


def _convert_generic(tp: Any, origin: Any, args: tuple[Any, ...], value: Any, path: str) -> Any:
    if origin in _SEQUENCES:
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise _type_error(path, f"a list ({_type_name(tp)})", value)
        items = list(value)
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(items))
            args = () if args == ((),) else args  # tuple[()]
            if len(items) != len(args):
                raise ConfigError(f"config field {path}: expected {len(args)} items ({_type_name(tp)}), got {len(items)}")
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, items)))
        out = [_convert(args[0] if args else Any, v, f"{path}[{i}]") for i, v in enumerate(items)]
        return origin(out) if origin in (set, frozenset) else out
    if origin in _MAPPINGS:
        if not isinstance(value, Mapping):
            raise _type_error(path, f"a mapping ({_type_name(tp)})", value)
        kt, vt = args if len(args) == 2 else (Any, Any)
        return {_convert(kt, k, f"{path}.<key>"): _convert(vt, v, _join(path, str(k))) for k, v in value.items()}
    return value  # other generics (type[X], Callable[...]): not modelled, keep the value


def _convert_union(members: tuple[Any, ...], value: Any, path: str) -> Any:
    if value is None:
        if type(None) in members:
            return None
        raise _type_error(path, " | ".join(_type_name(m) for m in members), value)
    members = tuple(m for m in members if m is not type(None))
    classes = [m for m in members if isinstance(m, type) and dataclasses.is_dataclass(m)]
    for m in classes:
        if isinstance(value, m):
            return value
    if classes and isinstance(value, Mapping):
        name = value.get("name")
        named = [m for m in classes if name is not None and discriminator(m) == name]
        if len(named) == 1:
            return _build(named[0], value, path)
        # No (unique) name: the members whose fields accept the dict; exactly one must fit.
        fits, errors = [], []
        for m in classes:
            try:
                fits.append((m, _build(m, value, path)))
            except ConfigError as e:
                errors.append(f"{m.__name__}: {e}")
        if len(fits) == 1:
            return fits[0][1]
        if len(fits) > 1:
            raise ConfigError(f"config field {path}: ambiguous between {[m.__name__ for m, _ in fits]}; "
                              "add a 'name' key to say which")
        if len(classes) == len(members):  # else a non-dataclass member (e.g. dict) may still take it
            raise ConfigError(f"config field {path}: matches none of {[m.__name__ for m in classes]} ({'; '.join(errors)})")
    # Scalars: a member that takes the value as it is wins, so int|str keeps 3 an int and "3" a str.
    for m in members:
        if isinstance(m, type) and not dataclasses.is_dataclass(m) and type(value) is m:
            return value
    for m in members:
        if m in classes:
            continue
        try:
            return _convert(m, value, path)
        except (ConfigError, TypeError):
            continue
    raise _type_error(path, " | ".join(_type_name(m) for m in members), value)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp).replace("typing.", "")


def _type_error(path: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"config field {path}: expected {expected}, got {type(value).__name__} {value!r}")


# ----- YAML ---------------------------------------------------------------------------------------


def dump_yaml(dc: Any) -> str:
    """The YAML text of a dataclass (or an already plain dict), fields in declaration order."""
    data = to_dict(dc) if dataclasses.is_dataclass(dc) else dc
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def save_yaml(dc: Any, path: str | Path) -> Path:
    """Atomically write a dataclass as YAML; returns the path."""
    return atomic_write_text(path, dump_yaml(dc))


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read a YAML file into dataclass ``cls``; errors name the file and the offending field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping for {cls.__name__}, got {type(data).__name__}")
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


# ----- diffs and printing -------------------------------------------------------------------------


def diff_configs(a: Any, b: Any, *, ignore: Iterable[str] = ()) -> list[str]:
    """Dotted paths where two configs (dataclasses or plain dicts) differ, sorted; ``ignore`` drops prefixes."""
    pa = _plain(a, "") if dataclasses.is_dataclass(a) else a
    pb = _plain(b, "") if dataclasses.is_dataclass(b) else b
    out: list[str] = []
    _diff(pa, pb, "", out)
    skip = tuple(ignore)
    return sorted(p for p in out if not any(p == s or p.startswith((s + ".", s + "[")) for s in skip))


def _diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in list(a) + [k for k in b if k not in a]:
            sub = _join(path, str(k))
            if k not in a or k not in b:
                out.append(sub)
            else:
                _diff(a[k], b[k], sub, out)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out)
    elif not _same(a, b):
        out.append(path or "<root>")


def _same(a: Any, b: Any) -> bool:
    """Leaf equality: 1 == 1.0 (YAML may write either), True != 1, NaN == NaN."""
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    if type(a) is not type(b) and not numbers:
        return False
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return bool(a == b)


def format_config(dc: Any, title: str | None = None) -> str:
    """The resolved config as indented YAML, with an optional title line naming its class."""
    title = title if title is not None else (type(dc).__name__ if dataclasses.is_dataclass(dc) else "config")
    body = dump_yaml(dc).rstrip("\n")
    return f"# {title}\n{body}\n"


def print_config(dc: Any, title: str | None = None, file: Any = None) -> str:
    """Print the resolved config (YAML) and return the printed text."""
    text = format_config(dc, title)
    print(text, end="", file=file if file is not None else sys.stdout, flush=True)
    return text
