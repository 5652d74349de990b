import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from kinema import sampling
from kinema.errors import KinemaError
from kinema.pipeline import Pipeline, Request, Video, frames_for


@pytest.mark.parametrize("width,height,frames", [(64, 64, 1), (96, 48, 9), (48, 80, 6), (112, 64, 17)])
def test_odd_sizes_aspects_and_durations(debug_pipe, width, height, frames):
    video = debug_pipe.generate(Request("a red circle", width=width, height=height, frames=frames, steps=2))
    t_latent = 1 + -(-(frames - 1) // 4)
    assert video.latents.shape == (1, 8, t_latent, height // 8, width // 8)
    out = debug_pipe.decode(video)
    assert out.shape == (frames, height, width, 3) and out.dtype == np.uint8


def test_seconds_become_an_exact_frame_count(debug_pipe):
    req = debug_pipe.resolve(Request("x", seconds=1.5, fps=10))
    assert req.frames == 15
    assert frames_for(0, 8) == 1 and frames_for(None, 8) == 1 and frames_for(2, 8) == 16


def test_same_seed_same_video_other_seed_differs(debug_pipe):
    make = lambda seed: debug_pipe.generate(Request("a blue star", frames=5, steps=2, seed=seed)).latents
    assert torch.equal(make(3), make(3))
    assert not torch.equal(make(3), make(4))


def test_noise_correlation_defaults_to_the_models_and_steadies_the_frames(moving_pipe, monkeypatch):
    request = Request("a blue star", width=32, height=32, frames=9, steps=4)
    assert moving_pipe.resolve(request).noise_correlation == 0.0  # the debug preset's: the noise it trained on
    monkeypatch.setattr(moving_pipe.cfg.sampler, "noise_correlation", 0.5)
    assert moving_pipe.resolve(request).noise_correlation == 0.5
    latents = {rho: moving_pipe.generate(replace(request, noise_correlation=rho)).latents for rho in (0.0, 0.9)}
    step = {rho: (x[:, :, 1:] - x[:, :, :-1]).abs().mean() for rho, x in latents.items()}
    assert step[0.9] < 0.6 * step[0.0]  # latent frames start alike and stay closer


def test_starting_noise_drifts_the_way_the_prompt_asks(debug_pipe, monkeypatch):
    drawn, real = [], sampling.initial_noise

    def record(shape, rho, gen, drift=(0.0, 0.0)):
        drawn.append((rho, drift))
        return real(shape, rho, gen, drift)

    monkeypatch.setattr(sampling, "initial_noise", record)
    request = Request("a red circle moves to the left", width=96, height=64, frames=9, fps=8, steps=1, noise_drift=0.25)
    debug_pipe.generate(request)
    # 0.25 short sides a second = 0.125 of the 8-pixel latent short side per latent frame (4 frames at 8 fps)
    assert drawn.pop() == (sampling.DRIFT_CORRELATION, (-1.0, 0.0))
    debug_pipe.generate(replace(request, prompt="a red circle spins"))  # no way to travel: the plain chain
    debug_pipe.generate(replace(request, noise_drift=0.0))  # drift off
    debug_pipe.generate(replace(request, mode="i2v", image=np.zeros((64, 96, 3), np.uint8)))  # a given frame places it
    assert drawn == [(0.0, (0.0, 0.0))] * 3


def test_negative_prompt_is_the_unconditional_input(debug_pipe, monkeypatch):
    # The untrained DiT's output layer starts at zero, so look at what it is given rather than what it gives.
    dit, contexts = debug_pipe.model.dit, []
    prepare = dit.prepare_context
    monkeypatch.setattr(dit, "prepare_context", lambda ctx, mask: contexts.append(ctx) or prepare(ctx, mask))
    debug_pipe.generate(Request("a blue star", frames=1, steps=1, guidance=4.0, negative_prompt="red"))
    cond, uncond = contexts[0]  # one batch: conditional and unconditional, prepared once
    assert torch.equal(cond, debug_pipe.model.text(["a blue star"])[0][0])
    assert torch.equal(uncond, debug_pipe.model.text(["red"])[0][0])


@pytest.fixture(scope="module")
def moving_pipe():
    """The debug model with perturbed weights: its velocities are not zero, so the latents move."""
    from kinema.pipeline import Pipeline

    pipe = Pipeline.load("debug")
    torch.manual_seed(0)
    with torch.no_grad():
        for param in pipe.model.dit.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return pipe


def test_a_loaded_pipeline_keeps_its_matmul_weights_in_bf16_and_samples_the_same(monkeypatch):
    from kinema import pipeline
    from kinema.checkpoint import load_model

    def perturbed(spec):  # the debug model's velocities are ~0: weights that move the latents
        model = load_model("debug")
        torch.manual_seed(0)
        with torch.no_grad():
            for param in [*model.dit.parameters(), *model.vae.parameters()]:
                param.add_(torch.randn_like(param) * 0.05)
        return model

    monkeypatch.setattr(pipeline, "load_model", perturbed)
    loaded, autocast_only = Pipeline.load("debug", device="cpu"), Pipeline(perturbed("debug"), device="cpu")
    assert loaded.model.dit.blocks[0].ffn[0].weight.dtype == torch.bfloat16
    assert loaded.model.dit.time_embedding[0].weight.dtype == torch.float32  # it runs outside autocast
    request = Request("a red circle moves left", width=32, height=32, frames=9, steps=3, seed=3)
    a, b = loaded.generate(request), autocast_only.generate(request)
    assert a.latents.abs().mean() > 0.1 and torch.equal(a.latents, b.latents)
    assert np.array_equal(loaded.decode(a), autocast_only.decode(b))


def test_step_cache_skips_model_calls_and_stays_close(moving_pipe):
    calls = []
    hook = moving_pipe.model.dit.register_forward_hook(lambda *args: calls.append(1))
    try:
        request = Request("a blue star", width=32, height=32, frames=5, steps=12, seed=0)
        exact = moving_pipe.generate(request).latents
        full_calls = len(calls)
        cached = moving_pipe.generate(replace(request, cache=0.3)).latents
    finally:
        hook.remove()
    assert full_calls == 12  # one batched cond+uncond call per step
    assert 0 < len(calls) - full_calls < 12  # some steps reused the last velocity
    assert not torch.equal(cached, exact)
    assert (cached - exact).abs().mean() < 0.1 * exact.abs().mean()


def test_decode_stream_joins_given_frames_and_skips_context(debug_pipe):
    latents = torch.randn(1, 8, 3, 2, 2)
    decoded = debug_pipe.decode(Video(latents, 9, 8, 16, 16))
    before, after = np.zeros((2, 16, 16, 3), np.uint8), np.full((3, 16, 16, 3), 255, np.uint8)
    video = Video(latents, 2 + 4 + 3, 8, 16, 16, skip=5, before=before, after=after)
    assert np.array_equal(debug_pipe.decode(video), np.concatenate([before, decoded[5:9], after]))


def test_python_callers_get_what_the_cli_gets(debug_pipe):
    assert debug_pipe.resolve(Request("x", fps=8)).frames == 32  # 4 s, as the CLI and the API; 0 is an image
    assert debug_pipe.resolve(Request("x", fps=8, seconds=0)).frames == 1
    assert debug_pipe.resolve(Request("x", window=3)).context == 1  # the most a window of 3 leaves room for
    for asked in (Request("x", seconds=1), Request("x", aspect="16:9", frames=9)):
        resolved = debug_pipe.resolve(asked)
        assert debug_pipe.resolve(resolved) == resolved and resolved.seed is not None  # its drawn seed is kept
    assert debug_pipe.resolve(Request("", fps=8, mode="sequence", segments=[(0, "a"), (2, "b")])).frames == 48
    assert debug_pipe.resolve(Request("x", seed=np.int64(3), width=np.int32(64), height=64)).seed == 3
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    flipped = debug_pipe.generate(Request("x", image=image[..., ::-1], frames=5, steps=1, width=64, height=64))
    assert debug_pipe.decode(flipped).shape == (5, 64, 64, 3)  # a flipped view (BGR to RGB) is taken as it is


def test_a_damaged_model_is_an_error_not_a_grey_video(debug_pipe, monkeypatch):
    monkeypatch.setattr(debug_pipe.model.dit, "forward", lambda x, *a, **k: torch.full_like(x, float("nan")))
    with pytest.raises(KinemaError, match="gave NaN or infinite values: its weights are likely damaged"):
        debug_pipe.generate(Request("x", frames=1, steps=1))


def test_progress_reaches_every_step(debug_pipe):
    seen = []
    debug_pipe.generate(Request("x", frames=1, steps=3), progress=lambda f, s: seen.append((f, s)))
    steps = [(f, s) for f, s in seen if s.startswith("denoising")]  # the step now running, and the share done
    assert steps == [(pytest.approx(0.3 * i), f"denoising step {i + 1}/3") for i in range(3)]
    assert seen[-1] == (pytest.approx(0.9), "sampled")


@pytest.mark.parametrize("kwargs,message", [
    ({"prompt": "   "}, "prompt is empty"),
    ({"width": 101}, "width 101 is odd; video needs even sizes, e.g. 100 or 102"),
    ({"height": 251}, "height 251 is odd"),
    ({"width": 8}, "too small"),
    ({"width": 2048, "height": 2048}, "larger than 1920x1080"),
    ({"width": 1920, "height": 1090}, "larger than 1920x1080: it is generated at 1920x1104"),
    ({"width": 3840, "height": 540}, "size 3840x540 is 7.1:1; Kinema makes shapes from 1:4 to 4:1, e.g. 2160x540"),
    ({"seconds": -1}, "duration must be a positive number of seconds, got -1"),
    ({"seconds": float("nan")}, "duration must be a finite number of seconds, got nan"),
    ({"width": 0, "height": 64}, "width 0 is too small"),
    ({"window": 0}, r"window 0 with context 1 \(the least\): a window holds its context"),
    ({"window": 33}, "window 33 is over 32 latent frames, the most the model sees at once; give at most 32"),
    ({"window": 4, "context": 3}, "window 4 with context 3: a window holds"),
    ({"seconds": 1, "frames": 9, "fps": 8}, "seconds 1 and frames 9 disagree at 8 fps; give the length as one"),
    ({"prompt": "a ball", "segments": [(0, "a red ball"), (1, "a blue ball")]}, "differs from the first segment's"),
    ({"seconds": 61, "fps": 8}, "duration must be at most 60 s, got 61"),
    ({"frames": 8 * 61, "fps": 8}, "between 1 frame and 60 s"),
    ({"fps": 0}, "fps must be between"),
    ({"steps": 0}, "steps must be between"),
    ({"cache": -0.1}, "cache must be between 0"),
    ({"guidance": -1.0}, r"guidance must be between 0 and 100 \(1 = off\), got -1"),
    ({"seed": -1}, r"seed must be between 0 and 2\*\*63 - 1, got -1"),
    ({"noise_correlation": 0.995}, "noise_correlation must be from 0 .* to 0.99, got"),
    ({"noise_drift": -0.1}, "noise_drift must be from 0 .* to 1 short sides .* got -0.1; kinema-small-fast uses 0.125"),
    ({"mode": "extend", "video": np.zeros((8 * 60 + 2, 16, 16, 3), np.uint8), "fps": 8, "seconds": 1},
     r"the input video runs 60.2 s at 8 fps, over the 60 s Kinema takes; trim it"),
    ({"mode": "connect", "video": np.zeros((9, 16, 16, 3), np.uint8), "fps": 8, "seconds": 1,
      "video_b": np.zeros((8 * 60 + 2, 16, 16, 3), np.uint8)}, "the input second video runs 60.2 s"),
    ({"mode": "edit", "video": np.zeros((8 * 61, 16, 16, 3), np.uint8), "fps": 8},  # its length, not a duration's
     r"the input video runs 61.0 s at 8 fps, over the 60 s Kinema takes; trim it"),
    ({"mode": "extend", "video": np.zeros((8 * 59, 16, 16, 3), np.uint8), "fps": 8, "seconds": 2},
     r"the extended video would run 61.0 s, over the 60 s Kinema makes; add at most 1 s"),
    ({"mode": "connect", "video": np.zeros((8 * 30, 16, 16, 3), np.uint8), "fps": 8, "seconds": 1,
      "video_b": np.zeros((8 * 30, 16, 16, 3), np.uint8)}, "the joined video would run 61.0 s"),
    ({"mode": "extend", "video": np.zeros((9, 16, 16, 3), np.uint8), "seconds": 0}, "seconds 0 adds no frames"),
    ({"mode": "extend", "video": np.zeros((8 * 60, 16, 16, 3), np.uint8), "fps": 8, "seconds": 1},
     "the input alone fills them; trim it first"),
    ({"seconds": 1e308}, "duration must be at most 60 s"),
    ({"prompt": "a red \udcff ball"}, "the prompt holds bytes that are not UTF-8 text"),
    ({"seed": 1.5}, "seed must be a whole number, got 1.5"),
    ({"frames": 4.5}, "frames must be a whole number, got 4.5"),
    ({"cache": None}, "cache must be a number, got None"),
    ({"negative_prompt": None}, "negative_prompt must be a string, got None"),
    ({"sampler": "rk4"}, "unknown sampler 'rk4'; use euler or heun"),
    ({"segments": ["0:a red ball"]}, r"segments must be \(start seconds, prompt\) pairs"),
    ({"image": np.zeros((0, 0, 3), np.uint8)}, r"image must be uint8 RGB pixels \(H, W, 3\), got uint8 \(0, 0, 3\)"),
    ({"image": np.zeros((9, 16, 16, 3), np.uint8)}, r"image must be uint8 RGB pixels \(H, W, 3\)"),
    ({"mode": "extend", "video": np.zeros((9, 0, 16, 3), np.uint8)}, "video must be uint8 RGB pixels"),
    ({"mode": "loop", "segments": [(0, "a"), (1, "b")]}, "segments make a prompt sequence; mode loop does not use"),
    ({"strength": 0.5}, "strength is an edit's; mode t2v does not use it"),
])
def test_bad_requests_are_one_line_errors(debug_pipe, kwargs, message):
    kwargs = {"prompt": "a red circle", **kwargs}
    with pytest.raises(KinemaError, match=message) as err:
        debug_pipe.resolve(Request(**kwargs))
    assert "\n" not in str(err.value)


def test_read_inputs_fits_frames_as_they_are_decoded(debug_pipe, tmp_path):
    import tracemalloc

    from kinema.io import fit_image, read_video, write_video

    rng = np.random.default_rng(0)
    write_video(tmp_path / "big.mp4", rng.integers(0, 255, (25, 360, 640, 3), dtype=np.uint8), 8)
    whole = read_video(tmp_path / "big.mp4")[0]  # 17 MB of frames at the source's size
    tracemalloc.start()
    req, fitted = debug_pipe.read_inputs(Request("a red circle", mode="edit", fps=8), {"video": tmp_path / "big.mp4"})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # no size given: the input's 16:9 at the model's short side (64 px)
    assert req.video.shape == (25, 64, 112, 3) and fitted == {"video": "resized 640x360 to 114x64 and center-cropped "
                                                                       "to 112x64"}
    np.testing.assert_array_equal(req.video, np.stack([fit_image(frame, 112, 64)[0] for frame in whole]))
    assert peak < whole.nbytes / 4
    with pytest.raises(KinemaError, match="big.mp4 not found"):
        debug_pipe.read_inputs(Request("x", mode="edit"), {"video": tmp_path / "missing" / "big.mp4"})


def test_an_image_taller_than_the_output_is_not_called_cut_short(debug_pipe, tmp_path):
    from PIL import Image

    Image.new("RGB", (90, 300), (200, 30, 30)).save(tmp_path / "tall.png")  # 300 rows, not 300 frames
    req, fitted = debug_pipe.read_inputs(Request("a red square", mode="i2v", width=64, height=64),
                                         {"image": tmp_path / "tall.png"})
    assert req.image.shape == (64, 64, 3)
    assert fitted == {"image": "resized 90x300 to 64x213 and center-cropped to 64x64"}


def test_read_inputs_says_what_became_of_a_start_image(debug_pipe, tmp_path):
    from PIL import Image

    from kinema.io import write_video

    clear = Image.new("RGBA", (64, 64), (200, 30, 30, 255))
    clear.save(tmp_path / "opaque.png")  # an alpha channel with nothing see-through: nothing to say
    clear.putpixel((3, 3), (0, 0, 0, 0))
    clear.save(tmp_path / "hole.png")
    write_video(tmp_path / "still.gif", np.zeros((1, 64, 64, 3), np.uint8), 8)  # a GIF of one frame is an image
    write_video(tmp_path / "moving.gif", np.zeros((3, 64, 64, 3), np.uint8), 8)
    write_video(tmp_path / "clip.mp4", np.zeros((3, 64, 64, 3), np.uint8), 8)
    (tmp_path / "clip.png").write_bytes((tmp_path / "clip.mp4").read_bytes())  # a video named as an image
    said = {name: debug_pipe.read_inputs(Request("a red square", mode="i2v", width=64, height=64),
                                         {"image": tmp_path / name})[1] for name in ("opaque.png", "hole.png",
                                                                                    "still.gif", "moving.gif",
                                                                                    "clip.png")}
    video = {"image": "a video: its first frame is the start image"}
    assert said == {"opaque.png": {}, "still.gif": {},
                    "hole.png": {"image": "its transparent parts are laid on white; flatten it onto the background "
                                          "you want"},
                    "moving.gif": video, "clip.png": video}


def test_read_inputs_plays_every_clip_at_the_outputs_rate(debug_pipe, tmp_path):
    from kinema.io import write_video

    write_video(tmp_path / "a.mp4", np.zeros((16, 64, 64, 3), np.uint8), 8)  # 2 s at 8 fps
    write_video(tmp_path / "b.mp4", np.zeros((24, 64, 64, 3), np.uint8), 24)  # 1 s at 24 fps
    files = {"video": tmp_path / "a.mp4", "video_b": tmp_path / "b.mp4"}
    req, _ = debug_pipe.read_inputs(Request("a bridge", mode="connect", fps=8, seconds=1), files)
    assert (len(req.video), len(req.video_b)) == (16, 8)  # each keeps its duration: b is not 3x slow motion
    req, _ = debug_pipe.read_inputs(Request("faster", mode="extend", fps=24, seconds=1), {"video": tmp_path / "a.mp4"})
    assert len(req.video) == 48
    write_video(tmp_path / "long.mp4", np.zeros((31 * 120, 16, 16, 3), np.uint8), 120)  # 31 s at 120 fps
    req, _ = debug_pipe.read_inputs(Request("on", mode="extend", fps=60, seconds=1), {"video": tmp_path / "long.mp4"})
    assert len(req.video) == 31 * 60  # 31 s at the highest output rate, not 62 s (over the limit)


def test_read_inputs_says_when_a_clip_is_cut_short(debug_pipe, tmp_path):
    from kinema.io import write_video

    write_video(tmp_path / "whole.mp4", np.random.default_rng(0).integers(0, 255, (48, 64, 64, 3), np.uint8), 8)
    data = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) * 3 // 5])  # a download stopped at 60%: its header is whole
    req, said = debug_pipe.read_inputs(Request("on", mode="extend", fps=8, seconds=1), {"video": tmp_path / "cut.mp4"})
    assert said == {"video": f"only {len(req.video)} of the 48 frames its header lists could be decoded; the file "
                             "may be cut short"} and 8 < len(req.video) < 40


@pytest.mark.parametrize("mode", ["t2v", "i2v", "extend", "extend_backward", "connect", "loop", "edit"])
def test_every_mode_makes_a_size_off_the_grid(debug_pipe, mode):
    clip = np.random.default_rng(1).integers(0, 256, (9, 40, 70, 3), dtype=np.uint8)
    inputs = {"t2v": {}, "loop": {}, "i2v": {"image": clip[0]},
              "connect": {"video": clip, "video_b": clip[::-1].copy()}}.get(mode, {"video": clip})
    seconds = None if mode == "edit" else 1
    video = debug_pipe.generate(Request("a red circle", width=70, height=40, fps=8, seconds=seconds, steps=1,
                                        mode=mode, **inputs))
    out = debug_pipe.decode(video)
    assert out.shape == (video.frames, 40, 70, 3) and video.latents.shape[-2:] == (48 // 8, 80 // 8)
    if mode in ("extend", "connect"):  # the given clip is shown as it was, though the model saw it padded
        assert np.array_equal(out[:9], clip)
    if mode in ("extend_backward", "connect"):
        assert np.array_equal(out[-9:], inputs["video" if mode == "extend_backward" else "video_b"])


def test_save_picks_filmstrip_frames_while_writing(fp32_debug_pipe, tmp_path):
    from PIL import Image

    from kinema.io import read_video

    video = Video(torch.randn(1, 8, 10, 2, 2), 37, 8, 16, 16)
    fp32_debug_pipe.save(video, tmp_path / "v.mp4", filmstrip=tmp_path / "strip.png")
    assert len(read_video(tmp_path / "v.mp4")[0]) == 37
    assert Image.open(tmp_path / "strip.png").size == (8 * 18 - 2, 2 * 18 - 2)  # 16 frames, 8 per row


def test_the_filmstrip_carries_the_videos_watermark_and_tags(debug_pipe, tmp_path):
    from kinema import provenance

    video = debug_pipe.generate(Request("a red ball", width=128, height=128, frames=9, steps=1, seed=3))
    debug_pipe.save(video, tmp_path / "v.mp4", filmstrip=tmp_path / "strip.png")
    found = provenance.verify(tmp_path / "strip.png")
    assert found["watermark"]["detected"] and found["metadata"]["ai_generated"] == "true"
    assert found["metadata"]["watermark_payload"] == video.meta["watermark_payload"]


@pytest.mark.parametrize("patch", [(1, 2, 2), (1, 4, 4)])
def test_schedule_shift_counts_tokens_as_training_does(debug_pipe, monkeypatch, patch):
    """The sampler's shift grows with the DiT's token count, counted with its own patch size (the bundled
    model's is 1x4x4), so a bucket is sampled with the shift it was trained with."""
    from kinema import flow, sampling
    from kinema.checkpoint import Model
    from kinema.data import Bucket
    from kinema.models.dit import DiT
    from kinema.pipeline import Pipeline

    cfg = replace(debug_pipe.cfg, dit=replace(debug_pipe.cfg.dit, patch_size=patch),
                  sampler=replace(debug_pipe.cfg.sampler, shift=2.0, shift_base_tokens=16))
    pipe = Pipeline(Model(cfg, debug_pipe.model.vae, DiT(cfg.dit), debug_pipe.model.text, "test"))
    shifts = []
    schedule = sampling.schedule
    monkeypatch.setattr(sampling, "schedule", lambda steps, shift, start=1.0: shifts.append(shift)
                        or schedule(steps, shift, start))
    bucket = Bucket(96, 64, 9)
    pipe.generate(Request("a red circle", width=bucket.width, height=bucket.height, frames=bucket.frames, steps=1))
    expected = flow.shift_for(bucket.tokens(cfg), cfg.sampler.shift, cfg.sampler.shift_base_tokens)
    assert bucket.tokens(cfg) == 3 * (8 // patch[1]) * (12 // patch[2])
    assert shifts == [pytest.approx(expected)] and expected > 2.0


def test_negative_prompt_without_cfg_is_noted(debug_pipe):
    """At guidance 1 (a distilled model's default) there is no unconditional pass for a negative prompt to steer."""
    video = debug_pipe.generate(Request("a blue star", frames=1, steps=1, guidance=1.0, negative_prompt="red"))
    assert any(note.startswith("negative prompt: no effect at guidance 1") for note in video.notes)
    assert not debug_pipe.generate(Request("a blue star", frames=1, steps=1, guidance=4.0,
                                           negative_prompt="red")).notes


def test_python_callers_get_one_line_errors_and_keep_their_arrays(debug_pipe):
    assert debug_pipe.generate("a red circle").frames == debug_pipe.resolve(Request("a red circle")).frames
    with pytest.raises(KinemaError, match="generate takes a Request or a prompt, got dict"):
        debug_pipe.generate({"prompt": "a red circle"})
    with pytest.raises(KinemaError, match="expand must be True or False, got 'false'"):
        debug_pipe.resolve(Request("a red circle", expand="false"))  # a non-empty string would read as true
    with pytest.raises(KinemaError, match="unknown device 'gpu'"):
        Pipeline(debug_pipe.model, device="gpu")
    clip = np.full((9, 64, 64, 3), 90, np.uint8)
    clip.setflags(write=False)  # read-only (a memory map, say): used without torch's warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        video = debug_pipe.generate(Request("a red circle", mode="extend", video=clip, seconds=1, width=64, height=64,
                                            steps=1))
    given = np.full((9, 64, 64, 3), 90, np.uint8)
    video = debug_pipe.generate(Request("a red circle", mode="extend", video=given, seconds=1, width=64, height=64,
                                        steps=1))
    given[:] = 0  # the caller reuses its array: the video keeps the frames it was given
    assert debug_pipe.decode(video)[0].min() == 90
    assert repr(video).startswith("Video(frames=17, fps=8, width=64, height=64") and "tensor" not in repr(video)


def test_a_save_that_fails_keeps_the_file_it_would_replace(debug_pipe, tmp_path):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"yesterday's video")
    video = debug_pipe.generate(Request("a red circle", seconds=1, width=64, height=64, steps=1))
    with pytest.raises(KinemaError, match="is not an existing folder"):
        debug_pipe.save(video, out, filmstrip=tmp_path / "missing" / "strip.png")  # fails after the video is made
    assert out.read_bytes() == b"yesterday's video" and [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_a_prompt_past_the_text_encoders_length_is_noted(debug_pipe):
    limit = debug_pipe.cfg.text.max_length
    long = debug_pipe.generate(Request("a red ball " * 40, seconds=0, width=64, height=64, steps=1))
    cut = debug_pipe.model.text.overflow("a red ball " * 40)
    assert cut > 0 and long.notes == [f"prompt {('a red ball ' * 40)[:40]!r}...: its last {cut} tokens are past the "
                                      f"{limit} the text encoder reads, so they had no effect; shorten it"]
    assert debug_pipe.generate(Request("a red ball", seconds=0, width=64, height=64, steps=1)).notes == []


@pytest.mark.parametrize("mode", ["edit", "extend", "i2v"])
def test_expansion_adds_nothing_the_given_frames_show(debug_pipe, mode):
    from kinema.world import parse_prompt

    navy = np.full((9, 32, 32, 3), (20, 30, 90), np.uint8)  # the audit's edit turned such a clip slate gray
    inputs = {"image": navy[0]} if mode == "i2v" else {"video": navy}
    video = debug_pipe.generate(Request("a blue circle moves right", width=32, height=32, fps=8, steps=1, mode=mode,
                                        seconds=None if mode == "edit" else 1, expand=True, **inputs))
    spec = parse_prompt(video.meta["caption"])
    assert (spec.background, spec.objects[0].size, spec.objects[0].motion) == (None, None, "right")
    assert any("drawn as" in note and "(--no-expand; the API's expand=false;" in note for note in video.notes)


def test_the_expansion_note_shortens_a_long_prompt(debug_pipe):
    prompt = "a red ball bounces " * 580  # 11,020 characters: the note echoed them all
    video = debug_pipe.generate(Request(prompt, width=32, height=32, frames=1, steps=1, expand=True))
    drawn = [note for note in video.notes if "drawn as" in note]
    assert len(drawn) == 1 and len(drawn[0]) < 400 and drawn[0].startswith(f"prompt {prompt[:120].rstrip() + '…'!r}")


def test_the_trim_hint_quotes_the_file_and_trims_to_an_mp4():
    from kinema.request_checks import check_input_seconds

    with pytest.raises(KinemaError, match=r"ffmpeg -i 'my clip\.png' -t 60 'my clip-60s\.mp4'\)$"):
        check_input_seconds("video", 61 * 8, 8, "my clip.png")  # a video named as an image, with a space
