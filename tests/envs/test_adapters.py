"""Optional simulator adapters: conversions tested without the simulators, env smoke tests where installed.

Every conversion test builds its input by hand from the simulator's documented convention and checks it through
embodimem's own geometry (a point straight ahead projects to the image centre at the right depth, image-up is
world-up, poses are rigid), so a sign error in any adapter fails here even where the simulator is absent.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from embodimem.envs import make_env
from embodimem.envs.adapters import common, habitat, maniskill, memory_maze, minerl, vizdoom
from embodimem.geometry import is_rigid, project_points


def _project(pose: np.ndarray, K: np.ndarray, point, hw) -> tuple[np.ndarray, float]:
    pts = torch.tensor(np.asarray(point, np.float64)[None, None])
    K, pose = torch.tensor(K, dtype=torch.float64)[None], torch.tensor(pose, dtype=torch.float64)[None]
    uv, z, _ = project_points(pts, K, pose, hw)
    return uv[0, 0].numpy(), float(z[0, 0])


def _assert_camera(pose, K, hw, forward, up, eye):
    """A point 2 m along ``forward`` from ``eye`` is at the image centre, 2 m deep; a point above is higher."""
    assert bool(is_rigid(torch.tensor(pose, dtype=torch.float64), atol=1e-5))
    eye, forward, up = (np.asarray(v, np.float64) for v in (eye, forward, up))
    uv, z = _project(pose, K, eye + 2 * forward, hw)
    np.testing.assert_allclose(uv, [hw[1] / 2, hw[0] / 2], atol=1e-4)
    assert z == pytest.approx(2.0, abs=1e-6)
    uv_up, _ = _project(pose, K, eye + 2 * forward + 0.3 * up, hw)
    assert uv_up[1] < hw[0] / 2 - 1  # world-up appears higher in the image (smaller row)


# ------------------------------------------------------------------ common


def test_old_gym_api_conversion():
    obs, r, term, trunc, info = common.old_gym_step(("o", 1, True, {"TimeLimit.truncated": True, "x": 1}))
    assert (obs, r, term, trunc, info) == ("o", 1.0, False, True, {"x": 1})
    assert common.old_gym_step(("o", 0.5, True, {}))[2:4] == (True, False)
    assert common.old_gym_step(("o", 0.5, False, False, {"a": 2})) == ("o", 0.5, False, False, {"a": 2})
    assert common.old_gym_reset("obs") == ("obs", {})
    assert common.old_gym_reset(("obs", {"k": 1})) == ("obs", {"k": 1})
    with pytest.raises(ValueError, match="4-tuple"):
        common.old_gym_step(("o", 1, True))


def test_quaternion_and_discrete_checks():
    np.testing.assert_allclose(common.quat_wxyz_to_matrix([1, 0, 0, 0]), np.eye(3))
    c = np.cos(np.pi / 4)
    R = common.quat_wxyz_to_matrix([c, 0, c, 0])  # +90 degrees about y: x -> -z
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 0, -1], atol=1e-12)
    with pytest.raises(ValueError, match="zero"):
        common.quat_wxyz_to_matrix([0, 0, 0, 0])
    assert common.check_discrete_action(np.int64(2), 3, "x") == 2
    for bad in (3, -1, 1.5, True, "a", np.array([1])):
        with pytest.raises(ValueError, match=r"outside the action space Discrete\(3\)"):
            common.check_discrete_action(bad, 3, "x")
    with pytest.raises(ImportError, match="Install: pip install nothing-here"):
        common.require("embodimem_no_such_module", package="nothing-here", how="pip install nothing-here")


# ------------------------------------------------------------------ habitat


def test_habitat_sensor_pose_and_intrinsics():
    K = habitat.habitat_intrinsics(90.0, 48, 64)
    assert K[0, 0] == pytest.approx(32.0) and K[1, 1] == pytest.approx(32.0) and K[1, 2] == 24
    eye = [1.0, 1.5, -2.0]
    # identity rotation: habitat's camera looks down -z with +y up
    _assert_camera(habitat.habitat_sensor_pose(eye, [1, 0, 0, 0]), K, (48, 64), [0, 0, -1], [0, 1, 0], eye)
    # yaw +90 degrees (counter-clockwise seen from above): now looking down -x
    q = habitat.yaw_quaternion(np.pi / 2)
    _assert_camera(habitat.habitat_sensor_pose(eye, q), K, (48, 64), [-1, 0, 0], [0, 1, 0], eye)

    class NpQuat:  # numpy-quaternion exposes w, x, y, z
        w, x, y, z = q

    np.testing.assert_allclose(habitat.habitat_sensor_pose(eye, NpQuat()), habitat.habitat_sensor_pose(eye, q))
    with pytest.raises(ValueError, match="hfov"):
        habitat.habitat_intrinsics(180.0, 8, 8)


def test_habitat_depth_and_pointgoal():
    d = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    np.testing.assert_allclose(habitat.habitat_depth_to_metres(d[..., None]), d)
    np.testing.assert_allclose(habitat.habitat_depth_to_metres(d, normalized=True, min_depth=0.5, max_depth=5.0),
                               [[0.0, 2.75], [5.0, 1.625]])
    with pytest.raises(ValueError, match="max_depth"):
        habitat.habitat_depth_to_metres(d, normalized=True, min_depth=2.0, max_depth=1.0)
    pos, ident = np.zeros(3), [1, 0, 0, 0]
    np.testing.assert_allclose(habitat.pointgoal_polar(pos, ident, [0, 0, -3]), [3, 0], atol=1e-6)  # ahead
    np.testing.assert_allclose(habitat.pointgoal_polar(pos, ident, [-2, 0, 0]), [2, np.pi / 2], atol=1e-6)  # left
    np.testing.assert_allclose(habitat.pointgoal_polar(pos, ident, [2, 0, 0]), [2, -np.pi / 2], atol=1e-6)  # right
    # after turning left 90 degrees, the goal that was on the left is straight ahead
    np.testing.assert_allclose(habitat.pointgoal_polar(pos, habitat.yaw_quaternion(np.pi / 2), [-2, 0, 0]), [2, 0],
                               atol=1e-6)
    assert habitat.HABITAT_ACTIONS == ["stop", "move_forward", "turn_left", "turn_right"]


# ------------------------------------------------------------------ MineRL


def test_minecraft_camera_pose():
    K = minerl.minerl_intrinsics(64, 64)
    assert K[1, 1] == pytest.approx(32 / np.tan(np.deg2rad(35)))
    feet = np.array([10.0, 64.0, -5.0])
    eye = feet + [0, minerl.EYE_HEIGHT, 0]
    up = [0, 1, 0]
    _assert_camera(minerl.minecraft_camera_pose(*feet, 0, 0), K, (64, 64), [0, 0, 1], up, eye)  # yaw 0: south +z
    _assert_camera(minerl.minecraft_camera_pose(*feet, 90, 0), K, (64, 64), [-1, 0, 0], up, eye)  # 90: west -x
    _assert_camera(minerl.minecraft_camera_pose(*feet, 180, 0), K, (64, 64), [0, 0, -1], up, eye)  # 180: north
    down = minerl.minecraft_camera_pose(*feet, 0, 90)  # pitch +90 looks straight down
    np.testing.assert_allclose(down[:3, 2], [0, -1, 0], atol=1e-6)
    # facing south, east (+x) is on the left: it projects left of the centre
    uv, _ = _project(minerl.minecraft_camera_pose(*feet, 0, 0), K, eye + [1.0, 0, 2.0], (64, 64))
    assert uv[0] < 31


def test_minerl_discrete_actions():
    noop = {"forward": 0, "back": 0, "left": 0, "right": 0, "jump": 0, "sneak": 0, "sprint": 0, "attack": 0,
            "camera": np.zeros(2, np.float32)}
    a = minerl.discrete_to_minerl_action(1, noop)
    assert a["forward"] == 1 and a["jump"] == 0 and not a["camera"].any()
    a = minerl.discrete_to_minerl_action(7, noop, camera_step=10)
    np.testing.assert_array_equal(a["camera"], [0, -10])  # turn left = negative yaw delta
    np.testing.assert_array_equal(minerl.discrete_to_minerl_action(10, noop)["camera"], [15, 0])  # look down
    assert noop["forward"] == 0 and not noop["camera"].any()  # the env's noop is not mutated
    with pytest.raises(ValueError, match="outside the action space"):
        minerl.discrete_to_minerl_action(11, noop)
    with pytest.raises(ValueError, match="no 'attack' button"):
        minerl.discrete_to_minerl_action(6, {k: v for k, v in noop.items() if k != "attack"})


# ------------------------------------------------------------------ Memory Maze


def _dm_matrices(pos, xmat, fovy, h, w):
    """dm_control's documented Camera.matrices() for a fixed camera (built by hand here)."""
    translation = np.eye(4)
    translation[:3, 3] = -np.asarray(pos)
    rotation = np.eye(4)
    rotation[:3, :3] = np.asarray(xmat).reshape(3, 3).T
    f = (1.0 / np.tan(np.deg2rad(fovy) / 2)) * h / 2.0
    focal = np.diag([-f, f, 1.0, 0])[:3, :]
    image = np.eye(3)
    image[0, 2], image[1, 2] = (w - 1) / 2.0, (h - 1) / 2.0
    return image, focal, rotation, translation


