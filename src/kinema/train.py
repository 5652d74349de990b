"""`kinema train`: VAE -> latent cache -> DiT, in one run folder, resumable at every stage.

    run folder/
      recipe.json        the recipe as merged with command-line overrides
      vae/               checkpoint.pt, metrics.jsonl, loss.png, reconstructions.png,
                         vae.safetensors + result.json (PSNR, latent mean/std) once finished
      cache/             manifest.json, <W>x<H>x<F>/shard_*.safetensors (fp16 latents + scene metas)
      model_config.json  the model config with the trained VAE's latent statistics
      dit/               checkpoint.pt (weights, EMA, optimizer, RNG states, data cursor),
                         metrics.jsonl, loss.png, samples/step_*.png
      model/             the exported model folder (after stage "all")

A stage with a checkpoint continues from it only with `resume`; a finished stage is skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kinema import accel, parallel
from kinema import recipe as recipes
from kinema.checkpoint import atomic_write, load_json_or_empty, load_tensors, lock_folder, save_model
from kinema.config import ModelConfig, load_json
from kinema.data import Bucket, build_cache, check_manifest, load_cache, open_source, render_pool, split_counts
from kinema.errors import KinemaError
from kinema.parallel import ONE_CPU, Dist
from kinema.recipe import Recipe
from kinema.train_loop import EMA, OnStep, load_state, run_loop

STAGES = ("vae", "cache", "dit", "all")


def run(recipe_path: str | Path, stage: str = "all", out: str | Path | None = None, resume: bool = False,
        overrides: dict[str, Any] | None = None, progress: bool = True, on_step: OnStep | None = None,
        device: str = "auto") -> Path:
    """Run one stage (or all) of a recipe in the run folder `out` (default runs/<recipe name>).

    `device` ("auto", "cpu", "cuda", "cuda:1") runs every stage there; "auto" takes the GPU when there is
    one. Under torchrun (WORLD_SIZE > 1) the DiT stage trains on every rank (each process takes the GPU of
    its LOCAL_RANK, or gloo on CPUs).
    """
    if stage not in STAGES:
        raise KinemaError(f"unknown training stage {stage!r}; use one of {', '.join(STAGES)}")
    ranks = _processes(device, stage)
    recipe = recipes.load(recipe_path, overrides)
    run_dir = Path(out) if out is not None else Path("runs") / recipe.name
    if resume and not (run_dir / "recipe.json").is_file():
        raise KinemaError(f"--resume: {run_dir} holds no training run to continue; check --out (or the recipe's "
                          "name, which names the default folder), or drop --resume to start a new run")
    if resume:
        changes = _changes(load_json(run_dir / "recipe.json")["recipe"], recipe.raw)
        _check_same_shapes(changes)
        _check_finished_vae_kept(changes, run_dir, stage)
        for key, (was, now) in changes.items():
            if ranks.is_main:  # the run goes on with the recipe as given now: say where it differs
                print(f"resume: {key} is {now} (it was {was} in this run)")
    for part in ("vae", "dit"):  # a refused run must not touch the folder, recipe.json included
        if stage in (part, "all"):
            _check_resume(run_dir / part, resume)
    if stage in ("cache", "dit") and not recipe.keeps_init_dit:
        trained_config(recipe, run_dir)  # both stages need the run's trained VAE
    run_dir.mkdir(parents=True, exist_ok=True)
    with _only_trainer(run_dir, ranks.is_main):
        if ranks.is_main:
            with atomic_write(run_dir / "recipe.json") as tmp:
                tmp.write_text(json.dumps({"name": recipe.name, "recipe": recipe.raw}, indent=2))
        _run_stages(recipe, stage, run_dir, resume, progress, on_step, ranks)
    return run_dir


def _only_trainer(run_dir: Path, main: bool) -> contextlib.AbstractContextManager:
    """Hold the run folder's lock (the first rank holds it for all): two runs into one folder would interleave
    their checkpoints and metrics."""
    if not main:
        return contextlib.nullcontext()
    return lock_folder(run_dir, f"{run_dir} is being trained by another process; wait for it to finish, or train "
                                "into another --out")


def _run_stages(recipe: Recipe, stage: str, run_dir: Path, resume: bool, progress: bool, on_step: OnStep | None,
                ranks: Dist) -> None:
    if stage in ("vae", "all"):
        train_vae(recipe, run_dir, resume, progress, on_step, ranks.device)
    if stage in ("cache", "all") and not recipe.keeps_init_dit:
        cache_latents(recipe, run_dir, progress, ranks.device)
    together = True  # every rank is here: finished, or stopped at the same step (Ctrl-C) and saved
    try:
        if stage in ("dit", "all") and not recipe.keeps_init_dit:
            train_dit(recipe, run_dir, resume, progress and ranks.is_main, on_step, ranks)
    except BaseException as err:
        # else a peer may be waiting in a collective this rank will never join: leave, and torchrun ends it
        together = isinstance(err, KinemaError) and err.code == "interrupted"
        raise
    finally:
        if ranks.world_size > 1 and together:
            parallel.barrier()  # no rank may tear the group down while a peer still uses it
            parallel.cleanup()
    if stage == "all":
        export(run_dir, run_dir / "model")


def _processes(device: str, stage: str) -> Dist:
    """This process's place: one process on `device`, or one rank of a torchrun launch."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(0, 1, 0, accel.resolve_device(device))
    if stage != "dit":
        raise KinemaError(f"--stage {stage} runs in one process; under torchrun only the DiT stage trains: run "
                          "the vae and cache stages first without torchrun, then torchrun ... train --stage dit")
    # each rank takes its LOCAL_RANK's GPU
    return parallel.setup_distributed(cuda=accel.resolve_device(device).type == "cuda")


