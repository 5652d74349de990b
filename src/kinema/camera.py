"""Camera moves the pipeline makes itself: pans, tilts and zooms, by moving the output's frame over what was drawn.

The bundled DiTs never learned to move the camera (docs/MODEL.md, session 29). When the prompt asks for a move and
the request's `window_camera` is on, the DiT draws with a still camera, and decoding cuts each frame from a window
over what it drew (`film`), resampled to the output's size:

- a pan or tilt: the DiT draws a scene wider (or taller) by the pan's travel, and a window of the output's size
  slides across it, as the world renders a pan;
- a zoom: the DiT draws the output's own frame, so what it draws is laid out as in training, and the window shrinks
  into its centre (zoom in) or grows from there to the whole frame (zoom out). The closest view is upsampled by the
  zoom's factor, at most ZOOM_ROOM. Aiming the zoom at the first frame's subject kept fewer of the prompt's objects
  in view than the centre did (docs/MODEL.md, session 30): they move, and there may be several.

A given clip fixes the frame where the video meets it, and nothing outside its frame is known, so each mode makes the
moves that leave its given frames whole (`MOVES`): an extension forward zooms in from the clip's last frame, one
backward zooms out into its first, and an edit, which draws anew in the clip's frame, zooms either way. The move runs
over the frames the mode draws (`Move.span`) and holds before and after. A move's room is bounded (`PAN_ROOM`,
`ZOOM_ROOM`), so a long video moves slower and its memory stays bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kinema import prompting

if TYPE_CHECKING:
    from kinema.pipeline import Request

PAN_ROOM = 1.0  # short sides: the most a pan widens the scene; a longer video pans slower than PAN_SPEED
ZOOM_SPEED = 0.15  # how fast a zoom magnifies: by e^0.15 = 1.16x a second, so 1.32x over a 2 s clip (16 frames)
ZOOM_ROOM = 1.5  # the most a zoom magnifies: its closest view is upsampled this much; a longer video zooms slower
MOVES = {  # mode -> the moves its frame makes: "pan" (a pan or tilt), "in" and "out" (zooms)
    "t2v": ("pan", "in", "out"),
    "i2v": ("pan", "in", "out"),  # the image covers the whole scene a pan crosses
    "extend": ("in",),  # the new part closes in from the clip's last frame
    "extend_backward": ("out",),  # the new part widens into the clip's first frame
    "edit": ("in", "out"),  # the edit draws anew in the clip's own frame
}
WHY_NOT = {  # mode -> why it makes no other move
    "extend": "the new part starts on the video's last frame, and nothing outside it is known",
    "extend_backward": "the new part ends on the video's first frame, and nothing outside it is known",
    "edit": "nothing outside the video's frame is known",
    "loop": "a loop ends where it starts",
    "connect": "the bridge starts and ends on the videos' own frames",
    "sequence": "a prompt sequence's segments continue each other",
}
SCENE_FIT = " (the scene the frame pans across)"  # what a note on an input fitted to a pan's wider scene adds


@dataclass(frozen=True)
class Move:
    """A camera move made with the output's frame: none by default."""

    pan: tuple[float, float] = (0.0, 0.0)  # output pixels (x, y; y down) the frame's centre travels over the span
    zoom: float = 1.0  # how much larger the scene looks at the end than at the start: > 1 zooms in, < 1 out
    span: tuple[int, int] = (0, 1)  # the output frames the move runs between; it holds before and after

    def __bool__(self) -> bool:
        return any(self.pan) or self.zoom != 1.0

    @property
    def scales(self) -> tuple[float, float]:
        """The window's size at the start and at the end, as a share of the output's (<= 1)."""
        return min(self.zoom, 1.0), min(1.0 / self.zoom, 1.0)

    def scene(self, width: int, height: int) -> tuple[int, int]:
        """The smallest scene that holds every window of a width x height output: wider (taller) by a pan's travel,
        and 1 px to blend sub-pixel windows; a zoom stays inside the output's own frame."""
        return _room(width, self.pan[0]), _room(height, self.pan[1])

    def windows(self, scene: tuple[int, int], out: tuple[int, int], start: int, count: int) -> np.ndarray:
        """(count, 4): x, y, width, height in scene pixels of the windows output frames start.. show, centred on
        the scene: over the span a pan travels at an even pace, and a zoom scales by an even factor a frame."""
        first, last = self.span
        progress = np.clip((np.arange(start, start + count) - first) / max(last - first, 1), 0.0, 1.0)
        opening, closing = self.scales
        scale = opening ** (1 - progress) * closing ** progress
        width, height = scale * out[0], scale * out[1]
        x = (scene[0] - width) / 2 + (progress - 0.5) * self.pan[0]
        y = (scene[1] - height) / 2 + (progress - 0.5) * self.pan[1]
        return np.stack([x, y, width, height], axis=1)

    def describe(self) -> dict[str, str]:
        """Metadata entries for the move, for people (`camera_pan`, `camera_zoom`)."""
        info = {}
        if any(self.pan):
            dx, dy = self.pan
            way = "right" if dx > 0 else "left" if dx < 0 else "down" if dy > 0 else "up"
            info["camera_pan"] = f"{way} {math.hypot(dx, dy):.0f} px, by sliding the frame"
        if self.zoom != 1.0:
            way, factor = ("in", self.zoom) if self.zoom > 1 else ("out", 1 / self.zoom)
            info["camera_zoom"] = f"{way} {factor:.2f}x, by cropping the frame {'closer' if way == 'in' else 'wider'}"
        return info


