"""Tests for embodimem.types.Frame: validation names the bad field, helpers keep rows aligned."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from embodimem import geometry as G
from embodimem.types import Frame

B, H, W = 3, 4, 5


def fields(**over: Any) -> dict[str, Any]:
    """Keyword arguments of a valid Frame with every optional field, with overrides."""
    gen = torch.Generator().manual_seed(0)
    eyes = torch.randn(B, 3, generator=gen)
    kw: dict[str, Any] = dict(
        rgb=torch.randint(0, 256, (B, H, W, 3), dtype=torch.uint8, generator=gen),
        depth=torch.rand(B, H, W, generator=gen) + 0.5,
        pose=G.look_at(eyes, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])),
        intrinsics=G.intrinsics_from_fov(H, W, 60.0).expand(B, 3, 3).clone(),
        t=torch.arange(B, dtype=torch.int64),
        is_first=torch.tensor([True, False, False]),
        instruction=["go to the red door", "find the key", "stop"],
    )
    kw.update(over)
    return kw


def _edit(name: str, fn) -> Any:
    x = fields()[name].clone()
    fn(x)
    return x


def test_valid_frame_and_properties() -> None:
    f = Frame(**fields())
    assert f.batch_size == B and f.hw == (H, W) and f.device == torch.device("cpu")
    assert "B=3" in repr(f) and "depth" in repr(f)
    minimal = Frame(rgb=torch.zeros(2, H, W, 3, dtype=torch.uint8), t=torch.zeros(2, dtype=torch.int64),
                    is_first=torch.ones(2, dtype=torch.bool))
    assert minimal.depth is None and minimal.pose is None and minimal.instruction is None


def test_zero_depth_means_no_reading_and_is_accepted() -> None:
    Frame(**fields(depth=_edit("depth", lambda d: d[1, 2].zero_())))


def test_float32_pose_noise_is_accepted() -> None:
    pose = fields()["pose"] + 1e-6 * torch.randn(B, 4, 4, generator=torch.Generator().manual_seed(1))
    pose[:, 3] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    Frame(**fields(pose=pose))


def _set(idx, value):
    def fn(x: torch.Tensor) -> None:
        x[idx] = value
    return fn


BAD = {
    "rgb not a tensor": ("rgb", np.zeros((B, H, W, 3), np.uint8)),
    "rgb float": ("rgb", torch.zeros(B, H, W, 3)),
    "rgb no channel dim": ("rgb", torch.zeros(B, H, W, dtype=torch.uint8)),
    "rgb 4 channels": ("rgb", torch.zeros(B, H, W, 4, dtype=torch.uint8)),
    "t int32": ("t", torch.zeros(B, dtype=torch.int32)),
    "t wrong length": ("t", torch.zeros(B + 1, dtype=torch.int64)),
    "is_first int": ("is_first", torch.zeros(B, dtype=torch.int64)),
    "depth float64": ("depth", torch.ones(B, H, W, dtype=torch.float64)),
    "depth wrong hw": ("depth", torch.ones(B, H, W + 1)),
    "depth channel dim": ("depth", torch.ones(B, H, W, 1)),
    "depth nan": ("depth", _edit("depth", _set((2, 1, 1), float("nan")))),
    "depth inf": ("depth", _edit("depth", _set((0, 0, 0), float("inf")))),
    "depth negative": ("depth", _edit("depth", _set((1, 3, 4), -0.1))),
    "pose wrong shape": ("pose", torch.eye(4)[:3].expand(B, 3, 4).clone()),
    "pose wrong batch": ("pose", torch.eye(4).expand(B + 1, 4, 4).clone()),
    "pose float64": ("pose", torch.eye(4, dtype=torch.float64).expand(B, 4, 4).clone()),
    "pose scaled": ("pose", _edit("pose", lambda p: p[1, :3, :3].mul_(1.01))),
    "pose reflection": ("pose", _edit("pose", lambda p: p[2, :3, 0].neg_())),
    "pose sheared": ("pose", _edit("pose", lambda p: p[0, :3, 1].add_(p[0, :3, 0] * 0.1))),
    "pose last row": ("pose", _edit("pose", _set((1, 3, 2), 0.5))),
    "pose nan": ("pose", _edit("pose", _set((0, 0, 3), float("nan")))),
    "intrinsics zero fx": ("intrinsics", _edit("intrinsics", _set((1, 0, 0), 0.0))),
    "intrinsics negative fy": ("intrinsics", _edit("intrinsics", _set((2, 1, 1), -5.0))),
    "intrinsics last row": ("intrinsics", _edit("intrinsics", _set((0, 2, 2), 2.0))),
    "intrinsics lower triangle": ("intrinsics", _edit("intrinsics", _set((0, 1, 0), 0.3))),
    "intrinsics nan": ("intrinsics", _edit("intrinsics", _set((0, 0, 2), float("nan")))),
    "intrinsics wrong shape": ("intrinsics", torch.eye(3)),
    "instruction too short": ("instruction", ["a", "b"]),
    "instruction not str": ("instruction", ["a", 2, "c"]),
    "instruction bare str": ("instruction", "go"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_naming_the_field(case: str) -> None:
    name, value = BAD[case]
    with pytest.raises(ValueError, match=rf"Frame\.{name}"):
        Frame(**fields(**{name: value}))


def test_error_reports_the_bad_row() -> None:
    pose = torch.eye(4).expand(64, 4, 4).clone()
    pose[37, 0, 0] = 2.0
    with pytest.raises(ValueError, match="row 37"):
        Frame(rgb=torch.zeros(64, 2, 2, 3, dtype=torch.uint8), pose=pose, t=torch.zeros(64, dtype=torch.int64),
              is_first=torch.zeros(64, dtype=torch.bool))


def test_frozen_and_replace_revalidates() -> None:
    f = Frame(**fields())
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.depth = None  # type: ignore[misc]
    assert dataclasses.replace(f, depth=None).depth is None
    with pytest.raises(ValueError, match=r"Frame\.t"):
        dataclasses.replace(f, t=torch.zeros(B))


def test_index_keeps_rows_aligned() -> None:
    f = Frame(**fields())
    g = f.index(torch.tensor([2, 0, 2]))
    assert g.batch_size == 3 and g.instruction == ["stop", "go to the red door", "stop"]
    for name in ("rgb", "depth", "pose", "intrinsics", "t", "is_first"):
        assert torch.equal(getattr(g, name), getattr(f, name)[[2, 0, 2]])
    m = f.index(torch.tensor([False, True, True]))
    assert m.t.tolist() == [1, 2] and m.instruction == ["find the key", "stop"]
    assert f.index(torch.tensor([-1])).t.tolist() == [2]
    assert f.index(torch.zeros(0, dtype=torch.int64)).batch_size == 0
    with pytest.raises(ValueError, match="out of range"):
        f.index(torch.tensor([3]))
    with pytest.raises(ValueError, match="bool mask"):
        f.index(torch.tensor([True]))


def test_cat_and_to() -> None:
    f = Frame(**fields())
    g = Frame.cat([f, f.index(torch.tensor([1]))])
    assert g.batch_size == B + 1 and g.instruction[-1] == "find the key"
    assert torch.equal(g.pose[-1], f.pose[1])
    with pytest.raises(ValueError, match=r"Frame\.depth"):
        Frame.cat([f, dataclasses.replace(f, depth=None)])
    with pytest.raises(ValueError, match=r"Frame\.instruction"):
        Frame.cat([f, dataclasses.replace(f, instruction=None)])
    with pytest.raises(ValueError, match=r"Frame\.rgb"):
        Frame.cat([f, Frame(**fields(rgb=torch.zeros(B, H + 1, W, 3, dtype=torch.uint8), depth=None))])
    h = f.to("cpu")
    assert torch.equal(h.depth, f.depth) and h.instruction == f.instruction


def test_from_obs_numpy_batched() -> None:
    ref = fields()
    obs = {
        "rgb": ref["rgb"].clone().numpy(),
        "depth": ref["depth"].double().numpy()[..., None],  # [B,H,W,1] float64, as some envs emit
        "pose": ref["pose"].double().numpy(),
        "intrinsics": ref["intrinsics"].numpy(),
        "instruction": np.array(ref["instruction"], dtype=object),
        "goal": np.zeros(B),  # task-specific keys are ignored
    }
    f = Frame.from_obs(obs, t=7, is_first=np.array([True, False, True]))
    assert f.depth.dtype == torch.float32 and f.depth.shape == (B, H, W)
    assert f.pose.dtype == torch.float32 and torch.allclose(f.pose, ref["pose"])
    assert f.t.tolist() == [7, 7, 7] and f.is_first.tolist() == [True, False, True]
    assert f.instruction == ref["instruction"]
    obs["rgb"][:] = 0  # vector envs reuse observation buffers: the frame must own its data
    assert torch.equal(f.rgb, ref["rgb"])


def test_from_obs_torch_unbatched_and_partial() -> None:
    rgb = torch.zeros(H, W, 3, dtype=torch.uint8)
    f = Frame.from_obs({"rgb": rgb, "instruction": "open the drawer"}, t=torch.tensor(4), is_first=True)
    assert f.batch_size == 1 and f.depth is None and f.pose is None and f.instruction == ["open the drawer"]
    assert f.t.dtype == torch.int64 and f.t.tolist() == [4]
    # Video-like source: rgb only, per-row t.
    g = Frame.from_obs({"rgb": torch.zeros(2, H, W, 3, dtype=torch.uint8), "depth": None}, t=[3, 9], is_first=[0, 1])
    assert g.t.tolist() == [3, 9] and g.is_first.tolist() == [False, True] and g.depth is None
    with pytest.raises(ValueError, match=r"Frame\.depth"):
        Frame.from_obs({"rgb": rgb, "depth": np.ones((H, W), np.uint16)}, t=0, is_first=True)
    with pytest.raises(ValueError, match=r"Frame\.rgb"):
        Frame.from_obs({"depth": np.ones((1, H, W))}, t=0, is_first=True)
    with pytest.raises(ValueError, match=r"Frame\.pose"):
        Frame.from_obs({"rgb": rgb, "pose": np.eye(4) * 2}, t=0, is_first=True)