def render_workers() -> int:
    """Processes that render clips for the latent cache and the VAE's batches: none on a small CPU, whose cores
    the models already keep busy; on a bigger host (a GPU server) all cores but one."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 4 else min(16, cores - 1)


SHAPING = ("model", "data.buckets", "vae.init")  # recipe keys that shape a run's checkpoints and cache


def _check_same_shapes(changes: dict[str, tuple[str, str]]) -> None:
    """A resumed run keeps what its checkpoints were shaped by; steps, rates and the rest may change (`changes`:
    the recipe's differences from the run's, as _changes gives them)."""
    for key, (was, now) in changes.items():
        if key.startswith(SHAPING):
            raise KinemaError(f"--resume: {key} is {now} here but {was} in the run, whose checkpoints it shapes; "
                              "resume with the run's recipe, or train it in a new --out")


def _changes(saved: dict[str, Any], raw: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Recipe keys whose value differs from the run's: key -> (was, now), each a repr or "unset"."""
    old, new = _flat(saved), _flat(raw)
    return {key: tuple(repr(side[key]) if key in side else "unset" for side in (old, new))
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)}


def _check_finished_vae_kept(changes: dict[str, tuple[str, str]], run_dir: Path, stage: str) -> None:
    """A resume does not train on a finished VAE whose latents are cached: the cache and the DiT trained on it would
    silently no longer match it (a resume without the run's --set vae.steps=... would do just that)."""
    changed = {key: values for key, values in changes.items() if key.startswith("vae.")}
    if stage not in ("vae", "all") or not changed or _vae_result(run_dir) is None or not (run_dir / "cache").exists():
        return
    said = ", ".join(f"{key} {now} (was {was})" for key, (was, now) in changed.items())
    keep = " ".join(f"--set {key}={was}" for key, (was, _) in changed.items() if was != "unset")
    raise KinemaError(f"--resume: this run's VAE is finished and its latents are cached, and the recipe changes it: "
                      f"{said}; repeat the run's values ({keep or 'drop the new keys'}), train a new VAE in another "
                      "--out, or delete this run's cache/ and dit/ folders to train its VAE on (both are made again)")


def _flat(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"dit": {"num_layers": 3}}} -> {"model.dit.num_layers": 3}."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_resume(folder: Path, resume: bool) -> bool:
    """Whether the stage continues from its checkpoint; an existing one needs an explicit resume."""
    exists = (folder / "checkpoint.pt").exists()
    if exists and not resume:
        raise KinemaError(f"{folder} already holds a checkpoint; pass --resume to continue it, or --out to "
                          "start a new run")
    return exists


def _init_state(recipe: Recipe, part: str) -> dict[str, torch.Tensor] | None:
    if part == "vae" and recipe.vae.init:
        return load_tensors(recipes.vae_init_source(recipe.vae.init)[1])
    if not recipe.init:
        return None
    return load_tensors(recipes.init_folder(recipe.init) / f"{part}.safetensors")


# ---------------------------------------------------------------------------------------------
# Stage 1: VAE
# ---------------------------------------------------------------------------------------------

