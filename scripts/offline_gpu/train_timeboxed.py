"""Train within a time budget: keep the VAE, build the cache, time the DiT, train until the deadline, export;
then, with a distillation budget, distil the result into the fast default model the same way.

    python scripts/offline_gpu/train_timeboxed.py SECONDS [RECIPE] [RUN_DIR] [DISTILL_SECONDS]

DISTILL_SECONDS > 0 (taken out of SECONDS) runs configs/small_distill.toml on RUN_DIR/model in RUN_DIR/distill,
with GPU-sized batches, and exports RUN_DIR/distill/model (kinema-small-fast).
"""

import os
import signal
import sys
import time
from pathlib import Path

from kinema import train
from kinema.errors import KinemaError

START = time.time()
DISTILL_RECIPE = "configs/small_distill.toml"
DISTILL_ON_GPU = {"data.clips": 30000, "dit.batch_tokens": 40960, "dit.max_batch": 512, "dit.lr": 3e-4,
                  "dit.ema_decay": 0.999, "dit.checkpoint_every": 500, "dit.sample_every": 1000, "dit.log_every": 50}


def timeboxed(recipe: str, run: Path, deadline: float, overrides: dict) -> None:
    """Every stage of `recipe` in `run`, the DiT stage stopped (as by Ctrl-C) at `deadline`; then export."""
    device = str(train.resolve_device("auto"))
    train.run(recipe, stage="vae", out=run, resume=True, progress=False, overrides=overrides)
    train.run(recipe, stage="cache", out=run, progress=False, device=device, overrides=overrides)
    print(f"{run}: cache ready after {time.time() - START:.0f} s", flush=True)
    step_s = train.time_dit_steps(recipe, run, device, overrides=overrides)
    steps = max(100, int((deadline - time.time() - 25) / (1.04 * step_s)))  # 25 s: loading, samples, saving
    print(f"{run}: {1000 * step_s:.0f} ms per step: {steps} steps", flush=True)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))  # the loop saves and stops
    signal.alarm(max(1, int(deadline - time.time())))
    try:
        train.run(recipe, stage="dit", out=run, progress=False, device=device,
                  overrides={**overrides, "dit.steps": steps, "dit.warmup": min(300, steps // 10)})
    except KinemaError as err:
        print(err, flush=True)
    signal.alarm(0)
    train.export(run, run / "model")
    print(f"exported {run / 'model'} after {time.time() - START:.0f} s", flush=True)


def main(budget: float, recipe: str, run: Path, distill: float) -> None:
    timeboxed(recipe, run, START + budget - distill, {})
    if distill > 0:
        overrides = {**DISTILL_ON_GPU, "model.init": str(run / "model")}
        timeboxed(DISTILL_RECIPE, run / "distill", START + budget, overrides)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(float(args[0]), args[1] if len(args) > 1 else "configs/small_gpu.toml",
         Path(args[2] if len(args) > 2 else "runs/gpu"), float(args[3]) if len(args) > 3 else 0.0)
