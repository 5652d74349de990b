"""A programmatic judge: does a video show what its prompt asks for?

`judge(prompt, frames, fps)` reads the prompt with `world.parse_prompt` and checks it against what
`judge_measure.measure` finds in the pixels: per object its colour, shape, size and motion (corrected for
the camera's pan, tilt and zoom, which are measured from the background), the object count, the background, the pan
(left, right, or up and down for a tilt) and the zoom, plus two quality scores (flicker and sharpness). `validate`
shows the judge is trustworthy: near perfect on true world renders and near chance when captions are shuffled across
clips.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from kinema.errors import KinemaError
from kinema.judge_measure import Measurement, Track, measure, shape_references
from kinema.world import SIZES, PromptSpec, caption, count_beyond, parse_prompt, render, sample_scene

ATTRIBUTES = ("colour", "shape", "size", "motion", "count", "background", "pan", "zoom")
STILL = 0.1  # su: a net displacement below this is standing still
BOUNCE_STEP = 0.03  # su: vertical travel that counts as a change of direction
GROWTH = 1.3  # area ratio from the first to the last frames that counts as growing (inverse: shrinking)
TURN = 30.0  # degrees of total rotation that count as rotating
PAN = 0.1  # su of camera travel that counts as a pan
ZOOM = 1.1  # camera magnification over the clip that counts as a zoom (inverse: a zoom out)
_SECTORS = ("right", "up_right", "up", "up_left", "left", "down_left", "down", "down_right")


def _rotation(track: Track) -> float:
    """Total rotation in degrees (counter-clockwise positive), from the phase of the shape's strongest
    harmonic; round shapes have none to measure."""
    signature = shape_references()[track.shape][0][0]
    harmonic = int(np.argmax(signature[:-1])) + 1
    if signature[harmonic - 1] < 0.05:
        return 0.0
    phases = track.phases[track.outline_views, harmonic - 1]  # a view cut by the frame's edge turns its outline
    # Rotating a shape by a turns the k-th harmonic's phase by -k*a; steps wrap within one symmetry period.
    steps = -np.angle(np.exp(1j * np.diff(phases))) / harmonic
    return float(np.degrees(steps.sum()))


def _reversals(values: np.ndarray, step: float) -> int:
    """How often a series changes direction by more than `step` (hysteresis against jitter)."""
    count, direction, extreme = 0, 0, values[0]
    for value in values[1:]:
        if direction == 0:
            if abs(value - extreme) > step:
                direction, extreme = (1 if value > extreme else -1), value
        elif (value - extreme) * direction > 0:
            extreme = value
        elif abs(value - extreme) > step:
            count, direction, extreme = count + 1, -direction, value
    return count


def magnification(found: Measurement) -> np.ndarray:
    """(T,) how much each frame is magnified against the clip's widest view: a zoom's close-ups enlarge what the
    widest view shows at its true size, as the world draws it."""
    return found.camera_zoom / found.camera_zoom.min()


def centroid_path(track: Track, found: Measurement) -> tuple[np.ndarray, np.ndarray]:
    """The track's centroid (x, y) in su over the frames it is seen in, corrected for the camera's pan and zoom."""
    seen, (cx, cy) = track.seen, found.centre
    zoom = magnification(found)[seen]
    x = cx + (track.x[seen] - cx) / zoom + found.camera_x[seen]
    y = cy + (track.y[seen] - cy) / zoom + found.camera_y[seen]
    return x / found.short, y / found.short


def true_area(track: Track, found: Measurement) -> np.ndarray:
    """(T,) the track's area as the clip's widest view shows it, pixels."""
    return track.area / magnification(found) ** 2


def classify_motion(track: Track, found: Measurement) -> str:
    """One of world.MOTIONS, from the track's pan-corrected centroid, area and orientation."""
    x, y = centroid_path(track, found)
    if len(x) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all() and track.area[track.seen][:2].mean() > 0):
        return "unknown"  # a blob seen once, or a camera estimate lost in noise: no motion to read
    # Size is read from whole views only: an object gliding out of the frame loses area without shrinking.
    area = true_area(track, found)[track.whole]
    growth = area[-2:].mean() / area[:2].mean() if len(area) >= 4 and area[:2].mean() > 0 else 1.0
    if growth > GROWTH:
        return "grow"
    if growth < 1 / GROWTH:
        return "shrink"
    if _reversals(y, BOUNCE_STEP) >= 2:
        return "bounce"
    if abs(_rotation(track)) >= TURN:
        return "rotate"
    dx, dy = x[-1] - x[0], y[-1] - y[0]
    if math.hypot(dx, dy) < STILL:
        return "still"
    sector = round(math.degrees(math.atan2(-dy, dx)) / 45) % 8  # image y points down
    return _SECTORS[sector]