def train_vae(recipe: Recipe, run_dir: Path, resume: bool, progress: bool = True,
              on_step: OnStep | None = None, device: torch.device = ONE_CPU.device) -> dict:
    from kinema.train_vae import VAEStage

    folder = run_dir / "vae"
    resuming = _check_resume(folder, resume)
    done = _vae_result(run_dir)
    if resuming and done is not None and done["steps"] == recipe.vae.steps:
        return done
    with render_pool(render_workers()) as pool:  # batches render ahead in other processes on a big host
        stage = VAEStage(recipe, folder, _source(recipe), resuming, _init_state(recipe, "vae"), device, pool)
        run_loop(stage, recipe.vae.log_every, recipe.vae.checkpoint_every, progress, on_step)
    # A VAE started from a trained one whose encoder is not trained keeps the statistics its DiT learned with.
    started = recipe.init or recipe.vae.init
    keep = recipe.model.vae if started and (recipe.vae.steps == 0 or not recipe.vae.train_encoder) else None
    result = stage.finish(keep_stats=keep)
    clips, videos = recipe.vae.eval_clips, result.get("psnr_videos", recipe.vae.eval_clips)  # older results lack it
    of_videos = f" of {videos} video{'s' * (videos != 1)}" if videos < clips else ""
    print(f"VAE: PSNR {result['psnr']:.2f} dB on {clips} {result['psnr_clips']} clips{of_videos} after "
          f"{result['steps']} steps")
    return result


def _vae_result(run_dir: Path) -> dict | None:
    path = run_dir / "vae" / "result.json"
    return load_json(path) if path.exists() else None


def trained_config(recipe: Recipe, run_dir: Path) -> ModelConfig:
    """The recipe's model config with the trained VAE's per-channel latent mean/std."""
    result = _vae_result(run_dir)
    if result is None:
        raise KinemaError(f"{run_dir} has no trained VAE yet; run the vae stage first (--stage vae)")
    vae_cfg = dataclasses.replace(recipe.model.vae, latents_mean=tuple(result["latents_mean"]),
                                  latents_std=tuple(result["latents_std"]))
    return dataclasses.replace(recipe.model, vae=vae_cfg).validate()


def load_trained_vae(cfg: ModelConfig, run_dir: Path) -> torch.nn.Module:
    from kinema.models.vae import CausalVAE

    vae = CausalVAE(cfg.vae)
    vae.load_state_dict(load_tensors(run_dir / "vae" / "vae.safetensors"))
    return vae.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Latent cache
# ---------------------------------------------------------------------------------------------

def cache_latents(recipe: Recipe, run_dir: Path, progress: bool = True,
                  device: torch.device = ONE_CPU.device) -> None:
    """Encode the recipe's clips per bucket into run_dir/cache; continues an interrupted build."""
    cfg = trained_config(recipe, run_dir)
    vae = load_trained_vae(cfg, run_dir).to(device)
    source = _source(recipe)
    folder = run_dir / "cache"
    weights_hash = hashlib.sha256((run_dir / "vae" / "vae.safetensors").read_bytes()).hexdigest()
    check_manifest(folder, {"fingerprint": f"{weights_hash} {source.describe()}",
                            "buckets": dict(zip(_bucket_names(recipe), _counts(recipe), strict=True))})

    build_cache(folder, source, _buckets(recipe), _counts(recipe), cache_encoder(vae, device),
                batch=cache_batch(device), progress=progress, workers=render_workers(), device=device)


