"""Train within a time budget: keep the VAE, build the cache, time the DiT, train until the deadline, export.

    python scripts/offline_gpu/train_timeboxed.py SECONDS [RECIPE] [RUN_DIR] [KEY=VALUE ...]

KEY=VALUE pairs override RECIPE's values as `kinema train --set` does, e.g. dit.lr=4e-4 data.seed=3.
run.sh calls it twice: kinema-small's recipe, then configs/small_distill.toml on its export.
"""

import os
import signal
import sys
import time
from pathlib import Path

from kinema import accel, train
from kinema.cli import parse_override
from kinema.errors import KinemaError

START = time.time()


def timeboxed(recipe: str, run: Path, deadline: float, overrides: dict) -> None:
    """Every stage of `recipe` in `run`, the DiT stage stopped (as by Ctrl-C) at `deadline`; then export."""
    device = str(accel.resolve_device("auto"))
    resume = (run / "vae" / "checkpoint.pt").exists()  # an earlier lease's VAE continues
    train.run(recipe, stage="vae", out=run, resume=resume, progress=False, overrides=overrides)
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


if __name__ == "__main__":
    pairs = [arg for arg in sys.argv[1:] if "=" in arg]
    args = [arg for arg in sys.argv[1:] if "=" not in arg]
    timeboxed(args[1] if len(args) > 1 else "configs/small_gpu.toml", Path(args[2] if len(args) > 2 else "runs/gpu"),
              START + float(args[0]), dict(parse_override(pair) for pair in pairs))
