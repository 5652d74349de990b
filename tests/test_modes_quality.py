"""How well the modes work, measured with the judge and pixel metrics on the bundled model.

Seams: the frame difference across a join must stay within 1.5x the median frame difference inside
the clip (`metrics.seam_ratio`). Content: the judge reads each generated part against its own prompt.
"""

import numpy as np
import pytest
import skimage.data

from kinema.checkpoint import BUNDLED
from kinema.evaluate import evaluate, prompts_for
from kinema.io import fit_image
from kinema.judge import judge
from kinema.metrics import psnr, seam_ratio
from kinema.pipeline import Pipeline, Request, Video
from kinema.world import Background, Obj, Scene, render

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (BUNDLED / "config.json").exists(),
                       reason="needs the bundled model (src/kinema/weights/small); runs once it is installed"),
]


def below_target(why: str):
    """The bundled model misses this target today, for the measured reason given (docs/MODEL.md). Strict: the
    day the target is met the test passes, the xfail fails, and the mark must go."""
    return pytest.mark.xfail(strict=True, reason=why)


# Every seam falls on a latent-frame boundary, where even a true clip's VAE round trip jumps 2.4x (the target
# is 1.5x); the DiT's latent frames do not continue each other's motion, which makes generated seams 3-9x. It
# continues a clip at its training clips' pace (3.2 px a frame after this 1.9 px one), and neither context guidance
# nor longer windows or more context bring a seam under 4.5x (docs/MODEL.md, session 22).
SEAMS = below_target("the bundled DiT's latent frames do not continue each other's motion (docs/MODEL.md)")

FPS = 8
SEAM = 1.5
RED_RIGHT = "a medium red circle moves to the right over a navy background"


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.load()


def world_clip(pipe, frames: int, colour: str = "red", motion: str = "right") -> np.ndarray:
    """A circle moving slowly enough to stay in frame for 5 s, at the model's size."""
    scene = Scene([Obj("circle", colour, "medium", motion, 0.2, 0.5, speed=0.12)], Background("solid", "navy"))
    return render(scene, pipe.cfg.width, pipe.cfg.height, frames, FPS)


def make(pipe, prompt: str, **kwargs) -> np.ndarray:
    return pipe.decode(pipe.generate(Request(prompt, fps=FPS, seed=0, **kwargs)))


def assert_shows(prompt: str, frames: np.ndarray, *attributes: str) -> None:
    verdict = judge(prompt, frames, FPS)
    assert all(verdict[a] for a in attributes), {a: verdict[a] for a in attributes}


@below_target("the world-trained VAE keeps this photo at 23 dB; 8 latent channels per 4x4 patch "
              "hold at most ~25 dB of it even as a linear code (docs/MODEL.md, session 14)")
def test_image_to_video_starts_on_the_photo(pipe):
    photo = fit_image(skimage.data.astronaut(), pipe.cfg.width, pipe.cfg.height)[0]
    frames = make(pipe, RED_RIGHT, image=photo, seconds=2)
    round_trip = pipe.decode(Video(pipe.encode(photo[None]), 1, FPS, pipe.cfg.width, pipe.cfg.height))
    assert psnr(frames[0], round_trip[0]) >= 40  # the image's latent is kept exactly
    assert psnr(frames[0], photo) >= 28


@pytest.mark.parametrize("size", [(304, 128), (176, 128)])  # 21:9 and 4:3: the DiT trained on 128x128, 224x128, 128x224
def test_sizes_never_trained_on_keep_colour_and_count(pipe, size):
    # Measured on the first 16 hold-out prompts: 14 / 15 clips right in colour and 12 / 14 in count at 21:9 / 4:3,
    # as at the trained sizes (12-16 and 12); over 100 prompts 56.8-57.4% overall (docs/MODEL.md, session 24).
    results, _ = evaluate(pipe, prompts_for("heldout", 16, 0), *size)
    assert sum(bool(r["colour"]) for r in results) >= 12
    assert sum(bool(r["count"]) for r in results) >= 10


def test_image_to_video_animates_a_world_frame(pipe):
    # Passes since session 20's default, whose DiT also reads MiniLM's token embeddings (docs/MODEL.md).
    first = world_clip(pipe, 1)
    frames = make(pipe, RED_RIGHT, image=first[0], seconds=2)
    assert psnr(frames[0], first[0]) >= 28
    assert_shows(RED_RIGHT, frames, "colour", "shape", "motion")


def test_image_to_video_pans_from_the_image_over_a_scene_drawn_around_it(pipe):
    # Measured on 40 hold-out scenes: the first frame keeps the image at 36.7 dB (24.0 dB when the image was
    # fitted to the whole scene), and the drawn part is 8 grey levels from the true scene (docs/MODEL.md, session 32).
    wall = Scene([Obj("circle", "red", "medium", "still", 0.5, 0.5)], Background("brick", texture_seed=2))
    wide = render(wall, 176, 128, 1, FPS)[0]  # the scene a 2 s pan crosses: 128 px and its 48 px of travel
    for way, image, seen_last, true_part in (("left", wide[:, 48:], np.s_[:, :48], wide[:, :48]),
                                             ("right", wide[:, :128], np.s_[:, 80:], wide[:, 128:])):
        prompt = f"a medium red circle stays still in front of a brick wall, the camera pans {way}"
        frames = make(pipe, prompt, image=image, seconds=2)
        assert psnr(frames[0], image) >= 28
        assert_shows(prompt, frames, "pan", "background", "colour", "count")
        drawn = frames[-1][seen_last].astype(float)  # the last frame's part that lies outside the image
        assert np.abs(drawn - true_part).mean() < 15  # the wall goes on (9.5 and 8.1; a mid-grey fill: 49)


