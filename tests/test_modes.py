"""Generation modes. Mechanics run on the tiny random `debug` model: which latent frames each window gives
the DiT clean (t = 0), that given pixels come back exactly, that windows stay bounded. Quality (judge and
seam metrics) is measured on the bundled model, in test_modes_quality.py."""

from dataclasses import replace

import numpy as np
import pytest
import skimage.data
import torch

from kinema import flow
from kinema.checkpoint import Model
from kinema.errors import KinemaError
from kinema.io import fit_image
from kinema.metrics import psnr
from kinema.modes import WINDOW, plan_backward, plan_windows, segment_spans
from kinema.pipeline import Pipeline, Request, Video
from kinema.sampling import schedule
from kinema.world import Background, Obj, Scene, render

SMALL = {"width": 32, "height": 32, "steps": 2}


def clip(frames: int, motion: str = "right", colour: str = "red", size: int = 32, start: float = 0.3) -> np.ndarray:
    scene = Scene([Obj("circle", colour, "medium", motion, start, 0.5, speed=0.3)], Background("solid", "navy"))
    return render(scene, size, size, frames, 8)


def generate(pipe, **kwargs) -> Video:
    return pipe.generate(Request(kwargs.pop("prompt", "a red circle moves to the right"), **{**SMALL, **kwargs}))


@pytest.fixture(scope="module")
def pipe(fp32_debug_pipe):
    """bf16 pays off at real sizes; on the debug model's tiny tensors fp32 is about 10x faster on CPU."""
    return fp32_debug_pipe


@pytest.fixture
def dit_calls(pipe):
    """(latents x, per-frame times t) of the first batch item of every DiT call during the test."""
    calls = []
    hook = pipe.model.dit.register_forward_pre_hook(lambda m, a: calls.append((a[0][:1].clone(), a[1][0])))
    yield calls
    hook.remove()


def windows_seen(calls, steps: int = SMALL["steps"]) -> list[str]:
    """Each window's frame layout, '0' for a given (clean) latent frame and 'x' for one being denoised."""
    return ["".join("0" if v == 0 else "x" for v in t.tolist()) for _, t in calls[::steps]]


# -- window plans ---------------------------------------------------------------------------------

@pytest.mark.parametrize("window,context", [(5, 2), (3, 1), (8, 3)])
def test_window_plans_stay_within_the_window_and_make_every_frame(window, context):
    for new in range(1, 30):
        for have in (0, 1, 7):
            for end in range(window - context):
                plan = plan_windows(new, have, window, context, end)
                assert sum(m for _, m, _ in plan) == new
                assert all(m >= 1 and k + m + e <= window for k, m, e in plan)
                assert [e for _, _, e in plan] == [0] * (len(plan) - 1) + [end]
                made = np.cumsum([have] + [m for _, m, _ in plan])
                assert [k for k, _, _ in plan] == [min(context, h) for h in made[:-1]]
        back = plan_backward(new, window, context)
        assert all(e == context and m + e <= window for _, m, e in back)
        assert sum(m - 1 for _, m, _ in back[:-1]) + back[-1][1] == new  # all but the last drop a 1-frame latent


# -- text to video, sizes and durations --------------------------------------------------------------

def test_a_duration_between_frames_is_rounded_and_said(pipe):
    video = generate(pipe, seconds=2.3, fps=8, steps=1)
    assert video.frames == 18 and "2.3 s is 18.4 frames at 8 fps: made 18, 2.25 s" in video.notes
    for seconds, fps in ((2, 8), (0.1, 30)):  # whole already (0.1 x 30 is 3.0000000000000004 in floats)
        assert not [note for note in generate(pipe, seconds=seconds, fps=fps, steps=1).notes if "frames at" in note]


def test_long_text_to_video_is_chained_in_bounded_windows(pipe, dit_calls):
    video = generate(pipe, frames=48)  # 13 latent frames
    assert video.latents.shape[2] == 13
    assert windows_seen(dit_calls) == ["xxxxx", "00xxx", "00xxx", "00xx"]
    assert len(pipe.decode(video)) == 48
    # Each later window's context: the video's first latent (anchoring it), then the newest one
    for window, newest in zip(dit_calls[2::2], (4, 7, 10), strict=True):
        x = window[0]
        assert torch.equal(x[:, :, 0], video.latents[:, :, 0]) and torch.equal(x[:, :, 1], video.latents[:, :, newest])


