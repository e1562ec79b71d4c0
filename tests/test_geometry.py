"""Oracle tests for embodimem.geometry: closed-form cameras, round trips, z-buffer scenes, ray-cast renders."""

from __future__ import annotations

import math

import pytest
import torch

from embodimem import geometry as G

F64 = torch.float64


def rand_rot(n: int, gen: torch.Generator) -> torch.Tensor:
    """Random rotations [n,3,3] (QR of a Gaussian matrix, det fixed to +1)."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=F64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q[:, :, 0] *= torch.sign(torch.linalg.det(q))[:, None]
    return q


def rand_pose(n: int, gen: torch.Generator) -> torch.Tensor:
    return G.make_pose(rand_rot(n, gen), torch.randn(n, 3, generator=gen, dtype=F64) * 2)


def make_K(fx: float, fy: float, cx: float, cy: float, skew: float = 0.0, dtype=F64) -> torch.Tensor:
    return torch.tensor([[fx, skew, cx], [0, fy, cy], [0, 0, 1]], dtype=dtype)


# --------------------------------------------------------------------------- closed-form projections


def test_point_on_optical_axis_projects_to_principal_point() -> None:
    K = make_K(500, 400, 320, 240)[None]
    uv, z, in_view = G.project_points(torch.tensor([[[0.0, 0.0, 2.0]]], dtype=F64), K, None, (480, 640))
    assert torch.allclose(uv, torch.tensor([[[320.0, 240.0]]], dtype=F64))
    assert z.item() == 2.0 and in_view.item()


def test_x_translation_shifts_u_by_fx_tx_over_z() -> None:
    fx, fy, z, tx = 500.0, 400.0, 4.0, 0.3
    K = make_K(fx, fy, 320, 240)[None]
    p = torch.tensor([[[0.2, -0.1, z]]], dtype=F64)
    uv0, _, _ = G.project_points(p, K, torch.eye(4, dtype=F64)[None], (480, 640))
    # Moving the point by +tx moves it right in the image.
    uv1, _, _ = G.project_points(p + torch.tensor([tx, 0, 0], dtype=F64), K, torch.eye(4, dtype=F64)[None], (480, 640))
    assert torch.allclose(uv1 - uv0, torch.tensor([[[fx * tx / z, 0.0]]], dtype=F64))
    # Moving the camera by +tx (camera-to-world translation) moves the point left.
    cam = G.make_pose(torch.eye(3, dtype=F64), torch.tensor([tx, 0, 0], dtype=F64))[None]
    uv2, _, _ = G.project_points(p, K, cam, (480, 640))
    assert torch.allclose(uv2 - uv0, torch.tensor([[[-fx * tx / z, 0.0]]], dtype=F64))


def test_skewed_intrinsics_match_matrix_product() -> None:
    K = make_K(300, 310, 100, 90, skew=7.0)
    p = torch.tensor([[0.3, -0.2, 1.7], [-1.0, 0.5, 3.0]], dtype=F64)
    uv, z = G.project(p[None], K[None])
    hom = p @ K.T
    assert torch.allclose(uv[0], hom[:, :2] / hom[:, 2:], atol=1e-12)
    back = G.unproject(uv, z, K[None])
    assert torch.allclose(back[0], p, atol=1e-12)


def test_look_at_oracle_z_up_world() -> None:
    eye, target, up = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]], dtype=F64)
    pose = G.look_at(eye, target, up)
    expected_R = torch.tensor([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=F64)  # columns: x right, y down, z fwd
    assert torch.allclose(pose[:3, :3], expected_R)
    K = G.intrinsics_from_fov(48, 64, 60.0, dtype=F64)
    above_and_right = torch.tensor([[[5.0, -1.0, 1.0]]], dtype=F64)  # right of +x is -y in a z-up world
    uv, _, in_view = G.project_points(above_and_right, K, pose, (48, 64))
    assert in_view.item() and uv[0, 0, 0] > 32 and uv[0, 0, 1] < 24


def test_look_at_batched_is_rigid_and_centres_target() -> None:
    gen = torch.Generator().manual_seed(0)
    eye = torch.randn(16, 3, generator=gen, dtype=F64)
    target = torch.randn(16, 3, generator=gen, dtype=F64)
    pose = G.look_at(eye, target, torch.tensor([0, 1.0, 0], dtype=F64))
    assert pose.shape == (16, 4, 4) and G.is_rigid(pose).all()
    K = G.intrinsics_from_fov(30, 40, 70.0, dtype=F64).expand(16, 3, 3)
    uv, z, _ = G.project_points(target[:, None], K, pose, (30, 40))
    assert torch.allclose(uv[:, 0], torch.tensor([20.0, 15.0], dtype=F64).expand(16, 2), atol=1e-9)
    assert torch.allclose(z[:, 0], (target - eye).norm(dim=-1))
    with pytest.raises(ValueError, match="parallel"):
        G.look_at(torch.zeros(3), torch.tensor([0, 0, 1.0]), torch.tensor([0, 0, 2.0]))
    with pytest.raises(ValueError, match="coincide"):
        G.look_at(torch.zeros(3), torch.zeros(3), torch.tensor([0, 0, 1.0]))


def test_opengl_pose_conversion() -> None:
    # An identity OpenGL camera looks down world -z with y up: a point above and in front has v < cy.
    pose = G.pose_opengl_to_opencv(torch.eye(4, dtype=F64))
    K = G.intrinsics_from_fov(48, 64, 60.0, dtype=F64)
    uv, z, in_view = G.project_points(torch.tensor([[[0.0, 0.5, -2.0]]], dtype=F64), K, pose, (48, 64))
    assert in_view.item() and z.item() == pytest.approx(2.0) and uv[0, 0, 1] < 24
    assert G.is_rigid(pose)


# --------------------------------------------------------------------------- poses


def test_pose_inverse_and_compose() -> None:
    gen = torch.Generator().manual_seed(1)
    p = rand_pose(32, gen)
    eye = torch.eye(4, dtype=F64).expand(32, 4, 4)
    assert torch.allclose(G.pose_compose(G.pose_inverse(p), p), eye, atol=1e-12)
    assert torch.allclose(G.pose_compose(p, G.pose_inverse(p)), eye, atol=1e-12)
    assert torch.allclose(G.pose_inverse(p), torch.linalg.inv(p), atol=1e-12)
    q = rand_pose(32, gen)
    assert torch.allclose(G.pose_inverse(G.pose_compose(p, q)), G.pose_compose(G.pose_inverse(q), G.pose_inverse(p)))


def test_relative_pose_oracle_and_consistency() -> None:
    rz90 = torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=F64)
    a = G.make_pose(rz90, torch.zeros(3, dtype=F64))
    b = G.make_pose(torch.eye(3, dtype=F64), torch.tensor([1.0, 0, 0], dtype=F64))
    rel = G.relative_pose(a, b)
    # b sits 1 m along world +x, which is camera a's -y axis.
    assert torch.allclose(rel[:3, 3], torch.tensor([0.0, -1.0, 0.0], dtype=F64))
    assert torch.allclose(rel[:3, :3], rz90.T)

    gen = torch.Generator().manual_seed(2)
    a, b = rand_pose(8, gen), rand_pose(8, gen)
    rel = G.relative_pose(a, b)
    assert torch.allclose(G.pose_compose(a, rel), b, atol=1e-12)
    assert torch.allclose(G.relative_pose(a, a), torch.eye(4, dtype=F64).expand(8, 4, 4), atol=1e-12)
    # rel maps b-camera coordinates to a-camera coordinates.
    p_b = torch.randn(8, 5, 3, generator=gen, dtype=F64)
    world = G.transform_points(b, p_b)
    assert torch.allclose(G.transform_points(rel, p_b), G.transform_points(G.pose_inverse(a), world), atol=1e-12)
    trans, rot = G.pose_distance(a, b)
    assert torch.allclose(trans, (a[:, :3, 3] - b[:, :3, 3]).norm(dim=-1))
    assert ((rot >= 0) & (rot <= 180)).all()


def test_pose_distance_oracle() -> None:
    a = torch.eye(4, dtype=F64)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    rz = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=F64)
    b = G.make_pose(rz, torch.tensor([3.0, 4.0, 0.0], dtype=F64))
    trans, rot = G.pose_distance(a, b)
    assert trans.item() == pytest.approx(5.0) and rot.item() == pytest.approx(30.0)


def test_is_rigid_rejects_each_defect() -> None:
    good = torch.eye(4)
    scaled = good.clone()
    scaled[0, 0] = 1.1
    reflect = torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0]))
    shear = good.clone()
    shear[0, 1] = 0.2
    bottom = good.clone()
    bottom[3, 0] = 0.5
    nan = good.clone()
    nan[0, 3] = float("nan")
    poses = torch.stack([good, scaled, reflect, shear, bottom, nan])
    assert G.is_rigid(poses).tolist() == [True, False, False, False, False, False]
    assert G.is_rigid(poses.reshape(2, 3, 4, 4)).shape == (2, 3)


def test_make_pose_and_transform_points_broadcast() -> None:
    gen = torch.Generator().manual_seed(3)
    R = rand_rot(4, gen)
    pose = G.make_pose(R, torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    assert pose.shape == (4, 4, 4) and torch.allclose(pose[:, :3, 3], torch.tensor([1.0, 2, 3], dtype=F64).expand(4, 3))
    pts = torch.randn(4, 2, 5, 3, generator=gen, dtype=F64)
    out = G.transform_points(pose, pts)
    hom = torch.cat([pts, torch.ones_like(pts[..., :1])], -1)
    ref = torch.einsum("bij,bnmj->bnmi", pose, hom)[..., :3]
    assert out.shape == pts.shape and torch.allclose(out, ref)
    shared = G.transform_points(pose[0], pts)  # one [4,4] pose applies to any batch
    assert torch.allclose(shared, G.transform_points(pose[0].expand(4, 4, 4), pts))


# --------------------------------------------------------------------------- intrinsics and pixel centres


def test_intrinsics_from_fov_oracle_and_round_trip() -> None:
    K = G.intrinsics_from_fov(48, 64, 90.0, dtype=F64)
    assert torch.allclose(K, make_K(24, 24, 32, 24))
    fov_x, fov_y = G.intrinsics_to_fov(K, (48, 64))
    assert fov_y.item() == pytest.approx(90.0)
    assert fov_x.item() == pytest.approx(2 * math.degrees(math.atan(32 / 24)))
    Kb = G.intrinsics_from_fov(10, 20, torch.tensor([30.0, 60.0]))
    assert Kb.shape == (2, 3, 3) and Kb.dtype == torch.float32
    with pytest.raises(ValueError, match="fov_y_deg"):
        G.intrinsics_from_fov(10, 10, 180.0)


def test_pixel_centres_are_half_integers_and_symmetric() -> None:
    grid = G.pixel_grid(2, 3)
    assert grid[0, 0].tolist() == [0.5, 0.5] and grid[1, 2].tolist() == [2.5, 1.5]
    # A centred camera (cx = W/2) gives mirror-symmetric rays for columns j and W-1-j.
    K = G.intrinsics_from_fov(6, 8, 60.0, dtype=F64)
    pts, _ = G.backproject_depth(torch.ones(1, 6, 8, dtype=F64), K[None])
    assert torch.allclose(pts[0, :, :, 0], -pts[0, :, :, 0].flip(1))
    assert torch.allclose(pts[0, :, :, 1], -pts[0, :, :, 1].flip(0))
    # Half-pixel convention: resizing scales K uniformly and maps block centres onto pixel centres.
    coarse = G.pixel_grid(6, 8, stride=2, dtype=F64)
    rays = G.unproject(coarse[None], torch.ones(1, 3, 4, dtype=F64), K[None])
    uv, _ = G.project(rays, G.scale_intrinsics(K, 0.5)[None])
    assert torch.allclose(uv[0], G.pixel_grid(3, 4, dtype=F64))


@pytest.mark.parametrize("dtype,atol", [(F64, 1e-9), (torch.float32, 2e-3)])
def test_backproject_then_project_returns_pixel_centres(dtype: torch.dtype, atol: float) -> None:
    gen = torch.Generator().manual_seed(4)
    B, H, W = 3, 12, 16
    K = torch.stack([make_K(20, 22, 8.3, 5.9), make_K(15, 15, 8, 6, skew=0.5), make_K(30, 28, 7.5, 6.5)]).to(dtype)
    pose = rand_pose(B, gen).to(dtype)
    depth = (torch.rand(B, H, W, generator=gen, dtype=F64) * 5 + 0.1).to(dtype)
    pts, valid = G.backproject_depth(depth, K, pose)
    assert pts.shape == (B, H, W, 3) and valid.all()
    uv, z, in_view = G.project_points(pts.reshape(B, -1, 3), K, pose, (H, W))
    grid = G.pixel_grid(H, W, dtype=dtype).reshape(1, -1, 2).expand(B, -1, 2)
    assert torch.allclose(uv, grid, atol=atol)
    assert torch.allclose(z, depth.reshape(B, -1), atol=atol)
    assert in_view.all()


def test_backproject_invalid_depth_is_masked_and_finite() -> None:
    depth = torch.tensor([[[1.0, 0.0], [float("nan"), float("inf")]]])
    pts, valid = G.backproject_depth(depth, G.intrinsics_from_fov(2, 2, 60.0), None)
    assert valid.tolist() == [[[True, False], [False, False]]]
    assert torch.isfinite(pts).all() and pts[0, 0, 0, 2] == 1.0
    assert (pts[~valid] == 0).all()


def test_project_points_in_view_bounds() -> None:
    K = make_K(10, 10, 5, 4)[None]  # image W=10, H=8
    z = 2.0
    # u = 10*x/z + 5: x=-1 -> u=0 (inside), x=1 -> u=10 (outside), behind camera never in view.
    pts = torch.tensor([[[-1.0, 0, z], [1.0, 0, z], [0.9999, 0, z], [0, 0.8, z], [0, 0, -z], [0, 0, 0]]], dtype=F64)
    uv, _, in_view = G.project_points(pts, K, None, (8, 10))
    assert in_view.tolist() == [[True, False, True, False, False, False]]
    assert torch.isfinite(uv).all()


# --------------------------------------------------------------------------- z-buffer visibility


def _zbuffer_scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera at the origin; points are back-projected from chosen pixels so pixel membership is exact."""
    K = G.intrinsics_from_fov(8, 8, 90.0, dtype=F64)[None]
    pix = torch.tensor([[2.5, 3.5], [2.5, 3.5], [6.5, 1.5], [6.5, 1.5], [2.5, 3.5]], dtype=F64)[None]
    depth = torch.tensor([[1.0, 3.0, 2.0, 2.0, 1.0005]], dtype=F64)
    pts = G.unproject(pix, depth, K)
    behind = -0.5 * pts[:, 1:2]  # behind the camera on the same line of sight as the far point
    outside = torch.tensor([[[100.0, 0.0, 1.0]]], dtype=F64)
    return torch.cat([pts, behind, outside], 1), K, torch.eye(4, dtype=F64)[None]