def test_image_to_video_zooms_out_from_the_whole_image(pipe):
    # It opened on a close-up of the image's centre before session 32: 20.2 dB against 34.1 dB now over 30 hold-out
    # scenes (docs/MODEL.md, session 32). Here 36.0 dB, and the wall is drawn on around the image as the frame widens.
    wall = Scene([Obj("circle", "red", "medium", "still", 0.5, 0.5)], Background("brick", texture_seed=2))
    image = render(wall, pipe.cfg.width, pipe.cfg.height, 1, FPS)[0]
    prompt = "a medium red circle stays still in front of a brick wall, the camera zooms out"
    frames = make(pipe, prompt, image=image, seconds=2)
    assert psnr(frames[0], image) >= 28
    assert_shows(prompt, frames, "zoom", "background", "colour", "count", "motion")


@SEAMS
def test_extend_forward_has_no_seam(pipe):
    source = world_clip(pipe, 17)
    frames = make(pipe, RED_RIGHT, mode="extend", video=source, seconds=2)
    assert seam_ratio(frames, len(source)) <= SEAM
    assert_shows(RED_RIGHT, frames[len(source):], "colour", "shape", "motion")


@SEAMS
def test_extend_backward_has_no_seam(pipe):
    source = world_clip(pipe, 17)
    frames = make(pipe, RED_RIGHT, mode="extend_backward", video=source, seconds=2)
    assert seam_ratio(frames, 16) <= SEAM
    assert_shows(RED_RIGHT, frames[:16], "colour", "shape")


@SEAMS
def test_loop_wraps_around_without_a_seam(pipe):
    prompt = "a medium blue heart bounces over a beige background"
    frames = make(pipe, prompt, mode="loop", seconds=3)
    assert seam_ratio(frames, len(frames)) <= SEAM
    assert_shows(prompt, frames, "colour", "shape")


@SEAMS
def test_connect_joins_both_ends(pipe):
    whole = world_clip(pipe, 41)  # A is its first 2 s, B its last 2 s; the bridge replaces the second between
    a, b = whole[:17], whole[25:]
    frames = make(pipe, RED_RIGHT, mode="connect", video=a, video_b=b, seconds=1)
    assert len(frames) == 17 + 8 + 16
    assert seam_ratio(frames, 17) <= SEAM and seam_ratio(frames, 25) <= SEAM


def test_edit_recolours_a_rising_circle_and_keeps_its_path(pipe):
    """FlowEdit carries the clip's own latents to the prompt; redrawing from re-noised ones (SDEdit) lost this circle's
    path and drew a second blob (motion and count failed with the same seed)."""
    scene = Scene([Obj("circle", "yellow", "medium", "up", 0.5, 0.7, speed=0.12)], Background("solid", "navy"))
    prompt = "a medium purple circle moves up over a navy background"
    frames = make(pipe, prompt, mode="edit", video=render(scene, pipe.cfg.width, pipe.cfg.height, 17, FPS))
    assert_shows(prompt, frames, "colour", "motion", "count")


@below_target("the edit turns the circle blue, but the bundled DiT does not keep it on its path: over 60 world "
              "clips recoloured by their prompt, colour and motion both hold in 33% (docs/MODEL.md, session 33)")
def test_edit_changes_colour_and_keeps_motion(pipe):
    prompt = "a medium blue circle moves to the right over a navy background"
    frames = make(pipe, prompt, mode="edit", video=world_clip(pipe, 17), strength=0.7)
    assert_shows(prompt, frames, "colour", "shape", "motion")


@below_target("each segment keeps the red colour, but the bundled DiT draws a blob that follows neither "
              "segment's motion words (docs/MODEL.md)")
def test_prompt_sequence_follows_each_prompt(pipe):
    up = "a medium red circle moves up over a navy background"
    video = pipe.generate(Request(RED_RIGHT, fps=FPS, seconds=4, segments=[(0, RED_RIGHT), (2, up)]))
    frames = pipe.decode(video)
    for start, end, prompt, _ in video.meta["segments"]:
        assert_shows(prompt, frames[start:end], "colour", "shape", "motion")


@below_target("over 8 s of chained windows the star decays into a mottled yellow and teal blob: the colour "
              "holds for 4 s, and the bundled DiT draws no star (docs/MODEL.md, session 14)")
def test_long_video_keeps_its_object_across_windows(pipe):
    prompt = "a large yellow star spins in place over a teal background"
    frames = make(pipe, prompt, seconds=8)  # 17 latent frames: five windows
    assert len(frames) == 64
    assert_shows(prompt, frames, "colour", "shape", "count")
    assert_shows(prompt, frames[-16:], "colour", "shape")
