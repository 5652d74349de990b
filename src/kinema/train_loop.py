"""Machinery shared by the training stages.

The step loop with its progress bar, metrics JSONL and loss-curve PNG; training-state
checkpoints that are atomic and hold every RNG state, so a resumed run continues bit-exactly
on CPU; Ctrl-C that finishes the current step, saves and stops; the learning-rate schedule;
and the EMA of weights.
"""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from kinema.checkpoint import atomic_write
from kinema.errors import KinemaError, first_line
from kinema.parallel import any_rank

OnStep = Callable[[str, int], None]  # (stage name, step just finished) -> None; a test hook


class Stage(Protocol):
    """One training stage as the loop drives it."""

    name: str
    step: int  # steps done so far
    total: int
    metrics: Metrics

    def train_step(self) -> dict[str, float]: ...  # one optimizer step; returns what to log

    def periodic(self) -> dict[str, float]: ...  # evaluation / samples when due; extra metrics

    def save(self) -> None: ...  # atomic training-state checkpoint


def run_loop(stage: Stage, log_every: int, checkpoint_every: int, progress: bool = True,
             on_step: OnStep | None = None) -> None:
    """Train `stage` up to `stage.total` steps; Ctrl-C saves a checkpoint and raises a KinemaError."""
    from tqdm import tqdm

    bar = tqdm(total=stage.total, initial=stage.step, desc=stage.name, disable=not progress, dynamic_ncols=True)
    window: list[dict[str, float]] = []  # rows since the last log, averaged into one (single losses are noisy)
    between_steps = True  # where an interrupt came: there the state is a whole number of steps
    try:
        with deferred_interrupt() as interrupted:
            while stage.step < stage.total:
                start = time.perf_counter()
                between_steps = False
                row = stage.train_step()
                between_steps = True
                row["s_per_step"] = time.perf_counter() - start
                extra = stage.periodic()
                bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
                bar.update(1)
                window.append(row)
                if extra or stage.step % log_every == 0 or stage.step == stage.total:
                    stage.metrics.log(stage.step, {**_mean_row(window), **extra})
                    window = []
                if stage.step % checkpoint_every == 0:
                    stage.save()
                if on_step is not None:
                    on_step(stage.name, stage.step)
                if any_rank(interrupted()):  # under torchrun every rank stops at the same step
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if not between_steps:  # a second Ctrl-C, mid-step: its half-applied update must not be saved
            raise KinemaError(f"training stopped mid-step in {stage.name}; the last saved checkpoint is kept, "
                              "continue with --resume", code="interrupted") from None
        if window:  # the steps since the last log, which the resumed run would never write
            stage.metrics.log(stage.step, _mean_row(window))
        stage.save()
        raise KinemaError(f"training interrupted at {stage.name} step {stage.step}; the checkpoint is saved, "
                          "continue with --resume", code="interrupted") from None
    finally:
        bar.close()
    if stage.step == 0 or stage.step % checkpoint_every:  # else the loop has just saved it
        stage.save()


def _mean_row(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[-1]}


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; what torchrun, SLURM and Kubernetes send to stop a job


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """The first Ctrl-C (or SIGTERM) only sets a flag the loop reads between steps, so the checkpoint it saves is a
    consistent one (never a half-applied optimizer step); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    hits = []
    previous = {}

    def handler(signum, frame):
        hits.append(signum)
        for sig, old in previous.items():  # the next one acts at once (SIGTERM's default ends the process)
            signal.signal(sig, old)

    previous.update({sig: signal.signal(sig, handler) for sig in STOP_SIGNALS})
    try:
        yield lambda: bool(hits)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------------
# Training-state checkpoints
# ---------------------------------------------------------------------------------------------

def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise KinemaError(f"no checkpoint at {path} to resume from; run without --resume") from None
    except pickle.UnpicklingError:  # torch's own text would advise loading it unsafely
        raise KinemaError(f"checkpoint {path} is corrupt (not a checkpoint's data); delete it to restart this stage, "
                          "or restore it from a backup") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise KinemaError(f"checkpoint {path} is corrupt ({first_line(err)}); delete it to restart this stage, or "
                          "restore it from a backup") from None


def rng_state() -> dict[str, Any]:
    """Every global RNG a step could touch (torch's default generator drives e.g. dropout)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _tuples(value: Any) -> Any:
    """random.setstate wants the nested tuples back that a checkpoint may store as lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 10% at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a model's parameters (fp32), the weights that get exported."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().float().clone() for k, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        # Ramp the decay up so early, short runs are not stuck near the random init.
        decay = min(self.decay, (1 + step) / (10 + step))
        for name, param in model.named_parameters():
            self.shadow[name].lerp_(param.detach().float(), 1 - decay)

    def model_state(self, model: torch.nn.Module, shadow: dict[str, torch.Tensor] | None = None
                    ) -> dict[str, torch.Tensor]:
        """`model`'s state dict with the averaged parameters (`shadow`: gathered full ones; buffers as the
        model has them)."""
        shadow = self.shadow if shadow is None else shadow
        return {k: shadow.get(k, v) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Metrics and the loss curve
# ---------------------------------------------------------------------------------------------

class Metrics:
    """Append-only JSONL of per-step metrics; a resumed run drops rows past its checkpoint first.

    `enabled=False` (every rank but the first in a distributed run) writes nothing.
    """

    def __init__(self, path: Path, resume_step: int | None, enabled: bool = True):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows() if resume_step is not None else []
        with atomic_write(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= (resume_step or 0)))

    def log(self, step: int, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **_rounded(row)}) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        """The rows logged; a line cut short (a crash or a full disk mid-write) is skipped."""
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return [row for row in rows if isinstance(row, dict) and "step" in row]

    def plot(self, png: Path, title: str) -> None:
        """Loss (log scale, raw and smoothed) and, where logged, PSNR on a second axis."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        rows = self.rows()
        if not rows:
            return
        fig = Figure(figsize=(7, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        steps = [r["step"] for r in rows if "loss" in r]
        loss = [r["loss"] for r in rows if "loss" in r]
        ax.plot(steps, loss, color="tab:blue", alpha=0.3, lw=0.8, label="loss")
        ax.plot(steps, _smooth(loss), color="tab:blue", lw=1.6, label="loss (smoothed)")
        ax.set(yscale="log", xlabel="step", ylabel="loss", title=title)
        psnr = [(r["step"], r["psnr"]) for r in rows if "psnr" in r]
        if psnr:
            ax2 = ax.twinx()
            ax2.plot(*zip(*psnr, strict=True), color="tab:red", marker="o", lw=1.2, label="PSNR (eval clips)")
            ax2.set_ylabel("PSNR (dB)", color="tab:red")
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        with atomic_write(png) as tmp:
            fig.savefig(tmp, format="png")


def _smooth(values: list[float], weight: float = 0.9) -> list[float]:
    out, acc = [], values[0]
    for v in values:
        acc = weight * acc + (1 - weight) * v
        out.append(acc)
    return out


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in row.items()}
