"""Inference speed-ups that change no model code: step caching, guarded compilation, thread settings.

- `step_cache(model_fn, threshold)` wraps a sampler's `model_fn(x, t) -> v` and reuses the last velocity
  while the input has barely moved since the last full evaluation (TeaCache's idea, measured on the
  sampler's own inputs so it works for any model and mode, CFG included: one skip saves both passes).
- `maybe_compile(module)` is torch.compile with a fallback to eager when compilation fails.
- `configure_threads()` sets intra-op threads to the physical cores and inter-op threads to 1.
- `resolve_device(name)` is the device a user named ("auto", "cpu", "cuda", "cuda:1"), or a one-line error.

On a CPU shared with other processes the OpenMP wait policy matters more than any of these: libgomp
threads spin between parallel regions, and when one of them is descheduled every region waits for it
(measured here under load: a DiT step 10-80x slower than with passive waiting). `OMP_WAIT_POLICY=PASSIVE` must be in the
environment before torch is first imported; `THREAD_ENV` holds it and `bench`'s `threads` section
measures it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from kinema.errors import KinemaError
from kinema.sampling import ModelFn

THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}  # set before `import torch` (libgomp reads it once)
DEFAULT_CACHE_THRESHOLD = 0.1


class StepCache:
    """A sampler model_fn that skips evaluations while its input changes little; see `step_cache`."""

    def __init__(self, model_fn: ModelFn, threshold: float, max_skips: int = 2, enabled: bool = True):
        if threshold < 0 or max_skips < 0:
            raise KinemaError(f"step cache threshold ({threshold}) and max_skips ({max_skips}) must be >= 0")
        self.model_fn, self.threshold, self.max_skips, self.enabled = model_fn, threshold, max_skips, enabled
        self.calls = self.skipped = 0
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # x, t, v of the last call
        self._drift = 0.0  # accumulated relative change since the last full evaluation
        self._run = 0  # consecutive skips

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.enabled and self._last is not None and self._run < self.max_skips:
            prev_x, prev_t, v = self._last
            self._drift += _relative_change(x, prev_x) + (t - prev_t).abs().mean().item()
            if self._drift < self.threshold:
                self.skipped += 1
                self._run += 1
                self._last = (x, t, v)
                return v
        v = self.model_fn(x, t)
        self._last, self._drift, self._run = (x, t, v), 0.0, 0
        return v

    def reset(self) -> None:
        """Forget the last velocity (the counters stay): call between independent samplings."""
        self._last, self._drift, self._run = None, 0.0, 0


def step_cache(model_fn: ModelFn, threshold: float = DEFAULT_CACHE_THRESHOLD, max_skips: int = 2,
               enabled: bool = True) -> StepCache:
    """Wrap `model_fn(x, t) -> v` to reuse the previous velocity while the input has barely changed.

    Per call the relative L1 change of x plus the mean change of t since the previous call is
    accumulated; while the sum stays below `threshold` the last full evaluation's velocity is returned
    (at most `max_skips` times in a row), otherwise the model runs and the sum restarts from 0. The
    first call always runs. 0 (or `enabled=False`) never skips. `.skipped` / `.calls` count evaluations.
    """
    return StepCache(model_fn, threshold, max_skips, enabled)


def _relative_change(x: torch.Tensor, prev: torch.Tensor) -> float:
    return ((x - prev).abs().mean() / prev.abs().mean().clamp_min(1e-8)).item()


def maybe_compile(fn: Callable, **options) -> Callable:
    """torch.compile(fn, **options) that runs `fn` eagerly instead when compiling fails.

    `fn` is a module or a function (e.g. a block's bound `forward`). Compilation is lazy, so failures
    (no C++ compiler, an unsupported op or Python) surface at a call: they are caught there, warned
    about once, and every later call runs eagerly. A KinemaError raised by the model itself is the
    caller's error and passes through.
    """
    compiled = torch.compile(fn, **options)
    name = getattr(fn, "__qualname__", type(fn).__name__)
    failed = False

    def call(*args, **kwargs):
        nonlocal failed
        if not failed:
            try:
                return compiled(*args, **kwargs)
            except KinemaError:
                raise
            except Exception as err:  # any compiler failure means: run eager
                failed = True
                first = str(err).splitlines()[0] if str(err) else ""
                warnings.warn(f"torch.compile failed, running {name} eagerly: {type(err).__name__}: {first}",
                              RuntimeWarning, stacklevel=2)
        return fn(*args, **kwargs)

    return call


def store_bf16(module: torch.nn.Module, keep: tuple[torch.nn.Module, ...] = ()) -> None:
    """Store the weights of `module`'s linear and convolution layers (but those inside `keep`) in bfloat16, in place:
    for a model that only ever runs them under bf16 autocast, which would cast them to the same values each call."""
    kept = {id(param) for part in keep for param in part.parameters()}
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear | torch.nn.Conv2d | torch.nn.Conv3d):
            for param in layer.parameters(recurse=False):
                if id(param) not in kept and param.dtype == torch.float32:
                    param.data = param.data.to(torch.bfloat16)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device a user named (None or "auto": the GPU when torch sees one), checked."""
    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError):
        raise KinemaError(f"unknown device {device!r}; use auto, cpu or cuda (cuda:N for the Nth GPU)") from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise KinemaError(f"device {device!r} asked for, but torch sees no GPU here; use cpu")
    if where.type not in ("cpu", "cuda"):
        raise KinemaError(f"device {device!r} is not supported; use cpu or cuda")
    return where


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share one core's matmul units)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = set()
    try:
        for cpu in allowed:
            topo = f"/sys/devices/system/cpu/cpu{cpu}/topology"
            with open(f"{topo}/physical_package_id") as pkg, open(f"{topo}/core_id") as core:
                cores.add((pkg.read().strip(), core.read().strip()))
    except OSError:
        return max(1, len(allowed))
    return max(1, len(cores))


def configure_threads(threads: int | None = None) -> dict:
    """Intra-op threads = `threads`, else OMP_NUM_THREADS when set, else this process's share of the physical cores
    (all of them, or 1/LOCAL_WORLD_SIZE under torchrun: ranks on one machine must not oversubscribe it); inter-op
    threads = 1; returns what is in effect.

    Inter-op threads can only be set before torch's first parallel work; later calls leave them as they
    are. The wait policy is reported, not set: it only takes effect from the environment at import.
    """
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    share = max(1, physical_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    torch.set_num_threads(threads or (int(asked) if asked.isdigit() and int(asked) > 0 else share))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already started: the setting cannot change any more in this process
    return {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (spin)")}
