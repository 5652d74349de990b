"""`kinema bench` sections about the machine: thread settings, peak memory, training throughput, GPU.

Thread settings and peak memory are process-wide, so each of those measurements runs in a fresh
subprocess (`probe` is its entry point) and reports back one JSON line.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kinema import accel
from kinema.bench_sections import (
    PROMPT,
    TEXT_TOKENS,
    Setup,
    autocast,
    dit_inputs,
    dit_section,
    e2e_section,
    load,
    pyav_installed,
    randomize,
    time_alternating,
    timed_generation,
    tokens,
    vae_section,
)
from kinema.config import preset

# name -> (extra environment, configure_threads argument or None to leave torch's defaults)
THREAD_SETTINGS = {
    "torch defaults (OpenMP threads spin)": ({}, None),
    "configure_threads()": ({}, 0),
    "1 thread": ({}, 1),
    "OMP_WAIT_POLICY=PASSIVE + configure_threads()": (accel.THREAD_ENV, 0),
}


def _child(probe_name: str, env: dict | None = None, timeout: float = 600, **kwargs) -> dict:
    """Run `probe(probe_name, **kwargs)` in a fresh interpreter; its JSON result or {"error": ...}."""
    code = ("import json, sys; from kinema.bench_system import probe; "
            "print(json.dumps(probe(sys.argv[1], **json.loads(sys.argv[2]))))")
    try:
        done = subprocess.run([sys.executable, "-c", code, probe_name, json.dumps(kwargs)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        return {"error": lines[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def probe(name: str, **kwargs) -> dict:
    return {"threads": _thread_probe, "memory": _memory_probe}[name](**kwargs)


# ---------------------------------------------------------------------------------------------
# threads: one DiT sampling step (bf16, CFG batch) under each thread setting, each in its own process
# ---------------------------------------------------------------------------------------------

def _thread_probe(quick: bool, threads: int | None, reps: int) -> dict:
    from kinema.models.dit import DiT

    if threads is not None:
        accel.configure_threads(threads or None)
    name = "debug" if quick else "small"
    model = randomize(DiT(preset(name).dit)).eval()
    inp = dit_inputs(model.cfg, (2, 4, 4) if quick else (5, 16, 16), TEXT_TOKENS[name])
    with torch.no_grad(), autocast("cpu", True):
        text = model.prepare_context(inp["context"])
        model(inp["x"], inp["t_frames"], text)  # the first call allocates and picks kernels: not a step's cost
        cpu = time.process_time()
        times = time_alternating({"step": lambda: model(inp["x"], inp["t_frames"], text)}, reps)
        cpu = (time.process_time() - cpu) / (reps + 1)  # time_alternating's own warm-up is a plain step now
    return {"step_s": times["step"], "cpu_per_step_s": cpu, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "load_1min": os.getloadavg()[0]}


def threads_section(setup: Setup) -> dict:
    rounds, reps = (1 if setup.quick else 3), min(3, setup.reps)  # an odd count: a median, not a mean of two
    results: dict[str, list[dict]] = {name: [] for name in THREAD_SETTINGS}
    for _ in range(rounds):  # settings interleaved, so changing load hits each alike
        for name, (extra, threads) in THREAD_SETTINGS.items():
            env = {k: v for k, v in os.environ.items() if k not in accel.THREAD_ENV} | extra
            results[name].append(_child("threads", env, timeout=300, quick=setup.quick, threads=threads, reps=reps))
    base = _median_step(results[next(iter(THREAD_SETTINGS))])
    rows = []
    for name, runs in results.items():
        step, ok = _median_step(runs), [r for r in runs if "step_s" in r] or [{}]
        rows.append({"setting": name, "dit_step_s": step, "speedup_vs_defaults": base / step if step and base else None,
                     "cpu_per_step_s": statistics.median(r.get("cpu_per_step_s", math.nan) for r in ok),
                     "threads": ok[0].get("threads"), "interop_threads": ok[0].get("interop_threads"),
                     "load_1min": ok[0].get("load_1min"),
                     "error": "; ".join(r["error"] for r in runs if "error" in r) or None})
    return {"rows": rows, "notes": [f"{preset(setup.shape_preset).name} DiT step, bf16, CFG batch 2, text prepared; "
                                    f"median of {rounds} processes x {reps} steps per setting, settings interleaved"]}


def _median_step(runs: list[dict]) -> float | None:
    steps = [r["step_s"] for r in runs if "step_s" in r]
    return statistics.median(steps) if steps else None


# ---------------------------------------------------------------------------------------------
# memory: peak RSS of whole generations, each in a fresh process
# ---------------------------------------------------------------------------------------------

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _memory_probe(model: str | None, quick: bool, seconds: float, steps: int, device: str = "cpu") -> dict:
    from kinema import modes
    from kinema.pipeline import Pipeline, Request

    began = time.perf_counter()
    loaded, note = load(model, quick)
    pipe = Pipeline(loaded, device=device).for_inference()  # as Pipeline.load gives it to the CLI and server
    load_s = time.perf_counter() - began  # weights and text encoder, in a fresh process (imports before it)
    req = pipe.resolve(Request(PROMPT, seconds=seconds, steps=steps, seed=0))
    windows = modes.plan_windows(modes.latent_count(req.frames, pipe.cfg.vae.temporal_factor), 0, req.window,
                                 req.context)
    after_load = _peak_rss_mb()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _, video = timed_generation(pipe, req, Path(tmp) / "out.mp4" if pyav_installed() else None)
    row = {"seconds": seconds, "frames": video.frames, "windows": len(windows), "steps": steps,
           "rss_after_load_mb": after_load, "peak_rss_mb": _peak_rss_mb(),
           "growth_mb": _peak_rss_mb() - after_load, "wall_s": time.perf_counter() - start, "load_s": load_s,
           "model": note}
    if device.startswith("cuda"):
        row["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def memory_section(setup: Setup) -> dict:
    durations, steps = ((1.0,), 1) if setup.quick else ((5.0, 20.0, 60.0), 1)
    rows = [_child("memory", quick=setup.quick, model=setup.model, seconds=s, steps=steps, device=setup.device)
            | {"seconds": s} for s in durations]
    gpu = "; on CUDA also the peak of torch's allocator" if setup.device.startswith("cuda") else ""
    notes = [rows[0].get("model", ""), f"{steps} sampling steps (memory does not depend on steps); each in a fresh "
             f"process; peak = ru_maxrss{gpu}; long videos chain windows of the DiT and decode in one causal stream",
             "load_s: the model's weights and text encoder loaded as `kinema generate` loads them, after the imports"]
    if not pyav_installed():
        notes.append("no MP4 written: PyAV is not installed here, so each video was decoded as a stream instead")
    for row in rows:
        row.pop("model", None)
    return {"rows": rows, "notes": notes}


# ---------------------------------------------------------------------------------------------
# train: DiT training throughput and model FLOPs utilisation against the measured matmul peak
# ---------------------------------------------------------------------------------------------

def matmul_peak(device: str, quick: bool) -> dict[str, float]:
    """GFLOP/s of large square matmuls in fp32 and bf16 (what the hardware gives this process now)."""
    n = 256 if quick else 2048
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        sync = torch.cuda.synchronize if device.startswith("cuda") else None
        seconds = time_alternating({"mm": lambda a=a, b=b: a @ b}, 1 if quick else 5, sync)["mm"]
        out[str(dtype).removeprefix("torch.")] = 2 * n**3 / seconds / 1e9
    return out


def train_section(setup: Setup) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from kinema import flow
    from kinema.models.dit import DiT

    cfg = preset(setup.shape_preset).dit
    batch, latent = (2, (2, 4, 4)) if setup.quick else (8, (5, 16, 16))
    model = randomize(DiT(cfg)).to(setup.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inp = dit_inputs(cfg, latent, TEXT_TOKENS[setup.shape_preset], batch=batch, device=setup.device)
    eps = torch.randn_like(inp["x"])

    def step():
        with autocast(setup.device, True):
            xt = flow.interpolate(inp["x"], eps, inp["t_frames"])
            loss = flow.loss(model(xt, inp["t_frames"], inp["context"]), inp["x"], eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    sync = torch.cuda.synchronize if setup.device.startswith("cuda") else None
    seconds = time_alternating({"step": step}, min(3, setup.reps), sync)["step"]
    peak = matmul_peak(setup.device, setup.quick)
    n_tokens = batch * tokens(latent)
    row = {"model": f"{cfg.num_layers}x{cfg.dim} DiT ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M)",
           "batch": batch, "tokens_per_step": n_tokens, "step_s": seconds, "tokens_per_s": n_tokens / seconds,
           "gflop_per_step": flops / 1e9, "achieved_gflops": flops / seconds / 1e9,
           "peak_fp32_gflops": peak["float32"], "peak_bf16_gflops": peak["bfloat16"],
           "mfu_vs_bf16_peak": flops / seconds / 1e9 / peak["bfloat16"]}
    return {"rows": [row], "notes": [f"fwd + bwd + AdamW, bf16 autocast, latents {tuple(inp['x'].shape)}; FLOPs "
                                     f"counted by torch's FlopCounterMode; peak from {'256' if setup.quick else '2048'}"
                                     f"^3 matmuls at {torch.get_num_threads()} threads, measured in the same run"]}


def cache_section(setup: Setup) -> dict:
    """Building the latent cache (world renders -> the model's VAE -> shards), the step before DiT training, as
    `kinema train` does it: rendered in this process, then in worker processes that render ahead."""
    from kinema.data import Bucket, WorldSource, build_cache
    from kinema.train import cache_batch, cache_encoder, render_workers

    model, note = load(setup.model, setup.quick)
    device = torch.device(setup.device)
    encode = cache_encoder(model.vae.to(device).eval(), device)
    bucket, clips = (Bucket(32, 32, 5), 8) if setup.quick else (Bucket(128, 128, 17), 256)
    rows = []
    for workers in sorted({0, max(1, render_workers())}):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            build_cache(Path(folder), WorldSource(seed=0, fps=8), [bucket], [clips], encode, cache_batch(device),
                        progress=False, workers=workers, device=device)
            seconds = time.perf_counter() - start
        rows.append({"clip": f"{bucket.frames}x{bucket.height}x{bucket.width}", "clips": clips, "workers": workers,
                     "cache_s": seconds, "clips_per_s": clips / seconds})
    return {"rows": rows, "notes": [note, f"{clips} world clips, encoded {cache_batch(device)} at a time in bf16; "
                                          "workers 0 renders in the encoding process"]}


# ---------------------------------------------------------------------------------------------
# gpu: the DiT, e2e, VAE, memory and training sections on CUDA, and a Wan2.1-1.3B-shaped sampling step
# ---------------------------------------------------------------------------------------------

def wan_step(device: str, quick: bool) -> dict:
    """One CFG sampling step of a Wan2.1-1.3B-shaped DiT (random weights) on 5 s of 832x480 at 16 fps."""
    from kinema.models.dit import DiT

    name = "debug" if quick else "wan2.1-1.3b"
    latent = (2, 4, 6) if quick else (21, 60, 104)  # 81 frames -> 1 + 80/4 latent frames; 480x832 / 8
    model = DiT(preset(name).dit).to(device).eval()
    inp = dit_inputs(model.cfg, latent, TEXT_TOKENS[name], device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    with torch.no_grad(), autocast(device, True):
        text = model.prepare_context(inp["context"])
        seconds = time_alternating({"step": lambda: model(inp["x"], inp["t_frames"], text)}, 1 if quick else 3,
                                   sync)["step"]
    steps = preset(name).sampler.steps
    row = {"model": f"{name} DiT ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M, random)",
           "latents": str(tuple(inp["x"].shape)), "tokens": tokens(latent), "step_s": seconds,
           f"denoise_{steps}_steps_s": seconds * steps}
    if device.startswith("cuda"):
        row["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def gpu_section(setup: Setup) -> dict:
    if not torch.cuda.is_available():
        return {"rows": [], "notes": ["skipped: no GPU"], "skipped": "no GPU"}
    on_gpu = Setup(setup.model, setup.quick, device="cuda")
    parts = {"dit": dit_section(on_gpu, precisions=("bf16",)), "e2e": e2e_section(on_gpu),
             "vae": vae_section(on_gpu), "memory": memory_section(on_gpu), "train": train_section(on_gpu),
             "cache": cache_section(on_gpu)}
    rows = [{"part": part, **row} for part, result in parts.items() for row in result["rows"]]
    rows.append({"part": "wan2.1-1.3b step", **wan_step("cuda", setup.quick)})
    return {"rows": rows, "notes": [torch.cuda.get_device_name(), *(n for r in parts.values() for n in r["notes"])]}