def test_zbuffer_near_point_hides_far_point() -> None:
    pts, K, pose = _zbuffer_scene()
    vis = G.zbuffer_visibility(pts, K, pose, (8, 8), tol=1e-3)
    # near, far (hidden), exact tie x2 (both visible), 0.5 mm behind near (within tol), behind cam, outside.
    assert vis.tolist() == [[True, False, True, True, True, False, False]]
    strict = G.zbuffer_visibility(pts, K, pose, (8, 8), tol=0.0)
    assert strict.tolist() == [[True, False, True, True, False, False, False]]
    perm = torch.randperm(pts.shape[1], generator=torch.Generator().manual_seed(5))
    assert torch.equal(G.zbuffer_visibility(pts[:, perm], K, pose, (8, 8), tol=1e-3), vis[:, perm])


def test_zbuffer_with_depth_map() -> None:
    pts, K, pose = _zbuffer_scene()
    depth = torch.full((1, 8, 8), 2.0, dtype=F64)
    depth[0, 1, 6] = 0.0  # no reading where the tied points land -> not confirmed visible
    vis = G.zbuffer_visibility(pts, K, pose, (8, 8), depth=depth, tol=1e-3)
    assert vis.tolist() == [[True, False, False, False, True, False, False]]
    with pytest.raises(ValueError, match="depth"):
        G.zbuffer_visibility(pts, K, pose, (8, 8), depth=depth[:, :4])


