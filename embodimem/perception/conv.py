"""A small conv net trained from scratch: stride-2 3x3 convs + GroupNorm + SiLU, then a 1x1 projection.

Tokens are the cells of the final feature map (a 64x64 frame with depth=4 gives a 4x4 grid). GroupNorm,
not BatchNorm, so row i of the output never depends on the other rows, in train mode too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from embodimem.perception import register_encoder
from embodimem.perception.base import (
    Encoder,
    EncoderConfig,
    EncoderOutput,
    Size,
    pair,
    resize,
    spatial_to_tokens,
    to_float,
)


@dataclass
class ConvEncoderConfig(EncoderConfig):
    """dim: token width D; width: channels of the first layer (doubling per layer, capped at dim);
    depth: number of stride-2 layers; image_size: resize frames to (H, W) first, None keeps their size;
    use_depth: add a 4th input channel from ``Frame.depth`` (metres), clipped to [0, max_depth]."""

    dim: int = 128
    width: int = 32
    depth: int = 4
    image_size: int | tuple[int, int] | None = None
    use_depth: bool = False
    max_depth: float = 10.0
    groups: int = 8

    def __post_init__(self) -> None:
        for field in ("dim", "width", "depth", "groups"):
            if getattr(self, field) < 1:
                raise ValueError(f"ConvEncoderConfig.{field} must be >= 1, got {getattr(self, field)}")
        if self.max_depth <= 0:
            raise ValueError(f"ConvEncoderConfig.max_depth must be > 0 metres, got {self.max_depth}")


@register_encoder("conv")
class ConvEncoder(Encoder):
    """uint8 [B,H,W,3] (+ optional depth [B,H,W] metres) -> tokens [B,h*w,dim], pooled mean [B,dim], grid."""

    config_class = ConvEncoderConfig

    def __init__(self, config: ConvEncoderConfig | None = None, **kw: Any):
        config = config or ConvEncoderConfig(**kw)
        super().__init__(config)
        self.dim = config.dim
        c_in = 4 if config.use_depth else 3
        layers: list[nn.Module] = []
        for i in range(config.depth):
            c_out = min(config.width * 2**i, max(config.dim, config.width))
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                       nn.GroupNorm(math.gcd(config.groups, c_out), c_out), nn.SiLU()]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, config.dim, 1)  # linear tokens: no activation after the last layer

    def grid_for(self, image_size: int | Size | None = None) -> tuple[int, int]:
        """(h, w) of the final map: each stride-2 layer maps a side s to ceil(s / 2)."""
        size = self.config.image_size if self.config.image_size is not None else image_size
        if size is None:
            raise ValueError("ConvEncoder keeps the frame size (config.image_size=None): pass image_size=(H, W)")
        h, w = pair(size)
        for _ in range(self.config.depth):
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    def _encode(self, rgb: torch.Tensor, source: Any, depth: torch.Tensor | None = None) -> EncoderOutput:
        dtype = self.proj.weight.dtype
        # channels-last: 1.1-1.6x faster forward + backward on one CPU thread at 32-128 px than contiguous NCHW
        x = to_float(rgb, self.device, dtype, memory_format=torch.channels_last) * 2.0 - 1.0  # [-1, 1]
        if self.config.use_depth:
            if depth is None:
                depth = getattr(source, "depth", None)
            x = torch.cat([x, self._depth_channel(depth, rgb.shape[:3]).to(x)], dim=1)
        if self.config.image_size is not None:
            x = resize(x, self.config.image_size)
        tokens, pooled, grid = spatial_to_tokens(self.proj(self.body(x)))
        return EncoderOutput(tokens, pooled, grid)

    def _depth_channel(self, depth: torch.Tensor | None, bhw: torch.Size) -> torch.Tensor:
        """float [B,H,W] metres -> [B,1,H,W] in [-1, 1]; +inf (no return) reads as max_depth."""
        if depth is None:
            raise ValueError("ConvEncoder(use_depth=True) needs depth: pass depth=[B,H,W] metres "
                             "or a Frame with .depth")
        if not isinstance(depth, torch.Tensor) or not depth.is_floating_point():
            got = getattr(depth, "dtype", type(depth).__name__)
            raise TypeError(f"depth must be a float tensor [B,H,W] in metres, got {got}")
        if depth.dim() == 4 and depth.shape[-1] == 1:
            depth = depth[..., 0]
        if tuple(depth.shape) != tuple(bhw):
            raise ValueError(f"depth shape {tuple(depth.shape)} does not match rgb [B,H,W] = {tuple(bhw)}")
        if torch.isnan(depth).any():
            raise ValueError("depth contains NaN")
        if (depth < 0).any():
            raise ValueError("depth contains negative values (expected metres along the optical axis)")
        d = depth.to(self.device).clamp(max=self.config.max_depth)  # clamp also maps +inf to max_depth
        return (d / self.config.max_depth * 2.0 - 1.0).unsqueeze(1)
