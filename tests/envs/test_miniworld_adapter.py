"""MiniWorld adapter: observation contract, units, and the camera convention proved by depth reprojection."""

from __future__ import annotations

import math
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from embodimem import geometry as G
from embodimem.envs.miniworld.headless import miniworld_available

ok, why = miniworld_available()
pytestmark = pytest.mark.skipif(not ok, reason=why)

import embodimem.envs  # noqa: E402,F401
from embodimem.envs.ids_navigation import NAVIGATION_IDS  # noqa: E402
from embodimem.types import Frame  # noqa: E402


@pytest.fixture(scope="module")
def revisit_env():
    env = gym.make("embodimem/Revisit-v0")
    yield env
    env.close()


def _place(env, x: float, z: float, dir_deg: float):
    """Put the agent at (x, z) facing dir_deg and return a fresh observation (privileged test helper)."""
    from embodimem.envs.miniworld.adapter import build_observation

    u = env.unwrapped
    u.agent.pos = np.array([x, 0.0, z])
    u.agent.dir = math.radians(dir_deg)
    return build_observation(u, u.render_obs(), u.instruction)


@pytest.mark.parametrize("env_id", NAVIGATION_IDS)
def test_observation_contract(env_id):
    env = gym.make(env_id)
    obs, info = env.reset(seed=0)
    space = env.observation_space
    for _ in range(3):
        assert space.contains(obs), {k: (np.asarray(v).dtype, np.shape(v)) for k, v in obs.items()}
        assert obs["rgb"].dtype == np.uint8 and obs["rgb"].shape == (64, 64, 3)
        assert obs["depth"].dtype == np.float32 and obs["depth"].shape == (64, 64)
        assert obs["pose"].dtype == np.float32 and obs["intrinsics"].dtype == np.float32
        assert bool(G.is_rigid(torch.from_numpy(obs["pose"]), atol=1e-5))
        assert isinstance(info["is_success"], bool) and info["agent_pos"].shape == (2,)
        Frame.from_obs(obs, t=0, is_first=True)  # the Frame validator accepts it
        obs, _, _, _, info = env.step(env.action_space.sample())
    env.close()


