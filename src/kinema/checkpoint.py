"""Model folders: config.json + safetensors, loadable by path; and diffusers-layout import.

A Kinema model folder holds `config.json` (the full ModelConfig), `vae.safetensors` and
`dit.safetensors`. A diffusers folder (Wan2.1-T2V-*-Diffusers layout: `transformer/`,
`vae/`, `text_encoder/`, `tokenizer/`) is converted on load. Every write is atomic.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kinema.config import ModelConfig, TextConfig, load_json, preset
from kinema.errors import KinemaError
from kinema.io import atomic_path

WEIGHTS = Path(__file__).parent / "weights"
BUNDLED = WEIGHTS / "small"  # kinema-small: the trained base, where fine-tunes and distillations start
BUNDLED_FAST = WEIGHTS / "small-fast"  # kinema-small-fast: distilled from it (8 steps, no CFG)
BUNDLED_MODELS = {"kinema-small": BUNDLED, "kinema-small-fast": BUNDLED_FAST}
DEFAULT_MODEL = "kinema-small-fast"  # what `kinema generate`, `eval`, `bench` and the server use unless told


def bundled_folder(spec: str | Path | None) -> Path | None:
    """The folder of a bundled model's name ("", "default" and None: the default one); None for anything else."""
    name = DEFAULT_MODEL if spec is None or str(spec) in ("", "default") else str(spec)
    return BUNDLED_MODELS.get(name)