def test_a_long_image_to_video_keeps_the_image_in_every_window(pipe, dit_calls):
    image = clip(1)[0]
    video = generate(pipe, image=image, frames=33)  # 9 latent frames: the image's and 8 more, in 3 windows
    assert windows_seen(dit_calls) == ["0xxxx", "00xxx", "00x"]
    first = video.latents[:, :, :1]
    assert all(torch.equal(x[:, :, :1], first) for x, _ in dit_calls)
    assert torch.equal(dit_calls[2][0][:, :, 1], video.latents[:, :, 4])  # and the newest latent after it


def test_sixty_seconds_keep_every_window_and_decode_chunk_small(pipe, dit_calls):
    video = pipe.generate(Request("a red circle", width=16, height=16, seconds=60, fps=8, steps=1))
    assert video.frames == 480 and video.latents.shape[2] == 121
    assert max(x.shape[2] for x, _ in dit_calls) == WINDOW  # DiT memory does not grow with duration
    chunks = [len(c) for c in pipe.decode_stream(video)]  # streamed: one latent frame at a time
    assert max(chunks) == 4 and sum(chunks) == 480


def test_aspect_request_and_image_of_any_size(pipe):
    video = pipe.generate(Request("a green square", aspect="16:9", frames=1, steps=1))
    assert (video.width, video.height) == (112, 64)  # the debug model's short side is 64
    assert pipe.decode(video).shape == (1, 64, 112, 3)
    assert pipe.resolve(Request("x", seconds=60)).frames == 480
    with pytest.raises(KinemaError, match="not a ratio W:H between 1:4 and 4:1"):
        pipe.resolve(Request("x", aspect="wide"))
    with pytest.raises(KinemaError, match="either a size or an aspect ratio"):
        pipe.resolve(Request("x", aspect="16:9", width=64))


def test_a_world_model_says_when_a_prompt_names_nothing_it_knows(pipe, monkeypatch):
    monkeypatch.setattr(Pipeline, "expands_by_default", property(lambda self: True))  # as the bundled models
    notes = generate(pipe, prompt="a cat playing piano in a jazz club", frames=1).notes
    assert len(notes) == 1 and notes[0].startswith("prompt 'a cat playing piano in a jazz club' names nothing")
    drawn = generate(pipe, prompt="a red ball bounces on a snowy field", frames=1).notes  # the world knows it
    assert len(drawn) == 1 and drawn[0].startswith("prompt 'a red ball bounces on a snowy field' drawn as '")
    monkeypatch.setattr(Pipeline, "expands_by_default", property(lambda self: False))  # a user's own model
    assert generate(pipe, prompt="a cat playing piano in a jazz club", frames=1).notes == []


# -- image to video ----------------------------------------------------------------------------------

def test_image_to_video_starts_with_the_photos_vae_round_trip(pipe, dit_calls):
    photo = skimage.data.chelsea()  # (300, 451, 3), a real photograph
    video = generate(pipe, image=photo, frames=9, width=48, height=32)
    fitted = fit_image(photo, 48, 32)[0]
    round_trip = pipe.decode(Video(pipe.encode(fitted[None]), 1, 8, 48, 32))
    frames = pipe.decode(video)
    assert frames.shape == (9, 32, 48, 3)
    assert psnr(frames[0], round_trip[0]) > 50
    assert windows_seen(dit_calls) == ["0xx"]  # the image's latent is given, the rest denoised
    assert video.notes == ["image: resized 451x300 to 48x32"]
    assert pipe.resolve(Request("x", image=photo)).width == 96  # default: the photo's aspect


# -- extend forward and backward ----------------------------------------------------------------------

def test_extend_forward_keeps_the_clip_and_decodes_in_one_pass(pipe, dit_calls):
    source = clip(11)
    video = generate(pipe, mode="extend", video=source, frames=8)
    frames = pipe.decode(video)
    assert len(frames) == 19 and np.array_equal(frames[:11], source)
    tail = pipe.encode(source[2:])  # the last 1 + 4k = 9 frames
    assert torch.equal(video.latents[:, :, :3], tail)
    assert windows_seen(dit_calls) == ["00xx"]
    one_pass = pipe.decode(Video(video.latents, 17, 8, 32, 32))
    assert np.array_equal(frames[11:], one_pass[9:])


