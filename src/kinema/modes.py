"""Generation modes: text or image to video, extend, loop, connect, edit, prompt sequences, long videos.

Every mode is one mechanism (`conditioning.FrameCondition`): latent frames that are given stay clean
(t = 0) while the others are denoised. The DiT sees one *window* of at most `WINDOW` latent frames at a
time, laid out as [k context | m new | e end], the context and end frames given:

    text -> video     [m new]                      then, if longer, chained forward extension
    image -> video    [image | m new]              the image encoded alone, as the VAE encodes a first frame
    extend forward    [clip's last k | m new]      decoded together with the clip's latents
    extend backward   [m new | clip's first e]
    connect A -> B    [A's last k | m new | B's first e]
    loop              a clip, then connect its end back to its own start
    edit (FlowEdit)   the input's latents carried to the prompt over the schedule's last `strength` share
    prompt sequence   each segment extends the one before with its own prompt

An asked camera pan or tilt draws a scene wider by its travel, and an asked zoom the output's own frame; the output's
frame moves over it as it is decoded (`kinema.camera`). Where a given image or clip fixes the frame (image to video,
extensions), the move starts or ends on it: its latents stand at their place in a scene as large as the move needs,
and one more window draws the rest of the scene around them (`Generation.outpaint`) before the new frames are drawn.
Edits zoom only, and each segment of a prompt sequence moves as its own prompt asks (`camera.MOVES`).

A video longer than one window is chained: each window takes the last `CONTEXT` latents made so far as its context
(text or image to video and a loop's clip: the video's first latent, then the newest), so DiT memory stays bounded.
All latents are kept (a 60 s clip at 128 px is about 2 MB of them) and decoded at the end in one streaming causal
pass straight into the writer, so the VAE makes no seam between windows and its memory does not grow either.

Latent frame 0 of a clip encodes one frame, every later one four (T' = 1 + (T - 1) / 4). A clip's start
used as context *after* new frames is therefore re-encoded behind a stand-in first frame
(`Generation.encode_head`), so that it reads as mid-clip latents, the way the DiT saw them in training.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from functools import cached_property

import numpy as np
import torch

from kinema import camera, prompting, provenance, sampling
from kinema.conditioning import FrameCondition
from kinema.errors import KinemaError
from kinema.metrics import frame_differences
from kinema.pipeline import Pipeline, Progress, Request, Text, Video
from kinema.request_checks import EXTENDING
from kinema.sizes import canvas_size, pad_to_canvas
from kinema.world import parse_prompt

WINDOW = 5  # latent frames the DiT sees at once: the bundled model's training length (17 frames)
CONTEXT = 2  # latent frames each later window takes as context from what came before
MAX_WINDOW = 32  # the DiT's memory grows with the window (a 1080p window of 32 latent frames is 260k tokens)
EDIT_STRENGTH = 0.7  # share of the schedule an edit runs; the bundled model takes new colours from ~0.45 (MODEL.md)
LOOP_MIN_FRAMES = 6  # a clip and a bridge back to its start need 3 latent frames
SCENE_CHANGE = 24  # grey levels between connected clips' meeting frames past which they show different scenes
Window = tuple[int, int, int]  # latent frames (context before, new, end after) of one sampling window

MODES = {  # mode -> the inputs it reads
    "t2v": (), "i2v": ("image",), "extend": ("video",), "extend_backward": ("video",), "loop": (),
    "connect": ("video", "video_b"), "edit": ("video",), "sequence": (),
}
INPUTS = {"image": "an image (image to video)", "video": "a video (extend, edit or connect)",
          "video_b": "a second video to end on (connect)"}


# ---------------------------------------------------------------------------------------------
# Checks (no pixels needed: the server checks requests before reading their files)
# ---------------------------------------------------------------------------------------------

def infer_mode(req: Request) -> str:
    """The request's mode; plain t2v given segments or an image means a sequence or image to video."""
    if req.mode not in MODES:
        raise KinemaError(f"unknown mode {req.mode!r}; use one of {', '.join(MODES)}", param="mode")
    mode = req.mode
    if mode == "t2v" and req.segments:
        mode = "sequence"
    elif mode == "t2v" and req.image is not None:
        mode = "i2v"
    # Settings of one mode given to another would be dropped without a word.
    if req.segments and mode != "sequence":
        raise KinemaError(f"segments make a prompt sequence; mode {mode} does not use them", param="segments")
    if req.strength is not None and mode != "edit":
        raise KinemaError(f"strength is an edit's; mode {mode} does not use it", param="strength")
    return mode


