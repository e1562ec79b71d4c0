"""Config dataclasses <-> dict <-> YAML: exact round trips, strict errors naming the field, diffs."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import yaml

from embodimem.config import (
    ConfigError, diff_configs, format_config, from_dict, load_yaml, print_config, save_yaml, to_dict,
)


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclass
class OptimCfg:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    clip: float | None = None


@dataclass
class LRUCfg:
    name: str = "lru"
    capacity: int = 16


@dataclass
class KVCfg:
    name: str = "kv"
    capacity: int = 8
    heads: int = 4


@dataclass
class ConvEnc:
    channels: tuple[int, ...] = (16, 32)
    norm: bool = True


@dataclass
class HFEnc:
    path: Path = Path("models/tiny-vit")
    layers: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class TrainCfg:
    seed: int = 0
    mode: Mode = Mode.FAST
    out: Path = Path("runs")
    optim: OptimCfg = field(default_factory=OptimCfg)
    memory: LRUCfg | KVCfg = field(default_factory=LRUCfg)
    encoder: ConvEnc | HFEnc = field(default_factory=ConvEnc)
    tags: dict[str, int] = field(default_factory=dict)
    note: str | None = None
    level: Literal["easy", "hard"] = "easy"
    steps: int | str = 10


@dataclass
class BaseMem:
    dim: int = 8
    name: ClassVar[str] = "base"


@dataclass
class SlotMem(BaseMem):
    slots: int = 4
    name: ClassVar[str] = "slot"


@dataclass
class Holder:
    mem: BaseMem = field(default_factory=BaseMem)


@dataclass
class Required:
    size: int
    label: str = "x"


@dataclass
class Validated:
    k: int = 1

    def __post_init__(self) -> None:
        if self.k <= 0:
            raise ValueError(f"k must be > 0, got {self.k}")


def _tricky() -> TrainCfg:
    return TrainCfg(
        seed=7, mode=Mode.SLOW, out=Path("/tmp/x y/runs"),
        optim=OptimCfg(lr=0.1 + 0.2, betas=(1e-8, float("inf")), clip=1.0),
        memory=KVCfg(capacity=3, heads=2),
        encoder=HFEnc(path=Path("a/b"), layers=[]),
        tags={"yes": 1, "null": 2, "1e3": 3, "": 4},
        note="yes", level="hard", steps="auto",
    )


def test_yaml_round_trip_is_exact(tmp_path: Path) -> None:
    for cfg in (TrainCfg(), _tricky()):
        p = save_yaml(cfg, tmp_path / "c.yaml")
        back = load_yaml(TrainCfg, p)
        assert back == cfg
        assert type(back.memory) is type(cfg.memory) and type(back.encoder) is type(cfg.encoder)
        assert isinstance(back.optim.betas, tuple) and isinstance(back.out, Path)


def test_to_dict_is_plain_yaml() -> None:
    d = to_dict(_tricky())
    assert d["mode"] == "slow" and d["out"] == "/tmp/x y/runs" and d["optim"]["betas"] == [1e-8, math.inf]
    text = yaml.safe_dump(d)  # safe_dump refuses python objects: proves the dict is plain
    assert "!!python" not in text


def test_classvar_name_picks_the_subclass(tmp_path: Path) -> None:
    h = Holder(mem=SlotMem(dim=3, slots=7))
    assert to_dict(h) == {"mem": {"name": "slot", "dim": 3, "slots": 7}}
    back = load_yaml(Holder, save_yaml(h, tmp_path / "h.yaml"))
    assert type(back.mem) is SlotMem and back == h
    with pytest.raises(ConfigError, match="'nope'.*BaseMem"):
        from_dict(Holder, {"mem": {"name": "nope"}})


def test_union_resolution() -> None:
    assert from_dict(TrainCfg, {"memory": {"name": "kv"}}).memory == KVCfg()
    assert from_dict(TrainCfg, {"memory": {"heads": 1}}).memory == KVCfg(heads=1)  # only KVCfg has heads
    enc = from_dict(TrainCfg, {"encoder": {"path": "m/x"}}).encoder
    assert enc == HFEnc(path=Path("m/x"))
    with pytest.raises(ConfigError, match="encoder: ambiguous"):
        from_dict(TrainCfg, {"encoder": {}})
    with pytest.raises(ConfigError, match="memory: matches none"):
        from_dict(TrainCfg, {"memory": {"slots": 2}})
    assert from_dict(TrainCfg, {"steps": 3}).steps == 3 and from_dict(TrainCfg, {"steps": "3"}).steps == "3"


def test_unknown_keys_name_key_and_class() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sed'\] for TrainCfg"):
        from_dict(TrainCfg, {"sed": 1})
    with pytest.raises(ValueError, match=r"optim: unknown key\(s\) \['lrr'\] for OptimCfg"):
        from_dict(TrainCfg, {"optim": {"lrr": 1.0}})


def test_wrong_types_name_the_field() -> None:
    cases = [
        ({"optim": {"lr": "fast"}}, "optim.lr: expected float"),
        ({"seed": True}, "seed: expected int"),
        ({"seed": 1.5}, "seed: expected int"),
        ({"optim": {"betas": [0.9]}}, r"optim.betas: expected 2 items"),
        ({"optim": {"betas": [0.9, "x"]}}, r"optim.betas\[1\]: expected float"),
        ({"tags": {"a": "b"}}, "tags.a: expected int"),
        ({"mode": "medium"}, "mode: 'medium' is not a valid Mode"),
        ({"level": "medium"}, "level: 'medium' is not one of"),
        ({"note": 3}, "note: expected str"),
        ({"optim": 3}, "optim: expected a mapping"),
    ]
    for d, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            from_dict(TrainCfg, d)
    with pytest.raises(TypeError):  # ConfigError is also a TypeError
        from_dict(TrainCfg, {"seed": "1"})


def test_lenient_where_unambiguous() -> None:
    cfg = from_dict(TrainCfg, {"optim": {"lr": 1}, "mode": "FAST", "encoder": {"channels": (4,)}})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.mode is Mode.FAST and cfg.encoder == ConvEnc(channels=(4,))


def test_required_and_validation_errors() -> None:
    with pytest.raises(ConfigError, match=r"missing required field\(s\) \['size'\] for Required"):
        from_dict(Required, {})
    assert from_dict(Required, {"size": 2}) == Required(size=2)
    with pytest.raises(ConfigError, match="Validated.*k must be > 0"):
        from_dict(Validated, {"k": 0})


def test_load_yaml_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  lr: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_yaml(TrainCfg, p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(TrainCfg, p)
    p.write_text("optim:\n  lr: 0.5\n  momentum: 0.9\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: config field optim: unknown key\(s\) \['momentum'\]"):
        load_yaml(TrainCfg, p)
    p.write_text("")
    assert load_yaml(TrainCfg, p) == TrainCfg()
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_yaml(TrainCfg, tmp_path / "nope.yaml")


def test_save_yaml_failure_keeps_old_file(tmp_path: Path) -> None:
    p = save_yaml(TrainCfg(), tmp_path / "c.yaml")
    before = p.read_bytes()

    @dataclass
    class Bad:
        thing: object = field(default_factory=object)

    with pytest.raises(TypeError, match="thing: object is not YAML-serialisable"):
        save_yaml(Bad(), p)
    assert p.read_bytes() == before and sorted(x.name for x in tmp_path.iterdir()) == ["c.yaml"]


def test_diff_configs() -> None:
    a, b = TrainCfg(), TrainCfg()
    assert diff_configs(a, b) == []
    b.optim.lr = 1e-3
    b.encoder = ConvEnc(channels=(16, 64))
    b.tags = {"new": 1}
    assert diff_configs(a, b) == ["encoder.channels[1]", "optim.lr", "tags.new"]
    assert diff_configs(a, b, ignore=["optim", "tags"]) == ["encoder.channels[1]"]
    c = TrainCfg(memory=KVCfg())
    assert "memory.name" in diff_configs(a, c) and "memory.heads" in diff_configs(a, c)
    assert diff_configs(to_dict(a), a) == []  # dicts (e.g. from a checkpoint) compare against dataclasses
    assert diff_configs({"x": 1}, {"x": 1.0}) == [] and diff_configs({"x": 1}, {"x": True}) == ["x"]


def test_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    text = print_config(_tricky())
    out = capsys.readouterr().out
    assert out == text == format_config(_tricky())
    assert out.startswith("# TrainCfg\n") and "lr: 0.30000000000000004" in out and "name: kv" in out
    assert from_dict(TrainCfg, yaml.safe_load(out)) == _tricky()