def test_zbuffer_moving_camera_swaps_occluder() -> None:
    # Two points on the world x-axis; cameras on either side looking along the axis see only the nearer one.
    pts = torch.tensor([[[1.0, 0, 0], [2.0, 0, 0]]], dtype=F64).expand(2, 2, 3)
    up = torch.tensor([0, 0, 1.0], dtype=F64)
    eyes = torch.tensor([[-1.0, 0, 0], [4.0, 0, 0]], dtype=F64)
    pose = G.look_at(eyes, torch.tensor([1.5, 0, 0], dtype=F64), up)
    K = G.intrinsics_from_fov(9, 9, 60.0, dtype=F64).expand(2, 3, 3)
    vis = G.zbuffer_visibility(pts, K, pose, (9, 9))
    assert vis.tolist() == [[True, False], [False, True]]


# --------------------------------------------------------------------------- Plücker rays


def test_plucker_properties() -> None:
    gen = torch.Generator().manual_seed(6)
    B, H, W = 2, 5, 7
    K = make_K(6, 6, 3.5, 2.5).expand(B, 3, 3)  # principal point = centre of pixel (2, 3)
    pose = rand_pose(B, gen)
    rays = G.plucker_rays(K, pose, (H, W))
    d, m = rays[..., :3], rays[..., 3:]
    assert rays.shape == (B, H, W, 6)
    assert torch.allclose(d.norm(dim=-1), torch.ones(B, H, W, dtype=F64))
    assert (m * d).sum(-1).abs().max() < 1e-12
    assert torch.allclose(d[:, 2, 3], pose[:, :3, 2], atol=1e-12)  # optical axis in world coords
    assert torch.allclose(m[:, 2, 3], torch.linalg.cross(pose[:, :3, 3], pose[:, :3, 2]), atol=1e-12)
    # Any point on the ray gives the same moment: use back-projected points at random depths.
    depth = torch.rand(B, H, W, generator=gen, dtype=F64) * 4 + 0.5
    p, _ = G.backproject_depth(depth, K, pose)
    assert torch.allclose(torch.linalg.cross(p, d), m, atol=1e-10)
    assert torch.allclose(torch.linalg.cross(p - pose[:, None, None, :3, 3], d), torch.zeros_like(m), atol=1e-10)


