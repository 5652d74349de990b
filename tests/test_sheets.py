"""Contact sheets and sample grids."""

import numpy as np
import pytest
from PIL import Image

from kinema import sheets
from kinema.errors import KinemaError


def test_contact_sheet_and_grid_sizes(tmp_path):
    video = np.random.default_rng(0).integers(0, 255, (33, 16, 24, 3), np.uint8)
    sheet = sheets.contact_sheet(video, columns=8, max_frames=16)
    gap = sheets.GAP
    assert sheet.size == (8 * 24 + 7 * gap, 2 * 16 + gap)
    short = sheets.contact_sheet(video[:3], columns=8)
    assert short.size == (3 * 24 + 2 * gap, 16)

    path = tmp_path / "grid.png"
    sheets.save_grid(path, [video, video[:5]], labels=["first prompt " * 20, "second"], frames_per_video=4)
    with Image.open(path) as grid:
        assert grid.width == 4 * 24 + 3 * gap
        assert grid.height > 2 * 16 + gap  # rows plus label bands
    sheets.save_grid(tmp_path / "plain.png", [video], frames_per_video=4)
    with Image.open(tmp_path / "plain.png") as plain:
        assert plain.size == (4 * 24 + 3 * gap, 16)
    with pytest.raises(KinemaError, match="labels"):
        sheets.save_grid(tmp_path / "g2.png", [video], labels=["a", "b"])
