"""Camera moves made with the output's frame: the windows' geometry on pixels, and the moves a request gets."""

import math
from dataclasses import replace

import numpy as np
import pytest
import skimage.data
import torch

from kinema.camera import PAN_ROOM, ZOOM_ROOM, ZOOM_SPEED, Leg, Move, film, move_for, pin
from kinema.io import fit_image
from kinema.pipeline import Request, Video
from kinema.world import Background, Obj, Scene, parse_prompt, render

RAMP = np.arange(40, dtype=np.uint8) * 4  # a scene whose every column shows 4x its x


def ramp(frames: int, height: int = 8) -> np.ndarray:
    return np.broadcast_to(RAMP[None, None, :, None], (frames, height, len(RAMP), 3))


def generate(pipe, prompt: str, **kwargs) -> Video:
    settings = {"width": 64, "height": 48, "frames": 9, "fps": 8, "steps": 2, "window_camera": True, "seed": 0,
                **kwargs}
    return pipe.generate(Request(prompt, **settings))


# -- the windows, on pixels ------------------------------------------------------------------------

def test_a_pan_slides_the_frame_across_the_scene_in_sub_pixel_steps():
    move = Move.over((0, 4), pan=(10.0, 0.0))
    windows = move.windows((40, 8), (16, 8), 0, 5)
    assert windows[:, 0].tolist() == [7, 9.5, 12, 14.5, 17]  # centred on the scene, at an even pace
    assert (windows[:, 2:] == [16, 8]).all()  # a pan keeps the window's size
    assert move.windows((40, 8), (16, 8), 3, 2)[:, 0].tolist() == [14.5, 17]  # a later chunk goes on from there
    out = film(ramp(5), windows, 16, 8)
    assert out.shape == (5, 8, 16, 3)
    assert out[:, 0, 0, 0].tolist() == [28, 38, 48, 58, 68]
    assert (np.diff(out[:, :, :, 0].astype(int), axis=2) == 4).all()  # each window is the ramp itself, unsmeared
    tilt = Move.over((0, 4), pan=(0.0, -10.0))
    out = film(ramp(5).transpose(0, 2, 1, 3), tilt.windows((8, 40), (8, 16), 0, 5), 8, 16)
    assert out[:, 0, 0, 0].tolist() == [68, 58, 48, 38, 28]  # a tilt up: the window climbs the rows


def test_sliding_the_frame_over_a_still_world_is_the_worlds_own_pan():
    width, frames, fps = 64, 9, 8
    travel = 0.25 * (frames - 1) / fps * width  # 16 px of the world's pan at 0.25 short sides a second
    wall = Background("brick", texture_seed=3)
    still = render(Scene([], wall), width + 18, width, frames, fps)  # 1 px either side of the travel
    move = Move.over((0, frames - 1), pan=(travel, 0.0))
    slid = film(still, move.windows((width + 18, width), (width, width), 0, frames), width, width)
    panned = render(Scene([], wall, pan=0.25), width, width, frames, fps)
    assert np.array_equal(slid[:, :, :-1], panned[:, :, 1:])  # the window starts 1 px into the still scene


def test_a_zoom_in_crops_ever_closer_about_the_frames_centre():
    move = Move.over((0, 2), zoom=1.5)
    assert move.scene(16, 8) == (16, 8)  # a zoom stays inside the output's own frame
    windows = move.windows((16, 8), (16, 8), 0, 3)
    assert windows[:, 2].tolist() == pytest.approx([16, 16 / 1.5**0.5, 16 / 1.5])  # an even factor a frame
    scene = np.broadcast_to((np.arange(16, dtype=np.uint8) * 6)[None, None, :, None], (3, 8, 16, 3))
    out = film(scene, windows, 16, 8)[:, 0, :, 0].astype(int)
    assert (np.diff(out[0]) == 6).all() and (np.diff(out[-1]) == 4).all()  # 1 scene pixel an output pixel, then 2/3
    assert out[:, 7:9].mean(axis=1).tolist() == [45, 45, 45]  # the centre holds still: the frame's middle, x = 7.5
    zoom_out = film(scene, Move.over((0, 2), zoom=1 / 1.5).windows((16, 8), (16, 8), 0, 3), 16, 8)
    assert np.abs(zoom_out[::-1].astype(int) - film(scene, windows, 16, 8)).max() <= 1  # the same, backwards