def test_plucker_stride_matches_scaled_intrinsics() -> None:
    gen = torch.Generator().manual_seed(7)
    K = make_K(20, 21, 16.2, 11.7).expand(2, 3, 3)
    pose = rand_pose(2, gen)
    coarse = G.plucker_rays(K, pose, (24, 32), stride=4)
    ref = G.plucker_rays(G.scale_intrinsics(K, 0.25), pose, (6, 8))
    assert coarse.shape == (2, 6, 8, 6) and torch.allclose(coarse, ref, atol=1e-12)


# --------------------------------------------------------------------------- batch == per row


def test_batched_equals_per_row() -> None:
    gen = torch.Generator().manual_seed(8)
    B, H, W, P = 4, 6, 9, 50
    K = torch.stack([make_K(8 + i, 9 - i * 0.5, 4.5, 3.0 + 0.1 * i) for i in range(B)])
    pose = rand_pose(B, gen)
    depth = torch.rand(B, H, W, generator=gen, dtype=F64) * 3
    # Points in front of each camera so that some land in view and some collide in pixels.
    lo, hi = torch.tensor([-1.0, -1.0, -0.5], dtype=F64), torch.tensor([1.0, 1.0, 2.5], dtype=F64)
    cam = lo + (hi - lo) * torch.rand(B, P, 3, generator=gen, dtype=F64)
    pts = G.transform_points(pose, cam)
    batched = (
        G.backproject_depth(depth, K, pose)[0],
        G.project_points(pts, K, pose, (H, W))[0],
        G.zbuffer_visibility(pts, K, pose, (H, W), tol=0.05),
        G.zbuffer_visibility(pts, K, pose, (H, W), depth=depth, tol=0.05),
        G.plucker_rays(K, pose, (H, W)),
    )
    for b in range(B):
        s = slice(b, b + 1)
        row = (
            G.backproject_depth(depth[s], K[s], pose[s])[0],
            G.project_points(pts[s], K[s], pose[s], (H, W))[0],
            G.zbuffer_visibility(pts[s], K[s], pose[s], (H, W), tol=0.05),
            G.zbuffer_visibility(pts[s], K[s], pose[s], (H, W), depth=depth[s], tol=0.05),
            G.plucker_rays(K[s], pose[s], (H, W)),
        )
        for full, one in zip(batched, row):
            assert torch.allclose(full[s], one, atol=1e-12) if full.is_floating_point() else torch.equal(full[s], one)
    # The z-buffer case must have exercised both outcomes.
    assert batched[2].any() and not batched[2].all()