def classify_size(track: Track, found: Measurement) -> str:
    """small/medium/large from the first whole view (else the first view): area -> circumscribed diameter via the
    shape's unit area."""
    unit_area = shape_references()[track.shape][1]
    diameter = 2 * math.sqrt(true_area(track, found)[np.argmax(track.outline_views)] / unit_area) / found.short
    diameter = max(diameter, 1e-6)  # a generated blob can vanish in its first view
    return min(SIZES, key=lambda name: abs(math.log(diameter / SIZES[name])))


def pan_direction(found: Measurement) -> str | None:
    """left/right/up/down by the axis the camera travelled further along; the world pans sideways only, and the
    pipeline also tilts (`kinema.camera`): a tilt up moves the camera up, so the scene slides down in the frame."""
    x, y = found.camera_x[-1] / found.short, found.camera_y[-1] / found.short  # image y points down
    if max(abs(x), abs(y)) < PAN:
        return None
    return ("right" if x > 0 else "left") if abs(x) >= abs(y) else ("down" if y > 0 else "up")


def zoom_direction(found: Measurement) -> str | None:
    total = found.camera_zoom[-1]
    return "in" if total >= ZOOM else "out" if total <= 1 / ZOOM else None


def _match(spec: PromptSpec, tracks: list[Track]) -> list[Track | None]:
    """Pair each asked-for object with a track: by colour first, then the biggest remaining tracks.

    Only colour decides the pairing, so a wrong video cannot win credit by a lucky choice of partner.
    """
    free = sorted(tracks, key=_largest_area, reverse=True)
    paired: list[Track | None] = []
    for obj in spec.objects:
        same = next((t for t in free if t.colour == obj.colour), None)
        paired.append(same)
        if same is not None:
            free.remove(same)
    return [track if track is not None else (free.pop(0) if free else None) for track in paired]


def _largest_area(track: Track) -> float:
    """The track's largest area over its frames; 0 for a track that is never seen (all NaN)."""
    seen = track.area[~np.isnan(track.area)]
    return float(seen.max()) if seen.size else 0.0


def _all(checks: list[bool]) -> bool | None:
    return all(checks) if checks else None


def score(spec: PromptSpec, found: Measurement) -> dict:
    """Per-attribute verdicts (True/False, None where the prompt says nothing) and quality scores. The pan is always
    judged: the world's camera stands still unless its caption says it pans."""
    paired = _match(spec, found.tracks)
    checks: dict[str, list[bool]] = {name: [] for name in ("colour", "shape", "size", "motion")}
    seen: list[dict | None] = []  # what was read for each asked-for object (None: nothing to pair it with)
    for obj, track in zip(spec.objects, paired, strict=True):
        measured = {"colour": track.colour, "shape": track.shape, "size": classify_size(track, found),
                    "motion": classify_motion(track, found)} if track is not None else {}
        seen.append(measured or None)
        for name in checks:
            if getattr(obj, name) is not None:
                checks[name].append(measured.get(name) == getattr(obj, name))
    result: dict = {name: _all(values) for name, values in checks.items()}
    result["count"] = None if spec.count is None else len(found.tracks) == spec.count
    result["background"] = None if spec.background is None else (
        found.background == spec.background
        and spec.background_colour in (None, found.background_colour))
    measured_pan = pan_direction(found)
    result["pan"] = measured_pan is not None if spec.pan == "any" else measured_pan == spec.pan
    measured_zoom = zoom_direction(found)
    result["zoom"] = None if spec.zoom is None else measured_zoom == spec.zoom  # the world has no zoom
    verdicts = [result[name] for name in ATTRIBUTES if result[name] is not None]
    result["overall"] = float(np.mean(verdicts)) if verdicts else float("nan")
    result["flicker"] = found.flicker
    result["sharpness"] = found.sharpness
    result["seen"] = {"objects": seen, "count": len(found.tracks), "background": found.background,
                      "background_colour": found.background_colour, "pan": measured_pan, "zoom": measured_zoom}
    return result