def _room(size: int, travel: float) -> int:
    return size + math.ceil(abs(travel)) + 1 if travel else size


def move_for(req: Request) -> tuple[Move, list[str]]:
    """The move a resolved request asks for, and notes on what it asks and does not get.

    A pan travels `prompting.PAN_SPEED` short sides a second (at most PAN_ROOM) and a zoom magnifies by ZOOM_SPEED
    (at most ZOOM_ROOM), over the frames the mode draws, when `window_camera` is on and they are 2 or more."""
    if not (req.window_camera and req.frames >= 2):
        return Move(), []
    way, zoom = prompting.asked_camera(req.prompt)
    asked = {"pan": way is not None, "in": zoom == "in", "out": zoom == "out"}
    allowed = MOVES.get(req.mode, ())
    notes = [f"camera {'zoom ' if name != 'pan' else ''}{name}: not made in mode {req.mode} ({WHY_NOT[req.mode]}; "
             f"it makes {_makes(allowed)}), so the camera moves only as the model draws it"
             for name in asked if asked[name] and name not in allowed]
    if req.mode == "i2v" and zoom == "out":
        notes.append("camera zoom out: the video opens on a close-up of the image's centre and widens to the whole "
                     "image, as nothing outside it is known")
    first, last = _span(req)
    seconds = (last - first) / req.fps
    travel = min(prompting.PAN_SPEED * seconds, PAN_ROOM) * min(req.width, req.height)
    pan = (way[0] * travel, way[1] * travel) if asked["pan"] and "pan" in allowed else (0.0, 0.0)
    factor = min(math.exp(ZOOM_SPEED * seconds), ZOOM_ROOM)
    zoomed = {"in": factor, "out": 1 / factor}.get(zoom, 1.0) if zoom in allowed else 1.0
    move = Move(pan, zoomed, (first, last))
    return (move if move else Move()), notes


def _makes(allowed: tuple[str, ...]) -> str:
    return {(): "no camera move", ("in",): "only zoom ins", ("out",): "only zoom outs",
            ("in", "out"): "zooms but no pans"}[allowed]


def _span(req: Request) -> tuple[int, int]:
    """The output frames the mode draws anew, first and last: an extension's new part starts on the clip's last
    frame (forward) or ends on its first (backward)."""
    if req.mode == "extend":
        given = 1 if req.video is None or np.ndim(req.video) == 3 else len(req.video)
        return given - 1, given - 1 + req.frames
    if req.mode == "extend_backward":
        return 0, req.frames
    return 0, req.frames - 1


def film(frames: np.ndarray, windows: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 (T, height, width, 3): each of the uint8 scene frames (T, H, W, 3) seen through its window (`windows`,
    (T, 4) from `Move.windows`), resampled linearly. A window of the output's size at a whole pixel is cut out
    exactly; at a fraction, the two whole-pixel windows either side blend, so a pan glides rather than steps."""
    out = np.empty((len(frames), height, width, 3), np.uint8)
    for i, (frame, (x, y, w, h)) in enumerate(zip(frames.astype(np.float32), windows, strict=True)):
        rows = _resample(frame, y, h, height, axis=0)
        out[i] = np.rint(_resample(rows, x, w, width, axis=1))
    return out


def _resample(image: np.ndarray, start: float, length: float, size: int, axis: int) -> np.ndarray:
    """`size` samples along `axis` of `image`, linearly interpolated, over the `length` (at most `size`) pixels from
    the fractional position `start`."""
    step = length / size
    centres = start + np.arange(size) * step + (step - 1) / 2  # each output pixel's centre, in scene pixels
    low = np.floor(centres)
    part = (centres - low).astype(np.float32)
    last = image.shape[axis] - 1
    shape = [1, 1, 1]
    shape[axis] = size
    part = part.reshape(shape)
    below = np.take(image, np.clip(low.astype(int), 0, last), axis=axis)
    above = np.take(image, np.clip(low.astype(int) + 1, 0, last), axis=axis)
    return (1 - part) * below + part * above
