"""Pixel measurements for the judge: background model, object tracks, shape features and camera pan and zoom.

Everything here looks only at the frames; the prompt is read later, in `kinema.judge`. Reference values
(shape signatures, background statistics, edge width) come from rendering the world's own shapes and
backgrounds once, so the judge follows the world if its drawing changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from kinema.camera import resample
from kinema.world_render import render
from kinema.world_scene import (
    BACKGROUND_COLOURS,
    OBJECT_COLOURS,
    SHAPES,
    TEXTURES,
    Background,
    Obj,
    Scene,
)

PALETTE_NAMES = list(OBJECT_COLOURS)
PALETTE = np.array([OBJECT_COLOURS[name] for name in PALETTE_NAMES], np.float32)
OBJECT_LIKE = 50.0  # pixels this close to an object colour are left out of the background estimate
FOREGROUND = 40.0  # colour distance from the background that makes a pixel foreground
MIN_AREA = 0.0012  # smallest object component, as a fraction of short side squared (specks are smaller)
# Smallest peak area (same units) of a track that counts as an object: half the world's smallest object, which
# at its largest covers 0.007 (a small star or triangle, 114 px at 128 px). Generated videos keep lasting specks
# of 0.001-0.0025, most of them stars of a generated night sky, that were counted as extra objects.
MIN_OBJECT_PEAK = 0.0035
HARMONICS = 6  # angular harmonics in the shape signature
# Lasting background texture (per-channel grey levels) from which a textured background pays no texture cost:
# world textures render at 1.7-5.6 and a flat background at 0, but generated flat ones keep a static grain of
# about 0.6-1.9 (session 10, 80 hold-out clips of kinema-small-fast).
TEXTURED = 2.0
TEXTURE_WEIGHT = 20.0  # grey levels of colour distance that one grey level of missing or extra texture costs
BLUR_LEVELS = (0.0, 0.1, 0.2)  # reference blurs, as fractions of the circumradius
GRADIENT = 15.0  # top-to-bottom colour change above which a flat background counts as a gradient
FLAT_COST = 0.2  # grey levels a shift must beat "no shift" by to count as camera motion
MAX_PAN = 0.6  # su/s: the fastest pan the camera search looks for
MAX_ZOOM_STEP = 0.05  # e-folds of magnification a frame: the fastest zoom the camera search looks for
ZOOM_CANDIDATES = 11  # magnifications a frame tried between -MAX_ZOOM_STEP and MAX_ZOOM_STEP
MIN_ZOOM = 1.08  # total magnification below which a measured zoom is taken for noise, and left out


@dataclass
class Track:
    """One object followed through the clip; arrays have one entry per frame (nan where unseen)."""

    colour: str
    rgb: np.ndarray
    x: np.ndarray  # centroid, pixels
    y: np.ndarray
    area: np.ndarray  # soft-mask area, pixels
    signature: np.ndarray  # (T, HARMONICS + 1): harmonic magnitudes and the centre hole
    phases: np.ndarray  # (T, HARMONICS): arguments of the harmonics, for rotation
    edge_width: np.ndarray  # (T,) blur of the outline, pixels
    seen: np.ndarray  # (T,) bool
    clipped: np.ndarray  # (T,) bool: the object touches the frame's edge, so part of it may be out of view
    shape: str = ""  # the area-weighted vote of the per-frame shape classes, from its whole views if it has any

    @staticmethod
    def empty(colour: str, rgb: np.ndarray, frames: int) -> Track:
        def blank(*shape: int) -> np.ndarray:
            return np.full((frames, *shape), np.nan)

        return Track(colour, rgb, blank(), blank(), blank(), blank(HARMONICS + 1), blank(HARMONICS), blank(),
                     np.zeros(frames, bool), np.zeros(frames, bool))

    @property
    def whole(self) -> np.ndarray:
        """(T,) bool: the frames that show all of the object (seen, off the frame's edge)."""
        return self.seen & ~self.clipped

    @property
    def outline_views(self) -> np.ndarray:
        """(T,) bool: the frames to read shape, turn and size from: the whole views, or every view if none is."""
        whole = self.whole
        return whole if whole.any() else self.seen


@dataclass
class Measurement:
    tracks: list[Track]
    background: str  # kind
    background_colour: str | None
    camera_x: np.ndarray  # (T,) how far the camera moved right since frame 0, pixels
    camera_y: np.ndarray  # (T,) how far it moved down (a tilt down; the scene slides up in the frame), pixels
    camera_zoom: np.ndarray  # (T,) how much the camera magnifies about the frame's centre since frame 0 (> 1: in)
    centre: tuple[float, float]  # (x, y) of the frame's centre, pixels: what a zoom keeps in place
    flicker: float
    sharpness: float
    short: int


def colour_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    difference = a - b
    return np.sqrt(np.einsum("...c,...c->...", difference, difference))


def _masked_median(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median over the last axis of `values` (..., W, C) where `valid` (..., W); also the valid count."""
    filled = np.where(valid[..., None], values, np.inf)
    ordered = np.sort(filled, axis=-2)
    count = valid.sum(axis=-1)
    middle = np.maximum(count - 1, 0) // 2
    median = np.take_along_axis(ordered, middle[..., None, None], axis=-2)[..., 0, :]
    return median, count


@cache
def _object_like_table() -> np.ndarray:
    """Whether a colour is near an object colour, looked up by the top 5 bits of each channel."""
    levels = np.arange(32, dtype=np.float32) * 8 + 4
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1)
    return colour_distance(grid[..., None, :], PALETTE).min(axis=-1) < OBJECT_LIKE


def background_rows(video: np.ndarray) -> np.ndarray:
    """(T, H, 3) background colour per row: gradients are vertical and textures have one base colour.

    Object-coloured pixels are left out first, so even a row mostly covered by objects finds its background.
    """
    quantised = np.clip(video, 0, 255).astype(np.uint8) >> 3
    near = _object_like_table()[quantised[..., 0], quantised[..., 1], quantised[..., 2]]
    rows, count = _masked_median(video, ~near)
    if count.all():
        return rows
    # Rows wholly covered by object colours borrow the frame's background; a frame wholly covered by them (a
    # blank or noisy video) takes its plain median, which is finite where the masked one would be infinite.
    pixels = video.reshape(video.shape[0], 1, -1, 3)
    frame_level, frame_count = _masked_median(pixels, ~near.reshape(len(near), 1, -1))
    frame_level = np.where((frame_count > 0)[..., None], frame_level, np.median(pixels, axis=-2))
    return np.where((count > 0)[..., None], rows, frame_level)


def label_components(mask: np.ndarray) -> np.ndarray:
    """4-connected components of a (T, H, W) mask within each frame: the smallest flat index of each
    component's pixels, -1 outside the mask.

    Works on the list of mask pixels only. Each pass takes the smallest label among a pixel's neighbours
    and then follows label chains (pointer jumping), so it converges in a handful of vectorised passes.
    """
    _, height, width = mask.shape
    index = np.flatnonzero(mask)
    count = len(index)
    position = np.full(mask.size, -1)
    position[index] = np.arange(count)
    x, y = index % width, (index // width) % height
    neighbours = []
    for offset, inside in ((-1, x > 0), (1, x < width - 1), (-width, y > 0), (width, y < height - 1)):
        found = np.where(inside, position[np.clip(index + offset, 0, mask.size - 1)], -1)
        neighbours.append(np.where(found >= 0, found, np.arange(count)))  # no neighbour: point to self
    labels = np.arange(count)
    while True:
        new = labels.copy()
        for neighbour in neighbours:
            np.minimum(new, labels[neighbour], out=new)
        new = new[new[new]]
        if np.array_equal(new, labels):
            break
        labels = new
    out = np.full(mask.shape, -1)
    out.ravel()[index] = index[labels]
    return out


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[..., 1:, :] |= out[..., :-1, :]
        grown[..., :-1, :] |= out[..., 1:, :]
        grown[..., :, 1:] |= out[..., :, :-1]
        grown[..., :, :-1] |= out[..., :, 1:]
        out = grown
    return out


def shape_signature(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """Rotation-invariant signature of a soft mask: |F_k| / F_0 for k = 1..HARMONICS and the centre hole.

    F_k = sum(alpha * r^2 * exp(-i k theta)) around the centroid is the k-th Fourier coefficient of the
    outline's r(theta)^4, so k-fold symmetric shapes light up harmonic k. Also returns the phases (for
    rotation), the centroid (x, y) in the crop's pixels and the area.
    """
    height, width = alpha.shape
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    area = float(alpha.sum())
    cx, cy = float((alpha * xs).sum() / area), float((alpha * ys).sum() / area)
    u, v = xs - cx, cy - ys
    radius2 = u * u + v * v
    weight = (alpha * radius2).ravel()
    rotor = ((u - 1j * v) / np.sqrt(np.maximum(radius2, 1e-12))).ravel()  # exp(-i theta)
    powers = np.cumprod(np.broadcast_to(rotor, (HARMONICS, rotor.size)), axis=0)
    harmonics = np.concatenate([[weight.sum()], (powers * weight).sum(axis=1)])
    magnitudes = np.abs(harmonics[1:]) / max(abs(harmonics[0]), 1e-9)
    centre = radius2 < 0.0625 * area / math.pi  # within a quarter of the equal-area radius
    hole = 1.0 - float(alpha[centre].mean()) if centre.any() else 0.0
    return np.append(magnitudes, hole), np.angle(harmonics[1:]), cx, cy, area


def edge_width(alpha: np.ndarray) -> float:
    """Average width of the soft outline in pixels: partial coverage per pixel of boundary."""
    inside = alpha > 0.5
    boundary = inside & ~(np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1)
                          & np.roll(inside, -1, 1))
    return float((4 * alpha * (1 - alpha)).sum() / max(boundary.sum(), 1))


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D image (edges padded by reflection)."""
    if sigma == 0:
        return image
    reach = math.ceil(3 * sigma)
    kernel = np.exp(-0.5 * (np.arange(-reach, reach + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, reach, mode="reflect")
    rows = np.apply_along_axis(np.convolve, 1, padded, kernel, mode="valid")
    return np.apply_along_axis(np.convolve, 0, rows, kernel, mode="valid")


def _reference_alpha(obj: Obj) -> np.ndarray:
    """Exact coverage of one object rendered alone at 128x128 on gray (colour unmixing is exact there)."""
    background = np.array(BACKGROUND_COLOURS["gray"], np.float32)
    colour = np.array(OBJECT_COLOURS[obj.colour], np.float32)
    frame = render(Scene([obj], Background("solid", "gray")), 128, 128, 1, 1.0)[0].astype(np.float32)
    unmixed = np.sum((frame - background) * (colour - background), axis=-1) / np.sum((colour - background) ** 2)
    return np.clip(unmixed, 0, 1)


@cache
def shape_references() -> dict[str, tuple[np.ndarray, float]]:
    """Per shape: signatures (one row per blur level, so soft generated video still matches) and the
    unit area (area / circumradius^2), from clean medium-size renders."""
    references = {}
    for shape in SHAPES:
        obj = Obj(shape, "red", "medium", "still", 0.5, 0.5)
        alpha, radius = _reference_alpha(obj), obj.radius * 128
        signatures = [shape_signature(_blur(alpha, blur * radius))[0] for blur in BLUR_LEVELS]
        references[shape] = (np.array(signatures), float(alpha.sum()) / radius**2)
    return references


@cache
def reference_edge_width() -> float:
    """Outline width of the world's own anti-aliased shapes (the widest of them): what sharp looks like."""
    return max(edge_width(_reference_alpha(Obj(shape, "red", "medium", "still", 0.5, 0.5, angle=20.0)))
               for shape in SHAPES)


def classify_shape(signature: np.ndarray) -> str:
    """The shape whose reference signature (at any blur level) is nearest."""
    references = shape_references()
    return min(references, key=lambda name: float(np.min(np.sum((references[name][0] - signature) ** 2, axis=1))))


@cache
def texture_references() -> dict[str, np.ndarray]:
    """Mean background colour of each textured background, measured like the judge measures clips."""
    colours = {}
    for kind in TEXTURES:
        video = render(Scene([], Background(kind, None, 7)), 128, 128, 1, 1.0).astype(np.float32)
        colours[kind] = background_rows(video).mean(axis=(0, 1))
    return colours


@dataclass
class _Component:
    frame: int
    pixels: np.ndarray  # flat indices into one frame
    rgb: np.ndarray
    colour: str


def _components(video: np.ndarray, foreground: np.ndarray, min_area: int) -> list[_Component]:
    """Foreground components big enough to be objects, each with its median interior colour."""
    _, height, width = foreground.shape
    labels = label_components(foreground)
    interior = foreground & ~_dilate(~foreground, 1)
    flat_labels = labels.ravel()
    indices = np.flatnonzero(flat_labels >= 0)
    if not len(indices):  # nothing in the foreground (np.split would still return one empty group)
        return []
    roots, inverse, counts = np.unique(flat_labels[indices], return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    groups = np.split(indices[order], np.cumsum(counts)[:-1])
    pixels = video.reshape(-1, 3)
    found = []
    for root, group in zip(roots, groups, strict=True):
        if len(group) < min_area:
            continue
        inner = group[interior.ravel()[group]]
        rgb = np.median(pixels[inner if len(inner) >= 4 else group], axis=0)
        colour = PALETTE_NAMES[int(np.argmin(np.linalg.norm(PALETTE - rgb, axis=1)))]
        found.append(_Component(int(root // (height * width)), group % (height * width), rgb, colour))
    return found


def _track_frame(video: np.ndarray, rows: np.ndarray, pixels: np.ndarray, blocked: np.ndarray,
                 rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float, float, float]:
    """Signature, phases, centroid, area and edge width of one object in one frame (soft mask)."""
    height, width = blocked.shape
    ys, xs = pixels // width, pixels % width
    y0, y1 = max(ys.min() - 2, 0), min(ys.max() + 3, height)
    x0, x1 = max(xs.min() - 2, 0), min(xs.max() + 3, width)
    own = np.zeros((y1 - y0, x1 - x0), bool)
    own[ys - y0, xs - x0] = True
    region = _dilate(own, 2) & ~blocked[y0:y1, x0:x1]
    background = rows[y0:y1, None, :]
    direction = rgb - background
    # Linear unmixing between background and object colour gives sub-pixel coverage at the outline.
    alpha = np.sum((video[y0:y1, x0:x1] - background) * direction, axis=-1) / np.maximum(
        np.sum(direction * direction, axis=-1), 1.0)
    alpha = np.clip(alpha, 0, 1) * region
    if not alpha.any():  # no pixel leans from the background towards the track's median colour (a generated
        alpha = own.astype(np.float64)  # blob can drift in colour): its hard mask still has a centroid and area
    signature, phases, cx, cy, area = shape_signature(alpha)
    return signature, phases, cx + x0, cy + y0, area, edge_width(alpha)


def _touches_edge(pixels: np.ndarray, height: int, width: int) -> bool:
    """Whether a component (flat indices into one frame) reaches the frame's border."""
    ys, xs = pixels // width, pixels % width
    return bool(ys.min() == 0 or xs.min() == 0 or ys.max() == height - 1 or xs.max() == width - 1)


def _tracks(video: np.ndarray, rows: np.ndarray, components: list[_Component]) -> list[Track]:
    """One track per colour seen in at least half the frames, and big enough once to be an object: the largest
    component of it per frame."""
    frames, height, width = video.shape[:3]
    min_peak = MIN_OBJECT_PEAK * min(height, width) ** 2
    largest: dict[tuple[str, int], _Component] = {}
    for comp in components:
        key = (comp.colour, comp.frame)
        if key not in largest or len(comp.pixels) > len(largest[key].pixels):
            largest[key] = comp
    blocked = np.zeros((frames, height * width), bool)
    for comp in components:
        blocked[comp.frame, comp.pixels] = True
    tracks = []
    for colour in PALETTE_NAMES:
        chosen = {frame: largest[(colour, frame)] for frame in range(frames) if (colour, frame) in largest}
        if 2 * len(chosen) < frames:
            continue
        rgb = np.median(np.stack([c.rgb for c in chosen.values()]), axis=0)
        track = Track.empty(colour, rgb, frames)
        for frame, comp in chosen.items():
            others = blocked[frame].copy()
            others[comp.pixels] = False
            measured = _track_frame(video[frame], rows[frame], comp.pixels, others.reshape(height, width), rgb)
            track.signature[frame], track.phases[frame] = measured[0], measured[1]
            track.x[frame], track.y[frame], track.area[frame], track.edge_width[frame] = measured[2:]
            track.seen[frame] = True
            track.clipped[frame] = _touches_edge(comp.pixels, height, width)
        if np.nanmax(track.area) < min_peak:
            continue
        votes: dict[str, float] = {}
        for frame in np.flatnonzero(track.outline_views):
            name = classify_shape(track.signature[frame])
            votes[name] = votes.get(name, 0.0) + track.area[frame]  # big views are the reliable ones
        track.shape = max(votes, key=votes.__getitem__)
        tracks.append(track)
    return tracks


def _panned(frame: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """An (H, W, C) frame sampled at (x + dx, y + dy) (linear, edge-padded): the view after a pan of (dx, dy)."""
    height, width = frame.shape[:2]
    return resample(resample(frame, dy, height, height, axis=0), dx, width, width, axis=1)


def _pan_steps(now: np.ndarray, before: np.ndarray, now_valid: np.ndarray, before_valid: np.ndarray,
               max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pair of (N, H, W) frames, the camera's step along the last axis (towards higher indices positive) and
    the mean absolute difference of background pixels it leaves.

    A step of d shows at x what the frame before showed at x + d; d is the whole shift of the smallest difference,
    refined to sub-pixel by a parabola.
    """
    width = now.shape[-1]
    shifts = np.arange(-max_shift, max_shift + 1)
    cost = np.full((len(now), len(shifts)), np.inf)
    for index, d in enumerate(shifts):
        lo, hi = max(d, 0), width + min(d, 0)  # the previous frame's columns that stay in view
        usable = now_valid[:, :, lo - d:hi - d] & before_valid[:, :, lo:hi]
        difference = np.abs(now[:, :, lo - d:hi - d] - before[:, :, lo:hi]) * usable
        cost[:, index] = difference.sum(axis=(1, 2)) / np.maximum(usable.sum(axis=(1, 2)), 1)
    return np.array([_best_step(row, shifts) for row in cost]), cost.min(axis=1)


def _moved(frames: np.ndarray, valid: np.ndarray, steps: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) frames and their valid masks, each sampled `steps` (rounded) further along `axis` (1: y, 2: x), as
    a camera step shows them; what comes from beyond the frame's edge is not valid."""
    frames, valid = frames.copy(), valid.copy()
    positions = np.arange(frames.shape[axis])
    for index, step in enumerate(np.rint(steps).astype(int)):
        inside = (positions + step >= 0) & (positions + step < len(positions))
        frames[index] = np.roll(frames[index], -step, axis=axis - 1)
        valid[index] = np.roll(valid[index], -step, axis=axis - 1) & (inside[:, None] if axis == 1 else inside)
    return frames, valid


def estimate_camera(gray: np.ndarray, valid: np.ndarray, max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera position (x, y) per frame since frame 0 (pixels, right and down positive) from how the background
    slides between frames.

    Each pair's step is searched along x and along y alone; the axis that matches better is kept and the other is
    searched again with that step undone. A tilt searched along x alone can match a texture's next dot beside the
    true one (snow's dots lie on a jittered grid), and a step along y from there goes astray.
    """
    now, before, now_valid, before_valid = gray[1:], gray[:-1], valid[1:], valid[:-1]

    def along(axis: int, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # axis 1: y, 2: x
        moved, moved_valid = _moved(before, before_valid, other, axis=3 - axis)
        pairs = (now, moved, now_valid, moved_valid)
        return _pan_steps(*(pairs if axis == 2 else (np.swapaxes(a, 1, 2) for a in pairs)), max_shift)

    (x, x_cost), (y, y_cost) = along(2, np.zeros(len(now))), along(1, np.zeros(len(now)))
    sideways = x_cost <= y_cost
    x, y = np.where(sideways, x, along(2, y)[0]), np.where(sideways, along(1, x)[0], y)
    return np.concatenate([[0.0], np.cumsum(x)]), np.concatenate([[0.0], np.cumsum(y)])


def _classify_background(video: np.ndarray, rows: np.ndarray, free: np.ndarray,
                         flicker: float) -> tuple[str, str | None]:
    """Background kind and colour name (None for textures).

    Texture is the background's deviation from its row colours minus what frame-to-frame change explains:
    noise changes every frame, texture stays (or moves with the camera, which `flicker` undoes). Colour and
    texture decide together: a generated plain background keeps a faint grain, and each texture has a plain
    twin of a similar hue (night and navy, meadow and forest, brick and brown, snow and beige), so neither
    alone can tell them apart. Each candidate costs its colour distance plus the texture it lacks (a texture) or carries
    beyond none (a flat colour).
    """
    deviation = np.abs(video - rows[:, :, None, :]).mean(axis=-1)
    texture = max(float(deviation[free].mean()) - flicker / math.sqrt(2), 0.0) if free.any() else 0.0
    profile = rows.mean(axis=0)
    base = profile.mean(axis=0)
    costs = {name: float(np.linalg.norm(np.array(rgb) - base)) + TEXTURE_WEIGHT * texture
             for name, rgb in BACKGROUND_COLOURS.items()}
    costs.update({name: float(np.linalg.norm(rgb - base)) + TEXTURE_WEIGHT * max(TEXTURED - texture, 0.0)
                  for name, rgb in texture_references().items()})
    best = min(costs, key=costs.__getitem__)
    if best in TEXTURES:
        return best, None
    band = max(len(profile) * 15 // 100, 1)
    change = float(np.linalg.norm(profile[:band].mean(axis=0) - profile[-band:].mean(axis=0)))
    return ("gradient" if change > GRADIENT else "solid"), best


def _zoomed(image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, C) `image` seen by a camera magnifying `scale` about its centre (`camera.resample`), and an (H, W)
    mask of where the view stays inside the image."""
    height, width = image.shape[:2]
    rows = resample(image, (height - height / scale) / 2, height / scale, height, axis=0)
    view = resample(rows, (width - width / scale) / 2, width / scale, width, axis=1)
    ys = (np.arange(height) - (height - 1) / 2) / scale + (height - 1) / 2  # where each view pixel samples
    xs = (np.arange(width) - (width - 1) / 2) / scale + (width - 1) / 2
    return view, ((ys >= 0) & (ys <= height - 1))[:, None] & ((xs >= 0) & (xs <= width - 1))[None, :]


def estimate_zoom(gray: np.ndarray, valid: np.ndarray, camera: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Camera magnification per frame since frame 0 (> 1: zoomed in) about the frame's centre, from how the
    background grows or shrinks after the pan is undone: the magnification of each step is the one under which
    the previous frame best matches this one, refined by a parabola. A total below MIN_ZOOM reads as none."""
    logs = np.linspace(-MAX_ZOOM_STEP, MAX_ZOOM_STEP, ZOOM_CANDIDATES)
    moves = np.diff(np.stack(camera, axis=1), axis=0)  # (T - 1, 2): x and y
    before = np.stack([_panned(frame[..., None], *move)[..., 0] if move.any() else frame
                       for frame, move in zip(gray[:-1], moves, strict=True)], axis=-1)  # (H, W, T - 1)
    known = np.moveaxis(valid[:-1], 0, -1).astype(np.float32)
    now, now_valid = np.moveaxis(gray[1:], 0, -1), np.moveaxis(valid[1:], 0, -1)
    cost = np.empty((len(moves), len(logs)))
    for index, log in enumerate(logs):
        view, inside = _zoomed(before, math.exp(log))
        usable = inside[..., None] & now_valid & (_zoomed(known, math.exp(log))[0] > 0.99)
        counts = usable.sum(axis=(0, 1))
        cost[:, index] = np.where(counts > 0, (np.abs(now - view) * usable).sum(axis=(0, 1)) / np.maximum(counts, 1),
                                  np.inf)
    steps = np.array([_best_step(row, logs) for row in cost])
    total = np.exp(np.concatenate([[0.0], np.cumsum(steps)]))
    return total if max(total.max(), 1 / total.min()) >= MIN_ZOOM else np.ones(len(gray))


def _best_step(cost: np.ndarray, logs: np.ndarray) -> float:
    """The step (a log magnification, or a shift) of least cost among the evenly spaced `logs` centred on none,
    refined by a parabola; 0 where it does not beat none by FLAT_COST."""
    best = int(np.argmin(cost))
    if not np.isfinite(cost[best]) or cost[len(logs) // 2] - cost[best] < FLAT_COST:
        return 0.0  # no texture to follow: no measurable move
    step = float(logs[best])
    if 0 < best < len(logs) - 1 and np.isfinite(cost[best - 1:best + 2]).all():
        left, mid, right = cost[best - 1], cost[best], cost[best + 1]
        curvature = left - 2 * mid + right
        step += 0.5 * (left - right) / curvature * (logs[1] - logs[0]) if curvature > 0 else 0.0
    return step


def _flicker(video: np.ndarray, camera: tuple[np.ndarray, np.ndarray], camera_zoom: np.ndarray,
             free: np.ndarray) -> float:
    """Mean absolute change of background pixels between frames, after undoing the camera motion."""
    if len(video) < 2:
        return 0.0
    changes = []
    for index in range(1, len(video)):
        move = [position[index] - position[index - 1] for position in camera]
        previous = _panned(video[index - 1], *move) if any(move) else video[index - 1]
        usable = free[index] & free[index - 1]
        if camera_zoom[index] != camera_zoom[index - 1]:
            previous, inside = _zoomed(previous, camera_zoom[index] / camera_zoom[index - 1])
            usable &= inside
        if usable.any():
            changes.append(float(np.abs(video[index] - previous)[usable].mean()))
    return float(np.mean(changes)) if changes else 0.0


def measure(frames: np.ndarray, fps: float) -> Measurement:
    """Everything the judge reads from a clip (T, H, W, 3) uint8 shown at `fps`, independently of any prompt."""
    video = np.asarray(frames, dtype=np.float32)
    length, height, width = video.shape[:3]
    short = min(height, width)
    rows = background_rows(video)
    foreground = colour_distance(video, rows[:, :, None, :]) > FOREGROUND
    components = _components(video, foreground, max(12, round(MIN_AREA * short * short)))
    tracks = _tracks(video, rows, components)
    objects = np.zeros((length, height * width), bool)
    for comp in components:
        objects[comp.frame, comp.pixels] = True
    free = ~_dilate(objects.reshape(length, height, width), 2)
    camera_x, camera_y, camera_zoom = np.zeros(length), np.zeros(length), np.ones(length)
    if length > 1:
        gray = video.mean(axis=-1)
        camera_x, camera_y = estimate_camera(gray, free, max(4, math.ceil(MAX_PAN * short / fps)))
        camera_zoom = estimate_zoom(gray, free, (camera_x, camera_y))
    flicker = _flicker(video, (camera_x, camera_y), camera_zoom, free)
    kind, colour = _classify_background(video, rows, free, flicker)
    if kind in ("solid", "gradient"):  # a flat background cannot show a pan or zoom; what moved was object edges
        camera_x[:], camera_y[:], camera_zoom[:] = 0.0, 0.0, 1.0
    widths = np.concatenate([t.edge_width[t.seen] for t in tracks]) if tracks else np.zeros(0)
    sharpness = min(1.0, reference_edge_width() / max(float(np.median(widths)), 1e-6)) if len(widths) else float("nan")
    return Measurement(tracks, kind, colour, camera_x, camera_y, camera_zoom, ((width - 1) / 2, (height - 1) / 2),
                       flicker, sharpness, short)
