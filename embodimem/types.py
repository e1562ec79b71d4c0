"""``Frame``: one time step of B streams (envs or videos) as batched tensors, validated on construction.

Conventions (DESIGN.md): OpenCV camera (x right, y down, z forward), camera-to-world poses, pixel centres at
(u + 0.5, v + 0.5) -- see ``embodimem.geometry``. A depth of 0 means "no reading" (sky, out of sensor range,
a hole); it is valid input, and ``geometry.backproject_depth`` masks it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from embodimem.geometry import is_rigid

__all__ = ["Frame"]


def _first_bad(bad: Tensor) -> int:
    """Index of the first True along dim 0 of a per-row mask (for error messages)."""
    return int(bad.nonzero()[0, 0])


def _to_tensor(x: Any, name: str) -> Tensor:
    """numpy/torch/sequence -> Tensor. numpy is copied: vector envs reuse their observation buffers."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.array(x, copy=True))
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as e:
        raise ValueError(f"Frame.{name}: cannot convert {type(x).__name__} to a tensor ({e})") from e


def _to_instruction(x: Any, batch: int) -> list[str] | None:
    if x is None:
        return None
    if isinstance(x, (str, bytes)):
        x = [x] * batch  # one string is shared by every stream
    elif isinstance(x, np.ndarray):
        x = x.reshape(-1).tolist()
    else:
        x = list(x)
    return [s.decode() if isinstance(s, bytes) else s for s in x]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Frame:
    """One step of B streams. Build with keywords; use ``dataclasses.replace`` to change fields (re-validates).

    rgb: uint8 [B,H,W,3]. depth: float32 [B,H,W] metres, z along the optical axis, >= 0 (0 = no reading), or None.
    pose: float32 [B,4,4] camera-to-world, rigid, or None. intrinsics: float32 [B,3,3] pinhole
    [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, or None. t: int64 [B] step index (sources that
    index by time document their unit). is_first: bool [B], True on the first step of an episode/video.
    instruction: list of B strings or None. All tensors live on one device.
    """

    rgb: Tensor
    depth: Tensor | None = None
    pose: Tensor | None = None
    intrinsics: Tensor | None = None
    t: Tensor
    is_first: Tensor
    instruction: list[str] | None = None

    # Float32 poses from simulators drift by ~1e-6; 1e-3 still rejects scaled or sheared matrices.
    POSE_ATOL: ClassVar[float] = 1e-3

    def __post_init__(self) -> None:
        if isinstance(self.instruction, tuple):
            object.__setattr__(self, "instruction", list(self.instruction))
        self.validate()

    # ------------------------------------------------------------------ validation

    def _check(self, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
        x = getattr(self, name)
        if not isinstance(x, Tensor):
            raise ValueError(f"Frame.{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dtype != dtype:
            raise ValueError(f"Frame.{name}: expected dtype {dtype}, got {x.dtype}")
        if tuple(x.shape) != shape:
            raise ValueError(f"Frame.{name}: expected shape {list(shape)}, got {list(x.shape)}")
        if x.device != self.rgb.device:
            raise ValueError(f"Frame.{name}: on {x.device} but Frame.rgb is on {self.rgb.device}")
        return x

    def validate(self) -> None:
        """Raise ValueError naming the offending field if any shape, dtype, device or value is wrong."""
        rgb = self.rgb
        if not isinstance(rgb, Tensor):
            raise ValueError(f"Frame.rgb: expected a torch.Tensor, got {type(rgb).__name__}")
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"Frame.rgb: expected shape [B,H,W,3], got {list(rgb.shape)}")
        if rgb.dtype != torch.uint8:
            raise ValueError(f"Frame.rgb: expected dtype torch.uint8, got {rgb.dtype}")
        B, H, W = rgb.shape[:3]
        if H == 0 or W == 0:
            raise ValueError(f"Frame.rgb: empty image {H}x{W}")

        self._check("t", torch.int64, (B,))
        self._check("is_first", torch.bool, (B,))

        if self.depth is not None:
            d = self._check("depth", torch.float32, (B, H, W))
            finite = torch.isfinite(d).flatten(1).all(1)
            if not bool(finite.all()):
                bad = _first_bad(~finite)
                raise ValueError(f"Frame.depth: non-finite values in row {bad} (use 0 for 'no reading')")
            if bool((d < 0).any()):
                raise ValueError(f"Frame.depth: negative values in row {_first_bad((d < 0).flatten(1).any(1))}")

        if self.pose is not None:
            p = self._check("pose", torch.float32, (B, 4, 4))
            bad = ~is_rigid(p, atol=self.POSE_ATOL)
            if bool(bad.any()):
                raise ValueError(
                    f"Frame.pose: row {_first_bad(bad)} is not a rigid camera-to-world transform (rotation must be"
                    f" orthonormal with det +1 and the last row [0,0,0,1], atol={self.POSE_ATOL})"
                )

        if self.intrinsics is not None:
            K = self._check("intrinsics", torch.float32, (B, 3, 3))
            finite = torch.isfinite(K).flatten(1).all(1)
            if not bool(finite.all()):
                raise ValueError(f"Frame.intrinsics: non-finite values in row {_first_bad(~finite)}")
            focal_ok = (K[:, 0, 0] > 0) & (K[:, 1, 1] > 0)
            if not bool(focal_ok.all()):
                raise ValueError(f"Frame.intrinsics: non-positive focal length (fx, fy) in row {_first_bad(~focal_ok)}")
            last = K.new_tensor([[0.0, 0.0, 1.0]])
            lower_ok = (K[:, 1, 0] == 0) & (K[:, 2] == last).all(1)
            if not bool(lower_ok.all()):
                raise ValueError(
                    f"Frame.intrinsics: row {_first_bad(~lower_ok)} is not [[fx,s,cx],[0,fy,cy],[0,0,1]]"
                )

        if self.instruction is not None:
            ins = self.instruction
            if not isinstance(ins, list) or not all(isinstance(s, str) for s in ins):
                raise ValueError(f"Frame.instruction: expected a list of str or None, got {type(ins).__name__}")
            if len(ins) != B:
                raise ValueError(f"Frame.instruction: expected {B} strings (one per row), got {len(ins)}")

    # ------------------------------------------------------------------ helpers

    @property
    def batch_size(self) -> int:
        """B, the number of streams."""
        return int(self.rgb.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        """(H, W) image size in pixels."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])

    @property
    def device(self) -> torch.device:
        """Device every tensor lives on."""
        return self.rgb.device

    def _tensor_fields(self) -> dict[str, Tensor | None]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "instruction"}

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Frame:
        """Copy of the frame with every tensor on ``device``."""
        kw = {k: None if v is None else v.to(device, non_blocking=non_blocking)
              for k, v in self._tensor_fields().items()}
        return Frame(**kw, instruction=self.instruction)

    def index(self, rows: Tensor) -> Frame:
        """Frame of the selected rows: rows int64 [K] (any order, repeats allowed) or a bool mask [B]."""
        if not isinstance(rows, Tensor):
            rows = torch.as_tensor(rows)
        if rows.dtype == torch.bool:
            if tuple(rows.shape) != (self.batch_size,):
                raise ValueError(f"Frame.index: bool mask of shape {list(rows.shape)} for B={self.batch_size}")
            rows = rows.nonzero()[:, 0]
        if rows.ndim != 1 or rows.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"Frame.index: expected int64 [K] or bool [B] rows, got {rows.dtype} {list(rows.shape)}")
        rows = rows.to(self.device, torch.int64)
        if rows.numel() and bool(((rows < -self.batch_size) | (rows >= self.batch_size)).any()):
            raise ValueError(f"Frame.index: row index out of range for B={self.batch_size}")
        kw = {k: None if v is None else v.index_select(0, rows % max(self.batch_size, 1))
              for k, v in self._tensor_fields().items()}
        ins = None if self.instruction is None else [self.instruction[i] for i in rows.tolist()]
        return Frame(**kw, instruction=ins)

    @staticmethod
    def cat(frames: Sequence[Frame]) -> Frame:
        """Concatenate frames of the same image size along B; optional fields must be present in all or none."""
        if not frames:
            raise ValueError("Frame.cat: no frames")
        kw: dict[str, Any] = {}
        for name in frames[0]._tensor_fields():
            vals = [getattr(f, name) for f in frames]
            present = [v is not None for v in vals]
            if any(present) and not all(present):
                raise ValueError(f"Frame.{name}: present in some frames and None in others; cannot cat")
            if all(present):
                shapes = {tuple(v.shape[1:]) for v in vals}
                if len(shapes) != 1:
                    raise ValueError(f"Frame.{name}: per-row shapes differ across frames: {sorted(shapes)}")
            kw[name] = torch.cat(vals, 0) if all(present) else None
        ins = [f.instruction for f in frames]
        if any(i is None for i in ins) and not all(i is None for i in ins):
            raise ValueError("Frame.instruction: present in some frames and None in others; cannot cat")
        kw["instruction"] = None if ins[0] is None else [s for i in ins for s in i]
        return Frame(**kw)

    @classmethod
    def from_obs(
        cls, obs: Mapping[str, Any], *, t: Any, is_first: Any, device: torch.device | str | None = None
    ) -> Frame:
        """Build from a gymnasium obs dict (keys rgb, depth, pose, intrinsics, instruction; numpy or torch).

        Arrays are batched ([B,H,W,3] rgb) or, if rgb is [H,W,3], a single unbatched observation. Depth may be
        [B,H,W,1]. Float fields are cast to float32; t and is_first may be scalars (broadcast to B). Numpy inputs
        are copied; a single instruction string is used for every row.
        """
        if "rgb" not in obs:
            raise ValueError("Frame.rgb: observation has no 'rgb' key")
        rgb = _to_tensor(obs["rgb"], "rgb")
        unbatched = rgb.ndim == 3
        if unbatched:
            rgb = rgb.unsqueeze(0)
        B = rgb.shape[0] if rgb.ndim else 0

        def get(key: str) -> Tensor | None:
            if obs.get(key) is None:
                return None
            x = _to_tensor(obs[key], key)
            x = x.unsqueeze(0) if unbatched else x
            if key == "depth" and not x.is_floating_point():
                # Integer depth is usually millimetres; a silent cast would be off by 1000x.
                raise ValueError(f"Frame.depth: expected floating metres, got {x.dtype}; convert units first")
            return x.float()

        depth = get("depth")
        if depth is not None and depth.ndim == 4 and depth.shape[-1] == 1:
            depth = depth[..., 0]

        def per_row(x: Any, dtype: torch.dtype, name: str) -> Tensor:
            x = _to_tensor(x, name).to(dtype)
            return x.expand(B).clone() if x.ndim == 0 else x.reshape(-1) if unbatched else x

        frame = cls(
            rgb=rgb,
            depth=depth,
            pose=get("pose"),
            intrinsics=get("intrinsics"),
            t=per_row(t, torch.int64, "t"),
            is_first=per_row(is_first, torch.bool, "is_first"),
            instruction=_to_instruction(obs.get("instruction"), B),
        )
        return frame if device is None else frame.to(device)

    def __repr__(self) -> str:
        opt = [n for n in ("depth", "pose", "intrinsics", "instruction") if getattr(self, n) is not None]
        return f"Frame(B={self.batch_size}, hw={self.hw}, device={self.device}, with={opt})"