def check_window(window: int, context: int) -> None:
    """A window holds its context latent frames, at least one new one, and one of the end that connect and loop run
    into; a window given alone has its context lowered to fit (resolve_request), down to the least, 1."""
    if context < 1:
        raise KinemaError(f"context {context} carries nothing from one window to the next; give at least 1 (default "
                          f"{CONTEXT})", param="context")
    if window > MAX_WINDOW:
        raise KinemaError(f"window {window} is over {MAX_WINDOW} latent frames, the most the model sees at once; give "
                          f"at most {MAX_WINDOW} (default {WINDOW})", param="window")
    if window < context + 2:
        raise KinemaError(f"window {window} with context {context}{' (the least)' if context == 1 else ''}: a window "
                          "holds its context latent frames, at least one new one and one of the end that connect and "
                          f"loop run into, so it needs context + 2; give window {context + 2}"
                          f"{f' or context {window - 2}' if window >= 3 else ''}", param="window")


def check(req: Request, tf: int) -> None:
    """Mode-specific checks of a resolved request (tf: the VAE's frames per latent frame)."""
    for name in INPUTS:
        if getattr(req, name) is not None and name not in MODES[req.mode]:
            raise KinemaError(f"mode {req.mode} does not use {name}; leave it out or choose a mode that reads "
                              f"{INPUTS[name]}", param=name)
    if req.strength is not None and not 0.0 <= req.strength <= 1.0:
        raise KinemaError(f"strength must be between 0 and 1, got {req.strength}", param="strength")
    check_window(req.window, req.context)
    if req.mode == "loop" and req.frames < LOOP_MIN_FRAMES:
        raise KinemaError(f"a loop needs at least {LOOP_MIN_FRAMES} frames, got {req.frames}; make it longer, "
                          "e.g. 2 seconds", param="seconds")
    if req.mode == "sequence":
        segment_spans(req.segments, req.frames, req.fps, tf)


def scene_size(req: Request, move: camera.Move) -> tuple[int, int]:
    """The size a resolved request is generated at: its canvas, or the scene its camera `move` needs, each side a
    multiple of 16."""
    return canvas_size(*move.scene(req.width, req.height))


def segment_spans(segments: list[tuple[float, str]] | None, frames: int, fps: int,
                  tf: int) -> list[tuple[int, int, str]]:
    """(first latent, end latent, prompt) of each segment; a segment starts at the latent frame nearest
    its start time, and the first one at the start of the video."""
    if not segments:
        raise KinemaError("a prompt sequence needs segments: (start seconds, prompt) pairs, e.g. 0 s \"a red ball\" "
                          "and 2 s \"a blue ball\"", param="segments")
    total = latent_count(frames, tf)
    if not all(0 <= start < math.inf for start, _ in segments) or any(not str(text).strip() for _, text in segments):
        raise KinemaError("segments are (start >= 0 s, prompt) pairs, e.g. \"0:a red ball;2:a blue ball\"",
                          param="segments")
    if segments[0][0] > 0:  # a video has to show something from its first frame
        raise KinemaError(f"the first segment starts at {segments[0][0]:g} s; a sequence starts with its first prompt: "
                          "start that one at 0", param="segments")
    starts = [0]
    for (before, _), (start, _) in itertools.pairwise(segments):
        if start <= before:
            raise KinemaError(f"segment starts must increase; {start:g} s follows {before:g} s", param="segments")
        latent = max(1, round((round(start * fps) + tf - 1) / tf))  # latent j >= 1 starts at frame tf j - tf + 1
        if latent >= total:
            raise KinemaError(f"the segment at {start:g} s starts at or after the end ({frames / fps:g} s); "
                              "lengthen the video or move the segment", param="segments")
        if latent == starts[-1]:
            raise KinemaError(f"the segment at {start:g} s is less than {tf} frames after the one before; "
                              f"space segments at least {tf / fps:g} s apart", param="segments")
        starts.append(latent)
    ends = [*starts[1:], total]
    return [(a, b, str(text).strip()) for a, b, (_, text) in zip(starts, ends, segments, strict=True)]


