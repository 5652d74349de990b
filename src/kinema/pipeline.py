"""From a prompt to frames, in numbered steps: the one entry point for the CLI, API and web page.

    1. check the request        sizes, aspect, duration, prompt, mode (`resolve`)
    2. encode text               expanded prompt and the negative prompt (the unconditional input)
    3. conditioning              given frames -> clean latents at their positions, per mode
    4. noise                     seeded, one generator per job; neighbouring frames alike by `noise_correlation`,
                                 drifting the way the prompt's lone object travels by `noise_drift`
    5. denoise                   sampler over the shifted schedule, CFG batched, window by window
    6. decode                    causal VAE, streamed chunk by chunk into the writer; an asked camera pan, tilt or
                                 zoom moves the output's frame over what was drawn (`camera`)

Steps 2-5 differ per mode (text/image to video, extend, loop, connect, edit, prompt sequences,
long videos) and live in `kinema.modes`; this module holds the request, the result and the
primitives every mode shares (`encode_text`, `encode`, `denoise`, `decode_stream`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from kinema import accel, camera, flow, provenance, safety, sampling
from kinema.checkpoint import BUNDLED_MODELS, Model, load_model
from kinema.conditioning import FrameCondition
from kinema.config import ModelConfig
from kinema.errors import KinemaError
from kinema.prompting import Rewriter
from kinema.request_checks import (
    MAX_FPS,
    MAX_SECONDS,
    check_input_lengths,
    check_pixels,
    check_text,
    check_tuning,
    typed,
)
from kinema.sizes import MAX_ASPECT, check_size, crop_to, parse_aspect, size_for

Progress = Callable[[float, str], None]  # (fraction done 0..1, stage) -> None



@dataclass
class Request:
    """Everything that decides one generation; None means the model's default."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    aspect: str | None = None  # "16:9" etc.: a size with this ratio at the model's short side
    seconds: float | None = None
    frames: int | None = None  # exact frame count; overrides seconds (extend/connect: frames to add)
    fps: int | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    seed: int | None = None  # None: a new random seed, recorded in the video's metadata (video.meta["seed"])
    expand: bool | None = None  # rewrite the prompt into the training captions' style (None: on for bundled)
    # Sora modes: what the user gives, as uint8 pixels (H, W, 3) or (T, H, W, 3)
    mode: str = "t2v"  # t2v | i2v | extend | extend_backward | loop | connect | edit | sequence
    image: np.ndarray | None = None  # i2v: the first frame
    video: np.ndarray | None = None  # extend / extend_backward / connect (first clip) / edit: input video
    video_b: np.ndarray | None = None  # connect: the clip to end on
    strength: float | None = None  # edit (FlowEdit): 0 returns the input, 1 ignores it (None: 0.7)
    segments: list[tuple[float, str]] | None = None  # sequence: (start second, prompt) pairs
    # long videos: the DiT sees `window` latent frames at a time, the first `context` of them given
    window: int | None = None
    context: int | None = None
    # speed: reuse the last velocity while the latents barely change (accel.step_cache); 0 = off
    cache: float = 0.0
    noise_correlation: float | None = None  # of neighbouring latent frames' starting noise (sampling.initial_noise)
    noise_drift: float | None = None  # short sides a second the starting noise travels a lone object's asked way
    window_camera: bool | None = None  # make an asked pan, tilt or zoom by moving the frame over a scene (camera)


@dataclass
class Video:
    """A generated video held as latents; frames are decoded on demand, streamed.

    The output is `before` (given frames, e.g. the clip that was extended), then the decoded latents
    less their first `skip` frames (context the output shows as the given pixels instead), then `after`;
    `frames` in all.
    """

    # (1, C, T', h, w) normalized latents, decoded in one causal pass; arrays stay out of repr (a notebook prints it)
    latents: torch.Tensor = field(repr=False)
    frames: int  # exact frame count of the output
    fps: int
    width: int
    height: int
    meta: dict = field(default_factory=dict, repr=False)
    skip: int = 0
    before: np.ndarray | None = field(default=None, repr=False)  # uint8 (T, H, W, 3)
    after: np.ndarray | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)  # what was done to the inputs, for people
    move: camera.Move = field(default_factory=camera.Move)  # how the frame moves over the canvas (a camera move)

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


@dataclass
class Text:
    """An encoded prompt and negative prompt: what classifier-free guidance needs."""

    tokens: torch.Tensor  # (1, L, D)
    mask: torch.Tensor  # (1, L) bool
    uncond: torch.Tensor
    uncond_mask: torch.Tensor
    direction: tuple[float, float] | None = None  # the way the prompt's lone object travels (prompting.asked_direction)


