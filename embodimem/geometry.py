"""Camera geometry in pure torch: rigid poses, pinhole projection, back-projection, visibility, Plücker rays.

Conventions (see DESIGN.md), used by every function here:

- Camera frame: OpenCV, x right, y down, z forward. World frame: right-handed, no preferred up axis
  (``look_at`` takes ``up`` explicitly).
- Poses are camera-to-world 4x4 ``[[R, t], [0, 1]]``: ``x_world = R @ x_cam + t``. The camera centre is
  ``t`` and the optical axis in world coordinates is ``R[:, 2]``. Translations are in metres.
- Pixel centres: pixel (row i, column j) covers the continuous square ``[j, j+1) x [i, i+1)`` and its
  centre is ``(u, v) = (j + 0.5, i + 0.5)``. Projection returns continuous ``(u, v)``; the pixel that
  contains a point is ``(floor(v), floor(u))``; a centred principal point is ``(W/2, H/2)``; resizing an
  image by a factor s scales fx, fy, cx and cy all by s (no half-pixel correction).
- Depth is z along the optical axis (not the distance along the ray), in metres; 0 means "no reading".
- ``relative_pose(a, b) = inverse(a) @ b``: the pose of camera b expressed in camera a's frame, i.e. the
  map from b-camera coordinates to a-camera coordinates, so that ``b == a @ relative_pose(a, b)``.

Batching: a pose/intrinsics argument has batch dims ``[*b]`` (often just ``[B]``) or none (one camera
shared by the batch); point-like arguments carry the same ``[*b]`` first, then any number of point dims.
Functions are differentiable where the maths is (everything except masks and the z-buffer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "OPENGL_TO_OPENCV",
    "backproject_depth",
    "intrinsics_from_fov",
    "intrinsics_to_fov",
    "is_rigid",
    "look_at",
    "make_pose",
    "pixel_grid",
    "plucker_rays",
    "pose_compose",
    "pose_distance",
    "pose_inverse",
    "pose_opengl_to_opencv",
    "project",
    "project_points",
    "relative_pose",
    "scale_intrinsics",
    "transform_points",
    "unproject",
    "zbuffer_visibility",
]

# Right-multiplying an OpenGL camera-to-world pose (x right, y up, z backward) by this flips y and z.
OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


# --------------------------------------------------------------------------- argument checks


def _tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def _square(x: object, n: int, name: str) -> Tensor:
    """Check a float [..., n, n] tensor."""
    x = _tensor(x, name)
    if x.ndim < 2 or tuple(x.shape[-2:]) != (n, n):
        raise ValueError(f"{name}: expected shape [..., {n}, {n}], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype, got {x.dtype}")
    return x


def _vectors(x: object, n: int, name: str) -> Tensor:
    """Check a float [..., n] tensor."""
    x = _tensor(x, name)
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(f"{name}: expected shape [..., {n}], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype, got {x.dtype}")
    return x


def _hw(hw: Sequence[int]) -> tuple[int, int]:
    if len(hw) != 2 or any(int(s) != s or s <= 0 for s in hw):
        raise ValueError(f"hw: expected (H, W) positive ints, got {hw!r}")
    return int(hw[0]), int(hw[1])


def _batch_of(mat: Tensor, x: Tensor, name: str, xname: str) -> Tensor:
    """Expand an unbatched [n,n] ``mat`` to x's leading dims, or check that its batch dims lead x."""
    bs = mat.shape[:-2]
    if len(bs) == 0:
        return mat
    if x.ndim < len(bs) or tuple(x.shape[: len(bs)]) != tuple(bs):
        raise ValueError(f"{name}: batch dims {tuple(bs)} do not lead {xname} of shape {tuple(x.shape)}")
    return mat


def _flatten_points(mat: Tensor, pts: Tensor, c: int) -> Tensor:
    """Reshape [*b, *n, c] to [*b, N, c] where [*b] are mat's batch dims."""
    return pts.reshape(*mat.shape[:-2], -1, c)


# --------------------------------------------------------------------------- poses