def latent_count(frames: int, tf: int) -> int:
    """Latent frames that decode to at least `frames` frames."""
    return 1 + math.ceil((frames - 1) / tf)


def decoded_count(latents: int, tf: int) -> int:
    """Frames that `latents` latent frames decode to: the first one, then tf each."""
    return 1 + tf * (latents - 1)


def first_frame(latent: int, tf: int) -> int:
    """The first video frame that latent frame `latent` decodes to: as many as the latents before it make."""
    return 0 if latent == 0 else decoded_count(latent, tf)


# ---------------------------------------------------------------------------------------------
# Window plans: pure, so that memory bounds and progress are known before sampling starts
# ---------------------------------------------------------------------------------------------

def plan_windows(new: int, have: int, window: int, context: int, end: int = 0) -> list[Window]:
    """Windows that add `new` latent frames after `have` existing ones, each at most `window` long.

    Each window takes the last `context` latents so far as context; the last one also ends on `end`
    given latents (connect, loop), so the windows before it leave it at least one new frame.
    """
    windows = []
    while new > 0:
        k = min(context, have)
        if k + new + end <= window:
            windows.append((k, new, end))
            break
        m = window - k if not end else min(window - k, new - 1)
        windows.append((k, m, 0))
        have, new = have + m, new - m
    return windows


def plan_backward(new: int, window: int, context: int) -> list[Window]:
    """Windows that add `new` latent frames before `context` given ones, right to left.

    A window's first latent is a clip's first (one frame), so every window but the last (leftmost)
    drops it: mid-clip latents hold four frames.
    """
    windows = []
    while context + new > window:
        m = window - context
        windows.append((0, m, context))
        new -= m - 1
    return [*windows, (0, new, context)]


# ---------------------------------------------------------------------------------------------
# A generation: what its windows share
# ---------------------------------------------------------------------------------------------

