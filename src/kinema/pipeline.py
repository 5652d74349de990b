"""From a prompt to frames, in numbered steps: the one entry point for the CLI, API and web page.

    1. check the request        sizes, duration, prompt
    2. encode text               prompt and negative prompt (the unconditional input)
    3. conditioning              given frames -> clean latents at their positions (Sora modes)
    4. noise                     seeded, one generator per job
    5. denoise                   sampler over the shifted schedule, CFG batched, progress callback
    6. decode                    causal VAE, streamed chunk by chunk into the writer
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from kinema import flow, sampling
from kinema.checkpoint import Model, load_model
from kinema.conditioning import FrameCondition
from kinema.errors import KinemaError

Progress = Callable[[float, str], None]  # (fraction done 0..1, stage) -> None

MAX_SECONDS = 60.0
MAX_PIXELS = 1920 * 1088
SIZE_MULTIPLE = 16


@dataclass
class Request:
    """Everything that decides one generation; None means the model's default."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    frames: int | None = None  # exact frame count; overrides seconds
    fps: int | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    seed: int = 0
    # Sora modes: what the user gives, as uint8 pixels (H, W, 3) or (T, H, W, 3)
    mode: str = "t2v"  # t2v | i2v | extend | extend_backward | loop | connect | edit | sequence
    image: np.ndarray | None = None  # i2v: the first frame
    video: np.ndarray | None = None  # extend / extend_backward / connect (first clip) / edit: input video
    video_b: np.ndarray | None = None  # connect: the clip to end on
    strength: float = 1.0  # edit (SDEdit): 0 returns the input, 1 ignores it
    segments: list[tuple[float, str]] | None = None  # sequence: (start second, prompt) pairs
    # internal: set by the mode builders
    condition: FrameCondition | None = None  # given latent frames, kept clean (t = 0)
    init_latents: torch.Tensor | None = None  # SDEdit: start part-way from these noised latents


@dataclass
class Video:
    """A generated video held as latents; frames are decoded on demand, streamed."""

    latents: torch.Tensor  # (1, C, T', h, w) normalized latents
    frames: int  # exact frame count wanted (<= 1 + 4 (T' - 1))
    fps: int
    width: int
    height: int
    meta: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


