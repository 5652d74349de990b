"""Samplers: pure functions from noise to clean latents, with a per-step callback.

A sampler sees only a `model_fn(x, t_frames) -> v` (the DiT with text and guidance
already bound), a time schedule and an optional frame condition; it knows nothing
of files, prompts or the CLI. The same seed gives bit-identical output on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from kinema.conditioning import FrameCondition
from kinema.flow import shift_time

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B,C,T,H,W), t (B,T)) -> v
Callback = Callable[[int, int, float], None]  # (step done, total steps, t) -> None


def schedule(steps: int, shift: float = 1.0, start: float = 1.0) -> torch.Tensor:
    """Times (steps + 1,) from noise down to 0, warped by `shift` (more steps near the noise end).

    `start` < 1 covers only the schedule's last `start` share, for edits, still in `steps` steps: it begins at
    shift_time(start). Measured before the warp, a strength leaves the same part of the work at every size,
    where a raw time would not: a larger video keeps more of its content at the same t (why its shift is larger).
    """
    return shift_time(torch.linspace(start, 0.0, steps + 1), shift)


DRIFT_CORRELATION = 0.9  # a drift carries the noise's structure along only when most of each frame is copied


def initial_noise(shape: tuple[int, ...], correlation: float = 0.0, generator: torch.Generator | None = None,
                  drift: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Starting noise (B, C, T', h, w) in which neighbouring latent frames correlate by `correlation` (rho).

    An AR(1) chain along time: eps_t = rho eps_{t-1} + sqrt(1 - rho^2) eta_t, so every value stays N(0, 1) and
    frames k apart correlate by rho^k. Neighbouring frames start alike (a temporally correlated noise prior, as
    in PYoCo), so the sampler keeps an object's colour and number from frame to frame instead of drawing blobs
    that split and change; distant frames stay free to differ, which leaves room for motion. rho = 0 draws
    exactly the plain noise of the same generator.

    `drift` (x, y), in latent pixels per latent frame, shifts each frame's copy of the last before mixing, so
    the shared structure travels that way (warped noise, as in Go-with-the-Flow) and the sampler tends to draw
    objects travelling with it; the strip a shift uncovers draws fresh noise.
    """
    x = torch.randn(shape, generator=generator)
    if correlation:
        keep = math.sqrt(1 - correlation**2)  # what each frame draws afresh, so its variance stays 1
        for t in range(1, shape[2]):
            step = [round(d * t) - round(d * (t - 1)) for d in reversed(drift)]  # (dy, dx), whole pixels
            previous, covered = _shifted(x[:, :, t - 1], *step)
            x[:, :, t] = torch.where(covered, correlation * previous + keep * x[:, :, t], x[:, :, t])
    return x