def test_dm_control_camera_matrices_to_opencv():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    pos = np.array([1.0, -2.0, 0.5])
    mats = _dm_matrices(pos, q, 80.0, 48, 64)
    K, pose = memory_maze.dm_camera_matrices_to_opencv(*mats)
    full = mats[0] @ mats[1] @ mats[2] @ mats[3]
    # random points in front of the GL camera (its -z axis), projected both ways
    pts_cam = np.c_[rng.uniform(-1, 1, (20, 2)), -rng.uniform(1, 5, 20)]
    pts = pts_cam @ q.T + pos
    hom = np.c_[pts, np.ones(20)] @ full.T
    uv_dm = hom[:, :2] / hom[:, 2:]
    uv, z, _ = project_points(torch.tensor(pts)[None], torch.tensor(K, dtype=torch.float64)[None],
                              torch.tensor(pose, dtype=torch.float64)[None], (48, 64))
    np.testing.assert_allclose(uv[0].numpy(), uv_dm + 0.5, atol=1e-4)  # dm_control centres pixels on integers
    np.testing.assert_allclose(z[0].numpy(), -pts_cam[:, 2], atol=1e-5)
    with pytest.raises(ValueError, match="focal"):
        memory_maze.dm_camera_matrices_to_opencv(mats[0], np.diag([1.0, 1.0, 1.0, 0])[:3], mats[2], mats[3])


