"""Procedural street-scene renderer (pure NumPy) behind the `synthetic_driving` dataset.

Every scene is one consistent piece of geometry seen by a pinhole camera, so the
image and all labels (segmentation, depth, boxes, scene tags) come from the same
3-D layout and the tasks genuinely share features:

- A camera at height 1.2-1.8 m over a flat ground plane, pitched down by a
  jittered angle, with a focal length of about 0.8-0.9 image widths.
- On the ground: a road of 2-4 lanes whose centre line bends as
  `x(Z) = c0 + c1 Z + c2 Z^2` (heading and curvature), solid edge lines, dashed
  or solid lane boundaries, sometimes a crosswalk, sidewalks on both sides and
  grass beyond them.
- Beside the sidewalks: rows of vertical facades (buildings with windows,
  hedges/trees, or gaps) that follow the road's curve, up to a random height;
  the sky above.
- Objects stand on the ground at forward distance Z: cars in lanes or parked,
  pedestrians on sidewalks or crossing, traffic lights (red, yellow or green
  lamp lit) and stop signs on the sidewalks. Each is a camera-facing vertical
  plane of its real size in metres, so it is drawn with a size proportional to
  1/Z; objects are painted far to near with a depth test against everything
  else, so occlusion (by nearer objects and by facades at a bend) is right.
- Appearance: procedural textures in world coordinates, global lighting and
  tint, a lit and a shaded side of the street, car shadows, depth-dependent fog
  and Gaussian sensor noise.

The rendering is vectorised: per-pixel rays are intersected with the ground
plane and with the two curved facade surfaces (a quadratic per pixel), and each
object is rasterised only inside its projected bounding box.

Conventions (fixed; the model side relies on them):

- `image`: uint8 [H, W, 3] RGB.
- `segmentation`: int32 [H, W], class ids of `SEGMENTATION_CLASSES`.
- `depth`: float32 [H, W, 1], **Z-depth**: the distance in metres along the
  camera's optical axis (not the Euclidean range to the camera centre),
  clipped to `MAX_DEPTH`; sky is 0.0 which means "invalid". Depth on the flat
  road is therefore constant along an image row.
- `boxes`: float32 [N, 4] (ymin, xmin, ymax, xmax) in pixel-edge coordinates:
  the tight box of the object's **visible** pixels (after occlusion and image
  borders), i.e. pixel rows `ymin .. ymax - 1` and columns `xmin .. xmax - 1`.
  Every box matches its pixels of the object's class in `segmentation`
  exactly. Objects with too few visible pixels are removed from the scene
  altogether (no box, no pixels), so labels never disagree.
- `box_classes`: int32 [N], ids of `DETECTION_CLASSES`. A traffic light or stop
  sign includes its pole, in its box and in its segmentation class.
- `scene`: float32 [5] multi-hot over `SCENE_TAGS`: a tag is 1 iff a box of that
  class exists; `red_light` is 1 iff a boxed traffic light shows red.

Also returned: `intrinsics` float32 [4] (fx, fy, cx, cy in pixels),
`camera_height` (metres) and `camera_pitch` (radians, positive = down).

Reference:
    Hartley and Zisserman, "Multiple View Geometry in Computer Vision", 2nd ed.,
    2004 (pinhole projection); Narasimhan and Nayar, "Vision and the
    Atmosphere", IJCV 2002 (fog as exp(-beta * depth) attenuation plus airlight).

Example:
```python
from mtlzoo.data.synthetic_driving.renderer import render_scene, SEGMENTATION_CLASSES
scene = render_scene(seed=0, index=3, image_size=(128, 256))
scene["image"].shape, scene["depth"].max(), scene["boxes"]
```
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

SEGMENTATION_CLASSES = (
    "sky",
    "road",
    "lane_marking",
    "sidewalk",
    "building",
    "vegetation",
    "car",
    "pedestrian",
    "traffic_light",
    "traffic_sign",
)
DETECTION_CLASSES = ("car", "pedestrian", "traffic_light", "stop_sign")
SCENE_TAGS = ("car", "pedestrian", "traffic_light", "stop_sign", "red_light")
LIGHT_STATES = ("red", "yellow", "green")
MAX_DEPTH = 100.0
MAX_OBJECTS = 24  # Upper bound on objects placed in one scene (so on boxes too).

SKY, ROAD, LANE_MARKING, SIDEWALK, BUILDING, VEGETATION, CAR, PEDESTRIAN, TRAFFIC_LIGHT, TRAFFIC_SIGN = range(10)
OBJ_CAR, OBJ_PEDESTRIAN, OBJ_TRAFFIC_LIGHT, OBJ_STOP_SIGN = range(4)
_SEG_OF_OBJECT = (CAR, PEDESTRIAN, TRAFFIC_LIGHT, TRAFFIC_SIGN)
_WALL_NONE, _WALL_BUILDING, _WALL_VEGETATION = range(3)
_RED = 0

_CAR_COLORS = np.array(
    [
        (0.82, 0.82, 0.84),
        (0.08, 0.08, 0.09),
        (0.52, 0.53, 0.55),
        (0.62, 0.07, 0.07),
        (0.10, 0.20, 0.52),
        (0.14, 0.34, 0.20),
        (0.86, 0.70, 0.10),
        (0.30, 0.30, 0.34),
        (0.45, 0.25, 0.12),
    ],
    np.float32,
)
_FACADE_COLORS = np.array(
    [
        (0.72, 0.66, 0.55),
        (0.58, 0.30, 0.22),
        (0.55, 0.55, 0.57),
        (0.82, 0.80, 0.76),
        (0.45, 0.40, 0.36),
        (0.70, 0.56, 0.40),
    ],
    np.float32,
)
_CLOTHES = np.array(
    [
        (0.10, 0.10, 0.12),
        (0.15, 0.20, 0.45),
        (0.55, 0.10, 0.10),
        (0.80, 0.78, 0.72),
        (0.25, 0.40, 0.25),
        (0.45, 0.35, 0.25),
        (0.60, 0.55, 0.20),
    ],
    np.float32,
)
_SKIN = np.array([(0.90, 0.72, 0.60), (0.72, 0.52, 0.38), (0.45, 0.30, 0.20), (0.95, 0.80, 0.68)], np.float32)


@dataclasses.dataclass
class SceneObject:
    """One object of a scene, in world coordinates (metres).

    Attributes:
        cls: int. Detection class id (`DETECTION_CLASSES`).
        x: float. Lateral position of the object's centre (right positive).
        z: float. Forward distance of its camera-facing plane.
        width: float. Width of the plane.
        height: float. Height of the plane (it stands on the ground).
        colors: float32 [k, 3]. Paint colours, meaning depends on `cls`.
        state: int. Traffic light state (`LIGHT_STATES`), else 0.
        params: tuple of floats. Shape parameters (stride of a pedestrian,
            pole height of a traffic light, ...).
        length: float. Extent along Z of its ground footprint.
    """

    cls: int
    x: float
    z: float
    width: float
    height: float
    colors: np.ndarray
    state: int = 0
    params: tuple = ()
    length: float = 0.4


@dataclasses.dataclass
class Scene:
    """Resolution-independent description of one scene (what `sample_scene` draws)."""

    camera_height: float
    pitch: float
    focal_ratio: float
    road: dict
    walls: tuple  # (left, right), each a dict of boundaries/types/heights/colours.
    objects: list
    look: dict


def _rng(seed: int, index: int) -> np.random.Generator:
    if int(seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}.")
    return np.random.default_rng([int(seed), int(index)])


def _sample_walls(rng, urban: float) -> dict:
    lengths = rng.uniform(5.0, 25.0, size=60)
    bounds = np.concatenate([[-20.0], -20.0 + np.cumsum(lengths)]).astype(np.float32)
    p_build = 0.25 + 0.6 * urban
    p_none = 0.08
    u = rng.random(60)
    types = np.where(u < p_none, _WALL_NONE, np.where(u < p_none + p_build, _WALL_BUILDING, _WALL_VEGETATION))
    heights = np.where(
        types == _WALL_BUILDING,
        rng.uniform(5.0, 24.0, 60),
        np.where(types == _WALL_VEGETATION, rng.uniform(2.0, 9.0, 60), 0.0),
    ).astype(np.float32)
    colors = _FACADE_COLORS[rng.integers(len(_FACADE_COLORS), size=60)] * rng.uniform(0.8, 1.15, (60, 1))
    greens = np.stack(
        [rng.uniform(0.10, 0.25, 60), rng.uniform(0.28, 0.48, 60), rng.uniform(0.06, 0.18, 60)], axis=-1
    )
    colors = np.where((types == _WALL_VEGETATION)[:, None], greens, colors).astype(np.float32)
    return {
        "bounds": bounds,
        "types": types.astype(np.int32),
        "heights": heights,
        "colors": colors,
        "window_spacing": rng.uniform(2.4, 4.0, 60).astype(np.float32),
        "floor_height": rng.uniform(2.9, 3.6, 60).astype(np.float32),
        "phase": rng.uniform(0, 2 * np.pi, 60).astype(np.float32),
    }


def _overlaps(footprints, s0, s1, z0, z1, margin=0.4) -> bool:
    for a0, a1, b0, b1 in footprints:
        if s0 < a1 + margin and a0 < s1 + margin and z0 < b1 + margin and b0 < z1 + margin:
            return True
    return False


def sample_scene(seed: int, index: int) -> Scene:
    """Draws the layout of scene (`seed`, `index`); independent of image size.

    Args:
        seed: int >= 0. Dataset seed.
        index: int >= 0. Example index.

    Returns:
        A `Scene`; `render(scene, image_size)` rasterises it.
    """
    rng = _rng(seed, index)
    camera_height = float(rng.uniform(1.2, 1.8))
    pitch = float(np.deg2rad(rng.uniform(-1.0, 4.0)))
    focal_ratio = float(rng.uniform(0.78, 0.92))

    n_lanes = int(rng.integers(2, 5))
    lane_w = float(rng.uniform(3.0, 3.7))
    width = n_lanes * lane_w
    ego_lane = int(rng.integers(n_lanes))
    road = {
        "n_lanes": n_lanes,
        "lane_width": lane_w,
        "width": width,
        # Left road edge x(Z) = c0 + c1 Z + c2 Z^2 (camera at x = 0).
        "c0": -(ego_lane + 0.5) * lane_w + float(rng.uniform(-0.4, 0.4)),
        "c1": float(rng.uniform(-0.04, 0.04)),
        "c2": float(rng.uniform(-0.0018, 0.0018)),
        "sidewalk_left": float(rng.uniform(1.6, 4.0)),
        "sidewalk_right": float(rng.uniform(1.6, 4.0)),
        "dash_period": float(rng.uniform(7.0, 12.0)),
        "dash_fraction": float(rng.uniform(0.3, 0.5)),
        "dash_phase": float(rng.uniform(0.0, 12.0)),
        "marking_width": float(rng.uniform(0.14, 0.22)),
        "center_solid": bool(rng.random() < 0.35),
        "center_yellow": bool(rng.random() < 0.3),
        "crosswalk_z": float(rng.uniform(8.0, 35.0)) if rng.random() < 0.3 else -1.0,
        "asphalt": float(rng.uniform(0.26, 0.42)),
        "sidewalk_tone": np.array(rng.uniform(0.5, 0.72) * rng.uniform(0.93, 1.07, 3), np.float32),
        "tile": float(rng.uniform(0.8, 1.6)),
        "phases": rng.uniform(0, 2 * np.pi, 6).astype(np.float32),
    }
    urban = float(rng.random())
    walls = (_sample_walls(rng, urban), _sample_walls(rng, urban))

    def road_x(s, z):
        return road["c0"] + road["c1"] * z + road["c2"] * z * z + s

    objects: list[SceneObject] = []
    footprints: list[tuple] = []
    sl, sr = road["sidewalk_left"], road["sidewalk_right"]

    n_cars = int(rng.choice(8, p=[0.12, 0.14, 0.16, 0.16, 0.14, 0.12, 0.09, 0.07]))
    for _ in range(n_cars):
        for _attempt in range(4):
            w = float(rng.uniform(1.65, 2.0))
            h = float(rng.uniform(1.35, 1.9))
            z = float(rng.uniform(5.0, 55.0))
            if rng.random() < 0.15:
                s = 1.15 if rng.random() < 0.5 else width - 1.15
            else:
                s = (int(rng.integers(n_lanes)) + 0.5) * lane_w + float(rng.uniform(-0.3, 0.3))
            color = _CAR_COLORS[rng.integers(len(_CAR_COLORS))] * rng.uniform(0.85, 1.1)
            if _overlaps(footprints, s - w / 2, s + w / 2, z, z + 4.4):
                continue
            footprints.append((s - w / 2, s + w / 2, z, z + 4.4))
            objects.append(
                SceneObject(OBJ_CAR, road_x(s, z), z, w, h, np.asarray([color], np.float32), length=4.4)
            )
            break

    n_peds = int(rng.choice(6, p=[0.3, 0.22, 0.18, 0.13, 0.1, 0.07]))
    for _ in range(n_peds):
        for _attempt in range(4):
            h = float(rng.uniform(1.5, 1.95))
            w = 0.3 * h
            z = float(rng.uniform(4.0, 32.0))
            r = rng.random()
            if r < 0.15:
                s = float(rng.uniform(0.5, width - 0.5))
            elif r < 0.55:
                s = -float(rng.uniform(0.4, sl - 0.4))
            else:
                s = width + float(rng.uniform(0.4, sr - 0.4))
            colors = np.stack(
                [
                    _SKIN[rng.integers(len(_SKIN))],
                    _CLOTHES[rng.integers(len(_CLOTHES))] * rng.uniform(0.8, 1.2),
                    _CLOTHES[rng.integers(len(_CLOTHES))] * rng.uniform(0.8, 1.2),
                ]
            ).astype(np.float32)
            stride = float(rng.uniform(0.0, 0.16))
            if _overlaps(footprints, s - w / 2, s + w / 2, z, z + 0.4):
                continue
            footprints.append((s - w / 2, s + w / 2, z, z + 0.4))
            objects.append(SceneObject(OBJ_PEDESTRIAN, road_x(s, z), z, w, h, colors, params=(stride,)))
            break

    n_lights = int(rng.choice(3, p=[0.45, 0.35, 0.2]))
    for _ in range(n_lights):
        for _attempt in range(4):
            pole = float(rng.uniform(2.4, 3.3))
            z = float(rng.uniform(8.0, 45.0))
            s = -0.6 if rng.random() < 0.45 else width + 0.6
            state = int(rng.choice(3, p=[0.45, 0.2, 0.35]))
            if _overlaps(footprints, s - 0.2, s + 0.2, z, z + 0.3):
                continue
            footprints.append((s - 0.2, s + 0.2, z, z + 0.3))
            objects.append(
                SceneObject(OBJ_TRAFFIC_LIGHT, road_x(s, z), z, 0.36, pole + 0.95, np.zeros((1, 3), np.float32),
                            state=state, params=(pole,), length=0.3)
            )
            break

    if rng.random() < 0.4:
        for _attempt in range(4):
            z = float(rng.uniform(5.0, 35.0))
            s = width + 0.5 if rng.random() < 0.75 else -0.5
            center = float(rng.uniform(1.9, 2.3))
            if _overlaps(footprints, s - 0.4, s + 0.4, z, z + 0.3):
                continue
            footprints.append((s - 0.4, s + 0.4, z, z + 0.3))
            objects.append(
                SceneObject(OBJ_STOP_SIGN, road_x(s, z), z, 0.75, center + 0.375, np.zeros((1, 3), np.float32),
                            params=(center,), length=0.3)
            )
            break

    sun = float(rng.uniform(0.55, 1.0))
    fog_kind = rng.random()
    if fog_kind < 0.5:
        beta = rng.uniform(0.001, 0.008)
    elif fog_kind < 0.8:
        beta = rng.uniform(0.008, 0.025)
    else:
        beta = rng.uniform(0.025, 0.06)
    top = np.array([rng.uniform(0.2, 0.45), rng.uniform(0.4, 0.6), rng.uniform(0.75, 0.95)], np.float32)
    horizon = np.clip(top + rng.uniform(0.2, 0.4), 0, 1).astype(np.float32)
    fog = np.clip(horizon * rng.uniform(0.85, 1.0) + rng.uniform(-0.05, 0.05, 3), 0, 1).astype(np.float32)
    look = {
        "gain": float(rng.uniform(0.65, 1.2)),
        "tint": rng.uniform(0.92, 1.08, 3).astype(np.float32),
        "sun_left": sun if rng.random() < 0.5 else 1.0,
        "sun_right": 1.0,
        "fog_beta": float(beta),
        "fog_color": fog,
        "sky_top": top,
        "sky_horizon": horizon,
        "clouds": float(rng.uniform(0.0, 1.0)),
        "cloud_phases": rng.uniform(0, 2 * np.pi, 3).astype(np.float32),
        "noise": float(rng.uniform(1.0, 6.0)),
        "noise_seed": int(rng.integers(2**31)),
        "grass": np.array([rng.uniform(0.2, 0.35), rng.uniform(0.35, 0.5), rng.uniform(0.1, 0.2)], np.float32),
    }
    if look["sun_left"] == 1.0:
        look["sun_right"] = sun
    return Scene(camera_height, pitch, focal_ratio, road, walls, objects, look)


# ----------------------------------------------------------------------------- geometry


def _wall_hit(side: dict, c: tuple, offset: float, dx, dy, dz, cam_h, t_limit):
    """Nearest valid hit of the pixel rays with one curved facade surface.

    The facade is the vertical surface x = c0 + offset + c1 Z + c2 Z^2; a ray
    (t dx, t dy, t dz) meets it where c2 dz^2 t^2 + (c1 dz - dx) t + (c0 + offset) = 0.
    A hit counts when it is nearer than `t_limit` (the ground hit), above the
    ground and below the facade's height at that Z.

    Returns:
        (t [H, W], inf where no hit; facade segment index [H, W]).
    """
    c0, c1, c2 = c
    cc = np.float32(c0 + offset)
    b = np.float32(c1) * dz - dx  # [H, W]
    height, width = b.shape
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if abs(c2) < 1e-9:
            roots = (-cc / b,)
        else:
            a = np.float32(c2) * dz * dz  # [H, 1]
            sq = np.sqrt(b * b - 4.0 * a * cc)  # NaN where no real root: compares False below
            q = -0.5 * (b + np.copysign(sq, b))
            roots = (q / a, cc / q)
    bounds, heights, types = side["bounds"], side["heights"], side["types"]
    best = np.full(height * width, np.inf, np.float32)
    best_seg = np.zeros(height * width, np.int32)
    limit_flat = t_limit.ravel()
    for t in roots:
        t = t.ravel()
        with np.errstate(invalid="ignore"):
            idx = np.flatnonzero((t > 1e-3) & (t < limit_flat))
        if idx.size == 0:
            continue
        tt = t[idx]
        rows = idx // width
        z = tt * dz[rows, 0]
        above = cam_h - tt * dy[rows, 0]
        seg = np.clip(np.searchsorted(bounds, z) - 1, 0, len(heights) - 1).astype(np.int32)
        top = heights[seg] + np.where(
            types[seg] == _WALL_VEGETATION, 0.7 * np.sin(z * 1.3 + seg.astype(np.float32)), 0.0
        ).astype(np.float32)
        ok = (z > bounds[0]) & (z < bounds[-1]) & (above >= 0) & (above <= top) & (tt < best[idx])
        sel = idx[ok]
        best[sel] = tt[ok]
        best_seg[sel] = seg[ok]
    return best.reshape(height, width), best_seg.reshape(height, width)


def _object_shape(obj: SceneObject, a, b):
    """Mask of the object's silhouette at plane coordinates a (0 left .. 1 right), b (0 ground .. 1 top)."""
    inside = (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
    if obj.cls == OBJ_CAR:
        body = (b <= 0.58) & ((b >= 0.13) | (a < 0.2) | (a > 0.8))
        margin = 0.08 + 0.12 * (b - 0.58) / 0.42
        cabin = (b > 0.58) & (a >= margin) & (a <= 1 - margin)
        return inside & (body | cabin)
    if obj.cls == OBJ_PEDESTRIAN:
        stride = obj.params[0]
        x_m = (a - 0.5) * obj.width
        y_m = b * obj.height
        head = x_m**2 + (y_m - 0.91 * obj.height) ** 2 <= (0.065 * obj.height) ** 2
        torso = (b >= 0.48) & (b <= 0.84) & (np.abs(a - 0.5) <= 0.3)
        arms = (b >= 0.52) & (b <= 0.83) & (np.abs(a - 0.5) >= 0.33) & (np.abs(a - 0.5) <= 0.48)
        swing = stride * (1 - b / 0.5)
        legs = (b < 0.5) & ((np.abs(a - (0.35 - swing)) <= 0.12) | (np.abs(a - (0.65 + swing)) <= 0.12))
        return inside & (head | torso | arms | legs)
    if obj.cls == OBJ_TRAFFIC_LIGHT:
        pole_b = obj.params[0] / obj.height
        housing = b >= pole_b
        pole = (b < pole_b) & (np.abs(a - 0.5) <= 0.06 / obj.width)
        return inside & (housing | pole)
    # Stop sign: regular octagon of apothem r over a pole.
    center = obj.params[0]
    r = obj.width / 2
    x_m = (a - 0.5) * obj.width
    y_m = b * obj.height - center
    octagon = (np.abs(x_m) <= r) & (np.abs(y_m) <= r) & (np.abs(x_m) + np.abs(y_m) <= r * math.sqrt(2))
    pole = (y_m < 0) & (np.abs(x_m) <= 0.035)
    return inside & (octagon | pole)


def _object_color(obj: SceneObject, a, b):
    """RGB [h, w, 3] of the object's surface at plane coordinates (a, b)."""
    shape = a.shape + (3,)
    if obj.cls == OBJ_CAR:
        base = obj.colors[0]
        col = np.broadcast_to(base, shape) * (0.75 + 0.35 * b)[..., None]
        margin = 0.08 + 0.12 * (b - 0.58) / 0.42
        glass = (b > 0.64) & (b < 0.95) & (a >= margin + 0.05) & (a <= 1 - margin - 0.05)
        tail = (b > 0.38) & (b < 0.48) & ((a < 0.14) | (a > 0.86))
        plate = (b > 0.2) & (b < 0.3) & (np.abs(a - 0.5) < 0.12)
        wheel = b < 0.13
        bumper = (b >= 0.13) & (b < 0.2)
        col = np.where(glass[..., None], np.float32([0.10, 0.12, 0.16]) + 0.1 * b[..., None], col)
        col = np.where(tail[..., None], np.float32([0.85, 0.06, 0.05]), col)
        col = np.where(plate[..., None], np.float32([0.85, 0.85, 0.8]), col)
        col = np.where(bumper[..., None], base * 0.45, col)
        col = np.where(wheel[..., None], np.float32([0.04, 0.04, 0.045]), col)
        return col
    if obj.cls == OBJ_PEDESTRIAN:
        skin, shirt, pants = obj.colors
        col = np.where((b < 0.5)[..., None], pants, shirt)
        col = np.where((b > 0.845)[..., None], skin, col)
        col = np.where(((b > 0.52) & (b < 0.58) & (np.abs(a - 0.5) >= 0.33))[..., None], skin, col)
        return col * (0.8 + 0.3 * b)[..., None]
    if obj.cls == OBJ_TRAFFIC_LIGHT:
        pole_h = obj.params[0]
        col = np.broadcast_to(np.float32([0.33, 0.34, 0.35]), shape).copy()
        hb = (b * obj.height - pole_h) / 0.95
        in_housing = hb >= 0
        col[in_housing] = (0.08, 0.08, 0.07)
        x_m = (a - 0.5) * obj.width
        lit = (np.float32([1.0, 0.12, 0.08]), np.float32([1.0, 0.75, 0.1]), np.float32([0.15, 1.0, 0.35]))
        for state, center in enumerate((0.8, 0.5, 0.2)):
            lamp = in_housing & (x_m**2 + ((hb - center) * 0.95) ** 2 <= 0.12**2)
            color = lit[state] if state == obj.state else lit[state] * 0.22
            col[lamp] = color
        return col
    center = obj.params[0]
    r = obj.width / 2
    x_m = (a - 0.5) * obj.width
    y_m = b * obj.height - center
    col = np.broadcast_to(np.float32([0.5, 0.5, 0.52]), shape).copy()
    octagon = (np.abs(x_m) <= r) & (np.abs(y_m) <= r) & (np.abs(x_m) + np.abs(y_m) <= r * math.sqrt(2))
    inner = (np.abs(x_m) <= 0.86 * r) & (np.abs(y_m) <= 0.86 * r) & (
        np.abs(x_m) + np.abs(y_m) <= 0.86 * r * math.sqrt(2)
    )
    col[octagon] = (0.95, 0.95, 0.95)
    col[inner] = (0.78, 0.05, 0.06)
    text = inner & (np.abs(y_m) < 0.16 * r) & (np.abs(x_m) < 0.62 * r) & (np.sin(x_m * 60.0) > -0.3)
    col[text] = (0.95, 0.95, 0.95)
    return col


def render(scene: Scene, image_size=(128, 256)) -> dict:
    """Rasterises a `Scene` into an image and its labels (see the module docstring).

    Args:
        scene: a `Scene` from `sample_scene`.
        image_size: (H, W) in pixels.

    Returns:
        dict of NumPy arrays: image, segmentation, depth, boxes, box_classes,
        scene, intrinsics, camera_height, camera_pitch.
    """
    height, width = int(image_size[0]), int(image_size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}.")
    look, road = scene.look, scene.road
    cam_h = np.float32(scene.camera_height)
    f = np.float32(scene.focal_ratio * width)
    cx, cy = np.float32(width / 2), np.float32(height / 2)
    cp, sp = np.float32(math.cos(scene.pitch)), np.float32(math.sin(scene.pitch))

    # Rays through pixel centres, camera frame (x right, y down, z forward) with z = 1,
    # rotated into the level world frame (Y down): t along such a ray *is* the Z-depth.
    dcx = ((np.arange(width, dtype=np.float32) + 0.5 - cx) / f)[None, :]
    dcy = ((np.arange(height, dtype=np.float32) + 0.5 - cy) / f)[:, None]
    dx = dcx  # [1, W]
    dy = dcy * cp + sp  # [H, 1]
    dz = -dcy * sp + cp  # [H, 1]
    dx_full = np.broadcast_to(dx, (height, width))

    # Ground plane Y = cam_h.
    ground_rows = dy[:, 0] > 1e-5
    tg_row = np.where(ground_rows[:, None], cam_h / np.where(ground_rows[:, None], dy, 1.0), np.inf).astype(np.float32)
    zg = np.where(ground_rows[:, None], tg_row * dz, 0.0).astype(np.float32)  # [H, 1]
    xg = np.where(ground_rows[:, None], tg_row, 0.0) * dx_full  # [H, W]
    c = (road["c0"], road["c1"], road["c2"])
    s = xg - (c[0] + c[1] * zg + c[2] * zg * zg)  # lateral road coordinate from the left edge
    t_ground = np.broadcast_to(tg_row, (height, width))

    # Facades on both sides.
    sl, sr, rw = road["sidewalk_left"], road["sidewalk_right"], road["width"]
    tl, seg_l = _wall_hit(scene.walls[0], c, -sl, dx_full, dy, dz, cam_h, t_ground)
    tr, seg_r = _wall_hit(scene.walls[1], c, rw + sr, dx_full, dy, dz, cam_h, t_ground)

    t_bg = np.minimum(np.minimum(t_ground, tl), tr)
    is_ground = np.isfinite(t_ground) & (t_ground <= t_bg)
    is_left = ~is_ground & np.isfinite(tl) & (tl <= tr)
    is_right = ~is_ground & ~is_left & np.isfinite(tr)

    seg = np.zeros((height, width), np.int32)
    # Ground classes.
    on_road = (s >= 0) & (s <= rw)
    mw = road["marking_width"]
    lane_w = road["lane_width"]
    dashed_on = np.mod(zg + road["dash_phase"], road["dash_period"]) < road["dash_period"] * road["dash_fraction"]
    marking = (np.abs(s - 0.25) <= mw / 2) | (np.abs(s - (rw - 0.25)) <= mw / 2)
    n_lanes = road["n_lanes"]
    center_k = n_lanes // 2 if n_lanes % 2 == 0 else -1
    for k in range(1, n_lanes):
        line = np.abs(s - k * lane_w) <= mw / 2
        if k == center_k and road["center_solid"]:
            marking |= line
        else:
            marking |= line & dashed_on
    if road["crosswalk_z"] > 0:
        cz = road["crosswalk_z"]
        cross = (zg >= cz) & (zg <= cz + 3.0) & (np.mod(s, 1.0) < 0.5)
        marking |= cross
    marking &= on_road
    on_sidewalk = ((s < 0) & (s >= -sl)) | ((s > rw) & (s <= rw + sr))
    ground_cls = np.where(marking, LANE_MARKING, np.where(on_road, ROAD, np.where(on_sidewalk, SIDEWALK, VEGETATION)))
    seg = np.where(is_ground, ground_cls, seg)
    wall_type_l = scene.walls[0]["types"][seg_l]
    wall_type_r = scene.walls[1]["types"][seg_r]
    wall_cls_l = np.where(wall_type_l == _WALL_BUILDING, BUILDING, VEGETATION)
    wall_cls_r = np.where(wall_type_r == _WALL_BUILDING, BUILDING, VEGETATION)
    seg = np.where(is_left, wall_cls_l, seg)
    seg = np.where(is_right, wall_cls_r, seg).astype(np.int32)

    # ---- objects: rasterise inside projected boxes, z-test against everything.
    min_pixels = max(6, int(round(12 * height * width / (128 * 256))))
    rasters = []
    for obj in scene.objects:
        x0, x1 = obj.x - obj.width / 2, obj.x + obj.width / 2
        yw = np.array([cam_h, cam_h - obj.height], np.float32)  # world Y (down) of bottom, top
        yc = cp * yw - sp * obj.z
        zc = sp * yw + cp * obj.z
        if np.any(zc <= 0.5):
            rasters.append(None)
            continue
        us = f * np.array([x0 / zc[0], x1 / zc[0], x0 / zc[1], x1 / zc[1]]) + cx
        vs = f * (yc / zc) + cy
        c0_ = max(0, int(math.ceil(us.min() - 0.5)))
        c1_ = min(width - 1, int(math.floor(us.max() - 0.5)))
        r0_ = max(0, int(math.ceil(vs.min() - 0.5)))
        r1_ = min(height - 1, int(math.floor(vs.max() - 0.5)))
        if c1_ < c0_ or r1_ < r0_:
            rasters.append(None)
            continue
        rows, cols = slice(r0_, r1_ + 1), slice(c0_, c1_ + 1)
        t = (obj.z / dz[rows]).astype(np.float32)  # [h, 1] camera depth on the object's plane
        xw = t * dx[:, cols]
        a = ((xw - x0) / obj.width).astype(np.float32)
        b = np.broadcast_to(((cam_h - t * dy[rows]) / obj.height).astype(np.float32), a.shape)
        mask = _object_shape(obj, a, b)
        rasters.append((rows, cols, t, a, b, mask))

    def composite(keep):
        zbuf = t_bg.copy()
        ids = np.full((height, width), -1, np.int32)
        for k in sorted(keep, key=lambda k: -scene.objects[k].z):  # far to near
            rows, cols, t, _, _, mask = rasters[k]
            zone = zbuf[rows, cols]
            hit = mask & (t < zone * (1 + 1e-4))
            zone[hit] = np.broadcast_to(t, hit.shape)[hit]
            ids[rows, cols][hit] = k
        return zbuf, ids

    keep = [k for k, r in enumerate(rasters) if r is not None and r[5].any()]
    zbuf, ids = composite(keep)
    counts = np.bincount(ids[ids >= 0], minlength=len(rasters))
    visible = [k for k in keep if counts[k] >= min_pixels]
    if len(visible) != len(keep):  # removing objects only uncovers the others
        zbuf, ids = composite(visible)

    boxes, classes, red = [], [], False
    for k in visible:
        rows, cols = rasters[k][0], rasters[k][1]
        mine = ids[rows, cols] == k
        ys = np.nonzero(mine.any(axis=1))[0]
        xs = np.nonzero(mine.any(axis=0))[0]
        boxes.append((rows.start + ys[0], cols.start + xs[0], rows.start + ys[-1] + 1, cols.start + xs[-1] + 1))
        obj = scene.objects[k]
        classes.append(obj.cls)
        red |= obj.cls == OBJ_TRAFFIC_LIGHT and obj.state == _RED
        seg[rows, cols][mine] = _SEG_OF_OBJECT[obj.cls]

    depth = np.where(np.isfinite(zbuf), np.minimum(zbuf, MAX_DEPTH), 0.0).astype(np.float32)

    # ---- appearance, computed only where each surface is visible (flat pixel indices).
    look_noise = np.random.default_rng([look["noise_seed"], height, width])
    img = np.zeros((height * width, 3), np.float32)
    background = (ids < 0).ravel()

    def pixels(mask):
        idx = np.flatnonzero(mask.ravel() & background)
        return idx, idx // width, idx % width

    # Sky: gradient by elevation, clouds by direction.
    idx, rows, cols = pixels(seg == SKY)
    if idx.size:
        rx, ry, rz = dx[0, cols], dy[rows, 0], dz[rows, 0]
        elev = -ry / np.sqrt(rx * rx + rz * rz)
        azim = np.arctan2(rx, rz)
        p = look["cloud_phases"]
        cl = np.sin(azim * 7 + p[0]) + np.sin(elev * 25 + azim * 3 + p[1]) + 0.7 * np.sin(azim * 13 - elev * 11 + p[2])
        cloud = (np.clip((cl - 1.2 + 1.5 * look["clouds"]) * 0.5, 0, 1) * look["clouds"])[:, None]
        mix = np.clip(elev * 2.5, 0, 1)[:, None]
        sky = look["sky_horizon"] + (look["sky_top"] - look["sky_horizon"]) * mix
        img[idx] = sky * (1 - cloud) + np.float32(0.92) * cloud
    # Ground: a palette colour per surface times a procedural shade in world coordinates.
    idx, rows, cols = pixels(is_ground)
    if idx.size:
        zi = zg[rows, 0]
        si = s.ravel()[idx]
        xi = xg.ravel()[idx]
        ci = ground_cls.ravel()[idx]
        ph = road["phases"]
        tex = 0.035 * np.sin(zi * 0.9 + ph[0]) * np.sin(si * 1.7 + ph[1]) + 0.02 * np.sin(zi * 3.1 + si * 2.3 + ph[2])
        q = np.mod(si, lane_w) - lane_w / 2
        tracks = np.exp(-(((q - 0.8) / 0.3) ** 2)) + np.exp(-(((q + 0.8) / 0.3) ** 2))
        side_s = np.where(si < 0, -si, si - rw)
        joints = (np.mod(zi, road["tile"]) < 0.06) | (np.mod(side_s, road["tile"]) < 0.06)
        curb = side_s < 0.2
        yellow = road["center_yellow"] and center_k > 0
        yellow = np.abs(si - center_k * lane_w) <= mw if yellow else np.zeros_like(curb)
        palette = np.stack(
            [
                road["asphalt"] * np.float32([1.0, 1.0, 1.04]),
                np.float32([0.88, 0.88, 0.86]),
                np.float32([0.9, 0.72, 0.12]),
                road["sidewalk_tone"],
                road["sidewalk_tone"] * 1.15,
                look["grass"],
            ]
        ).astype(np.float32)
        asphalt_shade = 1 + (tex - 0.04 * tracks) / road["asphalt"]
        which = np.where(
            ci == ROAD,
            0,
            np.where(ci == LANE_MARKING, 1 + yellow, np.where(ci == SIDEWALK, 3 + curb, 5)),
        )
        shade = np.where(
            ci == ROAD,
            asphalt_shade,
            np.where(
                ci == LANE_MARKING,
                0.9 + 2 * tex,
                np.where(ci == SIDEWALK, np.where(curb, 1.0, np.where(joints, 0.82, 1.0) * (1 + tex)), 1 + 3 * tex),
            ),
        )
        for obj in scene.objects:  # car shadows
            if obj.cls == OBJ_CAR:
                under = (zi >= obj.z - 0.2) & (zi <= obj.z + obj.length) & (np.abs(xi - obj.x) <= obj.width / 2 + 0.1)
                shade = np.where(under, shade * 0.4, shade)
        img[idx] = palette[which] * shade[:, None].astype(np.float32)
    # Facades: buildings with a window grid, vegetation with a leaf pattern; a lit and a shaded side.
    for side_mask, side, t_side, segs_side, light in (
        (is_left, scene.walls[0], tl, seg_l, look["sun_left"]),
        (is_right, scene.walls[1], tr, seg_r, look["sun_right"]),
    ):
        idx, rows, cols = pixels(side_mask)
        if not idx.size:
            continue
        ti = t_side.ravel()[idx]
        zw = ti * dz[rows, 0]
        hw = cam_h - ti * dy[rows, 0]
        segs = segs_side.ravel()[idx]
        along = zw - side["bounds"][segs]
        spacing = side["window_spacing"][segs]
        floor = side["floor_height"][segs]
        u_w = np.mod(along, spacing) / spacing
        v_w = np.mod(hw, floor) / floor
        window = (u_w > 0.25) & (u_w < 0.75) & (v_w > 0.3) & (v_w < 0.78) & (hw > 2.5)
        window &= hw < side["heights"][segs] - 0.6
        building = side["types"][segs] == _WALL_BUILDING
        phase = side["phase"][segs]
        leaves = 0.75 + 0.25 * np.sin(zw * 4.1 + hw * 3.3 + phase) * np.sin(zw * 2.3 - hw * 5.1)
        glass = np.float32([0.16, 0.2, 0.26]) + (0.12 * np.sin(along + phase))[:, None]
        facade = side["colors"][segs] * np.where(building, 1.0, leaves)[:, None]
        img[idx] = np.where((building & window)[:, None], glass, facade) * np.float32(light)
    img = img.reshape(height, width, 3)
    # Objects.
    for k in visible:
        rows, cols, t, a, b, _ = rasters[k]
        mine = ids[rows, cols] == k
        zone = img[rows, cols]
        zone[mine] = _object_color(scene.objects[k], a, b)[mine]
    # Lighting, fog growing with depth, sensor noise.
    trans = np.exp(-look["fog_beta"] * np.where(np.isfinite(zbuf), zbuf, 150.0)).astype(np.float32)[..., None]
    img = img * (trans * (255.0 * look["gain"] * look["tint"])) + (255.0 * look["fog_color"]) * (1 - trans)
    img += look_noise.standard_normal(img.shape, dtype=np.float32) * np.float32(look["noise"])
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    boxes_arr = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes_arr = np.asarray(classes, np.int32).reshape(-1)
    tags = np.zeros(len(SCENE_TAGS), np.float32)
    for cls in classes:
        tags[cls] = 1.0
    tags[4] = float(red)
    return {
        "image": image,
        "segmentation": seg.astype(np.int32),
        "depth": depth[..., None],
        "boxes": boxes_arr,
        "box_classes": classes_arr,
        "scene": tags,
        "intrinsics": np.array([f, f, cx, cy], np.float32),
        "camera_height": np.float32(scene.camera_height),
        "camera_pitch": np.float32(scene.pitch),
    }


def render_scene(seed: int, index: int, image_size=(128, 256)) -> dict:
    """Renders scene number `index` of the dataset with seed `seed`.

    Deterministic: the same (seed, index, image_size) always gives the same
    arrays. The layout (camera, road, objects) does not depend on `image_size`,
    so different sizes show the same scene, except that objects covering too
    few pixels (fewer than about 12 at 128x256, scaled with the image area)
    are dropped at each size separately.

    Args:
        seed: int >= 0. Dataset seed.
        index: int >= 0. Example index.
        image_size: (H, W) in pixels. Defaults to (128, 256).

    Returns:
        dict of NumPy arrays (see the module docstring for the conventions):
        `image` uint8 [H, W, 3], `segmentation` int32 [H, W], `depth` float32
        [H, W, 1], `boxes` float32 [N, 4], `box_classes` int32 [N], `scene`
        float32 [5], plus `intrinsics`, `camera_height`, `camera_pitch`.

    Example:
    ```python
    from mtlzoo.data.synthetic_driving import render_scene
    ex = render_scene(0, 0)
    ex["boxes"], ex["box_classes"], ex["scene"]
    ```
    """
    return render(sample_scene(seed, index), image_size)
