"""Any transformers vision model from a LOCAL directory (ViT, CLIP, SigLIP, DINOv2 families).

Loaded with ``from_pretrained(path, local_files_only=True)``; a path that is not an existing directory (e.g.
a hub name) raises ValueError at once, before transformers is even imported. embodimem never downloads.

Tokens: the patch tokens of the last hidden state (or of ``hidden_states[layer]``) in row-major (h, w)
order. Prefix tokens (CLS, DINOv2 registers, DeiT distillation) are dropped from ``tokens``; CLS is what
``pooled`` holds for the families that have one. Norms follow the family: ViT/DINOv2/SigLIP last hidden
states are after the final LayerNorm, CLIP's are before ``post_layernorm``.

pooled ("auto"): CLIP -> pooler_output (post-LayerNorm CLS, before the projection to the joint space);
SigLIP -> pooler_output (attention-pool head, already the joint-space embedding) or the token mean if the
model has no head; DINOv2 -> pooler_output (LayerNorm'd CLS); ViT/DeiT -> CLS of the last hidden state
(ViT's tanh pooler is untrained in many checkpoints); others -> pooler_output, else CLS, else mean.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from embodimem.perception import register_encoder
from embodimem.perception.base import (
    CLIP_MEAN,
    CLIP_STD,
    HALF_MEAN,
    HALF_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    EncoderConfig,
    EncoderOutput,
    FrozenMixin,
    Size,
    as_rgb_batch,
    force_hf_offline,
    pair,
    preprocess,
)

POOLS = ("auto", "cls", "mean", "pooler")
# model_type of config.json -> (transformers class name loading the vision tower, default mean, std).
# Full CLIP/SigLIP checkpoints load only their vision tower (text weights are skipped).
_FAMILIES: dict[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    "clip": ("CLIPVisionModel", CLIP_MEAN, CLIP_STD),
    "clip_vision_model": ("CLIPVisionModel", CLIP_MEAN, CLIP_STD),
    "siglip": ("SiglipVisionModel", HALF_MEAN, HALF_STD),
    "siglip_vision_model": ("SiglipVisionModel", HALF_MEAN, HALF_STD),
    "vit": ("ViTModel", HALF_MEAN, HALF_STD),
    "deit": ("DeiTModel", IMAGENET_MEAN, IMAGENET_STD),
    "dinov2": ("Dinov2Model", IMAGENET_MEAN, IMAGENET_STD),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", IMAGENET_MEAN, IMAGENET_STD),
}
_NO_POOLER_LAYER = ("vit", "deit")  # built with add_pooling_layer=False: pooled = CLS


@dataclass
class HFVisionEncoderConfig(EncoderConfig):
    """path: local directory written by ``save_pretrained`` (config.json + weights);
    image_size/mean/std: None reads preprocessor_config.json, then the model config / family defaults;
    center_crop: crop frames to the target aspect instead of stretching; pool: auto|cls|mean|pooler;
    layer: hidden state used for tokens (-1 = last); freeze: no gradients, backbone kept in eval mode."""

    path: str = ""
    image_size: int | tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    center_crop: bool = False
    pool: str = "auto"
    layer: int = -1
    freeze: bool = False

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"HFVisionEncoderConfig.pool must be one of {POOLS}, got {self.pool!r}")


def check_local_dir(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is a local model directory, else raise ValueError (no network)."""
    if not str(path):
        raise ValueError("HF vision encoder needs path=<local model directory>")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ValueError(
            f"{str(path)!r} is not an existing local directory. embodimem never downloads weights: save the "
            f"model once where the hub is reachable (e.g. `huggingface-cli download {path} --local-dir DIR` or "
            f"`AutoModel.from_pretrained(...).save_pretrained(DIR)`) and pass that local directory as path=DIR.")
    if not (p / "config.json").is_file():
        raise ValueError(f"{str(p)!r} has no config.json: pass a directory written by save_pretrained")
    return p


def _read_json(p: Path) -> dict[str, Any]:
    return json.loads(p.read_text()) if p.is_file() else {}