class Generation:
    """The request, the encoded prompts, one seeded noise generator and progress over all windows."""

    def __init__(self, pipe: Pipeline, req: Request, report: Progress):
        self.pipe, self.req, self.report = pipe, req, report
        self.rng = torch.Generator().manual_seed(req.seed)  # 4. the same seed gives the same video
        vae = pipe.cfg.vae
        self.tf = vae.temporal_factor
        legs = None  # a prompt sequence's segments each move over their frames, up to the next one's first
        if req.mode == "sequence":
            legs = [(start, min(end, req.frames - 1), prompt) for start, end, prompt in self.segment_frames()]
        self.move, camera_notes = camera.move_for(req, legs)  # pans, tilts, zooms: the frame moving over the video
        self.canvas = scene_size(req, self.move)  # generated at, then cropped to the request's size (or filmed)
        self.corner: tuple[int, int] | None = None  # where given frames stand in a larger scene (pixels), if they do
        pinned = camera.pinned_frame(req)
        self.still_camera = pinned is not None and self.move.pans
        if pinned is not None and self.move:
            grid = vae.spatial_factor * pipe.cfg.dit.patch_size[1]  # whole tokens, so given ones stay clean
            own = canvas_size(req.width, req.height)
            self.move, self.canvas, corner = camera.pin(self.move, pinned, (req.width, req.height), own, grid)
            self.corner = None if self.canvas == own else corner  # None: the given frames fill the scene
        width, height = self.canvas
        self.shape = (vae.z_dim, height // vae.spatial_factor, width // vae.spatial_factor)  # (C, h, w)
        self.windows = self.done = 0
        self.captions: dict[str, str] = {}  # prompt -> what the text encoder was given
        self._texts: dict[str, Text] = {}
        self.notes: list[str] = []
        if req.guidance == 1.0 and req.negative_prompt.strip():  # CFG's unconditional pass is skipped at 1
            self.notes.append("negative prompt: no effect at guidance 1 (e.g. a distilled model's default); "
                              "pass a guidance above 1 to use it")
        self.notes += camera_notes
        if req.seconds and abs(req.frames - req.seconds * req.fps) > 1e-6:  # whole frames: 2.3 s at 8 fps is 18
            self.notes.append(f"{req.seconds:g} s is {req.seconds * req.fps:g} frames at {req.fps} fps: made "
                              f"{req.frames}, {req.frames / req.fps:g} s{' more' * (req.mode in EXTENDING)}")

    def segment_frames(self) -> list[tuple[int, int, str]]:
        """(first frame, end frame, prompt) of each segment of a prompt sequence: it runs up to the next one's start,
        the last one to the end of the video."""
        spans = segment_spans(self.req.segments, self.req.frames, self.req.fps, self.tf)
        return [(first_frame(a, self.tf), min(self.req.frames, first_frame(b, self.tf)), prompt)
                for a, b, prompt in spans]

    # -- 2. text ---------------------------------------------------------------------------------
    def text(self, prompt: str) -> Text:
        if prompt not in self._texts:
            still = self.still_camera  # the frame pans from a given frame: the DiT is not told to pan
            expand = self.pipe.rewriter.expand
            self.captions[prompt] = expand(prompt, still, self.notes, self.req.mode) if self.req.expand else prompt
            if self.captions[prompt] != prompt:  # what the model was given is what the video shows: say it
                self.notes.append(prompting.expansion_note(prompt, self.captions[prompt]))
            if self.pipe.expands_by_default and parse_prompt(self.captions[prompt]) is None:
                self.notes.append(f"prompt {prompting.shown(prompt)} names nothing the bundled models know; they draw "
                                  "only the world's shapes, colours, motions and backgrounds (e.g. \"a red circle "
                                  "moves left over a snowy field\"); for other scenes use a model with real-world "
                                  "weights, e.g. a Wan2.1 folder")
            if cut := self.pipe.model.text.overflow(self.captions[prompt]):
                self.notes.append(f"prompt {prompt[:40]!r}...: its last {cut} tokens are past the "
                                  f"{self.pipe.cfg.text.max_length} the text encoder reads, so they had no effect; "
                                  "shorten it")
            text = self.pipe.encode_text(self.captions[prompt], self.req.negative_prompt)
            self._texts[prompt] = replace(text, direction=prompting.asked_direction(self.captions[prompt]))
        return self._texts[prompt]

    # -- 3. conditioning inputs ------------------------------------------------------------------
    def need(self, name: str) -> np.ndarray:
        value = getattr(self.req, name)
        if value is None:
            raise KinemaError(f"mode {self.req.mode} needs {INPUTS[name]}", param=name)
        return value

    def fit(self, name: str) -> np.ndarray:
        """The input `name` as uint8 (T, H, W, 3) at the request's size (resized, center-cropped, noted), padded
        to its canvas."""
        from kinema.io import fit_image

        frames = np.asarray(self.need(name))  # its kind and shape checked in Pipeline.resolve (check_pixels)
        frames = frames[None] if frames.ndim == 3 else frames
        width, height = self.req.width, self.req.height
        if frames.shape[1:3] == (height, width):  # kept as the video's given frames: the caller may reuse theirs
            frames = frames.copy()
        else:
            fitted = [fit_image(frame, width, height) for frame in frames]
            self.notes.append(f"{name}: {fitted[0][1]}")
            frames = np.stack([frame for frame, _ in fitted])
        return pad_to_canvas(frames, width, height)

    def encode_tail(self, frames: np.ndarray) -> tuple[torch.Tensor, int]:
        """Latents (1, C, 1 + k, h, w) of the clip's last 1 + 4k frames (the VAE's lengths), and 1 + 4k."""
        used = 1 + self.tf * ((len(frames) - 1) // self.tf)
        return self.pipe.encode(frames[len(frames) - used:]), used

    def encode_head(self, frames: np.ndarray, n: int) -> torch.Tensor:
        """The clip's first 4n frames as n mid-clip latents (1, C, n, h, w), to stand after new frames.

        Encoded behind a copy of the first frame, which becomes the (dropped) one-frame latent 0; a clip
        shorter than 4n frames is padded with its last frame.
        """
        head = frames[: self.tf * n]
        head = np.concatenate([frames[:1], head, np.repeat(head[-1:], self.tf * n - len(head), axis=0)])
        return self.pipe.encode(head)[:, :, 1:]

    def decode_head(self, latents: torch.Tensor, frames: int) -> np.ndarray:
        """The first `frames` decoded frames of `latents` (fewer if they hold fewer)."""
        n = min(latents.shape[2], latent_count(frames, self.tf))
        count = min(frames, decoded_count(n, self.tf))
        return self.pipe.decode(Video(latents[:, :, :n], count, self.req.fps, *self.canvas))  # to encode again

    def outpaint(self, text: Text, given: torch.Tensor, drawn: slice) -> torch.Tensor:
        """Given latents (1, C, n, h0, w0) of the output's canvas -> (1, C, n, h, w) of the larger scene a camera
        move crosses, standing at `corner`. One window draws the rest of the scene around the `drawn` frames (those
        the DiT will read as context); the others, which the decoder reads only as the memory of frames it skips,
        take the surroundings of the nearest drawn one. As they are when they fill the scene."""
        if self.corner is None:
            return given
        sf, (_, ph, pw) = self.pipe.cfg.vae.spatial_factor, self.pipe.cfg.dit.patch_size
        (_, c, n, h0, w0), (left, top) = given.shape, (self.corner[0] // sf, self.corner[1] // sf)
        index = list(range(n))[drawn]
        scene = torch.zeros(1, c, len(index), *self.shape[1:])
        scene[..., top:top + h0, left:left + w0] = given[:, :, index]
        cond = FrameCondition(scene, torch.ones(1, len(index), dtype=torch.bool)).partly(top, left, h0, w0, (ph, pw))
        self.windows += 1
        x = self.noise(tuple(scene.shape), None)
        scene = self.denoise(text, x, cond, self.pipe.times(self.req, x.shape), "outpainting: ")
        nearest = [min(max(i, index[0]), index[-1]) - index[0] for i in range(n)]
        out = scene[:, :, nearest].clone()
        out[..., top:top + h0, left:left + w0] = given
        return out

    # -- planning ----------------------------------------------------------------------------------
    def plan(self, new: int, have: int = 0, end: int = 0) -> list[Window]:
        windows = plan_windows(new, have, self.req.window, self.req.context, end)
        self.windows += len(windows)
        return windows

    def plan_backward(self, new: int, context: int) -> list[Window]:
        windows = plan_backward(new, self.req.window, context)
        self.windows += len(windows)
        return windows

    # -- 4 + 5. noise and denoising, window by window ---------------------------------------------
    def sample(self, text: Text, new: int, before: torch.Tensor | None = None, after: torch.Tensor | None = None,
               source: torch.Tensor | None = None) -> torch.Tensor:
        """One window [before | new | after] -> its new latents (1, C, new, h, w).

        `source` (1, C, before + new, h, w): an edit, the input's own latents under [before | new]; the new frames are
        carried from them to the prompt over the schedule's last `strength` share (FlowEdit).
        """
        cond = FrameCondition.window((1, self.shape[0], new, *self.shape[1:]), before, after)
        k = 0 if before is None else before.shape[2]
        if source is not None:
            return self.edit(text, source, cond)[:, :, k:k + new]
        x = self.noise(cond.latents.shape, text.direction if before is None and after is None else None)
        return self.denoise(text, x, cond, self.pipe.times(self.req, x.shape))[:, :, k:k + new]

    def denoise(self, text: Text, x: torch.Tensor, cond: FrameCondition, times: torch.Tensor,
                what: str = "") -> torch.Tensor:
        """One window's latents, reporting its steps as part of the whole generation."""
        return self.pipe.denoise(text, x, cond, self.req, times, self._next_window(what, len(times) - 1))

    def edit(self, text: Text, source: torch.Tensor, cond: FrameCondition) -> torch.Tensor:
        """One window's latents carried from the input's (`source`) to `text`. The input is described by no prompt
        (the unconditional text): on 30 world clips recoloured by their prompt, the edit kept size, shape and motion
        more often that way than from the clip's own caption (75.9% overall against 69.0%; docs/MODEL.md)."""
        times = self.pipe.times(self.req, tuple(source.shape), self.req.strength)
        return self.pipe.edit(self.no_prompt, text, source, cond, self.req, times,
                              lambda: self.noise(tuple(source.shape), None), self._next_window("", len(times) - 1))

    @cached_property
    def no_prompt(self) -> Text:
        """The unconditional text, encoded once for all of an edit's windows."""
        return self.pipe.encode_text("", self.req.negative_prompt)

    def _next_window(self, what: str, steps: int) -> sampling.Callback:
        """The progress callback of the next window's `steps`, as part of the whole generation. Each report names
        the step now running while the bar's share counts those done: step 1 as the window starts, i + 1 as i ends."""
        self.done += 1
        done, label = self.done, f"window {self.done}/{self.windows}: " if self.windows > 1 else ""

        def on_step(i: int, n: int, t: float) -> None:
            if i < n:
                self.report(0.9 * (done - 1 + i / n) / self.windows, f"{label}{what}denoising step {i + 1}/{n}")

        on_step(0, steps, 1.0)
        return on_step

    def noise(self, shape: tuple[int, ...], direction: tuple[float, float] | None) -> torch.Tensor:
        """Starting noise for a window, drifting `direction` (the prompt's lone object's way; None: no drift).

        Only a window drawn from nothing drifts: given frames already place the object, and from a given first frame
        the default went the asked way less often with the drift (20 of 24 clips against 23; docs/MODEL.md)."""
        if not self.req.noise_drift or direction is None:
            return sampling.initial_noise(shape, self.req.noise_correlation, self.rng)
        short = min(self.req.width, self.req.height) / self.pipe.cfg.vae.spatial_factor  # the output's, not a scene's
        pixels = self.req.noise_drift * short * self.tf / self.req.fps  # latent pixels per latent frame
        drift = (direction[0] * pixels, direction[1] * pixels)
        rho = max(self.req.noise_correlation, sampling.DRIFT_CORRELATION)
        return sampling.initial_noise(shape, rho, self.rng, drift)

    def extend(self, have: torch.Tensor | None, windows: list[Window], text: Text, end: torch.Tensor | None = None,
               source: torch.Tensor | None = None, anchored: bool = False) -> torch.Tensor:
        """Run planned windows after `have` (None: from nothing); returns only the new latents.

        `end`: latents the last window ends on; `source`: an edit's input latents, one for each new frame.
        `anchored` (`have` is None or starts at the video's first frame): each later window of two or more context
        latents takes the video's first latent in place of its oldest one, at the place a first frame holds in
        training. Over 8 s of text to video (120 one-object hold-out prompts) the last 2 s keep their object's colour
        in 79% of clips, not 68%, and its count in 76%, not 55% (docs/MODEL.md, session 38).
        """
        out: list[torch.Tensor] = []
        done = 0
        anchor = have[:, :, :1] if anchored and have is not None else None
        for k, m, e in windows:
            before = have[:, :, have.shape[2] - k:] if k else None
            if anchor is not None and k >= 2 and not e:
                before = torch.cat([anchor, before[:, :, 1:]], dim=2)  # (1, C, k, h, w): the window keeps its size
            part = None if source is None else source[:, :, done - k:done + m]  # under [context | new]
            new = self.sample(text, m, before, end if e else None, part)
            out.append(new)
            if anchored and anchor is None:
                anchor = new[:, :, :1]
            have = new if have is None else torch.cat([have[:, :, -self.req.context:], new], dim=2)
            done += m
        return torch.cat(out, dim=2)

    def extend_backward(self, after: torch.Tensor, windows: list[Window], text: Text) -> torch.Tensor:
        """Run planned windows before `after`, right to left; returns the new latents in time order."""
        out: list[torch.Tensor] = []
        for i, (_, m, e) in enumerate(windows):
            new = self.sample(text, m, None, after[:, :, :e])
            if i < len(windows) - 1:
                new = new[:, :, 1:]  # a one-frame latent cannot stand mid-clip (see plan_backward)
            out.insert(0, new)
            after = torch.cat([new, after[:, :, :e]], dim=2)
        return torch.cat(out, dim=2)

    # -- the result ----------------------------------------------------------------------------
    def video(self, latents: torch.Tensor, frames: int | None = None, skip: int = 0,
              before: np.ndarray | None = None, after: np.ndarray | None = None, **meta) -> Video:
        req = self.req
        info = provenance.metadata(req.prompt, self.pipe.cfg.name, req.seed, mode=req.mode, steps=req.steps,
                                   guidance=req.guidance, software="kinema")
        if req.prompt in self.captions and self.captions[req.prompt] != req.prompt:
            info["caption"] = self.captions[req.prompt]
        if req.mode == "edit":
            info["strength"] = req.strength
        info.update(self.move.describe())
        return Video(latents, frames or req.frames, req.fps, req.width, req.height, {**info, **meta}, skip,
                     before, after, self.notes, self.move)


# ---------------------------------------------------------------------------------------------
# The modes
# ---------------------------------------------------------------------------------------------

def text_to_video(gen: Generation) -> Video:
    """Text to video, or to an image (1 frame); longer than one window: chained forward extension."""
    windows = gen.plan(latent_count(gen.req.frames, gen.tf))
    return gen.video(gen.extend(None, windows, gen.text(gen.req.prompt), anchored=True))


def image_to_video(gen: Generation) -> Video:
    """The image, encoded alone as the causal VAE encodes every clip's first frame, is latent frame 0."""
    req = gen.req
    first = gen.pipe.encode(gen.fit("image"))  # (1, C, 1, h, w)
    windows = gen.plan(latent_count(req.frames, gen.tf) - 1, have=1)
    if not windows:  # a single frame: the image after a VAE round trip
        gen.notes.append("a one-frame video from an image is the image itself, so the prompt had no effect; give a "
                         "duration to animate it")
        return gen.video(first)
    text = gen.text(req.prompt)
    first = gen.outpaint(text, first, slice(None))  # a pan's scene drawn around the image
    return gen.video(torch.cat([first, gen.extend(first, windows, text, anchored=True)], dim=2))


def extend_forward(gen: Generation) -> Video:
    """The clip's latents, then `frames` more; the output shows the clip's own frames, then the new ones.

    Clip and new latents are decoded in one causal pass (its clip part is skipped), so the VAE makes no seam.
    """
    req = gen.req
    clip = gen.fit("video")
    latents, used = gen.encode_tail(clip)  # the last 1 + 4k frames: the new ones continue from the very end
    windows = gen.plan(math.ceil(req.frames / gen.tf), have=latents.shape[2])
    text = gen.text(req.prompt)
    latents = gen.outpaint(text, latents, slice(-req.context, None))  # a pan's scene drawn around the context
    new = gen.extend(latents, windows, text)
    return gen.video(torch.cat([latents, new], dim=2), len(clip) + req.frames, skip=used, before=clip)


def extend_backward(gen: Generation) -> Video:
    """`frames` new frames that lead into the clip's first frames, then the clip."""
    req = gen.req
    clip = gen.fit("video")
    context = gen.encode_head(clip, min(req.context, max(1, len(clip) // gen.tf)))
    n = latent_count(req.frames, gen.tf)
    windows, text = gen.plan_backward(n, context.shape[2]), gen.text(req.prompt)
    context = gen.outpaint(text, context, slice(None))  # a pan's scene drawn around the context
    new = gen.extend_backward(context, windows, text)
    skip = decoded_count(n, gen.tf) - req.frames  # 0..3 new frames furthest from the clip are left out
    return gen.video(new, req.frames + len(clip), skip=skip, after=clip)


def connect(gen: Generation) -> Video:
    """A's frames, a bridge of `frames` (rounded up to whole latent frames), B's frames."""
    req = gen.req
    a, b = gen.fit("video"), gen.fit("video_b")
    latents, used = gen.encode_tail(a)
    end = gen.encode_head(b, min(req.context, req.window - req.context - 1))
    m = math.ceil(req.frames / gen.tf)
    windows = gen.plan(m, have=latents.shape[2], end=end.shape[2])
    new = gen.extend(latents, windows, gen.text(req.prompt), end=end)
    gap = float(frame_differences(np.stack([a[-1], b[0]]))[0])  # one scene: ~5-7 across a second of world motion
    if gap > SCENE_CHANGE and gen.pipe.expands_by_default:
        gen.notes.append(f"the two clips meet on frames {gap:.0f} grey levels apart, as different scenes do: the "
                         "bundled models bridge clips of one scene, and between two scenes theirs ends in a cut to the "
                         "second")
    return gen.video(torch.cat([latents, new], dim=2), len(a) + gen.tf * m + len(b), skip=used, before=a, after=b)


def loop(gen: Generation) -> Video:
    """A clip, then a bridge (a third of it) from its end back to its first frames: playback wraps seamlessly."""
    req = gen.req
    n = latent_count(req.frames, gen.tf)
    bridge = max(1, n // 3)
    skip = decoded_count(n, gen.tf) - req.frames  # 0..3 decoded frames left out at the start
    e = min(req.context, req.window - req.context - 1)
    text = gen.text(req.prompt)
    clip_windows, bridge_windows = gen.plan(n - bridge), gen.plan(bridge, have=n - bridge, end=e)
    clip = gen.extend(None, clip_windows, text, anchored=True)
    start = gen.decode_head(clip, skip + gen.tf * e)[skip:]  # the loop's first frames
    new = gen.extend(clip, bridge_windows, text, end=gen.encode_head(start, e))
    return gen.video(torch.cat([clip, new], dim=2), skip=skip)


def edit(gen: Generation) -> Video:
    """Video to video: the input's latents carried to the prompt over the schedule's last `strength` share (FlowEdit),
    so what the prompt does not change (layout, motion) is kept. Strength 0 returns the input after the VAE's round
    trip; 1 ignores it (text to video)."""
    req = gen.req
    video = gen.fit("video")
    if req.frames > len(video):
        raise KinemaError(f"cannot edit {req.frames} frames of a {len(video)}-frame video; leave out the duration "
                          "to edit all of it", param="seconds")
    if req.frames < len(video):  # a duration was given: the rest of the input is not in the output
        gen.notes.append(f"edited the first {req.frames / req.fps:g} s of the {len(video) / req.fps:g} s video; leave "
                         "out the duration to edit all of it")
    n = latent_count(req.frames, gen.tf)
    clip = video[: req.frames]
    pad = decoded_count(n, gen.tf) - len(clip)  # the VAE takes 1 + 4k frames: repeat the last one
    source = gen.pipe.encode(np.concatenate([clip, np.repeat(clip[-1:], pad, axis=0)]))  # (1, C, n, h, w)
    if req.strength == 0:  # nothing to denoise: the input after a VAE round trip
        return gen.video(source)
    windows = gen.plan(n)
    given = None if req.strength == 1 else source  # from pure noise, the input is ignored
    return gen.video(gen.extend(None, windows, gen.text(req.prompt), source=given))


def sequence(gen: Generation) -> Video:
    """Prompts over time: each segment extends what came before, with its own prompt."""
    req = gen.req
    spans = segment_spans(req.segments, req.frames, req.fps, gen.tf)
    plans = [gen.plan(end - start, have=start) for start, end, _ in spans]
    latents = None
    for (_, _, prompt), windows in zip(spans, plans, strict=True):
        new = gen.extend(latents, windows, gen.text(prompt))
        latents = new if latents is None else torch.cat([latents, new], dim=2)
    segments = [[start, end, prompt, gen.captions[prompt]] for start, end, prompt in gen.segment_frames()]
    return gen.video(latents, segments=segments)


BUILDERS = {"t2v": text_to_video, "i2v": image_to_video, "extend": extend_forward, "extend_backward": extend_backward,
            "loop": loop, "connect": connect, "edit": edit, "sequence": sequence}


def build(pipe: Pipeline, req: Request, report: Progress) -> Video:
    """Steps 2-5 of a resolved request: text, conditioning, noise and denoising, as its mode does them."""
    return BUILDERS[req.mode](Generation(pipe, req, report))
