"""Sizes and aspect ratios, parsed and checked, and the canvas a size off the 16-pixel grid is generated on."""

import numpy as np
import pytest

from kinema.errors import KinemaError
from kinema.sizes import canvas_size, check_size, crop_to, pad_to_canvas, parse_aspect, parse_size, size_for


@pytest.mark.parametrize("aspect,size", [("16:9", (224, 128)), ("9:16", (128, 224)), ("1:1", (128, 128)),
                                         ("4:3", (176, 128)), ("3:4", (128, 176)), ("21:9", (304, 128))])
def test_aspect_presets_at_the_short_side(aspect, size):
    assert size_for(parse_aspect(aspect), 128) == size


@pytest.mark.parametrize("text", ["wide", "16:0", "5:1", "1:4.5", ""])
def test_aspects_outside_1_4_to_4_1_or_not_ratios_are_refused(text):
    with pytest.raises(KinemaError, match=f"aspect {text!r} is not a ratio W:H between 1:4 and 4:1"):
        parse_aspect(text)


def test_sizes_parse_with_either_x_and_spaces():
    assert parse_size("256x144") == (256, 144) and parse_size(" 1920 X 1080 ") == (1920, 1080)
    for text in ("256", "256x", "0x144", "-16x16", "16x16x16", "123456x16"):
        with pytest.raises(KinemaError, match="is not WIDTHxHEIGHT"):
            parse_size(text)


def test_check_size_accepts_full_hd_and_portrait():
    check_size(1920, 1088)
    check_size(1920, 1080)
    check_size(1080, 1920)
    check_size(144, 256)


@pytest.mark.parametrize("size,message", [((8, 64), "width 8 is too small; use at least 16"),
                                          ((1920, 1104), "generated at 1920x1104"),
                                          ((640, 128), "5:1; Kinema makes shapes from 1:4 to 4:1, e.g. 512x128"),
                                          ((64, 33), "height 33 is odd; video needs even sizes, e.g. 32 or 34")])
def test_check_size_names_what_is_wrong_and_a_size_that_works(size, message):
    with pytest.raises(KinemaError, match=message):
        check_size(*size)


@pytest.mark.parametrize("size,message", [
    ((514, 128), "size 514x128 is 4.02:1; Kinema makes shapes from 1:4 to 4:1, e.g. 512x128, the widest at height 128"),
    ((128, 514), "size 128x514 is 1:4.02; Kinema makes shapes from 1:4 to 4:1, e.g. 128x512, the tallest at width 128"),
    ((1602, 400), "size 1602x400 is 4.005:1; Kinema makes shapes from 1:4 to 4:1, e.g. 1600x400, the widest at height "
                  "400"),
    ((640, 128), "size 640x128 is 5:1; Kinema makes shapes from 1:4 to 4:1, e.g. 512x128, the widest at height 128")])
def test_a_shape_past_4_1_is_said_precisely_enough_to_be_past_it(size, message):
    with pytest.raises(KinemaError) as caught:
        check_size(*size)
    assert str(caught.value) == message


def test_sizes_off_the_grid_are_generated_on_a_canvas_and_cropped():
    assert canvas_size(1920, 1080) == (1920, 1088) and canvas_size(640, 360) == (640, 368)
    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 70, 3), dtype=np.uint8)
    padded = pad_to_canvas(frames, 70, 40)
    assert padded.shape == (2, 48, 80, 3)
    assert np.array_equal(padded[:, :4, 5:75], np.repeat(frames[:, :1], 4, axis=1))  # edges repeat: no border
    assert np.array_equal(crop_to(padded, 70, 40), frames)
    assert crop_to(frames, 70, 40) is frames
