"""Meta-World adapter: RGB-D / pose / intrinsics conventions (proved by reprojection), experts, eval, bad input."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before importorskip imports metaworld (and mujoco)

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("metaworld", reason="metaworld not installed: pip install 'metaworld>=3'")

from embodimem.envs import make_env  # noqa: E402
from embodimem.envs.metaworld.adapter import MetaWorldEnv  # noqa: E402
from embodimem.envs.metaworld.camera import (  # noqa: E402
    OPENGL_TO_OPENCV,
    gl_camera_to_opencv_pose,
    is_upside_down,
    mujoco_camera_intrinsics,
)
from embodimem.envs.metaworld.evaluate import episode_seed, evaluate_policy, success_summary  # noqa: E402
from embodimem.envs.metaworld.experts import MetaWorldExpert, expert_tasks  # noqa: E402
from embodimem.envs.metaworld.instructions import INSTRUCTIONS, instruction_for  # noqa: E402
from embodimem.geometry import (  # noqa: E402
    backproject_depth,
    intrinsics_from_fov,
    pose_opengl_to_opencv,
    project_points,
)
from embodimem.types import Frame  # noqa: E402

S = 64


@pytest.fixture(scope="module")
def multi_env():
    env = MetaWorldEnv("pick-place-v3", cameras=("corner4", "topview", "behindGripper"), height=S, width=S)
    yield env
    env.close()


def _reproject_error(a: dict, b: dict) -> tuple[float, int]:
    """Back-project view a's depth, project into view b, compare with b's depth (bilinear): (median |err| m, n)."""
    pts, valid = backproject_depth(torch.tensor(a["depth"])[None], torch.tensor(a["intrinsics"])[None],
                                   torch.tensor(a["pose"])[None])
    uv, z, inview = project_points(pts[valid][None], torch.tensor(b["intrinsics"])[None], torch.tensor(b["pose"])[None],
                                   (S, S))
    uv, z = uv[inview], z[inview]
    grid = (uv / S * 2 - 1)[None, None]
    db = F.grid_sample(torch.tensor(b["depth"])[None, None], grid, align_corners=False)[0, 0, 0]
    ok = db > 0
    return float((db - z)[ok].abs().median()), int(ok.sum())


def test_observation_convention(multi_env):
    obs, info = multi_env.reset(seed=0)
    assert info["is_success"] is False
    assert obs["rgb"].shape == (S, S, 3) and obs["rgb"].dtype == np.uint8
    assert obs["depth"].shape == (S, S) and obs["depth"].dtype == np.float32
    assert obs["pose"].shape == (4, 4) and obs["intrinsics"].shape == (3, 3) and obs["state"].shape == (39,)
    assert obs["instruction"] == instruction_for("pick-place-v3")
    assert set(obs["cameras"]) == {"corner4", "topview", "behindGripper"}
    d = obs["depth"]
    assert 0.3 < np.median(d[d > 0]) < 3.0  # metres, a table-top scene
    # fovy -> K, same as the shared geometry helper
    fovy = float(multi_env.sim.model.cam_fovy[multi_env.sim.model.camera("corner4").id])
    np.testing.assert_allclose(obs["intrinsics"], intrinsics_from_fov(S, S, fovy).numpy(), rtol=1e-6)
    frame = Frame.from_obs(obs, t=0, is_first=True)  # validates dtypes, rigid pose, K
    assert frame.depth is not None and frame.pose is not None and frame.instruction == [obs["instruction"]]
    assert multi_env.observation_space.contains(obs)


def test_gl_to_cv_matches_shared_geometry():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    pos = rng.normal(size=3)
    gl = np.eye(4)
    gl[:3, :3], gl[:3, 3] = q, pos
    ours = gl_camera_to_opencv_pose(pos, q)
    np.testing.assert_allclose(ours, pose_opengl_to_opencv(torch.tensor(gl)).numpy(), atol=1e-12)
    np.testing.assert_allclose(ours[:3, 2], -q[:, 2])  # OpenCV looks along GL -z
    assert np.array_equal(OPENGL_TO_OPENCV, np.diag([1.0, -1.0, -1.0, 1.0]))


def test_reprojection_between_two_cameras(multi_env):
    obs, _ = multi_env.reset(seed=1)
    cams = obs["cameras"]
    err, n = _reproject_error(cams["corner4"], cams["topview"])
    assert n > 500 and err < 0.005, (err, n)  # median error below 5 mm
    err, n = _reproject_error(cams["topview"], cams["corner4"])
    assert n > 500 and err < 0.005, (err, n)


def test_reprojection_between_two_time_steps_of_a_moving_camera(multi_env):
    obs0, _ = multi_env.reset(seed=2)
    obs1 = obs0
    for _ in range(8):
        obs1 = multi_env.step(np.array([1.0, 0.5, 0.0, 0.0], np.float32))[0]
    a, b = obs0["cameras"]["behindGripper"], obs1["cameras"]["behindGripper"]
    assert np.linalg.norm(a["pose"][:3, 3] - b["pose"][:3, 3]) > 0.03  # the wrist camera moved
    err, n = _reproject_error(a, b)
    assert n > 500 and err < 0.005, (err, n)


def test_image_rows_are_not_flipped(multi_env):
    """Project the puck's centre with our pose/K: the segmentation there must be the puck (no vertical flip)."""
    multi_env.reset(seed=3)
    m, d = multi_env.sim.model, multi_env.sim.data
    gid = m.geom("objGeom").id
    r = multi_env._renderer
    for cam in ("corner4", "corner"):
        seg = r.segmentation(d, cam)
        puck = torch.tensor(d.geom_xpos[gid], dtype=torch.float32)[None, None]
        uv, _, inview = project_points(puck, torch.tensor(r.intrinsics(cam))[None], torch.tensor(r.pose(d, cam))[None],
                                       (S, S))
        assert bool(inview[0, 0])
        u, v = (int(x) for x in uv[0, 0].floor().tolist())
        assert seg[v, u, 0] == gid, (cam, seg[v, u])