class Pipeline:
    """A model ready to generate: every mode, size and length. The CLI, the HTTP API and the web page all call it.

        pipe = Pipeline.load()                      # the bundled model (or a preset, or a model folder)
        video = pipe.generate(Request("a red ball bounces", seconds=2))
        frames = pipe.decode(video)                 # uint8 (T, H, W, 3), without the watermark
        pipe.save(video, "ball.mp4")                # watermarked, with AI-disclosure tags

    Inputs go in the Request as uint8 arrays (`image` (H, W, 3), `video` (T, H, W, 3)); `read_inputs` reads them
    from files. One pipeline may serve several threads.
    """

    def __init__(self, model: Model, device: str | torch.device | None = None, bf16: bool | None = None,
                 rewriter: Rewriter | None = None, signer: provenance.C2paSigner | None = None):
        self.model = model
        self.signer = signer  # signs every saved file with C2PA credentials when set
        self.cfg = model.cfg
        self.device = accel.resolve_device(device)
        self.model.vae.to(self.device)
        self.model.dit.to(self.device)
        self.model.text.to(self.device)
        self._bf16 = (self.device.type == "cpu") if bf16 is None else bf16
        self.rewriter = rewriter or Rewriter.from_env()
        safety.check_setting()

    @classmethod
    def load(cls, spec: str | Path | None = None, **kwargs) -> Pipeline:
        """A bundled model's name (None: kinema-small-fast), a preset (debug: tiny random weights) or a model folder
        (Kinema's, or diffusers' Wan2.1 layout); `kwargs` go to Pipeline (device, bf16, rewriter, signer)."""
        return cls(load_model(spec), **kwargs).for_inference()

    def for_inference(self) -> Pipeline:
        """This pipeline, its model only sampled from now on: under CPU bf16 autocast (which recasts float32 weights
        at every call) its matmul weights are stored in bf16 once, the same values; the time embedding keeps float32."""
        if self.bf16 and self.device.type == "cpu":
            dit = self.model.dit
            accel.store_bf16(dit, keep=(dit.time_embedding, dit.time_projection))
            accel.store_bf16(self.model.vae)
        return self

    @property
    def bf16(self) -> bool:
        """Whether the models run under bf16 autocast (fixed: `load` may store their weights in bf16 for it)."""
        return self._bf16

    @property
    def expands_by_default(self) -> bool:
        """Prompt expansion is on for the bundled models, which were trained on the world's detailed captions."""
        return is_bundled(self.model.source)

    # -- 1. check the request ---------------------------------------------------------------
    def resolve(self, req: Request) -> Request:
        """Fill defaults from the model and reject what cannot be generated, naming the fix (`resolve_request`)."""
        return resolve_request(req, self.cfg, self.expands_by_default)

    def read_inputs(self, req: Request, files: dict[str, Path],
                    probes: dict[str, tuple[tuple[int, ...], float | None]] | None = None
                    ) -> tuple[Request, dict[str, str]]:
        """`req` with its input files ("image", "video", "video_b") read, each frame fitted to the size the request
        resolves to as it is decoded: a 4K source costs the output's memory, not its own, with that size filled in.
        Also returns what was done to each input that had to be resized (or was cut short), by field name, for the
        front end to say in its own words (a CLI option, an API field). The CLI and the server's worker read their
        inputs here; `probes`: the files' io.probe_input, when the caller has already read them (a GIF's is a walk
        through every frame)."""
        from kinema import io

        if probes is None:
            probes = {name: io.probe_input(path, still=name == "image") for name, path in files.items()}
        standing, shapes = with_stand_ins(req, probes, self.cfg.fps)
        req, resolved = replace(req, fps=standing.fps), self.resolve(standing)
        size = resolved.width, resolved.height
        pixels, fitted = {}, {}
        for name, path in files.items():
            if name == "image":
                pixels[name] = io.fit_image(io.read_image(path), *size)[0]
            else:  # at the output's rate, so the clip keeps its speed beside the new frames
                rate = probes[name][1] and resolved.fps
                pixels[name] = io.read_video(path, max_seconds=MAX_SECONDS, fit=size, fps=rate)[0]
            height, width = shapes[name][-3:-1]
            said = [io.fit_message(width, height, *size)] if (width, height) != size else []
            if name == "image":
                said[:0] = start_image_notes(path)
            if name != "image" and len(pixels[name]) < 0.9 * shapes[name][0]:  # a cut-off download decodes in part
                said.append(f"only {len(pixels[name])} of the {shapes[name][0]} frames its header lists could be "
                            "decoded; the file may be cut short")
            if said:
                fitted[name] = "; ".join(said)
        # The size is pinned: the inputs, now fitted, must not set another aspect when the request is resolved again.
        return replace(req, width=resolved.width, height=resolved.height, aspect=None, **pixels), fitted

    # -- 2..5: per mode, in kinema.modes -------------------------------------------------------
    @torch.no_grad()
    def generate(self, req: Request | str, progress: Progress | None = None) -> Video:
        """The video a request (or a plain prompt) asks for, as latents: `decode` gives its frames and `save` writes
        it. `progress(fraction, stage)` is called as it goes; it reaches 0.9 here, and 1.0 when `save` ends."""
        from kinema import modes

        if isinstance(req, str):
            req = Request(req)
        if not isinstance(req, Request):
            raise KinemaError(f"generate takes a Request or a prompt, got {type(req).__name__}; e.g. "
                              "pipe.generate(Request(\"a red ball bounces\", seconds=2))")
        req = self.resolve(req)
        report = progress or (lambda frac, stage: None)
        video = modes.build(self, req, report)
        report(0.9, "sampled")
        return video

    # -- primitives the modes share ----------------------------------------------------------
    def encode_text(self, prompt: str, negative_prompt: str) -> Text:
        """The negative prompt ("" by default) is the unconditional input of CFG."""
        tokens, mask = self.model.text([prompt])
        uncond, uncond_mask = self.model.text([negative_prompt])
        return Text(tokens, mask, uncond, uncond_mask)

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames (T, H, W, 3), T = 1 + 4k -> normalized latents (1, C, 1 + k, h, w), the posterior mean."""
        from kinema.io import from_uint8

        x = from_uint8(frames)[None].to(self.device)  # (1, 3, T, H, W) in [-1, 1]
        with self.autocast():
            return self.model.vae.encode(x).float().cpu()

    def times(self, req: Request, shape: tuple[int, ...], strength: float = 1.0) -> torch.Tensor:
        """The sampling times (steps + 1,) for latents of `shape` (1, C, T', h, w), from noise down to 0.

        The shift grows with the window's token count, as in training. An edit's `strength` keeps the schedule's
        last share: measured along the shifted schedule, it leaves the same part of the work at every size.
        """
        tokens = self.cfg.dit.tokens(*shape[2:])  # counted as training counts them (Bucket.tokens)
        shift = flow.shift_for(tokens, self.cfg.sampler.shift, self.cfg.sampler.shift_base_tokens)
        return sampling.schedule(req.steps, shift, start=strength)

    @torch.no_grad()
    def denoise(self, text: Text, x: torch.Tensor, cond: FrameCondition, req: Request, times: torch.Tensor,
                on_step: sampling.Callback | None = None) -> torch.Tensor:
        """Sample latents x (1, C, T', h, w), which hold noise at `times[0]`, down to t = 0 (`times`: from
        `Pipeline.times`); `cond`'s frames stay clean."""
        with self.autocast():  # the prepared text keys/values are made in the forward's dtype
            model_fn = self._model_fn(text, req)
            latents = sampling.sample(model_fn, x.to(self.device), times, cond, req.sampler, on_step)
        return self._finite(latents)

    @torch.no_grad()
    def edit(self, source_text: Text, text: Text, source: torch.Tensor, cond: FrameCondition, req: Request,
             times: torch.Tensor, noise: Callable[[], torch.Tensor],
             on_step: sampling.Callback | None = None) -> torch.Tensor:
        """Carry clean latents `source` (1, C, T', h, w), which `source_text` describes, to `text` over `times`
        (FlowEdit); `cond`'s frames stay as given, `noise()` draws fresh noise of the latents' shape."""
        d = self.device
        with self.autocast():
            source_fn, target_fn = self._model_fn(source_text, req), self._model_fn(text, req)
            edited = sampling.flow_edit(source_fn, target_fn, source.to(d), times, lambda: noise().to(d), cond,
                                        on_step)
        return self._finite(edited)

    def _finite(self, latents: torch.Tensor) -> torch.Tensor:
        """Sampled latents as float32 on the CPU; NaN, which would decode to a flat grey video, is an error."""
        latents = latents.float().cpu()
        if not torch.isfinite(latents).all():
            raise KinemaError(f"the model ({self.model.source}) gave NaN or infinite values: its weights are likely "
                              "damaged; copy them again, or check the install with --model debug")
        return latents

    def _model_fn(self, text: Text, req: Request) -> sampling.ModelFn:
        """The DiT with `text` and the request's guidance bound (and its step cache); call under `autocast`."""
        d = self.device
        model_fn = sampling.guided(self.model.dit, text.tokens.to(d), text.mask.to(d), text.uncond.to(d),
                                   text.uncond_mask.to(d), req.guidance, prepare=self.model.dit.prepare_context)
        return accel.step_cache(model_fn, req.cache) if req.cache else model_fn

    # -- 6. decode ---------------------------------------------------------------------------
    @torch.no_grad()
    def decode_stream(self, video: Video) -> Iterator[np.ndarray]:
        """uint8 frame chunks (t, H, W, 3) in order, exactly `video.frames` in all, at the output's size.

        Given frames are shown as they were (a camera move holds on them); drawn ones are filmed through the move's
        windows over the scene."""
        start, size = 0, (video.width, video.height)
        for chunk, drawn in self._decode_canvas(video):
            if video.move and drawn:
                scene = chunk.shape[2], chunk.shape[1]
                yield camera.film(chunk, video.move.windows(scene, size, start, len(chunk)), *size)
            else:
                yield crop_to(chunk, *size)
            start += len(chunk)

    @torch.no_grad()
    def _decode_canvas(self, video: Video) -> Iterator[tuple[np.ndarray, bool]]:
        """`decode_stream`'s chunks at the size they were generated (inputs as they were fitted), each with whether
        it was drawn (False: given)."""
        from kinema.io import to_uint8

        if video.before is not None:
            yield video.before, False
        after = 0 if video.after is None else len(video.after)
        left = video.frames - after - (0 if video.before is None else len(video.before))
        skip = video.skip
        with self.autocast():
            for chunk in self.model.vae.decode_stream(video.latents.to(self.device)):
                frames = to_uint8(chunk.float().cpu())
                frames, skip = frames[skip:][:left], max(0, skip - len(frames))
                left -= len(frames)
                if len(frames):
                    yield frames, True
                if left <= 0:
                    break
        if video.after is not None:
            yield video.after, False

    def decode(self, video: Video) -> np.ndarray:
        """All frames as uint8 (T, H, W, 3)."""
        return np.concatenate(list(self.decode_stream(video)))

    def save(self, video: Video, path: str | Path, filmstrip: str | Path | None = None,
             progress: Progress | None = None) -> Path:
        """Write the video, decoded as it is written; `filmstrip`: also a PNG of 16 evenly spaced frames,
        picked on the way (so a 60 s video is neither held in memory nor decoded twice). `progress` hears the
        decoding go from 0.9 (where `generate` left off) towards 1."""
        from kinema.io import atomic_path, write_video
        from kinema.sheets import contact_sheet, even_picks

        path = Path(path)
        provenance.check_signable(path, self.signer)
        if video.frames > 1 and path.suffix.lower() == ".png":
            raise KinemaError(f"{path.name}: a {video.frames}-frame video cannot be a PNG; use .mp4 or .gif, "
                              "or --seconds 0 for a single image")
        picks = set(even_picks(video.frames, 16).tolist())
        kept: list[np.ndarray] = []

        def frames() -> Iterator[np.ndarray]:
            start = 0
            for chunk in self.decode_stream(video):
                kept.extend(frame for i, frame in enumerate(chunk, start) if filmstrip and i in picks)
                start += len(chunk)
                if progress is not None:
                    progress(0.9 + 0.099 * start / video.frames, f"decoding frame {start}/{video.frames}")
                yield chunk

        # Every written file carries the invisible watermark named in its metadata (provenance).
        meta = video.meta if "watermark_payload" in video.meta else {
            **provenance.metadata(video.meta.get("prompt", ""), self.cfg.name, video.meta.get("seed", 0)),
            **video.meta}
        payload = bytes.fromhex(meta["watermark_payload"])
        with atomic_path(path) as whole:  # the output replaces a file there only once it is signed and its strip made
            write_video(whole, provenance.embed_stream(frames(), payload), video.fps, metadata=meta)
            if self.signer:
                self.signer.sign(whole, {key: meta[key] for key in ("prompt", "model", "seed") if key in meta},
                                 title=path.name)
            if filmstrip:  # marked and tagged as a file of its own: its tiles' marks are not on its grid
                sheet = provenance.embed(np.asarray(contact_sheet(np.stack(kept))), payload)
                with atomic_path(Path(filmstrip)) as tmp:
                    write_video(tmp, sheet[None], 1, metadata=meta)
        return path

    def autocast(self):
        """bf16 autocast where this pipeline runs in bf16 (the CPU default), else nothing."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()


def is_bundled(source: str) -> bool:
    """Whether a model's source folder is one of the bundled models'."""
    return Path(source).resolve() in {folder.resolve() for folder in BUNDLED_MODELS.values()}


def start_image_notes(path: Path) -> list[str]:
    """What is done to a start image file beyond fitting its size: a video's first frame taken, transparency laid on
    white."""
    from kinema import io

    if io.read_as(path) not in io.IMAGE_SUFFIXES:
        return ["a video: its first frame is the start image"] if io.video_metadata(path)["frames"] > 1 else []
    return ["its transparent parts are laid on white; flatten it onto the background you want"] * io.see_through(path)


def with_stand_ins(req: Request, probes: dict[str, tuple[tuple[int, ...], float | None]], default_fps: int
                   ) -> tuple[Request, dict[str, tuple[int, ...]]]:
    """`req` at the frame rate its inputs (probed by io.probe_input) choose, with zero-cost stand-ins of their
    pixels in the shapes they will be read in, so it can be resolved before they are; and those shapes."""
    req = replace(req, fps=output_fps(req.fps, probes, default_fps))
    shapes = played_shapes(probes, req.fps)
    return replace(req, **stand_ins(shapes)), shapes


def resolve_request(req: Request, cfg: ModelConfig, expands: bool) -> Request:
    """Fill defaults from the model's config and reject what cannot be generated, naming the fix; `expands`: whether
    prompt expansion is on by default (it is for the bundled models).

    Needs no weights (the CLI checks a request against the model's config.json before it loads the model) and no
    pixels (the server checks requests before their files are read); `generate` checks those.
    """
    from kinema import modes

    req = replace(typed(req), mode=modes.infer_mode(req))
    check_pixels(req)
    prompt = (req.prompt or "").strip() or (req.segments[0][1].strip() if req.segments else "")
    if req.segments and prompt != req.segments[0][1].strip():  # it would be recorded, but nothing would draw it
        raise KinemaError("the prompt differs from the first segment's; a prompt sequence draws only its segments' "
                          "prompts: give the first segment's prompt as the prompt, or leave it empty", param="prompt")
    for name, text in [("prompt", prompt), ("negative_prompt", req.negative_prompt or ""),
                       *(("segments", text) for _, text in req.segments or [])]:
        check_text(name, text)
    if not prompt:
        raise KinemaError("the prompt is empty; describe the video, e.g. \"a red ball bounces left\"",
                          param="prompt")
    for text in [prompt, *(p for _, p in req.segments or [])]:  # not the negative: it names what to avoid
        safety.check_prompt(text)
    width, height = _size(req, cfg)
    check_size(width, height)
    fps = cfg.fps if req.fps is None else req.fps
    if not 1 <= fps <= MAX_FPS:
        raise KinemaError(f"fps must be between 1 and {MAX_FPS}, got {fps}", param="fps")
    if req.frames is not None and req.seconds is not None and req.frames != frames_for(req.seconds, fps):
        # both may agree: a resolved request holds both, and resolving it again changes nothing
        raise KinemaError(f"seconds {req.seconds:g} and frames {req.frames} disagree at {fps} fps; give the length as "
                          "one of them", param="frames")
    frames = req.frames if req.frames is not None else _default_frames(req, fps)
    check_input_lengths(req, fps, frames)  # first: an edit as long as a too-long input is the input's fault
    if frames < 1 or frames / fps > MAX_SECONDS + 1e-6:
        raise KinemaError(f"duration must be between 1 frame and {MAX_SECONDS:g} s, got {frames} frames "
                          f"at {fps} fps", param="seconds")
    s = cfg.sampler
    steps = s.steps if req.steps is None else req.steps
    guidance = s.guidance if req.guidance is None else req.guidance
    noise_correlation = s.noise_correlation if req.noise_correlation is None else req.noise_correlation
    noise_drift = s.noise_drift if req.noise_drift is None else req.noise_drift
    window_camera = s.window_camera if req.window_camera is None else req.window_camera
    sampler = req.sampler or s.method
    seed = secrets.randbelow(RANDOM_SEEDS) if req.seed is None else req.seed
    window = modes.WINDOW if req.window is None else req.window
    # a small window given alone takes the most context it leaves room for
    context = min(modes.CONTEXT, max(1, window - 2)) if req.context is None else req.context
    check_tuning(steps, guidance, seed, req.cache, noise_correlation, noise_drift, sampler)
    req = replace(req, prompt=prompt, width=width, height=height, aspect=None, fps=fps, frames=frames, seed=seed,
                  steps=steps, guidance=guidance,
                  sampler=sampler, noise_correlation=noise_correlation, noise_drift=noise_drift,
                  window_camera=window_camera,
                  strength=modes.EDIT_STRENGTH if req.strength is None and req.mode == "edit" else req.strength,
                  expand=expands if req.expand is None else req.expand,
                  window=window, context=context)
    modes.check(req, cfg.vae.temporal_factor)
    return req


def _size(req: Request, cfg: ModelConfig) -> tuple[int, int]:
    """Explicit size, else an aspect ratio (or the input's) at the model's short side, else the default."""
    short = min(cfg.width, cfg.height)
    if req.aspect is not None:
        if req.width is not None or req.height is not None:
            raise KinemaError("give either a size or an aspect ratio, not both", param="size")
        return size_for(parse_aspect(req.aspect), short)
    given = next((x for x in (req.image, req.video) if x is not None), None)
    if req.width is None and req.height is None and np.ndim(given) >= 3:  # (H, W, 3) or (T, H, W, 3)
        height, width = np.shape(given)[-3:-1]
        return size_for(min(MAX_ASPECT, max(1 / MAX_ASPECT, width / height)), short)
    return (cfg.width if req.width is None else req.width,
            cfg.height if req.height is None else req.height)


def _default_frames(req: Request, fps: int) -> int:
    """`seconds` long; if not given, an edit keeps the input's length, and the rest last DEFAULT_SECONDS (a
    prompt sequence that long past its last segment's start). seconds = 0 is a single image."""
    if req.seconds is not None:
        return frames_for(req.seconds, fps)
    if req.mode == "edit" and req.video is not None:
        return len(req.video)
    last_start = req.segments[-1][0] if req.mode == "sequence" and req.segments else 0.0
    return frames_for(DEFAULT_SECONDS + last_start, fps)


RANDOM_SEEDS = 2**32  # a seed left out is drawn from these: short enough to read back and type
DEFAULT_SECONDS = 4.0  # a request's length when it gives neither seconds nor frames: Sora's, on every surface


def frames_for(seconds: float | None, fps: int) -> int:
    """Frame count for a duration; None or 0 seconds means a single image."""
    if seconds is None or seconds == 0:
        return 1
    if not math.isfinite(seconds):
        raise KinemaError(f"duration must be a finite number of seconds, got {seconds:g}; give one up to "
                          f"{MAX_SECONDS:g}, e.g. 4", param="seconds")
    if seconds < 0:
        raise KinemaError(f"duration must be a positive number of seconds, got {seconds:g}; use --seconds 0 for an "
                          "image", param="seconds")
    if seconds > MAX_SECONDS:  # before it is multiplied: 1e308 s would overflow
        raise KinemaError(f"duration must be at most {MAX_SECONDS:g} s, got {seconds:g}", param="seconds")
    return max(1, round(seconds * fps))


def output_fps(fps: int | None, probes: dict[str, tuple[tuple[int, ...], float | None]], default: int) -> int:
    """The output's frame rate: `fps` if asked for, else the given video's own (probed as (shape, rate) by
    io.probe_input), so its frames and the parts stitched to them play as they were shot, else `default`."""
    rate = probes.get("video", ((), None))[1]
    if fps is not None or rate is None:
        return default if fps is None else fps
    return min(MAX_FPS, max(1, round(rate)))


def played_shapes(probes: dict[str, tuple[tuple[int, ...], float | None]], fps: float) -> dict[str, tuple[int, ...]]:
    """The array shapes of inputs probed as (shape, rate) (io.probe_input) once each video is resampled to the
    output's `fps`, as `read_inputs` reads it."""
    from kinema.io import resampled_count

    fits = 1 <= fps <= MAX_FPS  # else resolve names the bad fps
    return {name: (resampled_count(shape[0], rate, fps), *shape[1:]) if rate and fits else shape
            for name, (shape, rate) in probes.items()}


def stand_ins(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Zero-cost arrays of the inputs' shapes: all `resolve` needs, before any pixel is read."""
    return {name: np.broadcast_to(np.uint8(0), shape) for name, shape in shapes.items()}