def cache_encoder(vae: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """How the cache encodes: (B, 3, T, H, W) on `device` -> normalized latents (B, C, T', h, w) on the CPU."""

    @torch.no_grad()
    def encode(video: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return vae.encode(video.to(device)).cpu()

    return encode


def cache_batch(device: torch.device) -> int:
    """Clips the cache encodes at once: a GPU wants many, a CPU gains nothing from more than a few."""
    return 4 if device.type == "cpu" else 32


def _buckets(recipe: Recipe) -> list[Bucket]:
    return [Bucket(*b) for b in recipe.buckets]


def _bucket_names(recipe: Recipe) -> list[str]:
    return [b.name for b in _buckets(recipe)]


def _counts(recipe: Recipe) -> list[int]:
    return split_counts(recipe.data.clips, recipe.bucket_weights)


def _source(recipe: Recipe):
    data = recipe.data
    return open_source(data.source, data.seed, recipe.model.fps, data.world, (data.blend_share, data.blend),
                       clip_frames=max(frames for _, _, frames in data.buckets), buckets=len(data.buckets))


# ---------------------------------------------------------------------------------------------
# Stage 2: DiT
# ---------------------------------------------------------------------------------------------

def train_dit(recipe: Recipe, run_dir: Path, resume: bool, progress: bool = True,
              on_step: OnStep | None = None, ranks: Dist = ONE_CPU) -> None:
    """Rectified flow from the recipe's init (or random weights); with [dit] distill_steps = N, distil the
    init model (the teacher) into an N-step student without CFG (kinema.train_distill)."""
    folder = run_dir / "dit"
    cfg = dit_config(recipe, run_dir)
    resuming = _check_resume(folder, resume)
    if resuming and load_state(folder / "checkpoint.pt")["step"] >= recipe.dit.steps:
        return
    stage = _dit_stage(recipe, cfg, run_dir, folder, resuming, ranks)  # a checkpoint that does not fit fails here
    if ranks.is_main:
        with atomic_write(run_dir / "model_config.json") as tmp:
            tmp.write_text(cfg.to_json())
    run_loop(stage, recipe.dit.log_every, recipe.dit.checkpoint_every, progress, on_step)


def dit_config(recipe: Recipe, run_dir: Path) -> ModelConfig:
    """The config the DiT stage trains and exports: a distilled student samples in `distill_steps` Euler steps,
    with the teacher's guidance built in (guidance 1: no unconditional pass)."""
    cfg = trained_config(recipe, run_dir)
    if recipe.dit.distill_steps:
        sampler = dataclasses.replace(cfg.sampler, method="euler", steps=recipe.dit.distill_steps, guidance=1.0)
        cfg = dataclasses.replace(cfg, sampler=sampler)
    return cfg


def _dit_stage(recipe: Recipe, cfg: ModelConfig, run_dir: Path, folder: Path, resuming: bool, ranks: Dist):
    """The DiT stage (or the distillation) training `cfg` (from dit_config) on run_dir's cache."""
    from kinema.train_distill import DistillStage
    from kinema.train_dit import DiTStage

    cache = load_cache(run_dir / "cache", _buckets(recipe), _counts(recipe))
    args = (recipe, cfg, folder, cache, _source(recipe), load_trained_vae(cfg, run_dir), resuming)
    if recipe.dit.distill_steps:
        student = recipe.dit.student_init
        student_state = load_tensors(recipes.init_folder(student) / "dit.safetensors") if student else None
        return DistillStage(*args, dist=ranks, teacher_state=_init_state(recipe, "dit"),
                            guidance=recipe.model.sampler.guidance,
                            student_state=student_state)
    return DiTStage(*args, _init_dit(recipe, cfg), ranks)


def _init_dit(recipe: Recipe, cfg: ModelConfig) -> dict[str, torch.Tensor] | None:
    """The init model's DiT weights in `cfg`'s shapes: the recipe may refine the init's patches (1x4x4 -> 1x2x2)
    and widen its text input."""
    init = _init_state(recipe, "dit")
    return None if init is None else widen_text(resize_patches(init, tuple(cfg.dit.patch_size)), cfg.dit.text_dim)


def time_dit_steps(recipe_path: str | Path, run_dir: str | Path, device: str = "auto", steps: int = 30,
                   warmup: int = 8, overrides: dict[str, Any] | None = None) -> float:
    """Seconds per DiT (or distillation) training step of a recipe whose vae and cache stages are done, from
    a throwaway stage: what a run with a time budget divides it by (scripts/offline_gpu)."""
    recipe = recipes.load(recipe_path, overrides)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(run_dir)
        stage = _dit_stage(recipe, dit_config(recipe, run_dir), run_dir, Path(scratch), False,
                           Dist(0, 1, 0, accel.resolve_device(device)))
        for _ in range(warmup):  # allocations, kernels
            stage.train_step()
        began = time.perf_counter()
        for _ in range(steps):
            stage.train_step()
        return (time.perf_counter() - began) / steps


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def export(run_dir: str | Path, dest_folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write a model folder: the EMA DiT weights (blended towards the init's by [dit] finetune_share), the trained
    VAE and the config with latent stats."""
    from kinema.models.dit import DiT

    run_dir = Path(run_dir)
    config_path = run_dir / "model_config.json"
    checkpoint = run_dir / "dit" / "checkpoint.pt"
    if config_path.exists() and checkpoint.exists():
        cfg = ModelConfig.from_dict(load_json(config_path))
        dit = DiT(cfg.dit)
        ema = EMA(dit, decay=0.0)
        ema.shadow = load_state(checkpoint)["ema"]
        state = ema.model_state(dit)
        if (share := _finetune_share(run_dir)) < 1:  # only then is the init model's folder needed
            state = blend_toward(_init_dit(_run_recipe(run_dir), cfg), state, share)
        dit.load_state_dict(state)
    elif (recipe := _run_recipe(run_dir)) is not None and recipe.keeps_init_dit:
        cfg = trained_config(recipe, run_dir)
        dit = DiT(cfg.dit)
        dit.load_state_dict(_init_state(recipe, "dit"))
    else:
        raise KinemaError(f"{run_dir} holds no trained DiT to export; train it first (kinema train --stage dit)")
    saved = load_json_or_empty(run_dir / "recipe.json").get("recipe", {})  # read, not loaded: its init may be gone
    if saved.get("data", {}).get("source", "world") != "world":  # trained on your videos: not the recipe's own model
        dest = Path(dest_folder).resolve()  # named after it, or after its run for the run's own model/
        own = dest == (run_dir / "model").resolve()
        cfg = dataclasses.replace(cfg, name=run_dir.resolve().name if own else dest.name)
    return save_model(dest_folder, cfg, load_trained_vae(cfg, run_dir), dit, dtype)


def blend_toward(init: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], share: float
                 ) -> dict[str, torch.Tensor]:
    """init + share * (trained - init), tensor by tensor: a fine-tune's weights moved back towards its init
    (WiSE-FT), which keeps what the init could do that a narrow fine-tune forgets."""
    return {name: torch.lerp(init[name].to(value), value, share) if value.is_floating_point() else value
            for name, value in trained.items()}


def _finetune_share(run_dir: Path) -> float:
    """The run's [dit] finetune_share, read without checking the rest of its recipe (whose init may be gone)."""
    path = run_dir / "recipe.json"
    return float(load_json(path)["recipe"].get("dit", {}).get("finetune_share", 1.0)) if path.exists() else 1.0


def _run_recipe(run_dir: Path) -> Recipe | None:
    """The recipe a run folder was trained with (its recipe.json), or None when it has none."""
    path = run_dir / "recipe.json"
    if not path.exists():
        return None
    saved = load_json(path)
    return recipes.from_raw(saved["recipe"], name=saved["name"])


# ---------------------------------------------------------------------------------------------
# Fine-tune weight surgery: an init DiT's weights fitted to a recipe's finer patches or wider text
# ---------------------------------------------------------------------------------------------

def resize_patches(state: dict[str, torch.Tensor], patch: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    """A DiT state dict moved to a smaller spatial patch that divides its own (e.g. 1x4x4 -> 1x2x2), to
    fine-tune a trained model at a finer token grid; every other tensor carries over unchanged.

    A small patch, upsampled by f = old / new to fill an old patch, embeds as that old patch did: the new
    embedding weights are the old ones summed over each f x f block. The output projection predicts each
    new patch pixel as the mean of the old predictions over its f x f block.
    """
    weight = state["patch_embedding.weight"]  # (D, C, 1, p, p)
    old, new = weight.shape[-1], patch[-1]
    if tuple(weight.shape[-3:]) == tuple(patch):
        return state
    if patch[0] != 1 or patch[1] != patch[2] or weight.shape[-2] != old or old % new:
        raise KinemaError(f"cannot move a DiT with 1x{old}x{old} patches to {list(patch)}: the new patch must be "
                          f"1 x q x q with q dividing {old}; keep the init model's patch_size")
    blocks = new, old // new  # an old patch axis = (new position, offset inside its f-block)
    dim, channels = weight.shape[:2]
    out = dict(state)
    out["patch_embedding.weight"] = weight.reshape(dim, channels, 1, *blocks, *blocks).sum(dim=(4, 6))
    proj, bias = state["proj_out.weight"], state["proj_out.bias"]  # rows ordered (ph, pw, C) as _unpatchify
    out_channels = proj.shape[0] // (old * old)
    out["proj_out.weight"] = proj.reshape(*blocks, *blocks, out_channels, -1).mean(dim=(1, 3)).flatten(0, 2)
    out["proj_out.bias"] = bias.reshape(*blocks, *blocks, out_channels).mean(dim=(1, 3)).flatten()
    return out


def widen_text(state: dict[str, torch.Tensor], text_dim: int) -> dict[str, torch.Tensor]:
    """A DiT state dict that reads `text_dim`-wide text states whose first columns are the ones it was trained on
    (text.layers extended, e.g. [-1] -> [-1, 0]): the new input columns start at zero, so the widened DiT predicts
    exactly as before until a fine-tune teaches it the new features."""
    weight = state["text_embedding.0.weight"]  # (D, old text_dim)
    old = weight.shape[1]
    if old == text_dim:
        return state
    if text_dim < old:
        raise KinemaError(f"cannot narrow a DiT's text input from {old} to {text_dim}; a fine-tune may only add "
                          "text.layers after the init model's")
    return {**state, "text_embedding.0.weight": torch.cat([weight, weight.new_zeros(len(weight), text_dim - old)], 1)}
