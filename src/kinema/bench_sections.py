"""The measurements behind `kinema bench` (`kinema.bench.run` writes them out).

Every section takes a `Setup` and returns {"rows": [dict, ...], "notes": [str, ...]}. Timings on a
shared CPU are noisy: competing runs are interleaved (a, b, a, b, ...) and medians reported, so load
that comes and goes hits every variant alike; ratios are steadier than absolute times.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import statistics
import tempfile
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from kinema import accel
from kinema.checkpoint import Model, load_model
from kinema.config import PRESETS, DiTConfig, preset
from kinema.errors import KinemaError

PROMPT = "a red ball bounces from left to right on a green background"
TEXT_TOKENS = {"debug": 8, "small": 48, "wan2.1-1.3b": 512}  # context length the text encoder pads to


@dataclass(frozen=True)
class Setup:
    model: str | None  # None: the bundled model (else the small preset with random weights)
    quick: bool  # tiny debug shapes, one repetition: seconds, for tests
    device: str = "cpu"
    repeat: int | None = None  # repetitions of each timed call (default 5, quick 1)

    @property
    def reps(self) -> int:
        return self.repeat or (1 if self.quick else 5)

    @property
    def rounds(self) -> int:
        """Repetitions of whole generations or processes: fewer, they take long."""
        return 1 if self.reps < 3 else 2

    @property
    def shape_preset(self) -> str:
        return "debug" if self.quick else "small"


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

def time_alternating(fns: dict[str, Callable[[], object]], reps: int,
                     sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Median seconds per call of each function, run in turn after one warm-up call each."""
    sync = sync or (lambda: None)
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _sync(device: str) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.startswith("cuda") else None


def autocast(device: str, bf16: bool):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialised parameters (adaLN-zero tables, output head) random values.

    A fresh DiT outputs exactly 0, which a sampler never moves from; random weights make every layer
    do real work and the velocity O(1), like a trained model's.
    """
    gen = torch.Generator().manual_seed(seed)
    for param in module.parameters():
        if param.is_floating_point() and not param.any():
            std = param.shape[-1] ** -0.5 if param.ndim == 2 else 0.02
            param.copy_(torch.randn(param.shape, generator=gen) * std)
    return module


def load(spec: str | None, quick: bool) -> tuple[Model, str]:
    """The model to measure and a note saying what it is. Quick mode always takes the debug preset."""
    if quick:
        spec = "debug"
    elif spec is None:
        try:
            model = load_model(None)
            return model, f"bundled model ({model.source})"
        except KinemaError:
            model = load_model("small")
            randomize(model.dit)
            return model, "bundled model not installed: `small` preset with random weights"
    model = load_model(spec)
    if str(spec) in PRESETS:
        randomize(model.dit)
        return model, f"`{spec}` preset with random weights"
    return model, f"model {model.source}"


def dit_inputs(cfg: DiTConfig, latent: tuple[int, int, int], text_tokens: int, batch: int = 2,
               device: str = "cpu") -> dict[str, torch.Tensor]:
    """Seeded DiT inputs: latents (B, C, T', h, w), per-frame t (B, T') and scalar t (B,), text (B, L, D)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, *latent, generator=gen)
    t = torch.rand(batch, latent[0], generator=gen)
    context = torch.randn(batch, text_tokens, cfg.text_dim, generator=gen)
    return {k: v.to(device) for k, v in dict(x=x, t_frames=t, t_scalar=t[:, 0].contiguous(), context=context).items()}