def red_mass(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The red object's area (T,) and its offset (T, 2) from the middle, in pixels: red over the navy background is
    linear in the object's share of each pixel, so blending does not bias either."""
    red = frames[..., 0].astype(float) - frames[0, 0, 0, 0]
    area = red.sum(axis=(1, 2))
    grid = np.mgrid[:frames.shape[1], :frames.shape[2]][::-1] - (np.array(frames.shape[2:0:-1])[:, None, None] - 1) / 2
    return area, ((grid[:, None] * red[None]).sum(axis=(2, 3)) / area).T


def test_zooming_in_on_a_world_scene_magnifies_its_object_about_the_centre():
    square = Obj("square", "red", "small", "still", 0.7, 0.4)
    still = render(Scene([square], Background("solid", "navy")), 64, 64, 5, 8)
    area, offset = red_mass(film(still, Move.over((0, 4), zoom=1.5).windows((64, 64), (64, 64), 0, 5), 64, 64))
    assert offset[0] == pytest.approx([0.2 * 64, -0.1 * 64], abs=0.5)  # the whole frame first
    assert area[-1] / area[0] == pytest.approx(1.5**2, rel=0.02) and (np.diff(area) > 0).all()
    assert offset[-1] / offset[0] == pytest.approx([1.5, 1.5], rel=0.02)  # it moves out from the centre as it grows


# -- the move a request gets -----------------------------------------------------------------------

def test_a_long_pan_or_zoom_slows_to_stay_within_its_room(debug_pipe):
    minute = debug_pipe.resolve(Request("the camera pans right over a snowy field", width=96, height=64, seconds=60,
                                        window_camera=True))
    whole = (0, minute.frames - 1)
    assert move_for(minute) == (Move.over(whole, pan=(pytest.approx(PAN_ROOM * 64), 0)), [])  # not 0.2 a second
    second = replace(minute, prompt="a camera panning over a snowy field", frames=9, fps=8)
    assert move_for(second)[0] == Move.over((0, 8), pan=(0.2 * 64, 0))
    slowed, _ = move_for(replace(minute, prompt="the camera zooms in on a red star"))
    assert slowed == Move.over(whole, zoom=pytest.approx(ZOOM_ROOM))
    assert slowed and type(slowed.legs[0].zoom) is float  # a numpy scalar here broke `if move:` (a 4 s zoom crashed)
    assert move_for(replace(second, prompt="the camera pulls back from a red star"))[0] == Move.over(
        (0, 8), zoom=pytest.approx(math.exp(-ZOOM_SPEED)))
    for change in ({"window_camera": False}, {"mode": "loop"}, {"frames": 1}, {"prompt": "a red star zooms left"}):
        assert not move_for(replace(second, **{"prompt": "the camera zooms in on a red star", **change}))[0]


def test_each_mode_makes_the_moves_its_given_frames_leave_room_for(debug_pipe):
    base = debug_pipe.resolve(Request("a red star", width=64, height=48, frames=8, fps=8, window_camera=True))
    clip = np.zeros((9, 48, 64, 3), np.uint8)
    zoom_in, zoom_out = pytest.approx(math.exp(ZOOM_SPEED)), pytest.approx(math.exp(-ZOOM_SPEED))  # 8 frames: 1 s
    cases = {  # mode, inputs -> the move for a zoom in, and for a zoom out
        ("extend", "video"): (Move.over((8, 16), zoom=zoom_in), Move.over((8, 16), zoom=zoom_out)),  # from its end
        ("extend_backward", "video"): (Move.over((0, 8), zoom=zoom_in), Move.over((0, 8), zoom=zoom_out)),  # into it
        ("edit", "video"): (Move.over((0, 7), zoom=pytest.approx(math.exp(ZOOM_SPEED * 7 / 8))),
                            Move.over((0, 7), zoom=pytest.approx(math.exp(-ZOOM_SPEED * 7 / 8)))),
        ("loop", None): (Move(), Move()),
        ("connect", None): (Move(), Move()),
    }
    for (mode, given), (closer, wider) in cases.items():
        inputs = {given: clip} if given else {}
        for prompt, expected in (("the camera zooms in on a red star", closer), ("zoom out from a red star", wider)):
            move, notes = move_for(replace(base, prompt=prompt, mode=mode, **inputs))
            assert move == expected, (mode, prompt)
            assert bool(notes) == (not expected) and all(f"not made in mode {mode}" in note for note in notes)
    pan = "the camera pans left over a red star"
    move, notes = move_for(replace(base, prompt=pan, mode="extend", video=clip))
    assert move == Move.over((8, 16), pan=(pytest.approx(-0.2 * 48), 0.0)) and not notes  # from the clip's last frame
    move, notes = move_for(replace(base, prompt=pan, mode="edit", video=clip))
    assert not move and notes == ["camera pan: not made in mode edit (nothing outside the video's frame is known; it "
                                  "makes zooms but no pans), so the camera moves only as the model draws it"]


def test_an_asked_pan_slides_the_frame_across_a_wider_scene(debug_pipe):
    pan = "a red circle over a brick wall, the camera pans left"
    video = generate(debug_pipe, pan, expand=True)
    assert parse_prompt(video.meta["caption"]).pan == "left"  # with nothing given, the DiT reads the pan's words too
    assert video.move == Move.over((0, 8), pan=pytest.approx((-0.2 * 1.0 * 48, 0)))  # PAN_SPEED short sides a second
    assert video.latents.shape[-2:] == (6, 10)  # 80 px wide: the frame's 64 and the 9.6 px it travels
    assert video.meta["camera_pan"] == "left 10 px, by sliding the frame"
    assert debug_pipe.decode(video).shape == (9, 48, 64, 3)
    tilt = generate(debug_pipe, "the camera tilts up over a brick wall")
    assert tilt.move == Move.over((0, 8), pan=pytest.approx((0, -9.6)))
    assert tilt.latents.shape[-2:] == (8, 8)  # 64 px: 48 + 9.6
    assert tilt.meta["camera_pan"] == "up 10 px, by sliding the frame"
    for kwargs in ({"window_camera": False}, {"prompt": "a red circle over a brick wall"}, {"frames": 1}):
        still = generate(debug_pipe, **{"prompt": pan, **kwargs})
        assert not still.move and still.latents.shape[-1] == 8 and "camera_pan" not in still.meta
    assert debug_pipe.resolve(Request(pan)).window_camera is False  # the debug model's default; the bundled: on
    looped = generate(debug_pipe, pan, mode="loop", width=32, height=32)
    assert not looped.move and looped.notes[0].startswith("camera pan: not made in mode loop (a loop ends where it "
                                                          "starts; it makes no camera move)")


def test_an_asked_zoom_crops_into_what_the_model_drew(debug_pipe):
    video = generate(debug_pipe, "the camera slowly zooms in on a red circle over a brick wall")
    assert video.move == Move.over((0, 8), zoom=pytest.approx(math.exp(ZOOM_SPEED)))  # 1.16x over 1 s
    assert video.latents.shape[-2:] == (6, 8)  # the output's own frame
    assert video.meta["camera_zoom"] == "in 1.16x, by cropping the frame closer" and "camera_pan" not in video.meta
    assert debug_pipe.decode(video).shape == (9, 48, 64, 3)
    both = generate(debug_pipe, "the camera pans left and zooms out over a brick wall")
    assert both.move == Move.over((0, 8), (pytest.approx(-9.6), 0.0), pytest.approx(math.exp(-ZOOM_SPEED)))
    assert set(both.meta) >= {"camera_pan", "camera_zoom"} and both.meta["camera_zoom"].startswith("out 1.16x")


def test_extensions_and_edits_zoom_over_the_frames_they_draw(debug_pipe):
    wall = render(Scene([Obj("square", "red", "small", "right", 0.3, 0.5)], Background("brick", texture_seed=3)),
                  64, 48, 9, 8)
    closer = generate(debug_pipe, "the camera zooms in on a red square", mode="extend", video=wall, frames=8)
    frames = debug_pipe.decode(closer)
    assert closer.move.legs == Move.over((8, 16), zoom=pytest.approx(math.exp(ZOOM_SPEED))).legs
    assert closer.meta["camera_zoom"] == "in 1.16x, by cropping the frame closer"
    assert len(frames) == 17 and np.array_equal(frames[:9], wall)  # the given clip is shown as it was
    plain = generate(debug_pipe, "the camera zooms in on a red square", mode="extend", video=wall, frames=8,
                     window_camera=False)
    drawn = debug_pipe.decode(plain)  # the same latents, seen through the whole frame
    assert torch.equal(plain.latents, closer.latents) and np.array_equal(frames[9], film(
        drawn[9:10], closer.move.windows((64, 48), (64, 48), 9, 1), 64, 48)[0])
    assert closer.move.windows((64, 48), (64, 48), 16, 1)[0, 2] == pytest.approx(64 / math.exp(ZOOM_SPEED))
    wider = generate(debug_pipe, "zoom out from a red square", mode="extend_backward", video=wall, frames=8)
    frames = debug_pipe.decode(wider)
    assert wider.move.legs[0].span == (0, 8) and len(frames) == 17 and np.array_equal(frames[8:], wall)
    assert wider.move.windows((64, 48), (64, 48), 0, 1)[0, 2] == pytest.approx(64 * math.exp(-ZOOM_SPEED))
    edited = generate(debug_pipe, "a blue square, the camera zooms in", mode="edit", video=wall, strength=0.5)
    assert edited.move == Move.over((0, 8), zoom=pytest.approx(math.exp(ZOOM_SPEED))) and not edited.notes
    assert debug_pipe.decode(edited).shape == (9, 48, 64, 3)


def test_each_segment_of_a_prompt_sequence_moves_as_its_prompt_asks(debug_pipe):
    story = [(0, "a red circle over a brick wall"), (1, "the camera pans left over a brick wall"),
             (2, "the camera zooms in on the red circle")]
    video = generate(debug_pipe, "", segments=story, frames=24)
    starts = [start for start, *_ in video.meta["segments"]]
    pan, zoom = video.move.legs
    assert (pan.span, zoom.span) == ((starts[1], starts[2]), (starts[2], 23))  # each runs to the next one's start
    assert pan.pan == pytest.approx((-0.2 * 48 * (starts[2] - starts[1]) / 8, 0)) and pan.zoom == 1.0
    assert zoom.zoom == pytest.approx(math.exp(ZOOM_SPEED * (23 - starts[2]) / 8)) and not any(zoom.pan)
    assert video.meta["camera_pan"].startswith("left") and video.meta["camera_zoom"].startswith("in")
    frames = debug_pipe.decode(video)
    assert frames.shape == (24, 48, 64, 3) and not video.notes
    windows = video.move.windows((80, 48), (64, 48), 0, 24)  # a scene 80 px wide: 64 and the 9-12 px of the pan
    assert (windows[:starts[1] + 1, 0] == windows[0, 0]).all()  # still through the first segment
    assert windows[starts[2], 0] < windows[0, 0] and (windows[:starts[2] + 1, 2] == 64).all()  # panned, then zooms
    assert windows[-1, 2] == pytest.approx(64 / zoom.zoom)


def test_legs_that_would_pan_or_zoom_past_the_room_are_slowed_alike(debug_pipe):
    base = debug_pipe.resolve(Request("", width=64, height=48, seconds=20, fps=8, window_camera=True,
                                      segments=[(0, "zoom in on a red star"), (10, "the camera zooms in further")]))
    move, _ = move_for(base, [(0, 80, "zoom in on a red star"), (80, 159, "the camera zooms in again")])
    first, second = move.legs
    assert first.zoom * second.zoom == pytest.approx(ZOOM_ROOM)  # 2 x e^1.5 would be 20x: slowed to 1.5x in all
    assert math.log(first.zoom) / math.log(second.zoom) == pytest.approx(80 / 79)  # each at the same pace
    move, _ = move_for(base, [(0, 80, "the camera pans left"), (80, 159, "the camera pans right")])
    x = move.windows(move.scene(64, 48), (64, 48), 0, 160)[:, 0]
    assert x.max() - x.min() == pytest.approx(PAN_ROOM * 48, abs=0.5)  # there and back within the room
    assert x[0] - x[-1] == pytest.approx(PAN_ROOM * 48 / 80)  # back at the same pace: 79 frames of the 80 there


def test_a_pinned_pan_starts_on_the_given_frame_at_a_whole_token_of_the_scene():
    right, left = Move.over((0, 16), pan=(51.2, 0.0)), Move.over((0, 16), pan=(-51.2, 0.0))
    for move, frame, corner in ((right, 0, (0, 0)), (left, 0, (64, 0)), (left, 16, (0, 0))):
        pinned, scene, at = pin(move, frame, (128, 128), (128, 128), 16)
        windows = pinned.windows(scene, (128, 128), 0, 17)
        assert at == corner and scene == (192, 128)  # 128 and the 51.2 px of the pan, in whole 16 px tokens
        assert windows[frame, :2].tolist() == list(corner)  # the given frame is the window there, pixel for pixel
        assert windows[:, 0].min() >= 0 and windows[:, 0].max() + 128 <= scene[0]
        assert windows[-1, 0] - windows[0, 0] == pytest.approx(move.legs[0].pan[0])
    pinned, scene, at = pin(Move.over((0, 16), zoom=1 / 1.32), 0, (128, 128), (128, 128), 16)  # widens from it
    first, last = pinned.windows(scene, (128, 128), 0, 17)[[0, -1]]
    assert (at, scene) == ((32, 32), (192, 192)) and first.tolist() == [32, 32, 128, 128]  # 128 x 1.32 = 169 in 192
    assert last.tolist() == pytest.approx([96 - 64 * 1.32, 96 - 64 * 1.32, 128 * 1.32, 128 * 1.32])
    pinned, scene, at = pin(Move.over((0, 16), pan=(0.0, -20.0)), 0, (120, 90), (128, 96), 16)
    assert (at, scene) == ((0, 32), (128, 128)) and pinned.windows(scene, (120, 90), 0, 1)[0, :2].tolist() == [4, 35]


def test_image_to_video_opens_on_the_photo_and_a_pan_draws_the_scene_around_it(debug_pipe):
    photo = skimage.data.chelsea()  # (300, 451, 3), a real photograph
    fitted = fit_image(photo, 48, 32)[0]
    given = debug_pipe.encode(fitted[None])  # (1, C, 1, 4, 6)
    for way, corner in (("right", 0), ("left", 2)):  # latent columns where the photo stands in the 8-wide scene
        video = generate(debug_pipe, f"a red ball, the camera pans {way}", image=photo, width=48, height=32,
                         expand=True)
        assert parse_prompt(video.meta["caption"]).pan is None  # the frame pans; the DiT is told a still camera
        assert video.move.legs == (Leg((0, 8), pytest.approx((6.4 if way == "right" else -6.4, 0))),)
        assert video.latents.shape[-2:] == (4, 8) and video.notes[0] == "image: resized 451x300 to 48x32"
        assert video.notes[1].startswith(f"prompt 'a red ball, the camera pans {way}' drawn as")
        assert torch.equal(video.latents[:, :, :1, :, corner:corner + 6], given)  # the photo, token for token
        assert video.latents[:, :, 0].abs().sum() > given.abs().sum()  # and a scene drawn around it
        frames = debug_pipe.decode(video)
        assert frames.shape == (9, 32, 48, 3) and not np.array_equal(frames[0], frames[-1])
    zoomed = generate(debug_pipe, "a cat, zoom in", image=photo, width=48, height=32)
    assert zoomed.notes == ["image: resized 451x300 to 48x32"] and zoomed.latents.shape[-1] == 6
    assert torch.equal(zoomed.latents[:, :, :1], given)  # a zoom in crops the image's own frame: nothing to draw
    widened = generate(debug_pipe, "a cat, zoom out", image=photo, width=48, height=32)
    assert widened.notes == zoomed.notes and widened.latents.shape[-2:] == (8, 10)  # 80x64 px: 48x32, 1.16x and
    assert torch.equal(widened.latents[:, :, :1, 2:6, 2:8], given)  # whole tokens around; the photo in the middle
    windows = widened.move.windows((80, 64), (48, 32), 0, 9)
    assert windows[0].tolist() == [16, 16, 48, 32] and windows[-1, 2] == pytest.approx(48 * math.exp(ZOOM_SPEED))


def test_extensions_pan_from_the_clip_over_a_scene_drawn_around_it(debug_pipe):
    wall = render(Scene([Obj("square", "red", "small", "right", 0.3, 0.5)], Background("brick", texture_seed=3)),
                  64, 48, 9, 8)
    clip = debug_pipe.encode(wall)  # (1, C, 3, 6, 8)
    forward = generate(debug_pipe, "the camera pans left over a brick wall", mode="extend", video=wall, frames=8)
    frames = debug_pipe.decode(forward)
    assert forward.move.legs == (Leg((8, 16), (pytest.approx(-9.6), 0.0)),) and not forward.notes
    assert forward.latents.shape[-1] == 10 and torch.equal(forward.latents[:, :, :3, :, 2:], clip)  # 80 px: 64 + 9.6
    assert len(frames) == 17 and np.array_equal(frames[:9], wall)  # the clip as it was, then the pan from its end
    assert forward.move.windows((80, 48), (64, 48), 8, 9)[[0, -1], 0] == pytest.approx([16, 6.4])
    backward = generate(debug_pipe, "the camera pans right over a brick wall", mode="extend_backward", video=wall,
                        frames=8)
    frames = debug_pipe.decode(backward)
    assert backward.move.windows((80, 48), (64, 48), 0, 9)[[0, -1], 0] == pytest.approx([6.4, 16])  # ends on the clip
    assert len(frames) == 17 and np.array_equal(frames[8:], wall) and backward.latents.shape[-1] == 10
    wider = generate(debug_pipe, "the camera zooms out from a red square", mode="extend", video=wall, frames=8)
    frames = debug_pipe.decode(wider)
    assert wider.latents.shape[-2:] == (10, 12) and torch.equal(wider.latents[:, :, :3, 2:8, 2:10], clip)  # 96x80 px
    assert len(frames) == 17 and np.array_equal(frames[:9], wall) and not wider.notes