def test_pose_matches_geometry_helpers():
    from embodimem.envs.miniworld.adapter import camera_intrinsics, camera_pose_opencv

    eye, d = np.array([1.0, 1.5, -2.0]), np.array([math.cos(0.7), 0.1, -math.sin(0.7)])
    P = torch.from_numpy(camera_pose_opencv(eye, d)).double()
    ref = G.look_at(torch.tensor(eye), torch.tensor(eye + d), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(P, ref, atol=1e-6, rtol=0)
    f = d / np.linalg.norm(d)  # the gluLookAt camera: [s, u, -f] -> OpenCV via pose_opengl_to_opencv
    s = np.cross(f, [0, 1, 0])
    s /= np.linalg.norm(s)
    gl = torch.eye(4, dtype=torch.float64)
    gl[:3, 0], gl[:3, 1], gl[:3, 2], gl[:3, 3] = map(torch.tensor, (s, np.cross(s, f), -f, eye))
    torch.testing.assert_close(P, G.pose_opengl_to_opencv(gl), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.from_numpy(camera_intrinsics(60.0, 48, 64)),
                               G.intrinsics_from_fov(48, 64, 60.0), atol=1e-4, rtol=0)


def test_world_convention(revisit_env):
    """Camera centre above agent_pos at 1.5 m; optical axis along the heading; image down = world -y."""
    revisit_env.reset(seed=0)
    obs = _place(revisit_env, 2.5, 2.5, 30.0)
    P = obs["pose"]
    np.testing.assert_allclose(P[:3, 3], [2.5, 1.5, 2.5], atol=1e-6)
    np.testing.assert_allclose(P[:3, 2], [math.cos(math.radians(30)), 0, -math.sin(math.radians(30))], atol=1e-6)
    np.testing.assert_allclose(P[:3, 1], [0, -1, 0], atol=1e-6)


def test_depth_is_metric_z(revisit_env):
    """Facing the east wall of room A (x = 5) from x = 2.5: every wall pixel has z-depth 2.5 m."""
    revisit_env.reset(seed=0)
    obs = _place(revisit_env, 2.5, 2.5, 0.0)
    wall = obs["depth"][20:44]  # the middle rows see only the wall (ceiling above, floor out of view)
    np.testing.assert_allclose(wall, 2.5, atol=0.004)
    assert (obs["depth"] > 0).all() and obs["depth"].max() < 4.0


def _bilinear_inverse_depth(depth: torch.Tensor, uv: torch.Tensor):
    """Sample depth [H,W] at continuous uv [N,2] by bilinear interpolation of 1/z (exact on planes)."""
    H, W = depth.shape
    inv = 1.0 / depth.clamp_min(1e-6)
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    x0, y0 = x.floor().long().clamp(0, W - 2), y.floor().long().clamp(0, H - 2)
    fx, fy = (x - x0).clamp(0, 1), (y - y0).clamp(0, 1)
    q = torch.stack([inv[y0, x0], inv[y0, x0 + 1], inv[y0 + 1, x0], inv[y0 + 1, x0 + 1]], 1)
    w = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    smooth = (q.max(1).values - q.min(1).values) <= 0.1 * q.mean(1)  # no depth edge between the 4 pixels
    return 1.0 / (q * w).sum(1), smooth & (q.min(1).values > 0)


def _reprojection_errors(obs_a, obs_b, convert: bool = True):
    K = torch.from_numpy(obs_a["intrinsics"])[None]
    Pa, Pb = torch.from_numpy(obs_a["pose"])[None], torch.from_numpy(obs_b["pose"])[None]
    if not convert:  # negative control: treat the OpenCV pose as if it were the raw OpenGL camera
        Pa, Pb = G.pose_opengl_to_opencv(Pa), G.pose_opengl_to_opencv(Pb)
    pts, valid = G.backproject_depth(torch.from_numpy(obs_a["depth"])[None], K, Pa)
    pts = pts.reshape(1, -1, 3)[:, valid.reshape(-1)]
    uv, z, in_view = G.project_points(pts, torch.from_numpy(obs_b["intrinsics"])[None], Pb, (64, 64))
    uv, z = uv[0][in_view[0]], z[0][in_view[0]]
    zb, ok = _bilinear_inverse_depth(torch.from_numpy(obs_b["depth"]), uv)
    return (zb - z)[ok].abs(), int(in_view.sum())


def test_reprojection_between_frames(revisit_env):
    """Back-project frame A's depth, re-project into a later frame B (two turns, three steps): mm agreement."""
    obs_a, _ = revisit_env.reset(seed=3)
    for a in (1, 1, 2, 2, 2, 0):
        obs_b, *_ = revisit_env.step(a)
    err, n_view = _reprojection_errors(obs_a, obs_b)
    assert n_view > 0.5 * 64 * 64 and len(err) > 1000
    assert float(err.median()) < 0.005, float(err.median())  # a few millimetres (16-bit z-buffer)
    assert float(err.quantile(0.9)) < 0.03
    bad, n_bad = _reprojection_errors(obs_a, obs_b, convert=False)  # without the y/z flip it falls apart
    assert n_bad < 0.1 * n_view or float(bad.median()) > 0.2


def test_reprojection_after_a_revisit():
    """A frame from the start and one after the round trip (the same place, 300 steps later) agree to mm."""
    from embodimem.envs.miniworld.revisit import generate_revisit

    tr = generate_revisit(seed=1)
    assert tr.success and len(tr.revisits) > 0
    i, j = tr.revisits[0]
    a = {k: getattr(tr, k)[i] for k in ("depth", "pose", "intrinsics")}
    b = {k: getattr(tr, k)[j] for k in ("depth", "pose", "intrinsics")}
    err, _ = _reprojection_errors(a, b)
    assert len(err) > 500 and float(err.median()) < 0.005


def test_stock_miniworld_env_through_adapter():
    env = gym.make("embodimem/MiniWorld-v0", env_name="MiniWorld-OneRoom-v0")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["is_success"] is False
    obs, r, term, trunc, info = env.step(2)
    assert "is_success" in info and obs["depth"].shape == (64, 64)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(99)
    env.close()
    with pytest.raises(ValueError, match="unknown MiniWorld env 'MiniWorld-Nope-v0'"):
        gym.make("embodimem/MiniWorld-v0", env_name="MiniWorld-Nope-v0")


def test_headless_errors_name_the_problem(monkeypatch):
    from embodimem.envs.miniworld import headless

    monkeypatch.setattr(headless, "_READY", False)
    monkeypatch.setitem(sys.modules, "miniworld", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "miniworld.miniworld", raising=False)
    with pytest.raises(headless.MiniWorldUnavailable,
                       match="MiniWorld is not installed.*pip install miniworld.*doctor"):
        headless.import_miniworld()


def test_fast_texture_loader_same_texels():
    """The fast loader uploads pyglet's decoded bytes unconverted; MiniWorld's RGBA conversion has the same RGB."""
    from miniworld.utils import get_file_path

    from embodimem.envs.miniworld.textures import texture_bytes

    path = get_file_path("textures", "white_1", "png")
    raw, fmt, w, h = texture_bytes(path)
    import pyglet

    rgba = pyglet.image.load(path).get_image_data().get_data("RGBA", w * 4)
    a = np.frombuffer(raw, np.uint8).reshape(h, w, len(fmt))[..., :3]
    b = np.frombuffer(rgba, np.uint8).reshape(h, w, 4)[..., :3]
    assert fmt in ("RGB", "RGBA") and np.array_equal(a, b)


@pytest.mark.slow
def test_fast_textures_render_identical_frames(tmp_path):
    """MiniWorld's own (slow) texture loader and ours give bit-identical observations."""
    import subprocess

    code = ("import sys, numpy as np, gymnasium as gym, embodimem.envs\n"
            "o, _ = gym.make('embodimem/SignNav-v0').reset(seed=1)\n"
            "np.save(sys.argv[1], o['rgb'])\n")
    out = {}
    for flag in ("0", "1"):
        path = tmp_path / f"rgb{flag}.npy"
        env = {**__import__("os").environ, "EMBODIMEM_MINIWORLD_FAST_TEXTURES": flag}
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env, timeout=300)
        out[flag] = np.load(path)
    assert np.array_equal(out["0"], out["1"])
