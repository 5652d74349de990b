"""Output sizes: aspect ratios and WIDTHxHEIGHT parsed and checked, and the canvas a video is generated on.

A video is generated on a canvas whose sides are multiples of `SIZE_MULTIPLE` (the VAE's downsampling times the
DiT's patch); an output of another size is its center. Inputs are padded out to the canvas, outputs cut back to it.
"""

from __future__ import annotations

import re

import numpy as np

from kinema.config import SIZE_MULTIPLE
from kinema.errors import KinemaError
from kinema.request_checks import MAX_PIXELS

ASPECTS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9")  # named presets; any W:H from 1:4 to 4:1 works
MAX_ASPECT = 4.0  # long side over short side, for sizes and aspects alike


def parse_aspect(text: str) -> float:
    """Width / height of an aspect ratio written W:H (e.g. 16:9)."""
    try:
        w, h = (float(v) for v in text.split(":"))
        ratio = w / h
    except (ValueError, ZeroDivisionError):
        ratio = -1.0
    if not 1 / MAX_ASPECT <= ratio <= MAX_ASPECT:
        raise KinemaError(f"aspect {text!r} is not a ratio W:H between 1:4 and 4:1; use one of "
                          f"{', '.join(ASPECTS)}", param="aspect")
    return ratio


def parse_size(text: str) -> tuple[int, int]:
    """"256x144" -> (256, 144): the CLI's --size and the API's size field."""
    match = re.fullmatch(r"\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*", text)
    if match is None or 0 in (sides := (int(match[1]), int(match[2]))):
        raise KinemaError(f"size {text!r} is not WIDTHxHEIGHT with both sides above 0, e.g. 256x144", param="size")
    return sides


def size_for(ratio: float, short: int) -> tuple[int, int]:
    """(width, height) with aspect `ratio` and the given short side, both multiples of 16."""
    long = max(short, round(short * max(ratio, 1 / ratio) / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return (long, short) if ratio >= 1 else (short, long)


def check_size(width: int, height: int) -> None:
    """Sizes are even (video codecs store colour at half resolution), at least 16 and at most 4:1; the canvas
    they are generated on (`canvas_size`) holds at most 1920x1088 pixels, as 1920x1080's does."""
    sides = (("width", width), ("height", height))
    for name, v in sides:
        if v < SIZE_MULTIPLE:
            raise KinemaError(f"{name} {v} is too small; use at least {SIZE_MULTIPLE}", param="size")
    canvas_w, canvas_h = canvas_size(width, height)
    if canvas_w * canvas_h > MAX_PIXELS:
        raise KinemaError(f"size {width}x{height} is larger than 1920x1080: it is generated at {canvas_w}x{canvas_h} "
                          f"(each side rounded up to a multiple of {SIZE_MULTIPLE}), over 1920x1088's pixels; choose a "
                          "smaller size", param="size")
    if max(width, height) > MAX_ASPECT * min(width, height):
        ratio = _over_limit(max(width, height) / min(width, height))
        widest, tallest = int(MAX_ASPECT * height), int(MAX_ASPECT * width)
        shape, fix = ((f"{ratio}:1", f"{widest}x{height}, the widest at height {height}") if width > height else
                      (f"1:{ratio}", f"{width}x{tallest}, the tallest at width {width}"))
        raise KinemaError(f"size {width}x{height} is {shape}; Kinema makes shapes from 1:{MAX_ASPECT:g} to "
                          f"{MAX_ASPECT:g}:1, e.g. {fix}", param="size")
    for name, v in sides:  # after the limit, so that the sizes suggested are within it
        if v % 2:
            raise KinemaError(f"{name} {v} is odd; video needs even sizes, e.g. {v - 1} or {v + 1}", param="size")


def _over_limit(ratio: float) -> str:
    """A ratio over MAX_ASPECT to two significant digits, or as many more as show it over (514x128: 4.02, not 4)."""
    digits = 2
    while float(f"{ratio:.{digits}g}") <= MAX_ASPECT:
        digits += 1
    return f"{ratio:.{digits}g}"


def canvas_size(width: int, height: int) -> tuple[int, int]:
    """The size a video is generated at: the output's, each side rounded up to a multiple of 16 (the VAE's
    downsampling times the DiT's patch). The output is its center (`crop_offsets`), e.g. 1920x1080 of 1920x1088."""
    return -(-width // SIZE_MULTIPLE) * SIZE_MULTIPLE, -(-height // SIZE_MULTIPLE) * SIZE_MULTIPLE


def crop_offsets(width: int, height: int) -> tuple[int, int]:
    """(left, top) of a width x height output inside its canvas: inputs are padded by these, outputs cut by them."""
    canvas_w, canvas_h = canvas_size(width, height)
    return (canvas_w - width) // 2, (canvas_h - height) // 2


def pad_to_canvas(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 (T, height, width, 3) frames of an output's size, edge-padded to its canvas: an input shown in the
    output comes back exactly, and the model sees no border."""
    (canvas_w, canvas_h), (left, top) = canvas_size(width, height), crop_offsets(width, height)
    pads = ((0, 0), (top, canvas_h - height - top), (left, canvas_w - width - left), (0, 0))
    return np.pad(frames, pads, mode="edge") if (canvas_w, canvas_h) != (width, height) else frames


def crop_to(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of a width x height output's canvas, cut to the output (as they are if already)."""
    if frames.shape[1:3] == (height, width):
        return frames
    left, top = crop_offsets(width, height)
    return frames[:, top:top + height, left:left + width]
