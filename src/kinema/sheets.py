"""Pictures of videos: contact sheets (a video's filmstrip, the API's spritesheet) and labelled grids of samples
(training's sample grids, the VAE's reconstructions, an eval's samples)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from kinema.errors import KinemaError
from kinema.io import as_uint8_array, atomic_path, png_metadata

GAP = 2  # pixels between frames and rows
BACKGROUND = (24, 24, 24)
LABEL_COLOR = (235, 235, 235)


def even_picks(total: int, count: int) -> np.ndarray:
    """Indices of `count` frames (at most `total`) spread evenly over `total`, first and last included."""
    return np.linspace(0, total - 1, min(count, total)).round().astype(int)


def contact_sheet(frames: np.ndarray | torch.Tensor, columns: int = 8, max_frames: int = 16) -> Image.Image:
    """A filmstrip of up to `max_frames` evenly spaced frames, `columns` per row, with thin gaps."""
    frames = as_uint8_array(frames)
    if frames.ndim == 3:
        frames = frames[None]
    count = min(len(frames), max_frames)
    picks = even_picks(len(frames), count)
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    height, width = frames.shape[1:3]
    sheet = Image.new("RGB", (columns * (width + GAP) - GAP, rows * (height + GAP) - GAP), BACKGROUND)
    for slot, index in enumerate(picks):
        row, column = divmod(slot, columns)
        sheet.paste(Image.fromarray(frames[index]), (column * (width + GAP), row * (height + GAP)))
    return sheet


def save_grid(path: str | Path, videos: list[np.ndarray], labels: list[str] | None = None,
              frames_per_video: int = 8) -> None:
    """Save a PNG with one filmstrip row per video, each labelled above (training samples, eval reports)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise KinemaError(f"cannot write grid {path}: use a .png file name")
    if not videos:
        raise KinemaError("save_grid needs at least one video")
    if labels is not None and len(labels) != len(videos):
        raise KinemaError(f"save_grid got {len(labels)} labels for {len(videos)} videos; give one per video")
    strips = [contact_sheet(v, columns=frames_per_video, max_frames=frames_per_video) for v in videos]
    font = ImageFont.load_default()
    label_height = _text_height(font) + 2 * GAP if labels else 0
    width = max(strip.width for strip in strips)
    height = sum(strip.height + label_height + GAP for strip in strips) - GAP
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    top = 0
    for index, strip in enumerate(strips):
        if labels:
            draw.text((GAP, top + GAP), _fit_text(draw, labels[index], font, width - 2 * GAP),
                      fill=LABEL_COLOR, font=font)
        grid.paste(strip, (0, top + label_height))
        top += strip.height + label_height + GAP
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG", pnginfo=png_metadata({"labels": labels or []}))


def _text_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    return font.getbbox("Ag|")[3]


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: int) -> str:
    """`text` on one line, shortened with '...' until it fits `max_width` pixels."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "...", font=font) > max_width:
        text = text[:-1]
    return text + "..."
