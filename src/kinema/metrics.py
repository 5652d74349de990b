"""Pixel metrics of generated videos: how the modes are tested and benchmarked (seams, PSNR).

The judge (`kinema.judge`) reads what a video shows; these read how it joins and how close it stays to a given input.
"""

from __future__ import annotations

import math

import numpy as np


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference (grey levels) between consecutive uint8 frames (T, H, W, 3) -> (T - 1,)."""
    f = frames.astype(np.float32)
    return np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))


def seam_ratio(frames: np.ndarray, seam: int) -> float:
    """Difference across the seam before frame `seam` over the median difference inside the clip.

    `seam` = len(frames) measures the loop seam (last frame -> first). A floor of 0.5 grey levels on the
    median keeps a still clip's ratio finite. A seamless join scores about 1 or less.
    """
    diffs = frame_differences(frames)
    across = frame_differences(frames[[-1, 0]])[0] if seam == len(frames) else diffs[seam - 1]
    inside = np.delete(diffs, seam - 1) if seam < len(frames) else diffs
    return float(across / max(float(np.median(inside)), 0.5))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between uint8 images or videos of the same shape."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)