def test_single_pass_rgbd_equals_mujoco_renderer():
    """Our one-pass RGB + depth read-back matches mujoco.Renderer's separate colour and depth passes exactly."""
    import mujoco

    env = MetaWorldEnv("pick-place-v3", cameras=("corner4", "topview"), height=S, width=S, upright=False)
    ref = None
    try:
        obs, _ = env.reset(seed=0)
        m, d = env.sim.model, env.sim.data
        ref = mujoco.Renderer(m, S, S)
        for cam in ("corner4", "topview"):
            ref.update_scene(d, camera=cam)
            ref.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            rgb = ref.render()
            ref.enable_depth_rendering()
            z = ref.render()
            ref.disable_depth_rendering()
            z = np.where(z >= env._renderer.far * (1 - 1e-4), 0.0, z)  # far plane = no reading
            np.testing.assert_array_equal(obs["cameras"][cam]["rgb"], rgb)
            np.testing.assert_allclose(obs["cameras"][cam]["depth"], z, rtol=1e-6, atol=1e-6)
    finally:
        if ref is not None:
            ref.close()
        env.close()


def test_upright_turns_upside_down_cameras_consistently():
    env_up = MetaWorldEnv("reach-v3", cameras=("corner",), height=S, width=S, upright=True)
    env_raw = MetaWorldEnv("reach-v3", cameras=("corner",), height=S, width=S, upright=False)
    try:
        up, raw = env_up.reset(seed=0)[0], env_raw.reset(seed=0)[0]
        assert is_upside_down(raw["pose"]) and not is_upside_down(up["pose"])
        np.testing.assert_array_equal(up["rgb"], raw["rgb"][::-1, ::-1])
        np.testing.assert_allclose(up["pose"], raw["pose"] @ np.diag([-1, -1, 1, 1]).astype(np.float32), atol=1e-6)
        np.testing.assert_array_equal(up["intrinsics"], raw["intrinsics"])
    finally:
        env_up.close()
        env_raw.close()


def test_seeding_is_deterministic():
    env = MetaWorldEnv("pick-place-v3", height=32, width=32)
    try:
        a, b = env.reset(seed=5)[0], env.reset(seed=5)[0]
        np.testing.assert_array_equal(a["state"], b["state"])
        np.testing.assert_array_equal(a["rgb"], b["rgb"])
        c = env.reset(seed=6)[0]
        assert not np.allclose(a["state"][4:7], c["state"][4:7])  # a different object placement
    finally:
        env.close()


@pytest.mark.parametrize("task", ["pick-place-v3", "reach-v3"])
def test_scripted_expert_solves_task(task):
    env = MetaWorldEnv(task, height=32, width=32, depth=False, terminate_on_success=True, max_episode_steps=200)
    try:
        res = evaluate_policy(env, MetaWorldExpert(task), seeds=(0,), episodes_per_seed=2)
    finally:
        env.close()
    s = res["summary"]
    assert s["n_episodes"] == 2 and s["successes"] == 2 and s["success_rate"] == 1.0
    lo, hi = s["ci95"]
    assert 0.0 < lo < 1.0 and hi == pytest.approx(1.0)
    assert all(ep["terminated"] and ep["length"] < 200 and ep["task"] == task for ep in res["per_episode"])