def _size_from_processor(pp: dict[str, Any]) -> Size | None:
    """The (H, W) the saved image processor feeds the model: crop_size if it crops, else size."""
    size = pp.get("crop_size") if pp.get("do_center_crop") else None
    size = size or pp.get("size")
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return (int(size["height"]), int(size["width"]))
        if "shortest_edge" in size:
            return (int(size["shortest_edge"]),) * 2
    return None


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report while loading: we check missing weights ourselves."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def load_vision_model(path: str | Path) -> tuple[torch.nn.Module, str]:
    """(vision model in eval mode, model_type) from a local directory; missing weights raise."""
    p = check_local_dir(path)
    force_hf_offline()
    model_type = _read_json(p / "config.json").get("model_type", "")
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f"HF vision encoders need transformers: pip install 'embodimem[hf]' ({err})") from err
    cls_name = _FAMILIES.get(model_type, ("AutoModel",))[0]
    kw = {"add_pooling_layer": False} if model_type in _NO_POOLER_LAYER else {}
    with _quiet_transformers():
        model, info = getattr(transformers, cls_name).from_pretrained(
            str(p), local_files_only=True, output_loading_info=True, **kw)
    if info.get("missing_keys"):
        raise ValueError(f"{p} is missing weights for {cls_name}: {sorted(info['missing_keys'])[:8]}...")
    if cls_name == "AutoModel" and hasattr(model, "vision_model"):  # e.g. a dual encoder: keep the image tower
        model = model.vision_model
    return model.eval(), model_type


@register_encoder("hf")
class HFVisionEncoder(FrozenMixin, Encoder):
    """uint8 [B,H,W,3] -> patch tokens [B,h*w,hidden], pooled [B,hidden], grid (h, w) = image_size // patch."""

    config_class = HFVisionEncoderConfig

    def __init__(self, config: HFVisionEncoderConfig | None = None, **kw: Any):
        config = config or HFVisionEncoderConfig(**kw)
        super().__init__(config)
        self.backbone, self.model_type = load_vision_model(config.path)
        vcfg = getattr(self.backbone.config, "vision_config", self.backbone.config)
        self.dim = int(vcfg.hidden_size)
        self.patch = pair(vcfg.patch_size)
        native = pair(vcfg.image_size)
        pp = _read_json(Path(config.path).expanduser() / "preprocessor_config.json")
        _, mean, std = _FAMILIES.get(self.model_type, ("", IMAGENET_MEAN, IMAGENET_STD))
        mean, std = pp.get("image_mean") or mean, pp.get("image_std") or std
        if pp.get("do_normalize") is False:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        self.image_size: Size = pair(config.image_size or _size_from_processor(pp) or native)
        self.mean = tuple(config.mean or mean)
        self.std = tuple(config.std or std)
        # ViT/CLIP/SigLIP only resample their position embeddings when asked; DINOv2 always does.
        params = inspect.signature(self.backbone.forward).parameters
        self._forward_kw: dict[str, Any] = {}
        if self.image_size != native and "interpolate_pos_encoding" in params:
            self._forward_kw["interpolate_pos_encoding"] = True
        self.frozen = False
        if config.freeze:
            self.freeze_backbone()

    def grid_for(self, image_size: int | Size | None = None) -> tuple[int, int]:
        """Frames are always resized to self.image_size, so the grid is fixed."""
        return self.image_size[0] // self.patch[0], self.image_size[1] // self.patch[1]

    def pixels(self, rgb: Any) -> torch.Tensor:
        """uint8 [B,H,W,3] (or Frame-like) -> pixel_values float [B,3,H',W'] as the model expects them."""
        dtype = next(self.backbone.parameters()).dtype
        return preprocess(as_rgb_batch(rgb), self.image_size, self.mean, self.std, center_crop=self.config.center_crop,
                          device=self.device, dtype=dtype)

    def _encode(self, rgb: torch.Tensor, source: Any) -> EncoderOutput:
        c = self.config
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.backbone(pixel_values=self.pixels(rgb), output_hidden_states=c.layer != -1,
                                **self._forward_kw)
        hidden = out.last_hidden_state if c.layer == -1 else out.hidden_states[c.layer]
        h, w = self.grid_for()
        n_prefix = hidden.shape[1] - h * w
        if n_prefix < 0:
            raise RuntimeError(f"{self.model_type}: {hidden.shape[1]} tokens for a {h}x{w} patch grid")
        tokens = hidden[:, n_prefix:]
        return EncoderOutput(tokens, self._pool(out, hidden, tokens, n_prefix), (h, w))

    def _pool(self, out: Any, hidden: torch.Tensor, tokens: torch.Tensor, n_prefix: int) -> torch.Tensor:
        pool = self.config.pool
        pooler = getattr(out, "pooler_output", None)
        if pool == "auto":
            if self.model_type in _NO_POOLER_LAYER:
                pool = "cls"
            elif pooler is not None and self.config.layer == -1:
                pool = "pooler"
            else:
                pool = "cls" if n_prefix > 0 else "mean"
        if pool == "pooler":
            if pooler is None:
                raise ValueError(f"{self.model_type} returns no pooler_output; use pool='cls' or 'mean'")
            return pooler
        if pool == "cls":
            if n_prefix == 0:
                raise ValueError(f"{self.model_type} has no CLS token; use pool='mean' or 'pooler'")
            return hidden[:, 0]
        return tokens.mean(dim=1)
