"""Checks of a pipeline Request that need no model: field kinds, pixel arrays, lengths, text and sampling ranges.

`Pipeline.resolve` runs them (with the model's defaults filled in); the HTTP API and the web page take the same
bounds, which live here.
"""

from __future__ import annotations

import shlex
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kinema import sampling
from kinema.config import check_noise_correlation, check_noise_drift
from kinema.errors import KinemaError

if TYPE_CHECKING:
    from kinema.pipeline import Request

MAX_SECONDS = 60.0
MAX_PIXELS = 1920 * 1088
MAX_FPS = 60
MAX_STEPS, MAX_GUIDANCE, MAX_SEED = 1000, 100.0, 2**63 - 1  # the API checks the same; the web page shows them

WHOLE_FIELDS = ("width", "height", "frames", "fps", "steps", "seed", "window", "context")
NUMBER_FIELDS = ("seconds", "guidance", "strength", "cache", "noise_correlation", "noise_drift")
TEXT_FIELDS = ("prompt", "negative_prompt", "sampler", "aspect", "mode")
FLAG_FIELDS = ("expand", "window_camera")  # "false" is a string, which Python would take as true
EXTENDING = ("extend", "extend_backward", "connect")  # modes whose length is the new part's, beside given clips


def typed(req: Request) -> Request:
    """`req` with numpy scalars made Python numbers, or a one-line error naming a field of the wrong kind (a
    Python caller gets what the CLI and the API check for their users)."""
    optional = {f.name for f in fields(req) if f.default is None}  # None means "the model's default"
    values = {}
    for names, kinds, cast, what in ((WHOLE_FIELDS, (int, np.integer), int, "a whole number"),
                                     (NUMBER_FIELDS, (int, float, np.integer, np.floating), float, "a number"),
                                     (TEXT_FIELDS, (str,), str, "a string"),
                                     (FLAG_FIELDS, (bool, np.bool_), bool, "True or False")):
        for name in names:
            value = getattr(req, name)
            if value is None and name in optional:
                continue
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                raise KinemaError(f"{name} must be {what}, got {value!r}", param=name)
            values[name] = cast(value)
    segments = req.segments
    if segments is not None and not (isinstance(segments, list | tuple) and all(
            isinstance(s, list | tuple) and len(s) == 2 and isinstance(s[1], str)
            and isinstance(s[0], int | float | np.number) and not isinstance(s[0], bool) for s in segments)):
        raise KinemaError("segments must be (start seconds, prompt) pairs, e.g. [(0, \"a red ball\"), (2, \"a blue "
                          "ball\")]", param="segments")
    return replace(req, **values)


def check_pixels(req: Request) -> None:
    """Given pixels are uint8 RGB with room in them: an image (H, W, 3), a video (T, H, W, 3) of at least a frame."""
    for name, ndim in (("image", 3), ("video", 4), ("video_b", 4)):
        given = getattr(req, name)
        if given is None:
            continue
        given = np.asarray(given)
        if given.ndim != ndim or given.shape[-1] != 3 or 0 in given.shape or given.dtype != np.uint8:
            wanted = "(H, W, 3)" if ndim == 3 else "(T, H, W, 3), at least one frame"
            raise KinemaError(f"{name} must be uint8 RGB pixels {wanted}, got {given.dtype} {given.shape}; "
                              "read it with kinema.io.read_image or read_video", param=name)


def check_input_lengths(req: Request, fps: int, frames: int) -> None:
    """Input videos play at the output's fps and may run MAX_SECONDS at most, as outputs do; so may a video made
    of them and `frames` new frames (an extension, a bridge), which Kinema could not read back otherwise."""
    given = {name: len(getattr(req, name)) for name in ("video", "video_b") if getattr(req, name) is not None}
    for name, length in given.items():
        check_input_seconds(name, length, fps)
    if req.mode in EXTENDING:
        if req.seconds == 0:
            raise KinemaError("seconds 0 adds no frames; give the seconds to add, e.g. 2", param="seconds")
        total = (frames + sum(given.values())) / fps
        if total > MAX_SECONDS + 1e-6:
            room = max(0.0, MAX_SECONDS - sum(given.values()) / fps)
            fix = (f"add at most {room:g} s" if room * fps >= 1 else "the input alone fills them; trim it first"
                   if len(given) == 1 else "the inputs alone fill them; trim them first")
            raise KinemaError(f"the {'extended' if req.mode != 'connect' else 'joined'} video would run {total:.1f} s, "
                              f"over the {MAX_SECONDS:g} s Kinema makes; {fix}", param="seconds")


def check_input_seconds(name: str, frames: int, fps: float, file: str = "in.mp4") -> None:
    """An input video ("video" or "video_b") of `frames` at `fps` runs MAX_SECONDS at most, as outputs do."""
    if frames / fps > MAX_SECONDS + 1e-6:
        # quoted: a name with spaces stays one argument; and an MP4 out, also from a video named .png
        trimmed = shlex.quote(f"{Path(file).stem}-{MAX_SECONDS:g}s.mp4")
        raise KinemaError(f"the input {'video' if name == 'video' else 'second video'} runs {frames / fps:.1f} s at "
                          f"{fps:g} fps, over the {MAX_SECONDS:g} s Kinema takes; trim it (e.g. ffmpeg -i "
                          f"{shlex.quote(file)} -t {MAX_SECONDS:g} {trimmed})", param=name)


def check_text(name: str, text: str) -> None:
    """Text that no tokenizer, database or metadata tag can take: bytes a terminal or file handed over that are not
    UTF-8 (Python keeps them as lone surrogates), or half a character sent as JSON's \\ud800 escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise KinemaError(f"the {name.replace('_', ' ')} holds bytes that are not UTF-8 text (or an unpaired surrogate "
                          "such as \\ud800); send or write it as UTF-8 (check the encoding it was typed or saved in)",
                          param=name) from None


def check_tuning(steps: int, guidance: float, seed: int, cache: float, noise_correlation: float,
                 noise_drift: float, sampler: str) -> None:
    """The sampling settings' ranges; the API's fields take the same ones."""
    if sampler not in sampling.METHODS:
        raise KinemaError(f"unknown sampler {sampler!r}; use {' or '.join(sampling.METHODS)}", param="sampler")
    check_noise_correlation(noise_correlation)
    check_noise_drift(noise_drift)
    if not 1 <= steps <= MAX_STEPS:
        raise KinemaError(f"steps must be between 1 and {MAX_STEPS}, got {steps}", param="steps")
    if not 0 <= guidance <= MAX_GUIDANCE:
        raise KinemaError(f"guidance must be between 0 and {MAX_GUIDANCE:g} (1 = off), got {guidance:g}",
                          param="guidance")
    if not 0 <= seed <= MAX_SEED:
        raise KinemaError(f"seed must be between 0 and 2**63 - 1, got {seed}", param="seed")
    if not 0 <= cache <= 1:
        raise KinemaError(f"cache must be between 0 (off) and 1, got {cache}; try 0.1", param="cache")
