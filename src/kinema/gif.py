"""GIF as Kinema writes and reads it: delays are whole centiseconds, and Kinema's tags and exact frame rate ride in
the GIF's comment as JSON. kinema.io reads and writes GIF files through these rules."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write(tmp: Path, frames: Iterator[np.ndarray], fps: float, tags: dict[str, str]) -> None:
    """A looping GIF. Pillow needs every frame at save time, so frames are kept as 1-byte paletted images."""
    images = [Image.fromarray(frame).quantize(256, dither=Image.Dither.NONE) for frame in frames]
    # Delays are whole centiseconds: take them from rounded frame start times so that the
    # total length stays exact (12.5 cs at 8 fps alternates 12 and 13).
    starts = [round(i * 100 / fps) for i in range(len(images) + 1)]
    durations = [10 * (end - start) for start, end in itertools.pairwise(starts)]
    comment = json.dumps({**tags, "fps": fps})
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations,
                   loop=0, comment=comment, optimize=False)


def frame_duration(frame: Image.Image) -> int:
    """How long a GIF frame shows, in ms (viewers hold frames under 10 ms for 100; so does Kinema)."""
    return max(frame.info.get("duration", 100), 10)


def timeline(durations: list[int], recorded_fps: float | None) -> tuple[np.ndarray, float]:
    """Which GIF frame is on screen at each output frame, and their rate: the GIF's timeline sampled at the fps
    Kinema recorded in its comment (`recorded_fps`), else its typical frame's (the median duration), at each frame's
    midpoint, so a frame held longer than the rest is repeated (and frames GIF merged come back apart)."""
    rate = recorded_fps or 1000 / float(np.median(durations))
    ends = np.cumsum(durations)
    count = max(1, round(ends[-1] * rate / 1000))
    times = (np.arange(count) + 0.5) * 1000 / rate
    return np.minimum(np.searchsorted(ends, times, side="right"), len(durations) - 1), rate


def tags(comment: bytes | str) -> dict[str, Any]:
    """The tags (and fps) Kinema records as JSON in a GIF comment; {} for other GIFs."""
    try:
        found = json.loads(comment)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