def tokens(latent: tuple[int, int, int]) -> int:
    frames, h, w = latent
    return frames * (h // 2) * (w // 2)


def round_floats(value, digits: int = 4):
    """Floats to `digits` significant digits (inf as a string, nan as None: JSON has neither), recursively."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return "inf" if math.isinf(value) else float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(v, digits) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# dit: Kinema's DiT against diffusers' WanTransformer3DModel
# ---------------------------------------------------------------------------------------------

def _dit_pair(cfg: DiTConfig, device: str):
    """diffusers' Wan transformer and ours with its weights copied in, or (None, ours) without diffusers."""
    from kinema.diffusers_layout import dit_config, dit_state_dict
    from kinema.models.dit import DiT

    try:
        import diffusers
    except ImportError:
        return None, randomize(DiT(cfg)).to(device).eval()
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim, in_channels=cfg.in_channels,
        out_channels=cfg.out_channels, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers, rope_max_seq_len=cfg.rope_max_seq_len).eval()
    ours = DiT(dit_config(dict(ref.config))).eval()
    ours.load_state_dict(dit_state_dict(ref.state_dict()))
    return ref.to(device), ours.to(device)


def dit_section(setup: Setup, precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict:
    cfg = preset(setup.shape_preset).dit
    latent = (2, 4, 4) if setup.quick else (5, 16, 16)  # small: 128x128x17 frames
    inp = dit_inputs(cfg, latent, TEXT_TOKENS[setup.shape_preset], device=setup.device)
    ref, ours = _dit_pair(cfg, setup.device)
    per_token = latent[1] // 2 * latent[2] // 2
    rows, notes = [], [f"latents {tuple(inp['x'].shape)} (CFG batch 2), context {tuple(inp['context'].shape)}, "
                       "no text mask (diffusers' Wan takes none); weights copied from a random diffusers model; "
                       f"median of {setup.reps}, interleaved"]
    if ref is None:
        notes.append("diffusers is not installed: Kinema's DiT only")
    for precision in precisions:
        with torch.no_grad(), autocast(setup.device, precision == "bf16"), warnings.catch_warnings():
            # diffusers' RMSNorm under bf16 autocast warns that it cannot take torch's fused kernel: its own timing
            warnings.filterwarnings("ignore", "Mismatch dtype between input and weight", UserWarning)
            prepared = ours.prepare_context(inp["context"])
            for kind in ("per-frame", "scalar"):
                t = inp["t_frames"] if kind == "per-frame" else inp["t_scalar"]
                fns = {"kinema": lambda t=t: ours(inp["x"], t, inp["context"]),
                       "kinema_prepared": lambda t=t, p=prepared: ours(inp["x"], t, p)}
                if ref is not None:  # diffusers takes a timestep per token in [0, 1000]
                    t_ref = (t.repeat_interleave(per_token, dim=1) if t.ndim == 2 else t) * 1000
                    fns["diffusers"] = lambda t_ref=t_ref: ref(inp["x"], t_ref, inp["context"], return_dict=False)
                rows.append(_dit_row(precision, kind, time_alternating(fns, setup.reps, _sync(setup.device))))
    if ref is not None:
        notes.append(f"max |kinema - diffusers| (fp32, per-frame t): {_parity(ref, ours, inp, per_token):.2e}")
    return {"rows": rows, "notes": notes}


def _dit_row(precision: str, kind: str, times: dict[str, float]) -> dict:
    row = {"precision": precision, "t": kind, "kinema_ms": 1e3 * times["kinema"],
           "kinema_prepared_text_ms": 1e3 * times["kinema_prepared"]}
    if "diffusers" in times:
        row |= {"diffusers_ms": 1e3 * times["diffusers"], "speedup": times["diffusers"] / times["kinema"],
                "speedup_prepared": times["diffusers"] / times["kinema_prepared"]}
    return row


@torch.no_grad()
def _parity(ref, ours, inp: dict, per_token: int) -> float:
    t = inp["t_frames"]
    expected = ref(inp["x"], t.repeat_interleave(per_token, dim=1) * 1000, inp["context"], return_dict=False)[0]
    return (ours(inp["x"], t, inp["context"]) - expected).abs().max().item()


# ---------------------------------------------------------------------------------------------
# e2e: the pipeline from prompt to MP4, stage by stage, as shipped and with the speed-ups
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def count_calls(module: torch.nn.Module):
    """A one-item list holding how many times `module` ran while inside."""
    calls = [0]
    hook = module.register_forward_hook(lambda *args: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        hook.remove()


@contextlib.contextmanager
def stage_clock(pipe):
    """Seconds spent per stage of `pipe`'s generations while inside: text, denoise and decode."""
    spent: Counter = Counter()

    def timed(fn, stage):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - start
        return run

    def timed_stream(fn):
        def run(*args, **kwargs):
            chunks = fn(*args, **kwargs)
            while True:
                start = time.perf_counter()
                chunk = next(chunks, None)
                spent["decode"] += time.perf_counter() - start
                if chunk is None:
                    return
                yield chunk
        return run

    vae = pipe.model.vae
    pipe.encode_text, pipe.denoise = timed(pipe.encode_text, "text"), timed(pipe.denoise, "denoise")
    pipe.edit = timed(pipe.edit, "denoise")  # an edit's sampling
    vae.decode_stream = timed_stream(vae.decode_stream)
    try:
        yield spent
    finally:
        del pipe.encode_text, pipe.denoise, pipe.edit, vae.decode_stream


def pyav_installed() -> bool:
    """Whether MP4s can be written here: a bare GPU host may lack PyAV, and then benchmarks decode only."""
    return importlib.util.find_spec("av") is not None


def timed_generation(pipe, req, path: Path | None) -> tuple[dict, object]:
    """Generate and write an MP4 (path None: decode only); wall seconds in all and per stage (text, denoise,
    decode, mp4, other), CPU seconds of this process in all (`cpu`, every thread), and the video."""
    with stage_clock(pipe) as spent:
        cpu, start = time.process_time(), time.perf_counter()
        video = pipe.generate(req)
        saving = time.perf_counter()
        if path is None:
            deque(pipe.decode_stream(video), maxlen=0)
        else:
            pipe.save(video, path)
        end = time.perf_counter()
    stages = {"text": spent["text"], "denoise": spent["denoise"], "decode": spent["decode"],
              "mp4": 0.0 if path is None else end - saving - spent["decode"]}
    stages["other"] = end - start - sum(stages.values())
    return {"total": end - start, "cpu": time.process_time() - cpu, **stages}, video


def e2e_section(setup: Setup) -> dict:
    from kinema.metrics import psnr
    from kinema.pipeline import Pipeline, Request

    model, note = load(setup.model, setup.quick)
    pipe = Pipeline(model, device=setup.device).for_inference()  # as Pipeline.load gives it to the CLI and server
    req = Request(PROMPT, seconds=1 if setup.quick else 2, steps=2 if setup.quick else None, seed=0)
    resolved = pipe.resolve(req)
    variants = _e2e_variants(req, resolved)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    frames, videos, calls = {}, {}, {}
    writes_mp4 = pyav_installed()
    pipe.decode(pipe.generate(replace(req, steps=1)))  # warm-up: first-call allocations, rope tables
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(setup.rounds):
            for name, variant in variants.items():
                with count_calls(model.dit) as counted:
                    stages, videos[name] = timed_generation(pipe, variant,
                                                            Path(tmp) / "out.mp4" if writes_mp4 else None)
                runs[name].append(stages)
                calls[name] = counted[0]
                if name not in frames:
                    frames[name] = pipe.decode(videos[name])
    rows = [_e2e_row(name, runs[name], videos[name], calls[name],
                     psnr(frames[name], frames["as shipped"]) if variant.mode == "t2v" and variant.prompt == req.prompt
                     and variant.image is None else None)
            for name, variant in variants.items()]
    notes = [note, f"{resolved.width}x{resolved.height}, {resolved.frames} frames at {resolved.fps} fps, "
             f"{resolved.steps} {resolved.sampler} steps, guidance {resolved.guidance}, bf16={pipe.bf16}, "
             f"median of {setup.rounds} run(s) after a 1-step warm-up, variants interleaved", *E2E_NOTES]
    if not writes_mp4:
        notes.append("no MP4 written: PyAV (pip install av) is not installed here; the times cover text, denoise "
                     "and decode")
    return {"rows": rows, "notes": notes}


def _e2e_variants(req, resolved) -> dict:
    """The generations e2e times, by row name: as shipped, with the step cache, camera moves, image to video (with
    outpainting) and an edit of a rendered clip, each at the request's size and length."""
    from kinema.world import Background, Obj, Scene, render

    pan = replace(req, prompt=f"{PROMPT}, while the camera pans right", window_camera=True)
    zoom = replace(req, prompt=f"{PROMPT}, as the camera zooms in", window_camera=True)
    moving = Scene([Obj("circle", "blue", "medium", "right", 0.3, 0.5, speed=0.12)], Background("solid", "forest"))
    clip = render(moving, resolved.width, resolved.height, resolved.frames, resolved.fps)
    image = render(Scene([Obj("circle", "red", "medium", "still", 0.5, 0.5)], Background("solid", "forest")),
                   resolved.width, resolved.height, 1, resolved.fps)[0]
    threshold = accel.DEFAULT_CACHE_THRESHOLD
    return {"as shipped": req, f"step cache {threshold:g} (--cache)": replace(req, cache=threshold),
            "a camera pan (window_camera)": pan, "a camera zoom (window_camera)": zoom,
            "image to video": replace(req, image=image),
            "image to video, a pan (outpainted)": replace(pan, image=image),
            "image to video, a zoom out (outpainted)": replace(zoom, prompt=f"{PROMPT}, as the camera zooms out",
                                                              image=image),
            "video to video (FlowEdit)": replace(req, mode="edit", video=clip, seconds=None)}


E2E_NOTES = [
    "psnr_db: decoded frames against the as-shipped video (same seed); inf = identical",
    "a camera pan: the prompt with \", while the camera pans right\"; the DiT draws a scene wider by the "
    "pan's travel and the frame slides across it (no psnr_db: it is another video)",
    "a camera zoom: the prompt with \", as the camera zooms in\"; the DiT draws the output's frame and each "
    "frame is cropped ever closer to its centre, then upsampled",
    "image to video: from a rendered first frame; with a pan or a zoom out one more window first draws the "
    "larger scene around the image (for the bundled models' 2 s at 128x128: 176x128 or 192x192)",
    "video to video: a rendered clip of a blue circle carried to the prompt over the last 0.7 of the "
    "schedule, two DiT passes a step (the prompt's and the clip's, with no prompt)",
    "cpu_s: CPU seconds of the process (all threads); on a busy machine wall time is far above cpu_s / "
    "threads, which estimates an idle machine's wall time"]


def _e2e_row(name: str, runs: list[dict], video, dit_calls: int, psnr_db: float | None) -> dict:
    stages = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total, cpu = stages.pop("total"), stages.pop("cpu")
    return {"variant": name, "wall_s": total, "cpu_s": cpu, "s_per_video_s": total / video.seconds,
            "frames_per_s": video.frames / total, "faster_than_real_time": total < video.seconds,
            **{f"{k}_share": v / total for k, v in stages.items()},
            "dit_calls": dit_calls, "psnr_db": psnr_db}


# ---------------------------------------------------------------------------------------------
# vae: encode / decode throughput
# ---------------------------------------------------------------------------------------------

def vae_section(setup: Setup) -> dict:
    model, note = load(setup.model, setup.quick)
    vae = model.vae.to(setup.device)
    size, frames = (32, 5) if setup.quick else (128, 17)
    x = torch.rand(1, 3, frames, size, size, generator=torch.Generator().manual_seed(0)).to(setup.device) * 2 - 1
    rows = []
    for precision in ("fp32", "bf16"):
        with torch.no_grad(), autocast(setup.device, precision == "bf16"):
            z = vae.encode(x)
            times = time_alternating({"encode": lambda: vae.encode(x), "decode": lambda z=z: vae.decode(z)},
                                     max(1, setup.reps // 2), _sync(setup.device))
        rows.append({"precision": precision, "clip": f"{frames}x{size}x{size}",
                     "encode_s": times["encode"], "encode_frames_per_s": frames / times["encode"],
                     "decode_s": times["decode"], "decode_frames_per_s": frames / times["decode"]})
    return {"rows": rows, "notes": [note, "the pipeline decodes in bf16 on CPU"]}