def _shifted(frame: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`frame` (..., h, w) moved by (dy, dx) pixels, and a mask (h, w) of where it still covers."""
    h, w = frame.shape[-2:]
    moved = torch.zeros_like(frame)
    covered = torch.zeros(h, w, dtype=torch.bool)
    if abs(dy) < h and abs(dx) < w:
        rows, cols = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
        moved[..., rows, cols] = frame[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
        covered[rows, cols] = True
    return moved, covered


def guided(dit: torch.nn.Module, context: torch.Tensor, context_mask: torch.Tensor | None,
           uncond: torch.Tensor, uncond_mask: torch.Tensor | None, guidance: float,
           prepare: Callable | None = None) -> ModelFn:
    """Bind text and classifier-free guidance: v = v_u + g (v_c - v_u).

    Conditional and unconditional passes run as one batch (one DiT call per step).
    With guidance 1 the unconditional pass is skipped: it would cancel exactly.
    `prepare(context, mask)` (e.g. `DiT.prepare_context`) runs once on the bound text, and its result
    is passed to every call in place of the raw tokens: the text is the same at every step.
    """
    if guidance != 1.0:
        context = torch.cat([context, uncond.expand_as(context)])
        if context_mask is not None:
            context_mask = torch.cat([context_mask, uncond_mask.expand_as(context_mask)])
    if prepare is not None:
        context, context_mask = prepare(context, context_mask), None
    if guidance == 1.0:
        return lambda x, t: dit(x, t, context, context_mask)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_c, v_u = dit(torch.cat([x, x]), torch.cat([t, t]), context, context_mask).chunk(2)
        return v_u + guidance * (v_c - v_u)

    return model_fn


def sample(model_fn: ModelFn, x: torch.Tensor, times: torch.Tensor, cond: FrameCondition | None = None,
           method: str = "euler", callback: Callback | None = None) -> torch.Tensor:
    """Integrate dx/dt = v from times[0] to times[-1] starting at x (B, C, T, H, W); `method` one of METHODS."""
    step = STEPS[method]
    cond = cond or FrameCondition.none(tuple(x.shape))
    x = cond.apply(x)
    total = len(times) - 1
    for i in range(total):
        x = cond.apply(step(model_fn, x, float(times[i]), float(times[i + 1]), cond))
        if callback is not None:
            callback(i + 1, total, float(times[i + 1]))
    return x


def flow_edit(source_fn: ModelFn, target_fn: ModelFn, source: torch.Tensor, times: torch.Tensor,
              noise: Callable[[], torch.Tensor], cond: FrameCondition | None = None,
              callback: Callback | None = None) -> torch.Tensor:
    """FlowEdit (Kulikov et al. 2024): carry clean latents `source` (B, C, T, H, W) from what `source_fn` describes to
    what `target_fn` does, from times[0] down to times[-1], without inverting them to noise.

    At each step the source is noised afresh (`noise()`), the edit is shifted by the same amount, and the edit moves
    by the difference of the two velocities: what the prompts agree on cancels, so the input's layout and motion are
    kept where sampling from re-noised latents (SDEdit) redraws them. `cond`'s frames (e.g. a window's context, already
    edited) stay as given; the source pass sees the source's own latents there.
    """
    cond = cond or FrameCondition.none(tuple(source.shape))
    source_cond = FrameCondition(source, cond.mask, cond.region)
    edit = cond.apply(source)
    total = len(times) - 1
    for i in range(total):
        t, t_next = float(times[i]), float(times[i + 1])
        noisy_source = source_cond.apply((1 - t) * source + t * noise())
        noisy_edit = cond.apply(edit + noisy_source - source)
        change = _velocity(target_fn, noisy_edit, t, cond) - _velocity(source_fn, noisy_source, t, source_cond)
        edit = cond.apply(edit + (t_next - t) * change)
        if callback is not None:
            callback(i + 1, total, t_next)
    return edit


def _velocity(model_fn: ModelFn, x: torch.Tensor, t: float, cond: FrameCondition) -> torch.Tensor:
    t_frames = cond.frame_times(torch.full((x.shape[0],), t))  # (B, T), 0 on given frames
    return model_fn(x, t_frames).to(x.dtype)


def _euler_step(model_fn: ModelFn, x: torch.Tensor, t: float, t_next: float, cond: FrameCondition):
    return x + (t_next - t) * _velocity(model_fn, x, t, cond)


def _heun_step(model_fn: ModelFn, x: torch.Tensor, t: float, t_next: float, cond: FrameCondition):
    """Second order (trapezoid) except at the last step, where t_next = 0 has no velocity to average."""
    v = _velocity(model_fn, x, t, cond)
    x_euler = x + (t_next - t) * v
    if t_next == 0:
        return x_euler
    v_next = _velocity(model_fn, cond.apply(x_euler), t_next, cond)
    return x + (t_next - t) * 0.5 * (v + v_next)


STEPS = {"euler": _euler_step, "heun": _heun_step}  # ODE solvers `sample` takes: 1 and 2 model calls a step
METHODS = tuple(STEPS)