def test_success_summary_and_episode_seeds():
    eps = [{"success": s, "eval_seed": seed} for seed, s in [(0, True), (0, False), (1, True), (1, True)]]
    s = success_summary(eps)
    assert s["successes"] == 3 and s["success_rate"] == 0.75
    assert s["per_seed"]["0"] == {"n": 2, "successes": 1, "rate": 0.5}
    lo, hi = s["ci95"]
    assert lo < 0.75 < hi
    seeds = {episode_seed(s, i) for s in range(3) for i in range(5)}
    assert len(seeds) == 15 and all(0 <= x < 2**31 for x in seeds)


def test_instructions_cover_every_expert_task():
    assert set(expert_tasks()) == set(INSTRUCTIONS)
    assert all(isinstance(v, str) and v for v in INSTRUCTIONS.values())


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="unknown Meta-World task 'pick-plaec-v3'"):
        MetaWorldEnv("pick-plaec-v3")
    with pytest.raises(ValueError, match="unknown Meta-World task"):
        instruction_for("nope")
    with pytest.raises(ValueError, match="no scripted expert"):
        MetaWorldExpert("nope")
    with pytest.raises(ValueError, match="unknown camera 'nocam'"):
        MetaWorldEnv("reach-v3", cameras=("nocam",), height=16, width=16)
    env = MetaWorldEnv("reach-v3", height=16, width=16)
    try:
        with pytest.raises(RuntimeError, match="before reset"):
            env.step(np.zeros(4, np.float32))
        env.reset(seed=0)
        with pytest.raises(ValueError, match="outside the action space"):
            env.step(np.array([2.0, 0, 0, 0], np.float32))
        with pytest.raises(ValueError, match="shape"):
            env.step(np.zeros(3, np.float32))
        with pytest.raises(ValueError, match="non-finite"):
            env.step(np.array([np.nan, 0, 0, 0], np.float32))
        with pytest.raises(ValueError, match="goal_observable"):
            MetaWorldExpert("reach-v3")(np.zeros(39))
    finally:
        env.close()


@pytest.mark.parametrize("via_registry", [True, False])
def test_registered_id_and_truncation(via_registry):
    # through gym.make, max_episode_steps is gymnasium's TimeLimit; on the class it is the env's own horizon
    kw = dict(task="reach-v3", height=16, width=16, depth=False, max_episode_steps=3)
    env = make_env("MetaWorld-v0", **kw) if via_registry else MetaWorldEnv(**kw)
    try:
        env.reset(seed=0)
        steps = [env.step(np.zeros(4, np.float32)) for _ in range(3)]
        assert [s[3] for s in steps] == [False, False, True]
        assert all("is_success" in s[4] for s in steps)
        if not via_registry:
            with pytest.raises(RuntimeError, match="truncated"):
                env.step(np.zeros(4, np.float32))
    finally:
        env.close()
    with pytest.raises(ValueError, match="max_episode_steps"):
        MetaWorldEnv("reach-v3", max_episode_steps=501)


def test_intrinsics_reject_bad_sizes(multi_env):
    with pytest.raises(ValueError, match="image size"):
        mujoco_camera_intrinsics(multi_env.sim.model, 0, 0, 64)


def test_async_vector_env_forks_safely():
    """AsyncVectorEnv builds one env in the parent before forking: constructing an env must create no GL context
    (EGL state does not survive fork). Run in a fresh interpreter, as a training script would."""
    import subprocess
    import sys

    env = MetaWorldEnv("reach-v3", height=16, width=16)
    assert env._renderer_obj is None  # constructing an env creates no GL context
    env.close()
    script = (
        "import gymnasium as gym, numpy as np\n"
        "from embodimem.envs.metaworld.adapter import MetaWorldEnv\n"
        "vec = gym.vector.AsyncVectorEnv([lambda: MetaWorldEnv('reach-v3', height=16, width=16)] * 2, context='fork')\n"
        "vec.reset_async(seed=0); obs, _ = vec.reset_wait(timeout=60)\n"
        "vec.step_async(np.zeros((2, 4), np.float32)); obs, _, _, _, info = vec.step_wait(timeout=60)\n"
        "assert obs['rgb'].shape == (2, 16, 16, 3) and info['is_success'].shape == (2,)\n"
        "vec.close(terminate=True); print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
