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

A given image or clip fixes the frame where the video meets it (`pin`): a move there starts (or, backward, ends) on
the given frame, which stands at its own scale in a scene as large as the move needs, where its latents can be placed
unchanged, and the DiT draws the rest of the scene around it (outpainting, `conditioning.FrameCondition.partly`).
So image to video and extensions pan and zoom either way; an edit, which draws anew in the clip's frame, zooms only,
and loops and connections, whose ends are both given, do not move (`MOVES`). A move runs over the frames the mode
draws and holds before and after; a prompt sequence's segments each add a leg (`Leg`) over their own frames, as their
prompts ask. A move's room is bounded (`PAN_ROOM`, `ZOOM_ROOM`, for all legs together), so a long video moves slower
and its memory stays bounded.
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
    "i2v": ("pan", "in", "out"),  # from the image, with the scene drawn around it
    "extend": ("pan", "in", "out"),  # from the clip's last frame
    "extend_backward": ("pan", "in", "out"),  # into the clip's first frame
    "edit": ("in", "out"),  # the edit draws anew in the clip's own frame
    "sequence": ("pan", "in", "out"),  # each segment moves over its own frames, as its prompt asks
}
WHY_NOT = {  # mode -> why it makes no other move
    "edit": "nothing outside the video's frame is known",
    "loop": "a loop ends where it starts",
    "connect": "the bridge starts and ends on the videos' own frames",
}


@dataclass(frozen=True)
class Leg:
    """One stretch of a camera move: over the output frames `span` the frame pans and zooms at an even pace."""

    span: tuple[int, int]  # the output frames it runs between
    pan: tuple[float, float] = (0.0, 0.0)  # output pixels (x, y; y down) the frame's centre travels
    zoom: float = 1.0  # how much larger the scene looks at its end than at its start: > 1 zooms in, < 1 out

    def __bool__(self) -> bool:
        return any(self.pan) or self.zoom != 1.0

    def progress(self, frames: np.ndarray) -> np.ndarray:
        """How far along the leg each output frame is: 0 before it, 1 after it."""
        first, last = self.span
        return np.clip((frames - first) / max(last - first, 1), 0.0, 1.0)