def make_pose(R: Tensor, t: Tensor) -> Tensor:
    """Rigid pose from rotation R [...,3,3] and translation t [...,3] (metres) -> [...,4,4] (broadcast)."""
    R, t = _square(R, 3, "R"), _vectors(t, 3, "t")
    bs = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    out = torch.zeros(*bs, 4, 4, dtype=torch.promote_types(R.dtype, t.dtype), device=R.device)
    out[..., :3, :3] = R
    out[..., :3, 3] = t
    out[..., 3, 3] = 1.0
    return out


def pose_inverse(pose: Tensor) -> Tensor:
    """Inverse of rigid poses [...,4,4] in closed form (R^T, -R^T t); assumes the pose is rigid."""
    pose = _square(pose, 4, "pose")
    Rt = pose[..., :3, :3].transpose(-1, -2)
    return make_pose(Rt, -(Rt @ pose[..., :3, 3:4])[..., 0])


def pose_compose(a: Tensor, b: Tensor) -> Tensor:
    """Composition a @ b of poses [...,4,4] (broadcast): apply b first, then a."""
    return _square(a, 4, "a") @ _square(b, 4, "b")


def relative_pose(a: Tensor, b: Tensor) -> Tensor:
    """Pose of camera b in camera a's frame, inverse(a) @ b [...,4,4]; maps b-camera to a-camera coords."""
    return pose_compose(pose_inverse(a), b)


def is_rigid(pose: Tensor, atol: float = 1e-4) -> Tensor:
    """Bool [...]: finite, R^T R = I and det R > 0 within atol, last row [0,0,0,1] within atol."""
    pose = _square(pose, 4, "pose")
    R = pose[..., :3, :3]
    eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
    ortho = ((R.transpose(-1, -2) @ R - eye).abs() <= atol).flatten(-2).all(-1)
    last = pose.new_tensor([0.0, 0.0, 0.0, 1.0])
    bottom = ((pose[..., 3, :] - last).abs() <= atol).all(-1)
    finite = torch.isfinite(pose).flatten(-2).all(-1)
    # Orthonormal already gives |det| = 1, so the sign separates rotations from reflections.
    return finite & ortho & bottom & (torch.linalg.det(R) > 0)