def judge(prompt: str, frames, fps: float) -> dict:
    """Score a video (T, H, W, 3) uint8 against a prompt; see `score` for the keys, and `asked` for the prompt as the
    judge read it (a prompt of more than three objects is refused). Kinema's own watermark is taken
    out first where it is found (a saved file's frames): the judge would read its grain on a flat dark background
    as a texture, e.g. a navy gradient as a night sky."""
    from kinema.provenance import unmark

    spec = parse_prompt(prompt)
    if spec is None:
        raise KinemaError("the judge found no colour, shape, motion or background it knows in the prompt; "
                          "describe the video with the world's words")
    if many := count_beyond(prompt, spec):
        raise KinemaError(f"the prompt asks for {many} objects; the judge counts one to three, as the world draws "
                          "them: describe at most three")
    video = np.asarray(frames)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise KinemaError(f"the judge needs uint8 frames shaped (T, H, W, 3), got {video.dtype} {tuple(video.shape)}; "
                          "convert with kinema.io.to_uint8")
    if min(video.shape[1:3]) < 16:
        raise KinemaError(f"the judge needs frames of at least 16x16 pixels, got {video.shape[2]}x{video.shape[1]}; "
                          "judge a larger video")
    if not isinstance(fps, numbers.Real) or not fps > 0:  # numpy's and PyAV's (a Fraction) rates too
        raise KinemaError(f"fps must be a positive number, got {fps!r}; pass the video's frame rate")
    still = len(video) == 1  # one frame neither moves, pans, zooms nor flickers: not asked, as an unasked attribute
    if still:
        spec = dataclasses.replace(spec, objects=[dataclasses.replace(o, motion=None) for o in spec.objects],
                                   pan=None, zoom=None)
    result = score(spec, measure(unmark(video)[0], fps))
    if still:
        result["flicker"] = float("nan")
    result["asked"] = dataclasses.asdict(spec)  # what was read from the prompt: words the judge does not know are not
    return result


def score_many(results: list[dict]) -> dict[str, float]:
    """Accuracy per attribute over many judged clips (clips that do not ask about it are skipped), plus
    the mean overall, flicker and sharpness."""
    summary = {}
    for name in (*ATTRIBUTES, "overall", "flicker", "sharpness"):
        values = [float(r[name]) for r in results if r.get(name) is not None and not math.isnan(float(r[name]))]
        summary[name] = float(np.mean(values)) if values else float("nan")
    return summary


def validate(n: int = 200, seed: int = 0, width: int = 128, height: int = 128, frames: int = 17,
             fps: float = 8.0) -> dict[str, dict[str, float]]:
    """Judge n world clips against their own captions ("true") and against the next clip's caption
    ("shuffled", a derangement), returning per-attribute accuracy for both. Every fourth clip is a
    held-out scene, so the judge is shown to work on the hold-out too."""
    if n < 2:
        raise KinemaError(f"validation needs at least 2 clips to shuffle captions, got {n}; pass n >= 2")
    rng = np.random.default_rng(seed)
    texts, found = [], []
    for index in range(n):
        scene = sample_scene(rng, holdout=index % 4 == 3, duration=(frames - 1) / fps)
        texts.append(caption(scene, rng))
        found.append(measure(render(scene, width, height, frames, fps), fps))
    specs = [parse_prompt(text) for text in texts]
    true = [score(spec, clip) for spec, clip in zip(specs, found, strict=True)]
    shuffled = [score(specs[(index + 1) % n], clip) for index, clip in enumerate(found)]
    return {"true": score_many(true), "shuffled": score_many(shuffled)}
