"""The encoder contract: ``EncoderOutput``, ``EncoderConfig``, the ``Encoder`` base class and batched
preprocessing helpers (uint8 validation, antialiased resize, normalisation), all in torch on the batch."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Per-channel RGB statistics of images scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF_MEAN = (0.5, 0.5, 0.5)  # maps [0, 1] to [-1, 1]; used by SigLIP, Google ViT, EfficientNet-Lite
HALF_STD = (0.5, 0.5, 0.5)

Size = tuple[int, int]


@dataclass
class EncoderOutput:
    """tokens: float [B,N,D]; pooled: float [B,D]; grid: (h, w) with h*w == N when tokens are the cells of
    a spatial feature map (row-major), else None."""

    tokens: torch.Tensor
    pooled: torch.Tensor
    grid: tuple[int, int] | None = None

    def map(self, fn) -> EncoderOutput:
        """Apply ``fn`` to both tensors (index rows, move device, detach)."""
        return EncoderOutput(fn(self.tokens), fn(self.pooled), self.grid)


@dataclass
class EncoderConfig:
    """Base of every encoder config; ``name`` is set by ``register_encoder``."""

    name: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict including ``name`` (tuples become lists for YAML/JSON)."""
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
        return {"name": self.name, **d}


class Encoder(nn.Module):
    """Base frame encoder: ``forward(rgb)`` / ``encode(rgb)`` with rgb uint8 [B,H,W,3] (or an object with an
    ``.rgb`` attribute such as ``Frame``) -> ``EncoderOutput``. Subclasses set ``dim`` and implement
    ``_encode(rgb_uint8, source)`` and ``grid_for(hw)``."""

    config_class: ClassVar[type[EncoderConfig]] = EncoderConfig
    name: ClassVar[str] = ""
    dim: int

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config

    # -- public API -------------------------------------------------------------------------------------
    def forward(self, rgb: Any, **kw: Any) -> EncoderOutput:
        """uint8 [B,H,W,3] (or Frame-like) -> EncoderOutput(tokens [B,N,D], pooled [B,D], grid)."""
        return self._encode(as_rgb_batch(rgb), rgb, **kw)

    def encode(self, rgb: Any, **kw: Any) -> EncoderOutput:
        """Alias of calling the module (hooks run)."""
        return self(rgb, **kw)

    def grid_for(self, image_size: int | Size | None = None) -> tuple[int, int] | None:
        """Token grid (h, w) for frames of ``image_size`` (H, W); None if tokens are not a spatial map."""
        raise NotImplementedError

    def num_tokens(self, image_size: int | Size | None = None) -> int:
        """N for frames of ``image_size`` (H, W); None means the encoder's fixed input size."""
        grid = self.grid_for(image_size)
        if grid is None:
            raise NotImplementedError(f"{type(self).__name__} must override num_tokens")
        return grid[0] * grid[1]

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    # -- for subclasses ---------------------------------------------------------------------------------
    def _encode(self, rgb: torch.Tensor, source: Any, **kw: Any) -> EncoderOutput:
        raise NotImplementedError


class FrozenMixin:
    """For wrappers of pretrained backbones: when ``self.frozen`` the backbone stays in eval mode (BatchNorm
    statistics and dropout fixed) even if the parent module is put in train mode."""

    frozen: bool
    backbone: nn.Module

    def freeze_backbone(self) -> None:
        """Stop gradients into the backbone and pin it to eval mode."""
        self.frozen = True
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True):  # type: ignore[override]
        nn.Module.train(self, mode)  # type: ignore[arg-type]
        if self.frozen:
            self.backbone.eval()
        return self


# ---------------------------------------------------------------------------------------------------------
# Validation and preprocessing (batched, in torch)
# ---------------------------------------------------------------------------------------------------------