# --------------------------------------------------------------------------- ray-cast scene: A's depth seen from B

ROOM = (torch.tensor([-3.0, -3.0, 0.0], dtype=F64), torch.tensor([3.0, 3.0, 3.0], dtype=F64))
CRATE = (torch.tensor([0.5, -0.5, 0.0], dtype=F64), torch.tensor([1.5, 0.5, 1.0], dtype=F64))


def _slabs(o: torch.Tensor, d: torch.Tensor, box: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray/axis-aligned-box slab test: (entry, exit) ray parameters [B,P]."""
    d = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t1, t2 = (box[0] - o) / d, (box[1] - o) / d
    return torch.minimum(t1, t2).amax(-1), torch.maximum(t1, t2).amin(-1)


def render_depth(K: torch.Tensor, pose: torch.Tensor, uv: torch.Tensor, *, centre_offset: float = 0.0) -> torch.Tensor:
    """Analytic z-depth [B,P] of a room with a crate, ray-cast through continuous pixel coords uv [B,P,2].

    Written independently of geometry.unproject: ray = R @ ((u - cx)/fx, (v - cy)/fy, 1), so the ray
    parameter is the z-depth.
    """
    u, v = uv[..., 0] - centre_offset, uv[..., 1] - centre_offset
    x = (u - K[:, None, 0, 2]) / K[:, None, 0, 0]
    y = (v - K[:, None, 1, 2]) / K[:, None, 1, 1]
    ray_cam = torch.stack([x, y, torch.ones_like(u)], -1)
    d = ray_cam @ pose[:, :3, :3].transpose(1, 2)
    o = pose[:, None, :3, 3].expand_as(d)
    _, t_wall = _slabs(o, d, ROOM)  # the camera is inside the room: exit distance
    t_in, t_out = _slabs(o, d, CRATE)
    hit = (t_in <= t_out) & (t_in > 0)
    return torch.where(hit, torch.minimum(t_in, t_wall), t_wall)


def _two_cameras() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    up = torch.tensor([0, 0, 1.0], dtype=F64)
    a = G.look_at(torch.tensor([[-1.5, -1.0, 1.2], [-1.0, 1.5, 1.6]], dtype=F64),
                  torch.tensor([[1.0, 0.3, 0.6], [1.0, -0.5, 0.5]], dtype=F64), up)
    b = a.flip(0)  # stream 0 goes A->B, stream 1 goes B->A
    K = torch.stack([G.intrinsics_from_fov(48, 64, 70.0, dtype=F64), make_K(40, 42, 31.0, 25.0)])
    return K, a, b


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_depth_reprojection_between_views_matches_render(dtype: torch.dtype) -> None:
    K, pose_a, pose_b = _two_cameras()
    H, W = 48, 64
    grid = G.pixel_grid(H, W, dtype=F64).reshape(1, -1, 2).expand(2, -1, 2)
    depth_a = render_depth(K, pose_a, grid).reshape(2, H, W)
    pts, valid = G.backproject_depth(depth_a.to(dtype), K.to(dtype), pose_a.to(dtype))
    assert valid.all()
    uv, z, in_view = G.project_points(pts.reshape(2, -1, 3), K.to(dtype), pose_b.to(dtype), (H, W))
    assert in_view.float().mean() > 0.3
    for b in range(2):
        m = in_view[b]
        truth = render_depth(K[b:b + 1], pose_b[b:b + 1], uv[b:b + 1, m].to(F64))[0]
        err = (z[b, m].to(F64) - truth).abs()
        assert err.median() < 1e-3, f"stream {b}: median error {err.median():.4g} m"
        # Points hidden from B (by the crate) are the only large errors, and always lie behind B's surface.
        assert (err < 1e-3).float().mean() > 0.6
        assert (z[b, m].to(F64) - truth).min() > -1e-3


def test_depth_reprojection_detects_wrong_conventions() -> None:
    # The oracle above has teeth: an OpenGL pose or integer pixel centres break the 1 mm median.
    K, pose_a, pose_b = _two_cameras()
    H, W = 48, 64
    grid = G.pixel_grid(H, W, dtype=F64).reshape(1, -1, 2).expand(2, -1, 2)
    depth_a = render_depth(K, pose_a, grid).reshape(2, H, W)

    def median_err(bp_pose: torch.Tensor, centre_offset: float) -> float:
        depth = render_depth(K, pose_a, grid, centre_offset=centre_offset).reshape(2, H, W)
        pts, _ = G.backproject_depth(depth, K, bp_pose)
        uv, z, in_view = G.project_points(pts.reshape(2, -1, 3), K, pose_b, (H, W))
        if in_view[0].float().mean() < 0.1:
            return math.inf  # the wrong convention threw the scene out of B's view altogether
        truth = render_depth(K[:1], pose_b[:1], uv[:1, in_view[0]])[0]
        return (z[0, in_view[0]] - truth).abs().median().item()

    assert median_err(pose_a, 0.0) < 1e-6
    assert median_err(G.pose_opengl_to_opencv(pose_a), 0.0) > 1e-2  # y up, z backwards
    upside_down = pose_a @ torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=F64))  # x left, y up
    assert median_err(upside_down, 0.0) > 1e-2
    assert median_err(pose_a, 0.5) > 1e-3  # integer pixel centres
    assert depth_a.min() > 0


# --------------------------------------------------------------------------- shape errors


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: G.pose_inverse(torch.eye(3)), "pose"),
        (lambda: G.pose_compose(torch.eye(4), torch.eye(3)), "b"),
        (lambda: G.make_pose(torch.eye(3), torch.zeros(4)), "t"),
        (lambda: G.is_rigid(torch.eye(4, dtype=torch.int64)), "pose"),
        (lambda: G.transform_points(torch.eye(4).expand(2, 4, 4), torch.zeros(3, 5, 3)), "pose"),
        (lambda: G.transform_points(torch.eye(4), torch.zeros(5, 2)), "points"),
        (lambda: G.backproject_depth(torch.ones(1, 4, 4, 1), torch.eye(3)[None]), "depth"),
        (lambda: G.backproject_depth(torch.ones(2, 4, 4), torch.eye(3).expand(3, 3, 3)), "intrinsics"),
        (lambda: G.backproject_depth(torch.ones(2, 4, 4), torch.eye(3), torch.eye(4)[:3]), "pose"),
        (lambda: G.project_points(torch.zeros(1, 5, 2), torch.eye(3), None, (4, 4)), "points"),
        (lambda: G.project_points(torch.zeros(1, 5, 3), torch.eye(3), None, (4,)), "hw"),
        (lambda: G.zbuffer_visibility(torch.zeros(1, 5, 2), torch.eye(3), None, (4, 4)), "points"),
        (lambda: G.zbuffer_visibility(torch.zeros(1, 5, 3), torch.eye(3), None, (4, 4), tol=-1.0), "tol"),
        (lambda: G.plucker_rays(torch.eye(3).expand(2, 3, 3), torch.eye(4).expand(3, 4, 4), (4, 4)), "intrinsics"),
        (lambda: G.plucker_rays(torch.eye(3), torch.eye(4)[None], (4, 4), stride=0), "stride"),
        (lambda: G.unproject(torch.zeros(1, 5, 2), torch.zeros(1, 4), torch.eye(3)), "z"),
        (lambda: G.look_at(torch.zeros(2), torch.ones(3), torch.ones(3)), "eye"),
        (lambda: G.pixel_grid(0, 4), "hw"),
    ],
)
def test_shape_errors_name_the_argument(call, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        call()