@dataclass(frozen=True)
class Move:
    """A camera move made with the output's frame, leg after leg (a prompt sequence's segments each move as their
    prompts ask); none by default."""

    legs: tuple[Leg, ...] = ()
    pin: tuple[int, float, float] | None = None  # (output frame, x, y): its window's centre in scene pixels (`pin`)

    @classmethod
    def over(cls, span: tuple[int, int], pan: tuple[float, float] = (0.0, 0.0), zoom: float = 1.0) -> Move:
        """A move of one leg."""
        return cls((Leg(span, pan, zoom),))

    def __bool__(self) -> bool:
        return any(self.legs)

    @property
    def pans(self) -> bool:
        return any(any(leg.pan) for leg in self.legs)

    def _path(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where the frame's centre has travelled (x, y, output pixels) and its log magnification at `frames`."""
        x, y, magnified = np.zeros(len(frames)), np.zeros(len(frames)), np.zeros(len(frames))
        for leg in self.legs:
            progress = leg.progress(frames)
            x, y = x + progress * leg.pan[0], y + progress * leg.pan[1]
            magnified = magnified + progress * math.log(leg.zoom)
        return x, y, magnified

    def _extremes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The path at every leg's ends, where its extremes lie (it is linear between them)."""
        return self._path(np.array([0, *(end for leg in self.legs for end in leg.span)], dtype=float))

    def scene(self, width: int, height: int) -> tuple[int, int]:
        """The smallest scene that holds every window of a width x height output: wider (taller) by a pan's travel,
        and 1 px to blend sub-pixel windows; a zoom stays inside the output's own frame."""
        x, y, _ = self._extremes()
        return _room(width, x.max() - x.min()), _room(height, y.max() - y.min())

    def windows(self, scene: tuple[int, int], out: tuple[int, int], start: int, count: int) -> np.ndarray:
        """(count, 4): x, y, width, height in scene pixels of the windows output frames start.. show. The path is
        centred on the scene with the output's own frame as the widest view (a zoom in narrows the window from it, a
        zoom out widens the window to it), or passes through the pinned frame's centre, whose window is the output's
        frame."""
        x, y, magnified = self._path(np.arange(start, start + count, dtype=float))
        if self.pin is None:
            ends_x, ends_y, ends_magnified = self._extremes()
            share = np.exp(ends_magnified.min() - magnified)  # the window's size as a share of the output's
            centre_x = scene[0] / 2 + x - (ends_x.min() + ends_x.max()) / 2
            centre_y = scene[1] / 2 + y - (ends_y.min() + ends_y.max()) / 2
        else:
            frame, pin_x, pin_y = self.pin
            at_x, at_y, at_magnified = self._path(np.array([frame], dtype=float))
            share = np.exp(at_magnified - magnified)
            centre_x, centre_y = pin_x + x - at_x, pin_y + y - at_y
        width, height = share * out[0], share * out[1]
        return np.stack([centre_x - width / 2, centre_y - height / 2, width, height], axis=1)

    def describe(self) -> dict[str, str]:
        """Metadata entries for the move, for people (`camera_pan`, `camera_zoom`), leg by leg."""
        pans = [_pan_words(leg.pan) for leg in self.legs if any(leg.pan)]
        zooms = [_zoom_words(leg.zoom) for leg in self.legs if leg.zoom != 1.0]
        return {key: "; then ".join(words) for key, words in (("camera_pan", pans), ("camera_zoom", zooms)) if words}


def _pan_words(pan: tuple[float, float]) -> str:
    dx, dy = pan
    way = "right" if dx > 0 else "left" if dx < 0 else "down" if dy > 0 else "up"
    return f"{way} {math.hypot(dx, dy):.0f} px, by sliding the frame"


def _zoom_words(zoom: float) -> str:
    way, factor = ("in", zoom) if zoom > 1 else ("out", 1 / zoom)
    return f"{way} {factor:.2f}x, by cropping the frame {'closer' if way == 'in' else 'wider'}"


def _room(size: int, travel: float) -> int:
    return size + math.ceil(travel) + 1 if travel else size


def pin(move: Move, frame: int, out: tuple[int, int], canvas: tuple[int, int],
        grid: int) -> tuple[Move, tuple[int, int], tuple[int, int]]:
    """Lay out the scene a move crosses around a given frame: output frame `frame` is the given one, whose
    `canvas` (the output's size rounded up, the output at its centre) stands at a multiple of `grid` pixels in the
    scene, where its latents can be placed whole, and every window lies inside the scene. Returns the move pinned
    there, the scene's size (multiples of `grid`) and the canvas's (left, top) in it."""
    last = max([frame, *(end for leg in move.legs for end in leg.span)])
    around = Move(move.legs, (frame, 0.0, 0.0)).windows((0, 0), out, 0, last + 1)  # about the pinned centre
    size, corner = [], []
    for axis, out_side, canvas_side in ((0, out[0], canvas[0]), (1, out[1], canvas[1])):
        inset = (canvas_side - out_side) // 2  # the output inside its canvas
        low, high = around[:, axis].min(), (around[:, axis] + around[:, axis + 2]).max()  # the windows' reach
        start = grid * math.ceil(max(0.0, -(low + inset + out_side / 2)) / grid)
        end = max(start + canvas_side, math.ceil(start + inset + out_side / 2 + high))  # a sub-pixel window reads
        # the pixel its far edge falls in, a whole-pixel one none past it
        size.append(grid * math.ceil(end / grid))
        corner.append(start)
    centre = (corner[0] + (canvas[0] - out[0]) // 2 + out[0] / 2, corner[1] + (canvas[1] - out[1]) // 2 + out[1] / 2)
    return Move(move.legs, (frame, *centre)), (size[0], size[1]), (corner[0], corner[1])


def move_for(req: Request, segments: list[tuple[int, int, str]] | None = None) -> tuple[Move, list[str]]:
    """The move a resolved request asks for, and notes on what it asks and does not get.

    A pan travels `prompting.PAN_SPEED` short sides a second and a zoom magnifies by ZOOM_SPEED, over the frames
    the mode draws, when `window_camera` is on and they are 2 or more. A prompt sequence passes its `segments`
    (first frame, last frame, prompt): each moves over its frames as its prompt asks. All legs together stay
    within PAN_ROOM and ZOOM_ROOM, so a long video moves slower."""
    if not (req.window_camera and req.frames >= 2):
        return Move(), []
    legs, notes = [], []
    for first, last, prompt in segments or [(*_span(req), req.prompt)]:
        leg, leg_notes = _leg(req, prompt, (first, last))
        legs.append(leg)
        notes += [note for note in leg_notes if note not in notes]
    return _within_room([leg for leg in legs if leg], min(req.width, req.height)), notes


def _leg(req: Request, prompt: str, span: tuple[int, int]) -> tuple[Leg, list[str]]:
    way, zoom = prompting.asked_camera(prompt)
    asked = {"pan": way is not None, "in": zoom == "in", "out": zoom == "out"}
    allowed = MOVES.get(req.mode, ())
    notes = [f"camera {'zoom ' if name != 'pan' else ''}{name}: not made in mode {req.mode} ({WHY_NOT[req.mode]}; "
             f"it makes {_makes(allowed)}), so the camera moves only as the model draws it"
             for name in asked if asked[name] and name not in allowed]
    seconds = (span[1] - span[0]) / req.fps
    travel = prompting.PAN_SPEED * seconds * min(req.width, req.height)
    pan = (way[0] * travel, way[1] * travel) if asked["pan"] and "pan" in allowed else (0.0, 0.0)
    factor = math.exp(ZOOM_SPEED * seconds)
    return Leg(span, pan, {"in": factor, "out": 1 / factor}.get(zoom, 1.0) if zoom in allowed else 1.0), notes


def _within_room(legs: list[Leg], short: int) -> Move:
    """The legs, each slowed by the same share where together they would pan further than PAN_ROOM short sides or
    zoom more than ZOOM_ROOM."""
    move = Move(tuple(legs))
    x, y, magnified = move._extremes()
    travel = max(x.max() - x.min(), y.max() - y.min()) / (PAN_ROOM * short)
    zoomed = (magnified.max() - magnified.min()) / math.log(ZOOM_ROOM)
    pan_share, zoom_share = 1 / max(float(travel), 1.0), 1 / max(float(zoomed), 1.0)  # numpy's scalars: not bool
    return Move(tuple(Leg(leg.span, (leg.pan[0] * pan_share, leg.pan[1] * pan_share), leg.zoom**zoom_share)
                      for leg in legs))


def _makes(allowed: tuple[str, ...]) -> str:
    return {(): "no camera move", ("in", "out"): "zooms but no pans"}[allowed]


def pinned_frame(req: Request) -> int | None:
    """The output frame a given image or clip fixes, where a move starts (or ends): None in modes without one."""
    pins = {"i2v": 0, "extend": 0, "extend_backward": 1}
    return _span(req)[pins[req.mode]] if req.mode in pins else None


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
        rows = resample(frame, y, h, height, axis=0)
        out[i] = np.rint(resample(rows, x, w, width, axis=1))
    return out


def resample(image: np.ndarray, start: float, length: float, size: int, axis: int) -> np.ndarray:
    """`size` samples along `axis` (0 or 1) of a 3-d `image`, linearly interpolated, over the `length` pixels from
    the fractional position `start`; beyond the image's edge its edge pixels repeat."""
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