@dataclass
class Model:
    cfg: ModelConfig
    vae: torch.nn.Module
    dit: torch.nn.Module
    text: torch.nn.Module
    source: str  # where it was loaded from, for metadata and the API's model name


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`, creating its folder; renamed over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        yield tmp


def lock_folder(folder: Path, busy: str) -> BinaryIO:
    """Hold `folder` for this process until the returned file is closed (or the process dies): a second process
    wanting it gets the one-line error `busy`."""
    try:
        lock = open(folder / ".lock", "ab")  # noqa: SIM115 - the caller holds it, and closes it
    except OSError as err:
        raise KinemaError(f"cannot use {folder} ({err.strerror or err}); choose a writable folder") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise KinemaError(busy) from None
    return lock


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> None:
    tensors = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise KinemaError(f"{path} not found; the model folder is incomplete, re-save or re-download it")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise KinemaError(f"{path} is not a readable safetensors file ({err}); restore it from a backup") from None


MODEL_FILES = ("vae.safetensors", "dit.safetensors", "config.json")  # in the order they are written


def save_model(folder: str | Path, cfg: ModelConfig, vae: torch.nn.Module, dit: torch.nn.Module,
               dtype: torch.dtype | None = None) -> Path:
    """Write a self-describing model folder. The files go into a new folder beside it, which then takes its
    place, so a crash leaves the model that was there whole, never old and new files mixed."""
    folder = Path(folder)
    check_model_target(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()
    try:
        save_tensors(staging / "vae.safetensors", vae.state_dict(), dtype)
        save_tensors(staging / "dit.safetensors", dit.state_dict(), dtype)
        (staging / "config.json").write_text(cfg.to_json())
        _put_in_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def check_model_target(folder: Path) -> None:
    """A model may be written to `folder`: new, a model folder, or a folder without a config.json of its own
    (a model's files would replace a user's)."""
    if folder.exists() and not folder.is_dir():
        raise KinemaError(f"cannot write a model to {folder}: it is a file; give a folder name")
    if (folder / "config.json").exists() and not (folder / "dit.safetensors").exists():
        raise KinemaError(f"cannot write a model to {folder}: its config.json is not a Kinema model's and would be "
                          "replaced; give a new folder name")


def _put_in_place(staging: Path, folder: Path) -> None:
    """Make the staged model `folder`: a rename when `folder` is new or holds only a model; file by file
    (each atomic, the config last) when it holds other files too, which stay."""
    if folder.is_dir() and any(entry.name not in MODEL_FILES for entry in folder.iterdir()):
        for name in MODEL_FILES:
            os.replace(staging / name, folder / name)
        return
    if not folder.exists():
        staging.rename(folder)
        return
    old = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.old"
    folder.rename(old)  # between these renames a crash leaves both models, under their dotted names
    staging.rename(folder)
    shutil.rmtree(old)


def load_model(spec: str | Path | None = None, dtype: torch.dtype = torch.float32) -> Model:
    """Load by bundled name, preset name (random weights), Kinema folder, or diffusers folder; None = the
    default bundled model."""
    kind, where = locate_model(spec)
    if kind == "preset":
        with torch.random.fork_rng():  # the same random weights at every load, the caller's RNG untouched
            torch.manual_seed(0)
            return _build(preset(str(where)), None, None, dtype, source=str(where))
    return (_load_kinema if kind == "kinema" else _load_diffusers)(Path(where), dtype)


def load_config(spec: str | Path | None = None) -> tuple[ModelConfig, str]:
    """(config, source) of a model, as load_model would load it, without its weights (the CLI checks a request
    against it before it spends seconds loading the model)."""
    kind, where = locate_model(spec)
    if kind == "preset":
        return preset(str(where)), str(where)
    return (_kinema_config if kind == "kinema" else _diffusers_config)(Path(where)), str(where)


def locate_model(spec: str | Path | None = None) -> tuple[str, Path | str]:
    """What a model spec names, checked without loading it (a server checks its models at start):
    ("kinema", folder), ("diffusers", folder) or ("preset", name)."""
    bundled = bundled_folder(spec)
    if bundled is not None:
        if not (bundled / "config.json").exists():
            raise KinemaError(f"the bundled model {bundled.name} is not installed; reinstall kinema or pass "
                              "--model debug")
        return "kinema", bundled
    path = Path(spec)
    if path.is_dir():
        if (path / "config.json").exists() and (path / "dit.safetensors").exists():
            return "kinema", path
        if (path / "transformer").is_dir() and (path / "vae").is_dir():
            return "diffusers", path
        run = (path / "model" / "config.json").exists()
        hint = f" (a training run: its model is in {path / 'model'})" if run else ""
        raise KinemaError(f"{path} is not a model folder{hint}: expected config.json + dit.safetensors + "
                          "vae.safetensors, or a diffusers folder with transformer/ and vae/")
    if str(spec) in _preset_names():
        return "preset", str(spec)
    if path.is_file():
        raise KinemaError(f"{path} is a file; --model takes a model folder (config.json + dit.safetensors + "
                          "vae.safetensors), a bundled model's name or a preset")
    names = f"a bundled model ({', '.join(BUNDLED_MODELS)}) or a preset ({', '.join(_preset_names())})"
    if path.suffix or os.sep in str(spec):
        raise KinemaError(f"model folder {spec} not found; pass an existing folder, {names}")
    close = difflib.get_close_matches(str(spec), [*BUNDLED_MODELS, *_preset_names()], n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    raise KinemaError(f"unknown model {spec!r}{guess}; pass {names}, or a model folder")


def _preset_names() -> list[str]:
    from kinema.config import PRESETS

    return list(PRESETS)


# What a model folder's config.json must state: the weights' shapes. Left out, a default would be taken, and the
# weights would then be reported as not fitting a shape the folder never claimed. (Other keys may be missing: a
# folder written before they existed takes their defaults.)
SHAPING_KEYS = {"vae": ("kind", "z_dim"), "text": ("kind", "dim"),
                "dit": ("in_channels", "out_channels", "patch_size", "num_heads", "head_dim", "ffn_dim", "num_layers",
                        "text_dim")}


def _load_kinema(folder: Path, dtype: torch.dtype) -> Model:
    cfg = _kinema_config(folder)
    vae_sd = load_tensors(folder / "vae.safetensors")
    dit_sd = load_tensors(folder / "dit.safetensors")
    return _build(cfg, vae_sd, dit_sd, dtype, source=str(folder))


def _kinema_config(folder: Path) -> ModelConfig:
    data = load_json(folder / "config.json")
    missing = [f"{part}.{key}" for part, keys in SHAPING_KEYS.items() for key in keys
               if not isinstance(data.get(part), dict) or key not in data[part]]
    if missing:
        raise KinemaError(f"{folder / 'config.json'} does not state {', '.join(missing)}, which shape the weights; "
                          "restore the config.json that was written with them")
    return ModelConfig.from_dict(data)


def _load_diffusers(folder: Path, dtype: torch.dtype) -> Model:
    from kinema import diffusers_layout as layout

    cfg = _diffusers_config(folder)
    dit_sd = layout.dit_state_dict(_load_sharded(folder / "transformer"))
    vae_sd = layout.vae_state_dict(_load_sharded(folder / "vae"))
    return _build(cfg, vae_sd, dit_sd, dtype, source=str(folder))


def _diffusers_config(folder: Path) -> ModelConfig:
    from kinema import diffusers_layout as layout

    dit_cfg = layout.dit_config(load_json(folder / "transformer" / "config.json"))
    vae_cfg = layout.vae_config(load_json(folder / "vae" / "config.json"))
    text_kind = "umt5" if "umt5" in str(load_json_or_empty(folder / "text_encoder" / "config.json")).lower() else "t5"
    return ModelConfig(name=folder.name, vae=vae_cfg, dit=dit_cfg,
                       text=TextConfig(kind=text_kind, path=".", max_length=512, dim=dit_cfg.text_dim),  # the folder
                       width=832, height=480, fps=16).validate()


def load_json_or_empty(path: Path) -> dict:
    return load_json(path) if path.exists() else {}


def _load_sharded(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise KinemaError(f"no .safetensors weights in {folder}; download the model's weights into it")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_tensors(f))
    return state


def _build(cfg: ModelConfig, vae_sd: dict | None, dit_sd: dict | None, dtype: torch.dtype, source: str) -> Model:
    from kinema.models.dit import DiT
    from kinema.models.text import TextEncoder
    from kinema.models.vae import CausalVAE

    text_root = Path(source) if Path(source).is_dir() else None
    text = TextEncoder(cfg.text, root=text_root)  # first: a missing encoder folder is found before a big DiT is built
    vae, dit = CausalVAE(cfg.vae), DiT(cfg.dit)
    for name, module, sd in (("vae", vae, vae_sd), ("dit", dit, dit_sd)):
        if sd is not None:
            _load_strict(name, module, sd, source)
    for m in (vae, dit):
        m.to(dtype).eval().requires_grad_(False)
    return Model(cfg, vae, dit, text, source)


def _load_strict(name: str, module: torch.nn.Module, sd: dict, source: str) -> None:
    """Load weights, converting dtype; a shape or key mismatch is a clear error, not a traceback."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    if missing or extra:
        raise KinemaError(f"{name} weights in {source} do not fit its config.json "
                          f"(missing {missing[:3]}, unexpected {extra[:3]}); the folder is mixed up or corrupt")
    for k, v in sd.items():
        if v.shape != own[k].shape:
            raise KinemaError(f"{name} weight {k} in {source} has shape {tuple(v.shape)}, config expects "
                              f"{tuple(own[k].shape)}; the folder's config.json does not match its weights")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()})
