"""MuJoCo cameras -> embodimem's conventions, and a fast CPU RGB-D renderer.

MuJoCo's camera frame is OpenGL-style: the camera looks down its local -z axis, +y is image-up, +x is
image-right, and ``data.cam_xmat`` holds that frame's axes as the columns of a world rotation matrix. We return
OpenCV camera-to-world poses (x right, y down, z forward): ``pose_cv = pose_gl @ diag(1, -1, -1, 1)``.
``mujoco.Renderer`` already flips the GL read-back, so image row 0 is the top of the image.

Intrinsics follow ``embodimem.geometry``: pixel (i, j) has its centre at (j + 0.5, i + 0.5) and the principal
point is (W / 2, H / 2); MuJoCo's ``cam_fovy`` is the full vertical field of view with square pixels.

Several Meta-World cameras (``corner``, ``corner2`` ...) are mounted upside down (image-up points at the floor).
``upright=True`` in the renderer turns such images by 180 degrees about the principal point and rotates the pose
about the optical axis to match, so images look natural and the geometry stays exact.
"""

from __future__ import annotations

import atexit
import os
import weakref

os.environ.setdefault("MUJOCO_GL", "egl")  # before the first `import mujoco` (headless CPU rendering via EGL)

import numpy as np

__all__ = [
    "OPENGL_TO_OPENCV",
    "ROT180_Z",
    "gl_camera_to_opencv_pose",
    "is_upside_down",
    "mujoco_camera_intrinsics",
    "mujoco_camera_pose",
    "configure_fast_rendering",
    "camera_id",
    "RGBDRenderer",
]

#: Right-multiply an OpenGL camera-to-world pose by this to get the OpenCV one (flips the camera's y and z).
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
#: Right-multiply an OpenCV pose by this after turning its image by 180 degrees (x -> -x, y -> -y).
ROT180_Z = np.diag([-1.0, -1.0, 1.0, 1.0])


def gl_camera_to_opencv_pose(xpos: np.ndarray, xmat: np.ndarray) -> np.ndarray:
    """OpenGL camera position [3] (metres) and axes [3,3] or [9] (columns x, y, z) -> OpenCV pose float64 [4,4]."""
    xpos = np.asarray(xpos, dtype=np.float64).reshape(3)
    R = np.asarray(xmat, dtype=np.float64).reshape(3, 3)
    pose = np.eye(4)
    pose[:3, :3] = R
    pose[:3, 3] = xpos
    return pose @ OPENGL_TO_OPENCV