def test_extend_backward_leads_into_the_clip(pipe, dit_calls):
    source = clip(9)
    video = generate(pipe, mode="extend_backward", video=source, frames=6)
    frames = pipe.decode(video)
    assert len(frames) == 15 and np.array_equal(frames[6:], source)
    assert windows_seen(dit_calls) == ["xxx00"]  # the clip's first latents are the end of the window
    context = pipe.encode(np.concatenate([source[:1], source[:8]]))[:, :, 1:]  # as mid-clip latents
    assert torch.equal(dit_calls[0][0][:, :, 3:], context)


def test_long_backward_extension_chains_right_to_left(pipe, dit_calls):
    video = generate(pipe, mode="extend_backward", video=clip(9), frames=30)
    assert windows_seen(dit_calls) == ["xxx00"] * 4
    assert video.latents.shape[2] == 9 and len(pipe.decode(video)) == 39


# -- loop and connect --------------------------------------------------------------------------------

def test_connect_shows_both_clips_around_the_bridge(pipe, dit_calls):
    a, b = clip(9), clip(5, motion="up", colour="blue")
    video = generate(pipe, mode="connect", video=a, video_b=b, frames=8)
    frames = pipe.decode(video)
    assert len(frames) == 9 + 8 + 5
    assert np.array_equal(frames[:9], a) and np.array_equal(frames[-5:], b)
    assert windows_seen(dit_calls) == ["00x", "00x00"]  # the last window ends on B's first latents


def test_connect_between_two_scenes_notes_the_bundled_models_cut(pipe, monkeypatch):
    """Between different scenes the bundled models' bridge ends in a cut (docs/eval/experiments/session38_connect.json);
    within one scene it does not, and no note is given."""
    monkeypatch.setattr(Pipeline, "expands_by_default", property(lambda self: True))  # as for a bundled model
    snow = render(Scene([Obj("square", "yellow", "medium", "down", 0.5, 0.3)], Background("snow")), 32, 32, 5, 8)
    notes = [generate(pipe, mode="connect", video=clip(9), video_b=b, frames=4).notes for b in (snow, clip(9)[4:])]
    assert not any("grey levels apart" in n for n in notes[1]), notes[1]
    assert any("grey levels apart, as different scenes do" in n for n in notes[0]), notes[0]


def test_loop_bridges_back_to_its_own_first_frames(pipe, dit_calls):
    video = generate(pipe, mode="loop", frames=12)
    frames = pipe.decode(video)
    assert len(frames) == 12 and video.skip == 1
    assert windows_seen(dit_calls) == ["xxx", "00x00"]
    start = pipe.encode(np.concatenate([frames[:1], frames[:8]]))[:, :, 1:]
    assert torch.allclose(dit_calls[-1][0][:, :, 3:], start, atol=1e-5)


# -- edit ----------------------------------------------------------------------------------------------

def test_edit_strength_zero_is_the_vae_round_trip_and_one_ignores_the_input(pipe, dit_calls):
    source = clip(11)
    keep = generate(pipe, mode="edit", video=source, strength=0.0)
    assert not dit_calls and keep.frames == 11
    padded = np.concatenate([source, source[-1:].repeat(2, axis=0)])  # 13 = 1 + 4k frames
    round_trip = pipe.decode(Video(pipe.encode(padded), 11, 8, 32, 32))
    assert np.array_equal(pipe.decode(keep), round_trip)
    ignored = generate(pipe, mode="edit", video=source, strength=1.0, seed=5)
    assert torch.equal(ignored.latents, generate(pipe, frames=11, seed=5).latents)


def test_edit_mid_strength_runs_the_last_share_of_the_schedule(pipe, dit_calls):
    """Strength 0.4 runs the last 40% of the text-to-video schedule (in its own steps, measured before the
    shift), starting where the full schedule is 60% of its way: the same share at every size. Each step reads the
    DiT twice, on the noised input (with no prompt) and on the edit (with the prompt)."""
    source = clip(9)
    sampler = replace(pipe.cfg.sampler, shift=3.0, shift_base_tokens=1)  # the debug model's shift is 1
    cfg = replace(pipe.cfg, sampler=sampler)
    pipe = Pipeline(Model(cfg, pipe.model.vae, pipe.model.dit, pipe.model.text, "test"))
    video = generate(pipe, mode="edit", video=source, strength=0.4, steps=5)
    shape = pipe.encode(source).shape  # (1, C, 3, h, w)
    full = schedule(5, flow.shift_for(cfg.dit.tokens(*shape[2:]), 3.0, 1))
    assert len(dit_calls) == 10 and full[3] > 0.5  # the shift moved the start well above t = 0.4
    assert dit_calls[0][1].tolist() == dit_calls[1][1].tolist() == pytest.approx([full[3].item()] * 3)
    assert video.meta["strength"] == 0.4 and len(pipe.decode(video)) == 9
    with pytest.raises(KinemaError, match="cannot edit 20 frames of a 9-frame video"):
        generate(pipe, mode="edit", video=source, frames=20)


