"""Pixel metrics: seams told from smooth joins, PSNR."""

import numpy as np
import pytest

from kinema.metrics import frame_differences, psnr, seam_ratio
from kinema.world import Background, Obj, Scene, render


def clip(frames: int, motion: str = "right", colour: str = "red", start: float = 0.3) -> np.ndarray:
    scene = Scene([Obj("circle", colour, "medium", motion, start, 0.5, speed=0.3)], Background("solid", "navy"))
    return render(scene, 64, 64, frames, 8)


def test_seam_ratio_tells_a_cut_from_a_smooth_join():
    moving = clip(17)
    assert seam_ratio(moving, 8) == pytest.approx(1.0, abs=0.2)
    cut = np.concatenate([moving[:8], clip(9, motion="up", colour="yellow", start=0.7)])
    assert seam_ratio(cut, 8) > 2
    assert seam_ratio(moving, len(moving)) > 3  # the circle jumps back from the end to the start
    palindrome = np.concatenate([moving, moving[-2:0:-1]])
    assert seam_ratio(palindrome, len(palindrome)) == pytest.approx(1.0, abs=0.2)
    assert frame_differences(moving).shape == (16,)
    assert psnr(moving, moving) == float("inf") and psnr(moving, cut) < 25