def pose_distance(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Distance between poses [...,4,4]: (translation metres [...], rotation angle degrees [...])."""
    rel = relative_pose(a, b)
    trans = rel[..., :3, 3].norm(dim=-1)
    trace = rel[..., 0, 0] + rel[..., 1, 1] + rel[..., 2, 2]
    cos = ((trace - 1.0) / 2.0).clamp(-1.0, 1.0)
    return trans, torch.rad2deg(torch.acos(cos))


def pose_opengl_to_opencv(pose: Tensor) -> Tensor:
    """Convert camera-to-world poses [...,4,4] from an OpenGL camera (y up, z back) to OpenCV (y down, z fwd)."""
    pose = _square(pose, 4, "pose")
    return pose @ OPENGL_TO_OPENCV.to(dtype=pose.dtype, device=pose.device)


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """OpenCV camera-to-world pose [...,4,4] at eye [...,3] looking at target [...,3], image-up along up [...,3]."""
    eye, target, up = (_vectors(v, 3, n) for v, n in ((eye, "eye"), (target, "target"), (up, "up")))
    eye, target, up = torch.broadcast_tensors(eye, target, up)
    fwd = target - eye
    fwd_norm = fwd.norm(dim=-1, keepdim=True)
    if bool((fwd_norm <= 1e-9).any()):
        raise ValueError("look_at: eye and target coincide")
    z = fwd / fwd_norm
    # Image "down" is -up, and x = y x z for a right-handed camera frame, so x = z x up.
    x = torch.linalg.cross(z, up)
    x_norm = x.norm(dim=-1, keepdim=True)
    if bool((x_norm <= 1e-9 * up.norm(dim=-1, keepdim=True).clamp_min(1e-30)).any()):
        raise ValueError("look_at: up is zero or parallel to the viewing direction")
    x = x / x_norm
    y = torch.linalg.cross(z, x)
    return make_pose(torch.stack([x, y, z], dim=-1), eye)


def transform_points(pose: Tensor, points: Tensor) -> Tensor:
    """Apply poses [*b,4,4] (or [4,4]) to points [*b,*n,3] -> [*b,*n,3] (same units as the translation)."""
    pose, points = _square(pose, 4, "pose"), _vectors(points, 3, "points")
    pose = _batch_of(pose, points, "pose", "points").to(points.dtype)
    flat = _flatten_points(pose, points, 3)
    out = flat @ pose[..., :3, :3].transpose(-1, -2) + pose[..., None, :3, 3]
    return out.reshape(points.shape)


# --------------------------------------------------------------------------- pinhole model


def intrinsics_from_fov(
    h: int, w: int, fov_y_deg: float | Tensor, *, dtype: torch.dtype = torch.float32, device=None
) -> Tensor:
    """Pinhole K [3,3] (or [*fov.shape,3,3]) with square pixels, vertical FOV in degrees, centre (W/2, H/2)."""
    h, w = _hw((h, w))
    fov = torch.as_tensor(fov_y_deg, dtype=torch.float64, device=device)
    if not bool(((fov > 0) & (fov < 180)).all()):
        raise ValueError(f"fov_y_deg: expected values in (0, 180) degrees, got {fov_y_deg!r}")
    f = (h / 2.0) / torch.tan(torch.deg2rad(fov) / 2.0)
    K = torch.zeros(*fov.shape, 3, 3, dtype=torch.float64, device=device)
    K[..., 0, 0] = f
    K[..., 1, 1] = f
    K[..., 0, 2] = w / 2.0
    K[..., 1, 2] = h / 2.0
    K[..., 2, 2] = 1.0
    return K.to(dtype)


def intrinsics_to_fov(K: Tensor, hw: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Full field of view (fov_x_deg [...], fov_y_deg [...]) of intrinsics [...,3,3] for an image of size hw."""
    K = _square(K, 3, "intrinsics")
    h, w = _hw(hw)
    fov_x = 2.0 * torch.rad2deg(torch.atan((w / 2.0) / K[..., 0, 0]))
    fov_y = 2.0 * torch.rad2deg(torch.atan((h / 2.0) / K[..., 1, 1]))
    return fov_x, fov_y


def scale_intrinsics(K: Tensor, sx: float, sy: float | None = None) -> Tensor:
    """Intrinsics [...,3,3] for the image resized by (sx, sy) (pixel-centre convention: plain scaling)."""
    K = _square(K, 3, "intrinsics")
    sy = sx if sy is None else sy
    scale = K.new_tensor([sx, sy, 1.0])[:, None]
    return K * scale


def pixel_grid(
    h: int, w: int, stride: int = 1, *, dtype: torch.dtype = torch.float32, device=None
) -> Tensor:
    """Continuous (u, v) centres [H//stride, W//stride, 2] of stride x stride pixel blocks (pixels if stride=1)."""
    h, w = _hw((h, w))
    if int(stride) != stride or stride < 1 or stride > min(h, w):
        raise ValueError(f"stride: expected an int in [1, min(H, W)], got {stride!r}")
    u = (torch.arange(w // stride, dtype=dtype, device=device) + 0.5) * stride
    v = (torch.arange(h // stride, dtype=dtype, device=device) + 0.5) * stride
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def project(points_cam: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Camera-frame points [*b,*n,3] (metres), K [*b,3,3] -> (uv [*b,*n,2] pixels, z [*b,*n] metres).

    uv is undefined (but finite) where z <= 0.
    """
    points_cam, K = _vectors(points_cam, 3, "points"), _square(K, 3, "intrinsics")
    K = _batch_of(K, points_cam, "intrinsics", "points").to(points_cam.dtype)
    p = _flatten_points(K, points_cam, 3)
    z = p[..., 2]
    zs = torch.where(z > 0, z, torch.ones_like(z))  # keep uv finite behind the camera
    x, y = p[..., 0] / zs, p[..., 1] / zs
    fx, s, cx = K[..., 0, 0, None], K[..., 0, 1, None], K[..., 0, 2, None]
    fy, cy = K[..., 1, 1, None], K[..., 1, 2, None]
    uv = torch.stack([fx * x + s * y + cx, fy * y + cy], dim=-1)
    return uv.reshape(*points_cam.shape[:-1], 2), z.reshape(points_cam.shape[:-1])


def unproject(uv: Tensor, z: Tensor, K: Tensor) -> Tensor:
    """Pixels uv [*b,*n,2], z-depth [*b,*n] metres, K [*b,3,3] -> camera-frame points [*b,*n,3] metres."""
    uv, K = _vectors(uv, 2, "uv"), _square(K, 3, "intrinsics")
    z = _tensor(z, "z")
    if tuple(z.shape) != tuple(uv.shape[:-1]):
        raise ValueError(f"z: expected shape {tuple(uv.shape[:-1])} to match uv, got {tuple(z.shape)}")
    K = _batch_of(K, uv, "intrinsics", "uv").to(uv.dtype)
    q = _flatten_points(K, uv, 2)
    fx, s, cx = K[..., 0, 0, None], K[..., 0, 1, None], K[..., 0, 2, None]
    fy, cy = K[..., 1, 1, None], K[..., 1, 2, None]
    # Closed-form inverse of an upper-triangular K (more accurate than linalg.inv in float32).
    y = (q[..., 1] - cy) / fy
    x = (q[..., 0] - cx - s * y) / fx
    ray = torch.stack([x, y, torch.ones_like(x)], dim=-1).reshape(*uv.shape[:-1], 3)
    return ray * z.to(uv.dtype)[..., None]


# --------------------------------------------------------------------------- depth maps and visibility


def backproject_depth(
    depth: Tensor, intrinsics: Tensor, pose: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Depth [B,H,W] metres, K [B,3,3], pose [B,4,4] or None -> (points [B,H,W,3] world/camera, valid [B,H,W]).

    Pixel (i, j) is cast through its centre (j + 0.5, i + 0.5). valid = finite depth > 0; invalid pixels are
    back-projected with depth 0 (the camera centre) so the output stays finite. pose=None keeps camera coords.
    """
    depth = _tensor(depth, "depth")
    if depth.ndim != 3 or not depth.is_floating_point():
        raise ValueError(f"depth: expected float [B,H,W], got {depth.dtype} {tuple(depth.shape)}")
    K = _batch_of(_square(intrinsics, 3, "intrinsics"), depth, "intrinsics", "depth")
    B, H, W = depth.shape
    valid = torch.isfinite(depth) & (depth > 0)
    z = torch.where(valid, depth, torch.zeros_like(depth))
    grid = pixel_grid(H, W, dtype=depth.dtype, device=depth.device).expand(B, H, W, 2)
    pts = unproject(grid, z, K.expand(B, 3, 3))
    if pose is not None:
        pose = _batch_of(_square(pose, 4, "pose"), depth, "pose", "depth")
        pts = transform_points(pose.expand(B, 4, 4), pts)
    return pts, valid


def project_points(
    points: Tensor, intrinsics: Tensor, pose: Tensor | None, hw: Sequence[int]
) -> tuple[Tensor, Tensor, Tensor]:
    """World points [B,P,3], K [B,3,3], camera-to-world pose [B,4,4] or None (points in camera frame), (H, W)
    -> (uv [B,P,2] pixels, z [B,P] metres, in_view bool [B,P]: z > 0 and 0 <= u < W and 0 <= v < H)."""
    points = _vectors(points, 3, "points")
    if points.ndim < 2:
        raise ValueError(f"points: expected shape [B,P,3], got {tuple(points.shape)}")
    H, W = _hw(hw)
    cam = points if pose is None else transform_points(pose_inverse(_square(pose, 4, "pose")), points)
    uv, z = project(cam, intrinsics)
    u, v = uv[..., 0], uv[..., 1]
    in_view = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    return uv, z, in_view


def zbuffer_visibility(
    points: Tensor,
    intrinsics: Tensor,
    pose: Tensor | None,
    hw: Sequence[int],
    depth: Tensor | None = None,
    tol: float = 1e-3,
) -> Tensor:
    """Visible bool [B,P] for world points [B,P,3] seen by camera (K [B,3,3], pose [B,4,4]) in an (H, W) image.

    Without ``depth``: a z-buffer over the points themselves; a point is visible if it is in view and its z
    is within ``tol`` metres of the nearest z in its pixel, so exact ties (and near-ties within tol) are all
    visible. With ``depth`` [B,H,W]: visible if in view, the pixel has a reading (> 0) and
    z <= depth + tol. Points behind the camera or outside the image are never visible.
    """
    points = _vectors(points, 3, "points")
    if points.ndim != 3:
        raise ValueError(f"points: expected shape [B,P,3], got {tuple(points.shape)}")
    if tol < 0:
        raise ValueError(f"tol: expected >= 0 metres, got {tol}")
    B, P, _ = points.shape
    H, W = _hw(hw)
    uv, z, in_view = project_points(points, intrinsics, pose, (H, W))
    uv = torch.where(in_view[..., None], uv, torch.zeros_like(uv))  # no overflow in the long cast below
    col = uv[..., 0].floor().long().clamp_(0, W - 1)
    row = uv[..., 1].floor().long().clamp_(0, H - 1)
    pix = row * W + col
    if depth is None:
        inf = torch.full_like(z, math.inf)
        zbuf = torch.full((B, H * W), math.inf, dtype=z.dtype, device=z.device)
        zbuf = zbuf.scatter_reduce(1, pix, torch.where(in_view, z, inf), reduce="amin", include_self=True)
        ref = zbuf.gather(1, pix)
        return in_view & (z <= ref + tol)
    depth = _tensor(depth, "depth")
    if tuple(depth.shape) != (B, H, W):
        raise ValueError(f"depth: expected shape {(B, H, W)}, got {tuple(depth.shape)}")
    d = depth.reshape(B, H * W).to(z.dtype).gather(1, pix)
    return in_view & (d > 0) & (z <= d + tol)


def plucker_rays(intrinsics: Tensor, pose: Tensor, hw: Sequence[int], stride: int = 1) -> Tensor:
    """Plücker embedding [B,H//stride,W//stride,6] = (unit direction d, moment o x d) of pixel rays in world frame.

    With stride > 1 the ray goes through the centre of each stride x stride block, which matches a feature map
    of that stride (equivalently: plucker_rays(scale_intrinsics(K, 1/stride), pose, hw // stride)).
    """
    K, pose = _square(intrinsics, 3, "intrinsics"), _square(pose, 4, "pose")
    if K.ndim == 2 and pose.ndim == 3:  # one camera model shared by the batch
        K = K.expand(pose.shape[0], 3, 3)
    if K.ndim != 3 or pose.ndim != 3 or K.shape[0] != pose.shape[0]:
        raise ValueError(
            f"intrinsics/pose: expected [B,3,3] and [B,4,4], got {tuple(K.shape)} and {tuple(pose.shape)}"
        )
    H, W = _hw(hw)
    B = K.shape[0]
    dtype = torch.promote_types(K.dtype, pose.dtype)
    grid = pixel_grid(H, W, stride, dtype=dtype, device=K.device)
    h2, w2 = grid.shape[:2]
    grid = grid.expand(B, h2, w2, 2)
    dirs = unproject(grid, torch.ones(B, h2, w2, dtype=dtype, device=K.device), K.to(dtype))
    R = pose[:, :3, :3].to(dtype)
    d = torch.nn.functional.normalize(dirs.reshape(B, -1, 3) @ R.transpose(-1, -2), dim=-1)
    o = pose[:, None, :3, 3].to(dtype).expand_as(d)
    m = torch.linalg.cross(o, d)
    return torch.cat([d, m], dim=-1).reshape(B, h2, w2, 6)
