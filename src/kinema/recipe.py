"""Training recipes: one TOML file says what to train, on what data, for how long.

    [model]  preset = "small" plus any ModelConfig keys to override (e.g. [model.dit] num_layers = 6);
             init = a model folder (or "default") to fine-tune instead of starting from random weights
    [data]   source = "world" or a folder / JSONL / CSV of (path, caption); buckets; latent-cache clips; seed
    [data.world]  which of the world's scenes to draw (kinema.world_scene.SceneMix), e.g. objects = [1] or
             stay_in_frame = false (moving objects may leave the frame)
    [data.blend]  a second scene mix, for [data] blend_share of the world's clips (e.g. a curriculum)
    [vae]    stage 1: the causal VAE on small fp32 crops; init = another trained VAE to start from
    [dit]    stage 2: the DiT on cached latents with rectified flow, or with distill_steps the distillation of the
             init model (the teacher) into a student, which starts as the teacher or from student_init

Unknown keys are errors (a typo never passes silently); `overrides` from the command line are
merged in first, as nested dicts or dotted keys ({"dit.steps": 10}).
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kinema.checkpoint import BUNDLED, BUNDLED_MODELS
from kinema.conditioning import MASK_KINDS
from kinema.config import ModelConfig, VAEConfig, check_noise_correlation, from_dict, load_json, preset
from kinema.errors import KinemaError
from kinema.world_scene import SceneMix


@dataclass
class DataRecipe:
    source: str = "world"  # "world" or a folder / .jsonl / .csv of (path, caption) rows
    # (width, height, frames) per bucket; frames = 1 is an image. Each batch comes from one bucket.
    buckets: tuple[tuple[int, int, int], ...] = ((128, 128, 17), (128, 128, 1))
    bucket_weights: tuple[float, ...] = ()  # share of cached clips and of batches per bucket; () = equal
    clips: int = 2000  # clips in the latent cache, over all buckets
    seed: int = 0
    # World only: which scenes to draw; the whole world by default. Narrower mixes make curricula, and
    # stay_in_frame = false lets objects glide out of the frame, so a first frame no longer tells their direction.
    # The eval's hold-out is always the whole world, in frame.
    world: SceneMix = field(default_factory=SceneMix)
    # A share of the world's clips drawn from a second mix instead, e.g. a curriculum of single objects blended
    # into the whole world so that what it teaches does not cost the rest (docs/MODEL.md, session 18).
    blend_share: float = 0.0
    blend: SceneMix = field(default_factory=SceneMix)


@dataclass
class VAERecipe:
    # The VAE to start from instead of the init model's (or random weights): a model folder or bundled name, or a
    # run folder whose vae stage has finished. With [model] init and steps = 0 the init's DiT moves to this VAE's
    # latents; it must have the init's latent channels and patch (docs/MODEL.md, session 20).
    init: str = ""
    steps: int = 1200
    batch: int = 2
    crop: int = 64  # square training crops; fp32 only (bf16 conv3d weight grads crash this CPU)
    frames: tuple[int, ...] = (1, 5, 9)  # clip lengths drawn per step, each 1 + 4k
    lr: float = 3e-4
    warmup: int = 50
    grad_clip: float = 1.0
    kl_weight: float = 1e-4
    edge_weight: float = 0.5  # L1 on spatial gradients keeps edges sharp
    motion_weight: float = 0.0  # pixels that change from frame to frame weigh up to 1 + 2x this (train_vae)
    # Decode a posterior sample (a classic VAE) instead of the mean. With a small KL weight the posterior
    # std shrinks only slowly (still ~0.65 after 3k steps), so sampling teaches the decoder to blur; the
    # DiT only ever sees latent means.
    sample_posterior: bool = False
    # false: fine-tune the init model's decoder only. Its latents, their statistics and so its DiT stay valid,
    # e.g. to give the decoder a longer time kernel ([model.vae] decoder_time_kernel).
    train_encoder: bool = True
    # With train_encoder = false: the decoder starts from random weights instead of the init's, so its shape may
    # change too ([model.vae] frame_head, decoder_time_kernel) while the latents, and the DiT, stay the init's.
    fresh_decoder: bool = False
    eval_every: int = 200
    eval_clips: int = 4  # held-out clips (never trained on) for PSNR
    # Hold-out prompts whose world renders the judge reads after the VAE's round trip, at each eval (0: none), whatever
    # the source: the most any DiT on this VAE could score (docs/MODEL.md, session 19). PSNR is mostly the
    # backgrounds; this is the small moving objects the targets are about.
    judge_clips: int = 0
    stats_clips: int = 32  # clips over which the per-channel latent mean/std are measured
    checkpoint_every: int = 200
    log_every: int = 10


@dataclass
class DiTRecipe:
    steps: int = 6000
    batch_tokens: int = 2560  # latent tokens per batch: batch = batch_tokens // tokens of the bucket
    max_batch: int = 32
    lr: float = 3e-4
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # "" captions teach the unconditional branch of CFG
    bf16: bool = True
    mask_probs: dict[str, float] = field(default_factory=lambda: dict(MASK_KINDS))
    # Share of clips whose given frames are given only in part (a box of whole tokens; the first frame if none),
    # as image to video and extensions give them when a camera move crosses a larger scene (docs/MODEL.md,
    # session 32). 0 draws exactly the masks of before.
    outpaint_share: float = 0.0
    t_mean: float = 0.0  # logit-normal training times
    t_std: float = 1.0
    # Correlation of neighbouring latent frames in the noise the DiT learns from (sampling.initial_noise's AR chain,
    # a temporally correlated prior as in PYoCo). 0 = independent. A model trained at rho > 0 samples at rho, so
    # [model.sampler] noise_correlation must say the same.
    noise_correlation: float = 0.0
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 20
    sample_prompts: tuple[str, ...] = ()  # () = a few captions of the training data
    sample_steps: int = 0  # 0 = the model's default sampler steps
    # Held-out world clips for the word probe (kinema.probe) at every sample: metrics.jsonl logs, per attribute,
    # how often the true caption beats a changed one (0.5 = the word is ignored). 0 = off; world data only.
    probe_clips: int = 16
    # N > 0: distil the init model (the teacher, sampled with 2N guided steps) into an N-step student that needs
    # no CFG, instead of training with rectified flow (kinema.train_distill)
    distill_steps: int = 0
    # A distillation's student starts from this model's DiT (a bundled name or a folder, e.g. an earlier student of
    # the same shape) instead of as a copy of its teacher. "" = the teacher.
    student_init: str = ""
    # The share of the fine-tune's change to the init DiT that the export keeps: init + share * (trained - init)
    # (WiSE-FT). Below 1 it keeps more of what the init could do, e.g. after a narrow curriculum (docs/MODEL.md,
    # session 26). Needs [model] init; 1 = the trained weights as they are.
    finetune_share: float = 1.0


@dataclass
class Recipe:
    name: str
    model: ModelConfig
    init: str  # model folder whose weights training starts from ("" = random init)
    data: DataRecipe
    vae: VAERecipe
    dit: DiTRecipe
    raw: dict[str, Any]  # the merged TOML, saved into the run folder

    @property
    def buckets(self) -> list[tuple[int, int, int]]:
        return [tuple(b) for b in self.data.buckets]

    @property
    def bucket_weights(self) -> list[float]:
        return list(self.data.bucket_weights) or [1.0] * len(self.data.buckets)

    @property
    def keeps_init_dit(self) -> bool:
        """A fine-tune of the VAE alone (dit.steps = 0 on an init model): its DiT is exported as it is, untrained."""
        return bool(self.init) and self.dit.steps == 0


RECIPES = Path(__file__).parent / "recipes"  # the repository's configs/, shipped inside the package


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe TOML file, with overrides merged in. A bundled recipe's name ("small") or its
    path in the repository ("configs/small.toml") works wherever Kinema is installed."""
    path = Path(path)
    bundled = RECIPES / f"{path.stem}.toml"
    if not path.exists() and bundled.is_file() and str(path) in (path.stem, f"configs/{path.name}"):
        path = bundled
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        names = ", ".join(sorted(p.stem for p in RECIPES.glob("*.toml")))
        raise KinemaError(f"recipe {path} not found; pass a TOML file or a bundled recipe ({names})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise KinemaError(f"recipe {path} is not valid TOML ({err}); fix the file") from None
    return from_raw(merge(raw, overrides or {}), name=path.stem)


def from_raw(raw: dict[str, Any], name: str) -> Recipe:
    unknown = sorted(set(raw) - {"model", "data", "vae", "dit"})
    if unknown:
        raise KinemaError(f"unknown section [{unknown[0]}] in recipe; valid sections: model, data, vae, dit")
    model_raw = dict(raw.get("model", {}))
    base = preset(str(model_raw.pop("preset", "small")))
    init = str(model_raw.pop("init", ""))
    if init:  # fine-tuning: the architecture is the init model's
        base = ModelConfig.from_dict(load_json(init_folder(init) / "config.json"))
    vae_raw = raw.get("vae", {})
    vae_init = str(vae_raw.get("init", "")) if isinstance(vae_raw, dict) else ""
    if vae_init:  # a fine-tune (or a new DiT) on another trained VAE
        base = _with_vae(base, vae_init_source(vae_init)[0], init)
    model = ModelConfig.from_dict(merge(base.to_dict(), model_raw))
    recipe = Recipe(name=name, model=model, init=init,
                    data=from_dict(DataRecipe, raw.get("data", {}), where="recipe [data]"),
                    vae=from_dict(VAERecipe, raw.get("vae", {}), where="recipe [vae]"),
                    dit=from_dict(DiTRecipe, raw.get("dit", {}), where="recipe [dit]"), raw=raw)
    if init:
        _check_architecture(base, model, distill=bool(recipe.dit.distill_steps),
                            fresh_decoder=recipe.vae.fresh_decoder)
    elif vae_init:
        _check_vae(base.vae, model.vae, recipe.vae.fresh_decoder)
    validate(recipe)
    if recipe.dit.student_init:  # after validate: a student_init without distill_steps is the first error
        _check_student(recipe.dit.student_init, model)
    return recipe


def _check_architecture(base: ModelConfig, model: ModelConfig, distill: bool, fresh_decoder: bool) -> None:
    """A fine-tune keeps its init model's VAE, DiT and text encoder. Only the decoder's time kernel may grow
    (train_vae widens those weights), or the whole decoder change when it starts fresh; the DiT's patch may get
    finer and its text input wider, for text layers appended to the init's (train.py adapts those weights), but
    not for a distillation, whose student starts as its teacher."""
    _check_vae(base.vae, model.vae, fresh_decoder)
    _keep_init("dit", base.dit, model.dit, () if distill else ("patch_size", "text_dim"),
               "only patch_size may be made finer and text_dim follow text.layers, and not when distilling")
    _keep_init("text", base.text, model.text, ("max_length",) if distill else ("max_length", "layers", "dim"),
               "only max_length may change, and layers be extended when not distilling")
    if model.text.layers[:len(base.text.layers)] != base.text.layers:
        raise KinemaError(f"recipe [model.text] layers = {list(model.text.layers)} must begin with the init model's "
                          f"{list(base.text.layers)}: its DiT reads those states first; append new ones after them")


def _check_student(student_init: str, model: ModelConfig) -> None:
    """A student started from another model must have its teacher's DiT and text encoder (any max_length)."""
    student = ModelConfig.from_dict(load_json(init_folder(student_init, "[dit] student_init") / "config.json"))
    if (student.dit, replace(student.text, max_length=model.text.max_length)) != (model.dit, model.text):
        raise KinemaError(f"recipe [dit] student_init={student_init!r} has another DiT or text encoder than the "
                          "teacher ([model] init); name a model of the teacher's shape, e.g. an earlier student of it")


def _with_vae(base: ModelConfig, vae: VAEConfig, init: str) -> ModelConfig:
    """`base` with the VAE of [vae] init; an init model's DiT reads latents of the same channels and patch only."""
    if init and (vae.z_dim, vae.spatial_factor, vae.temporal_factor) != (
            base.vae.z_dim, base.vae.spatial_factor, base.vae.temporal_factor):
        raise KinemaError(f"recipe [vae] init gives {vae.z_dim}-channel latents of {vae.temporal_factor}x"
                          f"{vae.spatial_factor}x{vae.spatial_factor} patches, but the init model's DiT reads "
                          f"{base.vae.z_dim} channels of {base.vae.temporal_factor}x{base.vae.spatial_factor}x"
                          f"{base.vae.spatial_factor}; give a VAE of the same latent shape, or drop [model] init")
    return replace(base, vae=vae, dit=replace(base.dit, in_channels=vae.z_dim, out_channels=vae.z_dim))


def vae_init_source(source: str) -> tuple[VAEConfig, Path]:
    """The config (with its latent statistics) and weights file of a recipe's [vae] init: a model folder or bundled
    name, or a run folder whose vae stage has finished."""
    folder = BUNDLED_MODELS.get(source, Path(source))
    if (folder / "config.json").is_file() and (folder / "vae.safetensors").is_file():
        return ModelConfig.from_dict(load_json(folder / "config.json")).vae, folder / "vae.safetensors"
    result, saved = folder / "vae" / "result.json", folder / "recipe.json"
    if result.is_file() and saved.is_file():
        stats, run = load_json(result), load_json(saved)
        vae = from_raw(run["recipe"], name=run["name"]).model.vae
        return (replace(vae, latents_mean=tuple(stats["latents_mean"]), latents_std=tuple(stats["latents_std"])),
                folder / "vae" / "vae.safetensors")
    raise KinemaError(f"recipe [vae] init={source!r} is neither a model folder (config.json + vae.safetensors) nor a "
                      "run folder whose vae stage has finished (recipe.json + vae/result.json); give one of those")


def _check_vae(old: VAEConfig, new: VAEConfig, fresh_decoder: bool) -> None:
    """A VAE that starts from a trained one keeps its architecture, but for the decoder changes that train_vae
    can start: a longer time kernel, or any decoder when it starts fresh."""
    if fresh_decoder:
        _keep_init("vae", old, new, ("decoder_time_kernel", "frame_head", "decoder_lookahead"),
                   "a fresh decoder may change only decoder_time_kernel, frame_head and decoder_lookahead")
    else:
        _keep_init("vae", old, new, ("decoder_time_kernel",), "only decoder_time_kernel may grow")
    if not fresh_decoder and new.decoder_kernel < old.decoder_kernel:
        raise KinemaError(f"recipe [model.vae] decoder_time_kernel = {new.decoder_kernel} is shorter than the "
                          f"trained VAE's {old.decoder_kernel} it starts from; a fine-tune may only lengthen it")


_PART_NAMES = {"vae": "VAE", "dit": "DiT", "text": "text encoder"}


def _keep_init(section: str, old_cfg: Any, new_cfg: Any, may_change: tuple[str, ...], allowed: str) -> None:
    """One-line error for the first field (in declaration order) of [model.<section>] that differs from the init's,
    other than those in `may_change`."""
    old, new = asdict(old_cfg), asdict(new_cfg)
    for key in old:
        if key not in may_change and old[key] != new[key]:
            raise KinemaError(f"recipe [model.{section}] {key} = {new[key]} differs from the init model's {old[key]}; "
                              f"a fine-tune keeps its init's {_PART_NAMES[section]} ({allowed}): drop the setting, "
                              "or set [model] init = \"\" to train from scratch")


def init_folder(init: str, key: str = "[model] init") -> Path:
    """The Kinema model folder a recipe's `init` (or another `key`) names: a bundled name, "default" (the bundled
    base model that training continues, kinema-small) or a folder."""
    folder = BUNDLED if init == "default" else BUNDLED_MODELS.get(init, Path(init))
    if not (folder / "dit.safetensors").is_file():
        raise KinemaError(f"recipe {key}={init!r} is not a Kinema model folder (config.json + "
                          "dit.safetensors + vae.safetensors); give one, or \"\" to start from random weights")
    return folder


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `overrides` (nested dicts or dotted keys like "dit.steps") into a copy of `base`."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = merged
        for depth, part in enumerate(parents, 1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise KinemaError(f"{'.'.join(parents[:depth])} is a value, not a table: cannot set {key}")
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = merge(node[leaf], value)
        else:
            node[leaf] = copy.deepcopy(value)
    return merged


def validate(recipe: Recipe) -> None:
    """A one-line error for the first value of the recipe that cannot train, checked section by section."""
    for check in (_validate_buckets, _validate_data, _validate_vae, _validate_dit, _validate_finetune,
                  _validate_loops):
        check(recipe)


def _validate_data(recipe: Recipe) -> None:
    data = recipe.data
    if data.bucket_weights and (len(data.bucket_weights) != len(data.buckets) or min(data.bucket_weights) < 0
                                or sum(data.bucket_weights) <= 0):
        raise KinemaError("recipe [data] bucket_weights needs one non-negative weight per bucket")
    if data.clips < len(data.buckets):
        raise KinemaError(f"recipe [data] clips={data.clips} is fewer than the {len(data.buckets)} buckets")
    if data.world.describe() and data.source != "world":  # describe() is "" for the whole world, in any order
        raise KinemaError("recipe [data.world] chooses the world's scenes; a folder's videos are as they are, "
                          "so drop it or set source = \"world\"")
    if not 0 <= data.blend_share < 1 or (data.blend_share and data.source != "world"):
        raise KinemaError(f"recipe [data] blend_share = {data.blend_share} must be at least 0 and below 1, and above 0 "
                          "only for source = \"world\" (the share of clips drawn from [data.blend])")
    if data.blend.describe() and not data.blend_share:
        raise KinemaError("recipe [data.blend] is a scene mix no clip is drawn from; set [data] blend_share, e.g. 0.2")


def _validate_vae(recipe: Recipe) -> None:
    vae, tf = recipe.vae, recipe.model.vae.temporal_factor
    if vae.motion_weight < 0 or vae.edge_weight < 0:
        raise KinemaError(f"recipe [vae] edge_weight = {vae.edge_weight} and motion_weight = {vae.motion_weight} "
                          "must be at least 0")
    if vae.judge_clips < 0:
        raise KinemaError(f"recipe [vae] judge_clips = {vae.judge_clips} must be at least 0 (0: no judge)")
    if (vae.crop < recipe.model.vae.spatial_factor or vae.crop % recipe.model.vae.spatial_factor
            or vae.crop > min(min(b[:2]) for b in recipe.data.buckets)):
        raise KinemaError(f"recipe [vae] crop={vae.crop} must be a multiple of {recipe.model.vae.spatial_factor} "
                          "and no larger than the smallest bucket side")
    if not vae.frames or any((f - 1) % tf for f in vae.frames):
        raise KinemaError(f"recipe [vae] frames {list(vae.frames)} must each be 1 + {tf}k, e.g. [1, 5, 9]")
    if not vae.train_encoder and not (recipe.init or vae.init):
        raise KinemaError("recipe [vae] train_encoder = false fine-tunes a trained model's decoder: set [model] init "
                          "(or [vae] init) to its folder, or train_encoder = true to train a whole VAE")
    if vae.fresh_decoder and vae.train_encoder:
        raise KinemaError("recipe [vae] fresh_decoder = true trains a new decoder on the init model's frozen "
                          "encoder: set train_encoder = false too")


def _validate_dit(recipe: Recipe) -> None:
    dit = recipe.dit
    unknown = sorted(set(dit.mask_probs) - set(MASK_KINDS))
    if unknown:
        raise KinemaError(f"unknown mask kind {unknown[0]!r} in [dit] mask_probs; use {', '.join(MASK_KINDS)}")
    if min(dit.mask_probs.values(), default=-1) < 0 or sum(dit.mask_probs.values()) <= 0:
        raise KinemaError("recipe [dit] mask_probs need non-negative weights with a positive sum, e.g. none = 1")
    if not 0 <= dit.outpaint_share <= 1:
        raise KinemaError(f"recipe [dit] outpaint_share={dit.outpaint_share} must be between 0 and 1, e.g. 0.1")
    if not 0 <= dit.caption_dropout < 1 or not 0 < dit.ema_decay < 1:
        raise KinemaError("recipe [dit] needs 0 <= caption_dropout < 1 and 0 < ema_decay < 1")
    check_noise_correlation(dit.noise_correlation)
    if dit.noise_correlation and dit.noise_correlation != recipe.model.sampler.noise_correlation:
        raise KinemaError(f"recipe [dit] noise_correlation = {dit.noise_correlation} trains the DiT on noise it must "
                          f"be sampled from too, but [model.sampler] noise_correlation is "
                          f"{recipe.model.sampler.noise_correlation}; set both to the same value")


def _validate_finetune(recipe: Recipe) -> None:
    """What starts from a trained model: fine-tunes, VAE swaps and distillation."""
    vae, dit = recipe.vae, recipe.dit
    if vae.init and dit.distill_steps:
        raise KinemaError("recipe [vae] init gives the model another VAE, but a distilled student keeps its teacher's: "
                          "drop [vae] init, or distil a model that was trained on that VAE")
    if not 0 < dit.finetune_share <= 1 or (dit.finetune_share < 1 and (not recipe.init or dit.distill_steps)):
        raise KinemaError(f"recipe [dit] finetune_share = {dit.finetune_share} must be above 0 and at most 1, and "
                          "below 1 only for a fine-tune: with [model] init and without distill_steps")
    if dit.student_init and not dit.distill_steps:
        raise KinemaError("recipe [dit] student_init starts a distillation's student; set [dit] distill_steps too, or "
                          "[model] init to continue training a model")
    if dit.distill_steps < 0 or (dit.distill_steps and not recipe.init):
        raise KinemaError("recipe [dit] distill_steps distils a trained model: set [model] init to the teacher's "
                          "folder (or \"default\"), or distill_steps = 0 to train with rectified flow")


def _validate_loops(recipe: Recipe) -> None:
    """Steps, rates, batches and intervals of both training loops."""
    for section, values in (("vae", recipe.vae), ("dit", recipe.dit)):
        if values.steps < 0:
            raise KinemaError(f"recipe [{section}] steps must be 0 or more, got {values.steps}")
        if not 0 < values.lr < math.inf:
            raise KinemaError(f"recipe [{section}] lr must be a finite number above 0, got {values.lr}")
        for name in ("batch", "batch_tokens", "max_batch", "eval_every", "stats_clips", "eval_clips",
                     "checkpoint_every", "sample_every", "log_every"):
            if getattr(values, name, 1) < 1:
                raise KinemaError(f"recipe [{section}] {name} must be at least 1")


def _validate_buckets(recipe: Recipe) -> None:
    factor = recipe.model.vae.spatial_factor * recipe.model.dit.patch_size[1]
    tf = recipe.model.vae.temporal_factor
    if not recipe.data.buckets:
        raise KinemaError("recipe [data] buckets is empty; list [width, height, frames] sizes, e.g. [[128, 128, 17]]")
    for bucket in recipe.data.buckets:
        if len(bucket) != 3 or any(not isinstance(v, int) or v < 1 for v in bucket):
            raise KinemaError(f"bucket {list(bucket)} must be [width, height, frames] positive integers")
        width, height, frames = bucket
        if width % factor or height % factor:
            raise KinemaError(f"bucket {list(bucket)}: width and height must be multiples of {factor}")
        if (frames - 1) % tf:
            raise KinemaError(f"bucket {list(bucket)}: frames must be 1 + {tf}k (e.g. 1, 17, 33)")