def test_a_long_edit_carries_each_window_from_the_inputs_own_latents(pipe, dit_calls):
    source = clip(33)  # 9 latent frames: windows of 5 new, then 2 given + 3 new, then 2 given + 1 new
    video = generate(pipe, mode="edit", video=source, strength=0.5)
    latents, steps = pipe.encode(source), SMALL["steps"]
    assert video.latents.shape == latents.shape and len(dit_calls) == 2 * steps * 3  # the edit's and the input's
    (edit_x, edit_t), (input_x, input_t) = dit_calls[2 * steps:2 * steps + 2]  # the second window's first step
    assert edit_t.tolist()[:2] == input_t.tolist()[:2] == [0, 0] and (edit_t[2:] > 0).all()
    assert torch.allclose(edit_x[:, :, :2], video.latents[:, :, 3:5])  # its context: the edit so far
    assert torch.allclose(input_x[:, :, :2], latents[:, :, 3:5])  # and, for the input's pass, the input there


# -- prompt sequences --------------------------------------------------------------------------------

def test_sequence_gives_each_segment_its_own_prompt(pipe, monkeypatch):
    prompts = ["a red circle moves to the right", "a blue square moves up"]
    dit, texts = pipe.model.dit, []
    prepare = dit.prepare_context  # called once per window with the (cond, uncond) text batch
    monkeypatch.setattr(dit, "prepare_context", lambda ctx, mask: texts.append(ctx[0].clone()) or prepare(ctx, mask))
    video = generate(pipe, segments=[(0.0, prompts[0]), (1.0, prompts[1])], frames=24)
    assert video.meta["mode"] == "sequence"
    assert video.meta["segments"] == [[0, 9, prompts[0], prompts[0]], [9, 24, prompts[1], prompts[1]]]
    encoded = [pipe.model.text([p])[0][0] for p in prompts]
    per_window = [next(i for i, e in enumerate(encoded) if torch.equal(t, e)) for t in texts]
    assert per_window == [0, 1, 1]  # latents 0-2 with the first prompt, 3-6 (two windows) with the second


def test_segment_starts_snap_to_latent_frames():
    assert segment_spans([(0, "a"), (1, "b"), (2.5, "c")], 40, 8, 4) == [(0, 3, "a"), (3, 6, "b"), (6, 11, "c")]


@pytest.mark.parametrize("segments,message", [
    ([(0, "a"), (0, "b")], "must increase"),
    ([(0, "a"), (1, "b"), (1.2, "c")], "space segments at least 0.5 s apart"),
    ([(0, "a"), (5, "b")], "starts at or after the end"),
    ([(0, "a"), (1, " ")], "prompt"),
])
def test_bad_segments_are_one_line_errors(pipe, segments, message):
    with pytest.raises(KinemaError, match=message):
        pipe.resolve(Request("", segments=segments, seconds=2))


# -- request checks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "i2v"}, "needs an image"),
    ({"mode": "connect", "video": np.zeros((5, 32, 32, 3), np.uint8)}, "needs a second video"),
    ({"video": np.zeros((5, 32, 32, 3), np.uint8)}, "mode t2v does not use video"),
    ({"mode": "extend", "video": np.zeros((5, 32, 32), np.float32)}, "must be uint8 RGB"),
    ({"mode": "zoom"}, "unknown mode 'zoom'"),
    ({"mode": "loop", "frames": 4}, "a loop needs at least 6 frames"),
    ({"mode": "edit", "strength": 1.5}, "strength must be between 0 and 1"),
    ({"window": 5, "context": 4}, r"so it needs context \+ 2; give window 6 or context 3"),
])
def test_mode_errors_are_one_line(pipe, kwargs, message):
    with pytest.raises(KinemaError, match=message) as err:
        generate(pipe, **({"frames": 9} | kwargs))
    assert "\n" not in str(err.value)