def is_upside_down(pose_cv: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> bool:
    """True if the image-down axis of an OpenCV pose [4,4] points along the world ``up`` [3] (image upside down)."""
    return float(np.asarray(pose_cv)[:3, 1] @ np.asarray(up, dtype=np.float64)) > 0.0


def mujoco_camera_pose(data, cam_id: int) -> np.ndarray:
    """OpenCV camera-to-world pose float64 [4,4] (metres) of camera ``cam_id`` from ``data.cam_xpos/cam_xmat``."""
    return gl_camera_to_opencv_pose(data.cam_xpos[cam_id], data.cam_xmat[cam_id])


def mujoco_camera_intrinsics(model, cam_id: int, height: int, width: int) -> np.ndarray:
    """Pinhole K float64 [3,3] (pixels) for camera ``cam_id`` rendered at height x width, from ``model.cam_fovy``."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if np.any(np.asarray(model.cam_sensorsize[cam_id]) > 0):
        raise ValueError(
            f"camera {cam_id} uses MuJoCo's physical-sensor model (sensorsize > 0); only fovy cameras are supported"
        )
    fovy = float(model.cam_fovy[cam_id])
    f = (height / 2.0) / np.tan(np.deg2rad(fovy) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def camera_id(model, camera: str | int) -> int:
    """MuJoCo camera id for a camera name or id; unknown cameras raise ValueError listing the valid names."""
    import mujoco

    if isinstance(camera, (int, np.integer)):
        if not 0 <= int(camera) < model.ncam:
            raise ValueError(f"camera id {camera} out of range [0, {model.ncam})")
        return int(camera)
    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cid < 0:
        names = [model.camera(i).name for i in range(model.ncam)]
        raise ValueError(f"unknown camera {camera!r}; this model has: {', '.join(names)}")
    return int(cid)


def configure_fast_rendering(model, height: int, width: int) -> None:
    """Set the CPU-friendly visual options on ``model`` in place: no shadow maps, no MSAA, a small offscreen buffer."""
    model.vis.quality.shadowsize = 0  # llvmpipe spends most of a frame on 4096^2 shadow maps otherwise
    model.vis.quality.offsamples = 0  # no multisampling
    model.vis.global_.offwidth = max(int(width), 1)
    model.vis.global_.offheight = max(int(height), 1)


_LIVE: weakref.WeakSet = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_live_renderers() -> None:
    # Free GL contexts before mujoco's own EGL teardown runs (atexit is LIFO and this is registered after it);
    # otherwise mujoco's __del__ at interpreter exit prints EGL_NOT_INITIALIZED tracebacks.
    for r in list(_LIVE):
        r.close()


class RGBDRenderer:
    """Offscreen MuJoCo rendering at the observation size: RGB uint8 [H,W,3] and z-depth float32 [H,W] metres.

    One ``mjr_render`` per camera yields both images (``mjr_readPixels`` reads the colour and depth buffers of the
    same pass), which halves the cost of RGB-D compared with ``mujoco.Renderer``'s separate depth pass. Depth is
    linearised exactly like ``mujoco.Renderer`` does (reversed-Z buffer). Pixels where no scene geometry was hit
    are 0 = no reading: the far plane, and the skybox, which this single lit pass draws into the depth buffer
    ~0.7 x far away (mujoco.Renderer's depth pass turns it off) -- hence depths beyond ``max_depth`` (default
    far / 2, 56 m for Meta-World whose geometry lies within ~10 m) are 0. Reflections are off; call
    :func:`configure_fast_rendering` first (done here unless ``configure=False``). The GL context is made here:
    construct renderers after any ``fork``.
    """

    def __init__(self, model, height: int, width: int, *, upright: bool = True, configure: bool = True,
                 max_depth: float | None = None) -> None:
        import mujoco

        if configure:
            configure_fast_rendering(model, height, width)
        self._mujoco = mujoco
        self.model = model
        self.height, self.width = int(height), int(width)
        self.upright = bool(upright)
        self._gl = self._con = None
        try:
            self._gl = mujoco.GLContext(self.width, self.height)
            self._gl.make_current()
            self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        except Exception as e:  # mujoco.FatalError when no GL context could be made
            chosen = getattr(getattr(mujoco, "gl_context", None), "_MUJOCO_GL", "?") or "glfw (default)"
            raise RuntimeError(
                f"MuJoCo could not create an offscreen GL context ({e}). mujoco was imported with MUJOCO_GL="
                f"{chosen!r}; headless machines need MUJOCO_GL=egl (or osmesa) set before anything imports mujoco: "
                f"export MUJOCO_GL=egl, or import embodimem.envs.metaworld before metaworld/mujoco."
            ) from e
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._con.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR  # reversed Z, as mujoco.Renderer reads it
        self._scene = mujoco.MjvScene(model, maxgeom=10_000)
        self._opt, self._pert, self._cam = mujoco.MjvOption(), mujoco.MjvPerturb(), mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._rgb = np.empty((self.height, self.width, 3), np.uint8)
        self._z = np.empty((self.height, self.width), np.float32)
        self._seg_renderer = None
        extent = float(model.stat.extent)
        near, self.far = float(model.vis.map.znear) * extent, float(model.vis.map.zfar) * extent
        # OpenGL projection terms in float32 (as glFrustum), mapped to reversed Z; depth = d / (z + c).
        n32, f32 = np.float32(near), np.float32(self.far)
        c, d = -(f32 + n32) / (f32 - n32), -(np.float32(2) * f32 * n32) / (f32 - n32)
        self._c, self._d = float(np.float32(-0.5) * c - np.float32(0.5)), float(np.float32(-0.5) * d)
        self.max_depth = 0.5 * self.far if max_depth is None else float(max_depth)
        global _ATEXIT_REGISTERED
        if not _ATEXIT_REGISTERED:
            atexit.register(_close_live_renderers)
            _ATEXIT_REGISTERED = True
        _LIVE.add(self)

    def camera_id(self, camera: str | int) -> int:
        """MuJoCo camera id for a camera name or id (see :func:`camera_id`)."""
        return camera_id(self.model, camera)

    def _flip(self, data, cam_id: int) -> bool:
        return self.upright and is_upside_down(mujoco_camera_pose(data, cam_id))

    def pose(self, data, camera: str | int) -> np.ndarray:
        """OpenCV camera-to-world pose float32 [4,4] (metres) matching the images this renderer returns."""
        cid = self.camera_id(camera)
        pose = mujoco_camera_pose(data, cid)
        if self._flip(data, cid):
            pose = pose @ ROT180_Z
        return pose.astype(np.float32)

    def intrinsics(self, camera: str | int) -> np.ndarray:
        """Pinhole K float32 [3,3] (pixels) at this renderer's size (a 180-degree turn leaves a centred K unchanged)."""
        return mujoco_camera_intrinsics(self.model, self.camera_id(camera), self.height, self.width).astype(np.float32)

    def render(self, data, camera: str | int, *, depth: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(rgb uint8 [H,W,3], depth float32 [H,W] metres along the optical axis, 0 = no reading, or None)."""
        if self._con is None:
            raise RuntimeError("RGBDRenderer.render called after close")
        mj = self._mujoco
        cid = self.camera_id(camera)
        self._gl.make_current()
        self._cam.fixedcamid = cid
        mj.mjv_updateScene(self.model, data, self._opt, self._pert, self._cam, mj.mjtCatBit.mjCAT_ALL, self._scene)
        self._scene.flags[mj.mjtRndFlag.mjRND_REFLECTION] = 0
        mj.mjr_render(self._rect, self._scene, self._con)
        mj.mjr_readPixels(self._rgb, self._z if depth else None, self._rect, self._con)
        flip = self._flip(data, cid)
        # GL rows start at the bottom: flip rows; a 180-degree upright turn then flips rows and columns again,
        # which leaves only the column flip.
        rgb = self._rgb[:, ::-1] if flip else self._rgb[::-1]
        z = None
        if depth:
            zb = (self._z[:, ::-1] if flip else self._z[::-1]).astype(np.float64)
            metric = self._d / np.where(zb > 0, zb + self._c, 1.0)  # z-buffer 0 = the far plane
            z = np.where((zb > 0) & (metric <= self.max_depth), metric, 0.0).astype(np.float32)
        return np.ascontiguousarray(rgb), z

    def segmentation(self, data, camera: str | int) -> np.ndarray:
        """Per-pixel (object id, object type) int32 [H,W,2] (-1 = background), oriented like :meth:`render`."""
        mj = self._mujoco
        if self._seg_renderer is None:  # debugging/tests only: a second context via mujoco.Renderer
            self._seg_renderer = mj.Renderer(self.model, self.height, self.width)
            self._seg_renderer.enable_segmentation_rendering()
        cid = self.camera_id(camera)
        self._seg_renderer.update_scene(data, camera=cid)
        seg = self._seg_renderer.render()
        if self._flip(data, cid):
            seg = seg[::-1, ::-1]
        return np.ascontiguousarray(seg)

    def close(self) -> None:
        """Free the GL contexts."""
        if getattr(self, "_seg_renderer", None) is not None:
            self._seg_renderer.close()
            self._seg_renderer = None
        if getattr(self, "_con", None) is not None:
            self._gl.make_current()
            self._con.free()
            self._con = None
        if getattr(self, "_gl", None) is not None:
            self._gl.free()
            self._gl = None
        _LIVE.discard(self)