def as_rgb_batch(x: Any) -> torch.Tensor:
    """Return the uint8 [B,H,W,3] tensor held by ``x`` (a tensor, numpy array or object with ``.rgb``)."""
    if hasattr(x, "rgb") and not isinstance(x, (torch.Tensor, np.ndarray)):
        x = x.rgb
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected rgb as a uint8 torch.Tensor [B,H,W,3] (or an object with .rgb), "
                        f"got {type(x).__name__}")
    if x.dtype != torch.uint8:
        hint = " (floats in [0,1]? convert with (x * 255).round().to(torch.uint8))" if x.is_floating_point() else ""
        raise TypeError(f"expected rgb dtype torch.uint8 [B,H,W,3], got {x.dtype}{hint}")
    if x.dim() != 4:
        hint = " (a single frame? add a batch dim with rgb[None])" if x.dim() == 3 else ""
        raise ValueError(f"expected rgb of rank 4 [B,H,W,3], got rank {x.dim()} shape {tuple(x.shape)}{hint}")
    if x.shape[-1] != 3:
        hint = " (channels-first? use rgb.permute(0, 2, 3, 1))" if x.shape[1] == 3 else ""
        raise ValueError(f"expected 3 RGB channels last [B,H,W,3], got shape {tuple(x.shape)}{hint}")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"expected a non-empty image [B,H,W,3], got shape {tuple(x.shape)}")
    return x


def pair(size: int | Sequence[int]) -> Size:
    """``224 -> (224, 224)``; ``(h, w)`` unchanged."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def to_float(rgb: torch.Tensor, device: torch.device | None = None, dtype: torch.dtype = torch.float32,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float [B,3,H,W] in [0, 1] (moved as uint8 first: 4x less to copy).

    ``memory_format``: contiguous NCHW by default (some pretrained backbones take a much slower path on a
    channels-last input); ``torch.channels_last`` keeps the frame's own layout, no transpose copy."""
    if device is not None:
        rgb = rgb.to(device, non_blocking=True)
    return rgb.permute(0, 3, 1, 2).to(dtype, memory_format=memory_format).div_(255.0)


def center_crop_to_aspect(x: torch.Tensor, aspect_hw: Size) -> torch.Tensor:
    """Crop float [B,C,H,W] centrally to the aspect ratio of ``aspect_hw`` (H, W)."""
    H, W = x.shape[-2:]
    th, tw = aspect_hw
    if H * tw > W * th:  # too tall
        h = max(1, round(W * th / tw))
        top = (H - h) // 2
        return x[..., top : top + h, :]
    w = max(1, round(H * tw / th))
    left = (W - w) // 2
    return x[..., :, left : left + w]


def resize(x: torch.Tensor, size: int | Size, center_crop: bool = False) -> torch.Tensor:
    """float [B,C,H,W] -> [B,C,h,w] by antialiased bilinear interpolation (no-op at the same size);
    ``center_crop`` first crops to the target aspect ratio instead of stretching."""
    size = pair(size)
    if center_crop:
        x = center_crop_to_aspect(x, size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel on float [B,C,H,W]."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def preprocess(rgb: torch.Tensor, size: int | Size | None, mean: Sequence[float], std: Sequence[float], *,
               center_crop: bool = False, device: torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B,H,W,3] -> normalised float [B,3,h,w] (resized to ``size`` unless None)."""
    x = to_float(rgb, device)
    if size is not None:
        x = resize(x, size, center_crop)
    return normalize(x, mean, std).to(dtype)


def spatial_to_tokens(fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """float [B,D,h,w] -> (tokens [B,h*w,D] row-major, pooled mean [B,D], grid (h, w))."""
    B, D, h, w = fmap.shape
    tokens = fmap.flatten(2).transpose(1, 2)
    return tokens, tokens.mean(dim=1), (h, w)


def force_hf_offline() -> None:
    """Make huggingface_hub/transformers offline unless the user chose otherwise: embodimem never downloads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pretrained_import_error(what: str, err: ImportError) -> ImportError:
    """ImportError telling the user which extra to install."""
    return ImportError(f"{what} needs the pretrained extra: pip install 'embodimem[pretrained]' ({err})")
