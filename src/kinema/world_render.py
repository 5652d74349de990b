"""Rendering of world scenes into uint8 video: anti-aliased flat shapes over procedural backgrounds.

Shapes are signed distance functions evaluated per pixel (coverage = 0.5 - distance, clipped), which gives
exact anti-aliasing without supersampling. Textures are laid out in su from the scene's texture seed, one
1x1 su tile at a time, so a texture does not depend on the clip's length, and a camera pan is a window
sliding over one wide texture canvas.
"""

from __future__ import annotations

import math

import numpy as np

from kinema.errors import KinemaError
from kinema.world_scene import BACKGROUND_COLOURS, GRADIENT_SPREAD, OBJECT_COLOURS, Background, Obj, Scene


def _regular(count: int, radii: tuple[float, ...], start_deg: float = 90.0) -> np.ndarray:
    """Vertices of a star-like polygon: `count` points cycling through `radii`."""
    angles = np.deg2rad(start_deg + np.arange(count) * 360.0 / count)
    r = np.resize(np.array(radii), count)
    return np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)


def _cross(half_width: float = 0.32) -> np.ndarray:
    a, w = math.sqrt(1 - half_width**2), half_width
    quarter = [(a, -w), (a, w), (w, w), (w, a)]
    points = []
    for k in range(4):  # rotate the quarter outline by 90 degrees four times
        c, s = math.cos(k * math.pi / 2), math.sin(k * math.pi / 2)
        points += [(c * x - s * y, s * x + c * y) for x, y in quarter]
    return np.array(points)


def _heart(points: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, y], axis=1)


def _normalised(vertices: np.ndarray) -> np.ndarray:
    """Centre a polygon on its area centroid (so it spins in place) and scale its circumradius to 1."""
    x, y = vertices[:, 0], vertices[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2
    centre = np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6 * area)
    centred = vertices - centre
    return centred / np.hypot(centred[:, 0], centred[:, 1]).max()


# Unit shapes in math coordinates (y up), circumradius 1 around the centroid. Circle and ring are analytic.
POLYGONS: dict[str, np.ndarray] = {
    "square": _regular(4, (1.0,), 45.0),
    "triangle": _regular(3, (1.0,)),
    "star": _regular(10, (1.0, 0.45)),
    "diamond": np.array([(0.0, 1.0), (-0.62, 0.0), (0.0, -1.0), (0.62, 0.0)]),
    "cross": _cross(),
    "heart": _normalised(_heart()),
}
RING_INNER = 0.55  # inner radius of the ring as a fraction of its outer radius


