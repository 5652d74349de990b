"""Fine-tune within a time budget: keep the VAE, build the cache, time the DiT, train until the deadline.

    python scripts/offline_gpu/train_timeboxed.py SECONDS [RECIPE] [RUN_DIR]
"""

import os
import signal
import sys
import time
from pathlib import Path

import torch

from kinema import recipe as recipes
from kinema import train
from kinema.data import load_cache
from kinema.errors import KinemaError
from kinema.parallel import Dist
from kinema.train_dit import DiTStage

START = time.time()


def seconds_per_step(recipe_path: str, run: Path, device: torch.device, steps: int = 30) -> float:
    recipe = recipes.load(recipe_path)
    cfg = train.trained_config(recipe, run)
    cache = load_cache(run / "cache", train._buckets(recipe), train._counts(recipe))
    probe = DiTStage(recipe, cfg, run / "probe", cache, train._source(recipe), train.load_trained_vae(cfg, run),
                     False, None, Dist(0, 1, 0, device))
    for _ in range(8):  # warm-up: allocations, kernels
        probe.train_step()
    began = time.time()
    for _ in range(steps):
        probe.train_step()
    return (time.time() - began) / steps


def main(budget: float, recipe: str, run: Path) -> None:
    device = train.resolve_device("auto")
    train.run(recipe, stage="vae", out=run, resume=True, progress=False)
    train.run(recipe, stage="cache", out=run, progress=False, device=str(device))
    print(f"cache ready after {time.time() - START:.0f} s", flush=True)
    step_s = seconds_per_step(recipe, run, device)
    left = budget - (time.time() - START) - 25  # loading, samples, the last checkpoint
    steps = max(100, int(left / (1.04 * step_s)))
    print(f"{1000 * step_s:.0f} ms per step: {steps} steps", flush=True)
    # Past the deadline, act as Ctrl-C: the loop finishes its step, saves and stops.
    signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    signal.alarm(max(1, int(budget - (time.time() - START))))
    try:
        train.run(recipe, stage="dit", out=run, progress=False, device=str(device),
                  overrides={"dit.steps": steps, "dit.warmup": min(300, steps // 10)})
    except KinemaError as err:
        print(err, flush=True)
    signal.alarm(0)
    train.export(run, run / "model")
    print(f"exported {run / 'model'} after {time.time() - START:.0f} s", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(float(args[0]), args[1] if len(args) > 1 else "configs/small_gpu.toml",
         Path(args[2] if len(args) > 2 else "runs/gpu"))