def test_memory_maze_depth_and_actions():
    d = memory_maze.far_depth_to_zero(np.array([[0.5, 914.99], [np.inf, 3.0]]), far=915.0)
    np.testing.assert_allclose(d, [[0.5, 0.0], [0.0, 3.0]])
    assert len(memory_maze.MEMORY_MAZE_ACTIONS) == 6 and memory_maze.MEMORY_MAZE_ACTIONS[1] == "forward"


# ------------------------------------------------------------------ ViZDoom


def test_doom_camera_pose_and_depth():
    K = vizdoom.doom_intrinsics(120, 160)
    assert K[0, 0] == pytest.approx(80.0) and K[0, 2] == 80 and K[1, 2] == 60
    x, y, z = 320.0, -64.0, 41.0
    eye = np.array([x, y, z]) / vizdoom.UNITS_PER_METRE
    up = [0, 0, 1]
    _assert_camera(vizdoom.doom_camera_pose(x, y, z, 0), K, (120, 160), [1, 0, 0], up, eye)  # angle 0: east
    _assert_camera(vizdoom.doom_camera_pose(x, y, z, 90), K, (120, 160), [0, 1, 0], up, eye)  # 90: north
    np.testing.assert_allclose(vizdoom.doom_camera_pose(x, y, z, 0, 90)[:3, 2], [0, 0, -1], atol=1e-6)  # looks down
    # facing east, north (+y) is on the left
    uv, _ = _project(vizdoom.doom_camera_pose(x, y, z, 0), K, eye + [2.0, 0.5, 0], (120, 160))
    assert uv[0] < 79
    raw = np.array([[0, 21], [255, 100]], np.uint8)
    m = vizdoom.vizdoom_depth_to_metres(raw)
    assert m.dtype == np.float32 and m[0, 0] == 0
    assert m[0, 1] == pytest.approx(21 * 8.2 / 32, rel=1e-5)  # the documented reading: ~172 map units ~ 5.4 m
    with pytest.raises(ValueError, match="uint8"):
        vizdoom.vizdoom_depth_to_metres(raw.astype(np.float32))
    assert vizdoom.one_hot_buttons(2, 4) == [0, 0, 1, 0]
    with pytest.raises(ValueError, match="outside the action space"):
        vizdoom.one_hot_buttons(4, 4)