def _polygon_sdf(px: np.ndarray, py: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points to a closed polygon, vectorised over edges."""
    ax, ay = vertices[:, 0], vertices[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    p_x, p_y = px[..., None], py[..., None]
    ex, ey = bx - ax, by - ay
    h = np.clip(((p_x - ax) * ex + (p_y - ay) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    dist = np.sqrt(np.min((p_x - ax - h * ex) ** 2 + (p_y - ay - h * ey) ** 2, axis=-1))
    # Even-odd rule: count edges crossed by a ray towards +x.
    straddles = (ay > p_y) != (by > p_y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = ax + (p_y - ay) * ex / ey
    inside = np.sum(straddles & (p_x < x_cross), axis=-1) % 2 == 1
    return np.where(inside, -dist, dist)


def shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to the unit shape at shape-local math coordinates (u right, v up)."""
    r = np.hypot(u, v)
    if shape == "circle":
        return r - 1.0
    if shape == "ring":
        mid, half = (1 + RING_INNER) / 2, (1 - RING_INNER) / 2
        return np.abs(r - mid) - half
    return _polygon_sdf(u, v, POLYGONS[shape])


def _paint(canvas: np.ndarray, obj: Obj, cx: float, cy: float, radius: float, angle_deg: float) -> None:
    """Composite one object (centre and circumradius in pixels) onto an (H, W, 3) float canvas."""
    height, width = canvas.shape[:2]
    x0, x1 = max(int(cx - radius) - 2, 0), min(int(cx + radius) + 3, width)
    y0, y1 = max(int(cy - radius) - 2, 0), min(int(cy + radius) + 3, height)
    if x0 >= x1 or y0 >= y1 or radius <= 0:
        return
    dx = np.arange(x0, x1) + 0.5 - cx
    dy = cy - (np.arange(y0, y1) + 0.5)  # math coordinates: v grows upwards
    theta = math.radians(angle_deg)
    c, s = math.cos(theta), math.sin(theta)
    # Rotate the pixel grid by -angle into the shape's own frame.
    u = (dx[None, :] * c + dy[:, None] * s) / radius
    v = (-dx[None, :] * s + dy[:, None] * c) / radius
    coverage = np.clip(0.5 - shape_sdf(obj.shape, u, v) * radius, 0.0, 1.0)[..., None]
    patch = canvas[y0:y1, x0:x1]
    patch += coverage * (np.array(OBJECT_COLOURS[obj.colour], np.float32) - patch)


def _splat(canvas: np.ndarray, centres: np.ndarray, sigma_x: float, sigma_y: float,
           weights: np.ndarray, combine) -> None:
    """Stamp small Gaussian blobs (centres in canvas pixels) into a 2-D map with `combine`.at."""
    rx, ry = math.ceil(3 * sigma_x), math.ceil(3 * sigma_y)
    ox, oy = np.meshgrid(np.arange(-rx, rx + 1), np.arange(-ry, ry + 1))
    ix = np.floor(centres[:, 0])[:, None, None].astype(int) + ox
    iy = np.floor(centres[:, 1])[:, None, None].astype(int) + oy
    fx = ix + 0.5 - centres[:, 0][:, None, None]
    fy = iy + 0.5 - centres[:, 1][:, None, None]
    w = weights[:, None, None] * np.exp(-0.5 * ((fx / sigma_x) ** 2 + (fy / sigma_y) ** 2))
    keep = (ix >= 0) & (ix < canvas.shape[1]) & (iy >= 0) & (iy < canvas.shape[0])
    combine.at(canvas, (iy[keep], ix[keep]), w[keep])


def _jittered_points(seed: int, x_range: tuple[float, float], y_range: tuple[float, float], cell: float,
                     keep: float) -> tuple[np.ndarray, np.ndarray]:
    """Points in su, one per grid cell (a fraction `keep` of cells), never closer than 0.4 cell.

    Each 1x1 su tile draws from its own seed, so the layout is the same whatever part is rendered.
    """
    points, values = [], []
    per_tile = round(1 / cell)
    for tx in range(math.floor(x_range[0]), math.ceil(x_range[1])):
        for ty in range(math.floor(y_range[0]), math.ceil(y_range[1])):
            rng = np.random.default_rng([seed, tx + 1_000_000, ty + 1_000_000])
            gx, gy = np.meshgrid(np.arange(per_tile), np.arange(per_tile))
            jitter = rng.uniform(0.2, 0.8, size=(2, per_tile, per_tile))
            chosen = rng.uniform(size=(per_tile, per_tile)) < keep
            px = tx + (gx + jitter[0]) / per_tile
            py = ty + (gy + jitter[1]) / per_tile
            points.append(np.stack([px[chosen], py[chosen]], axis=1))
            values.append(rng.uniform(size=int(chosen.sum())))
    return np.concatenate(points), np.concatenate(values)


def _texture(background: Background, x_start: float, width: int, height: int, short: int) -> np.ndarray:
    """A (height, width, 3) float texture canvas whose column 0 sits at world pixel x_start."""
    x_range = (x_start / short, (x_start + width) / short)
    y_range = (0.0, height / short)
    seed = background.texture_seed

    def to_pixels(points: np.ndarray) -> np.ndarray:
        return np.stack([points[:, 0] * short - x_start, points[:, 1] * short], axis=1)

    if background.kind in ("snow", "night"):
        snow = background.kind == "snow"
        top, bottom = ((168, 180, 198), (168, 180, 198)) if snow else ((28, 32, 75), (52, 56, 108))
        canvas = _vertical_gradient(np.array(top), np.array(bottom), height, width)
        points, values = _jittered_points(seed, x_range, y_range, cell=0.08 if snow else 0.11,
                                          keep=0.9 if snow else 0.55)
        glow = np.zeros((height, width), np.float32)
        brightness = 0.7 + 0.3 * values
        _splat(glow, to_pixels(points), 0.0075 * short, 0.0075 * short, brightness, np.maximum)
        speck = np.array((242, 246, 255) if snow else (255, 248, 215), np.float32)
        return canvas + glow[..., None] * (speck - canvas)
    if background.kind == "meadow":
        canvas = np.broadcast_to(np.array((72, 118, 52), np.float32), (height, width, 3)).copy()
        points, values = _jittered_points(seed, x_range, y_range, cell=0.035, keep=0.85)
        shade = np.zeros((height, width), np.float32)
        _splat(shade, to_pixels(points), 0.005 * short, 0.016 * short, np.where(values < 0.5, -1.0, 1.0),
               np.add)
        return canvas + np.clip(shade, -1, 1)[..., None] * np.array((19, 23, 14), np.float32)
    return _bricks(seed, x_start, width, height, short)


def _bricks(seed: int, x_start: float, width: int, height: int, short: int) -> np.ndarray:
    brick_h, brick_w, mortar = 0.075, 0.19, 0.01  # su
    y = (np.arange(height) + 0.5)[:, None] / short
    x = (np.arange(width) + 0.5 + x_start)[None, :] / short
    row = np.floor(y / brick_h)
    shifted = x + (row % 2) * brick_w / 2  # every other course is offset by half a brick
    col = np.floor(shifted / brick_w)
    in_mortar = (y - row * brick_h < mortar) | (shifted - col * brick_w < mortar)
    # A cheap integer hash of (seed, row, column) gives each brick its own shade.
    key = (row.astype(np.int64) * 73856093) ^ (col.astype(np.int64) * 19349663) ^ (seed * 83492791)
    jitter = ((key % 1009) / 1009.0 - 0.5) * 12
    brick = np.array((150, 72, 58), np.float32) + jitter[..., None]
    return np.where(in_mortar[..., None], np.array((128, 64, 52), np.float32), brick).astype(np.float32)


def _vertical_gradient(top: np.ndarray, bottom: np.ndarray, height: int, width: int) -> np.ndarray:
    mix = ((np.arange(height) + 0.5) / height)[:, None]
    rows = (top[None, :] * (1 - mix) + bottom[None, :] * mix).astype(np.float32)
    return np.broadcast_to(rows[:, None, :], (height, width, 3)).copy()


def _background_frames(background: Background, camera_x: np.ndarray, width: int, height: int,
                       short: int) -> np.ndarray:
    """(T, H, W, 3) float background, with the camera's left edge at world pixel camera_x[t]."""
    frames = len(camera_x)
    if background.kind in ("solid", "gradient"):
        base = np.array(BACKGROUND_COLOURS[background.colour], np.float32)
        if background.kind == "solid":
            return np.broadcast_to(base, (frames, height, width, 3)).copy()
        light, dark = base * (1 + GRADIENT_SPREAD), base * (1 - GRADIENT_SPREAD)
        top, bottom = (light, dark) if background.light_on_top else (dark, light)
        gradient = _vertical_gradient(np.clip(top, 0, 255), np.clip(bottom, 0, 255), height, width)
        return np.broadcast_to(gradient, (frames, height, width, 3)).copy()
    x_start = math.floor(camera_x.min())
    canvas = _texture(background, x_start, width + math.ceil(camera_x.max()) - x_start + 2, height, short)
    out = np.empty((frames, height, width, 3), np.float32)
    for index, position in enumerate(camera_x - x_start):
        whole, fraction = int(position), float(position - int(position))
        # Linear interpolation between two integer shifts gives smooth sub-pixel pans.
        out[index] = (1 - fraction) * canvas[:, whole:whole + width] + fraction * canvas[:, whole + 1:
                                                                                         whole + 1 + width]
    return out


def render(scene: Scene, width: int, height: int, frames: int, fps: float) -> np.ndarray:
    """Render a scene to a uint8 video (frames, height, width, 3); frame i shows time i / fps."""
    if width < 16 or height < 16:
        raise KinemaError(f"world frames must be at least 16x16 pixels, got {width}x{height}; use a larger size")
    if frames < 1 or fps <= 0:
        raise KinemaError(f"need frames >= 1 and fps > 0, got frames={frames}, fps={fps}; fix the clip length")
    short = min(width, height)
    t = np.arange(frames) / float(fps)
    camera_x = scene.pan * t * short
    video = _background_frames(scene.background, camera_x, width, height, short)
    for obj in scene.objects:
        dx, dy = obj.offsets(t)
        cx = obj.x * width + dx * short - camera_x
        cy = obj.y * height + dy * short
        radius = obj.radius * obj.scale(t) * short
        angle = obj.angles(t)
        for index in range(frames):
            _paint(video[index], obj, cx[index], cy[index], radius[index], angle[index])
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)