class Pipeline:
    def __init__(self, model: Model, device: str | torch.device | None = None, bf16: bool | None = None):
        self.model = model
        self.cfg = model.cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.vae.to(self.device)
        self.model.dit.to(self.device)
        self.model.text.to(self.device)
        self.bf16 = (self.device.type == "cpu") if bf16 is None else bf16

    @classmethod
    def load(cls, spec: str | Path | None = None, **kwargs) -> Pipeline:
        return cls(load_model(spec), **kwargs)

    # -- 1. check the request ---------------------------------------------------------------
    def resolve(self, req: Request) -> Request:
        """Fill defaults from the model and reject what cannot be generated, naming the fix."""
        prompt = (req.prompt or "").strip()
        if not prompt:
            raise KinemaError("the prompt is empty; describe the video, e.g. \"a red ball bounces left\"",
                              param="prompt")
        width, height = req.width or self.cfg.width, req.height or self.cfg.height
        check_size(width, height)
        fps = req.fps or self.cfg.fps
        if not 1 <= fps <= 60:
            raise KinemaError(f"fps must be between 1 and 60, got {fps}", param="fps")
        frames = req.frames if req.frames is not None else frames_for(req.seconds, fps)
        if frames < 1 or frames / fps > MAX_SECONDS + 1e-6:
            raise KinemaError(f"duration must be between 1 frame and {MAX_SECONDS:g} s, got {frames} frames "
                              f"at {fps} fps", param="seconds")
        if not 0.0 <= req.strength <= 1.0:
            raise KinemaError(f"strength must be between 0 and 1, got {req.strength}", param="strength")
        s = self.cfg.sampler
        steps = req.steps or s.steps
        if steps < 1 or steps > 1000:
            raise KinemaError(f"steps must be between 1 and 1000, got {steps}", param="steps")
        return replace(req, prompt=prompt, width=width, height=height, fps=fps, frames=frames, steps=steps,
                       guidance=s.guidance if req.guidance is None else req.guidance,
                       sampler=req.sampler or s.method)

    def latent_shape(self, req: Request) -> tuple[int, int, int, int, int]:
        sf, tf = self.cfg.vae.spatial_factor, self.cfg.vae.temporal_factor
        t_latent = 1 + math.ceil((req.frames - 1) / tf)
        return (1, self.cfg.vae.z_dim, t_latent, req.height // sf, req.width // sf)

    # -- 2..5 --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, req: Request, progress: Progress | None = None) -> Video:
        req = self.resolve(req)
        report = progress or (lambda frac, stage: None)

        # 2. encode text: the negative prompt ("" by default) is the unconditional input of CFG
        report(0.0, "encoding text")
        ctx, ctx_mask = self.model.text([req.prompt])
        unc, unc_mask = self.model.text([req.negative_prompt])

        # 3. conditioning: frames the user gave stay clean (t = 0) while the rest is denoised
        shape = self.latent_shape(req)
        cond = req.condition or FrameCondition.none(shape)

        # 4. noise from one seeded generator, so the same seed gives the same video
        gen = torch.Generator().manual_seed(req.seed)
        noise = torch.randn(shape, generator=gen)

        # 5. denoise over the resolution-dependent shifted schedule
        tokens = shape[2] * (shape[3] // 2) * (shape[4] // 2)
        shift = flow.shift_for(tokens, self.cfg.sampler.shift, self.cfg.sampler.shift_base_tokens)
        start = req.strength if req.init_latents is not None else 1.0
        times = sampling.schedule(req.steps, shift, start=start)
        x = noise if req.init_latents is None else flow.interpolate(req.init_latents, noise, torch.tensor([start]))
        model_fn = sampling.guided(self.model.dit, ctx.to(self.device), ctx_mask.to(self.device),
                                   unc.to(self.device), unc_mask.to(self.device), req.guidance)
        on_step = lambda i, n, t: report(0.9 * i / n, f"denoising step {i}/{n}")
        with self._autocast():
            latents = sampling.sample(model_fn, x.to(self.device), times, cond, req.sampler, on_step)
        report(0.9, "decoding")
        meta = {"prompt": req.prompt, "seed": req.seed, "steps": req.steps, "guidance": req.guidance,
                "model": self.cfg.name, "software": "kinema"}
        return Video(latents.float().cpu(), req.frames, req.fps, req.width, req.height, meta)

    # -- 6. decode ---------------------------------------------------------------------------
    @torch.no_grad()
    def decode_stream(self, video: Video) -> Iterator[np.ndarray]:
        """uint8 frame chunks (t, H, W, 3) in order, exactly `video.frames` in all."""
        from kinema.io import to_uint8

        left = video.frames
        with self._autocast():
            for chunk in self.model.vae.decode_stream(video.latents.to(self.device)):
                frames = to_uint8(chunk.float().cpu())[:left]
                left -= len(frames)
                if len(frames):
                    yield frames
                if left <= 0:
                    break

    def decode(self, video: Video) -> np.ndarray:
        """All frames as uint8 (T, H, W, 3)."""
        return np.concatenate(list(self.decode_stream(video)))

    def save(self, video: Video, path: str | Path) -> Path:
        from kinema.io import write_video

        path = Path(path)
        if video.frames > 1 and path.suffix.lower() == ".png":
            raise KinemaError(f"{path.name}: a {video.frames}-frame video cannot be a PNG; use .mp4 or .gif, "
                              "or --seconds 0 for a single image")
        write_video(path, self.decode_stream(video), video.fps, metadata=video.meta)
        return path

    def _autocast(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()


def frames_for(seconds: float | None, fps: int) -> int:
    """Frame count for a duration; None or 0 seconds means a single image."""
    if seconds is None or seconds == 0:
        return 1
    if seconds < 0:
        raise KinemaError(f"duration must be positive, got {seconds:g} s; use --seconds 0 for an image",
                          param="seconds")
    return max(1, round(seconds * fps))


def check_size(width: int, height: int) -> None:
    """Sizes must be positive multiples of 16 (VAE 8x times the DiT's 2x2 patches)."""
    for name, v in (("width", width), ("height", height)):
        if v < SIZE_MULTIPLE:
            raise KinemaError(f"{name} {v} is too small; use at least {SIZE_MULTIPLE}", param="size")
        if v % SIZE_MULTIPLE:
            lo = v - v % SIZE_MULTIPLE
            nearest = lo if v - lo < SIZE_MULTIPLE / 2 or lo + SIZE_MULTIPLE > 1920 else lo + SIZE_MULTIPLE
            raise KinemaError(f"{name} {v} is not a multiple of {SIZE_MULTIPLE}; the nearest valid {name} is "
                              f"{max(nearest, SIZE_MULTIPLE)}", param="size")
    if width * height > MAX_PIXELS:
        raise KinemaError(f"size {width}x{height} is larger than 1920x1088; choose a smaller size", param="size")