# ------------------------------------------------------------------ ManiSkill3


def test_maniskill_conventions():
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = q, [0.3, -0.2, 0.9]
    extrinsic = np.linalg.inv(pose)[None, :3, :]  # world -> camera, OpenCV axes, batch of 1
    cam2world_gl = (pose @ np.diag([1.0, -1.0, -1.0, 1.0]))[None]
    a, b = maniskill.extrinsic_cv_to_pose(extrinsic), maniskill.cam2world_gl_to_opencv(cam2world_gl)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a[0], pose, atol=1e-6)
    depth = torch.tensor([[[[0], [1500]], [[-3], [250]]]], dtype=torch.int16)  # [B,H,W,1] millimetres
    np.testing.assert_allclose(maniskill.maniskill_depth_to_metres(depth), [[[0.0, 1.5], [0.0, 0.25]]])
    with pytest.raises(ValueError, match="integer millimetre"):
        maniskill.maniskill_depth_to_metres(np.zeros((1, 2, 2, 1), np.float32))
    obs = {"agent": {"qvel": torch.ones(1, 2), "qpos": torch.zeros(1, 3)},
           "extra": {"tcp_pose": torch.full((1, 7), 2.0)}, "sensor_data": {}}
    np.testing.assert_array_equal(maniskill.flatten_state(obs), [[0, 0, 0, 1, 1] + [2] * 7])


# ------------------------------------------------------------------ with the simulators (skipped where absent)

_WHY = {
    "habitat_sim": "habitat-sim not installed (no pip wheel for Linux / Python 3.11: conda only)",
    "minerl": "minerl not installed (Minecraft cannot be built on these machines: unreachable download hosts)",
    "memory_maze": "memory-maze not installed: pip install memory-maze gym 'mujoco==3.3.0' 'dm-control==1.0.28'",
    "vizdoom": "vizdoom not installed: pip install vizdoom",
    "mani_skill": "mani-skill not installed: pip install mani-skill (and a Mesa >= 25 Vulkan ICD for CPU rendering)",
}


def _absent(mod: str) -> bool:
    return importlib.util.find_spec(mod) is None


@pytest.mark.parametrize("env_id, mod, kwargs", [
    ("Habitat-v0", "habitat_sim", {"scene": "missing.glb"}), ("MineRL-v0", "minerl", {}),
    ("MemoryMaze-v0", "memory_maze", {}), ("ViZDoom-v0", "vizdoom", {}), ("ManiSkill-v0", "mani_skill", {}),
])
def test_missing_simulator_raises_import_error_with_install_hint(env_id, mod, kwargs):
    if not _absent(mod):
        pytest.skip(f"{mod} is installed here")
    with pytest.raises(ImportError, match="Install: "):
        make_env(env_id, **kwargs)


def _check_obs(env, obs):
    from embodimem.types import Frame

    assert obs["rgb"].dtype == np.uint8 and obs["rgb"].ndim == 3
    Frame.from_obs(obs, t=0, is_first=True)  # dtypes, rigid pose, valid K
    obs2, _, _, _, info = env.step(env.action_space.sample())
    assert "is_success" in info
    return obs2


@pytest.mark.skipif(_absent("vizdoom"), reason=_WHY["vizdoom"])
def test_vizdoom_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = make_env("ViZDoom-v0", scenario="my_way_home")
    obs, info = env.reset(seed=0)
    assert obs["depth"].shape == obs["rgb"].shape[:2] and obs["depth_raw"].dtype == np.uint8
    _check_obs(env, obs)
    env.close()
    assert not (tmp_path / "_vizdoom.ini").exists()


@pytest.mark.skipif(_absent("memory_maze"), reason=_WHY["memory_maze"])
def test_memory_maze_env_reprojects():
    import torch.nn.functional as F

    from embodimem.geometry import backproject_depth

    env = make_env("MemoryMaze-v0", size="9x9")
    a, _ = env.reset(seed=0)
    assert a["depth"].shape == (64, 64) and (a["depth"] > 0).any()
    _check_obs(env, a)
    for act in (2, 2, 1):  # turn, turn, forward
        b = env.step(act)[0]
    env.close()
    pts, valid = backproject_depth(torch.tensor(a["depth"])[None], torch.tensor(a["intrinsics"])[None],
                                   torch.tensor(a["pose"])[None])
    uv, z, inview = project_points(pts[valid][None], torch.tensor(b["intrinsics"])[None], torch.tensor(b["pose"])[None],
                                   (64, 64))
    uv, z = uv[inview], z[inview]
    grid = (uv / 64 * 2 - 1)[None, None]
    db = F.grid_sample(torch.tensor(b["depth"])[None, None], grid, align_corners=False)[0, 0, 0]
    ok = db > 0
    assert int(ok.sum()) > 500
    assert float(((db - z).abs() / z)[ok].median()) < 0.01  # metre-scale maze: ~0.2% at 64x64, 0.07% at 256x256


@pytest.mark.skipif(_absent("mani_skill"), reason=_WHY["mani_skill"])
@pytest.mark.slow
def test_maniskill_env_geometry():
    from embodimem.geometry import backproject_depth

    env = make_env("ManiSkill-v0", task="PickCube-v1", height=128, width=128)
    obs, _ = env.reset(seed=0)
    cube = maniskill.to_numpy(env.unwrapped._env.unwrapped.cube.pose.p)[0]
    (u, v), zc = _project(obs["pose"], obs["intrinsics"], cube, (128, 128))
    assert 0.0 < zc - obs["depth"][int(v), int(u)] < 0.04  # the cube's front face, 2 cm before its centre
    pts, valid = backproject_depth(torch.tensor(obs["depth"])[None], torch.tensor(obs["intrinsics"])[None],
                                   torch.tensor(obs["pose"])[None])
    assert abs(float(pts[valid][:, 2].median())) < 0.01  # most pixels see the table top, world z = 0
    _check_obs(env, obs)
    env.close()


@pytest.mark.skipif(_absent("habitat_sim"), reason=_WHY["habitat_sim"])
def test_habitat_env():
    scene = os.environ.get("EMBODIMEM_HABITAT_SCENE")
    if not scene:
        pytest.skip("set EMBODIMEM_HABITAT_SCENE to a scene file (e.g. habitat-test-scenes/skokloster-castle.glb)")
    env = make_env("Habitat-v0", scene=scene)
    obs, info = env.reset(seed=0)
    assert obs["depth"].dtype == np.float32 and info["distance_to_goal"] > 0
    _check_obs(env, obs)
    env.close()


@pytest.mark.skipif(_absent("minerl"), reason=_WHY["minerl"])
@pytest.mark.slow
def test_minerl_env():
    env = make_env("MineRL-v0", env_id="MineRLNavigateDense-v0")
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (64, 64, 3)
    env.close()
