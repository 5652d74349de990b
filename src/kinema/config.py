"""Dataclass configs for every component, and the preset registry.

A config is plain data (no torch): it is saved as JSON inside every model folder
and read back with unknown keys rejected, so a typo in a config file is an error
instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from kinema.errors import KinemaError

# Every video is generated on a canvas whose sides are multiples of this (sizes.canvas_size), so a model's VAE
# downsampling times its DiT's patch must divide it (Wan2.1's 8 x 2 and the bundled 4 x 4 both make 16).
SIZE_MULTIPLE = 16
WAN_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


@dataclass
class VAEConfig:
    """Causal video VAE. kind "wan": the Wan2.1 layout (8x spatial, 4x temporal), whose weights load from
    diffusers. kind "patch": `patch` (t, h, w) blocks folded into channels and convs at latent resolution
    (models/patch_vae.py), which learns far faster on a CPU; it uses base_dim (width), num_res_blocks and
    time_kernel, not dim_mult or temporal_downsample."""

    kind: str = "wan"
    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    patch: tuple[int, int, int] = (4, 4, 4)  # kind "patch": frames, height, width per latent pixel
    time_kernel: int = 2  # kind "patch": latent frames each conv sees (causal)
    # kind "patch": the same for the decoder, None = time_kernel. A decoder that sees the latent frame before
    # can carry motion across the 4-frame blocks, which one that sees a single latent frame draws as stills.
    decoder_time_kernel: int | None = None
    # kind "patch": channels per video frame of a decoder head that runs at frame rate (0: none). The block head
    # draws each latent frame's frames from the same features, as stills that jump at the next block; this one
    # convolves across frames and block boundaries (docs/MODEL.md, sessions 12-13). It needs a decoder trained
    # with it: a new VAE, or a new decoder on a trained encoder ([vae] fresh_decoder in a recipe).
    frame_head: int = 0
    # kind "patch": the decoder also reads the next latent frame (the last reads itself again), so it knows where a
    # moving object goes and need not smear it over the block; decoding a latent frame waits for the next one.
    # Needs a decoder trained with it, as frame_head does (docs/MODEL.md, session 19).
    decoder_lookahead: bool = False
    # Per-channel statistics that map raw latents to ~N(0, 1) for the DiT.
    latents_mean: tuple[float, ...] = WAN_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN_LATENTS_STD

    @property
    def spatial_factor(self) -> int:
        return self.patch[1] if self.kind == "patch" else 2 ** (len(self.dim_mult) - 1)

    @property
    def decoder_kernel(self) -> int:
        return self.time_kernel if self.decoder_time_kernel is None else self.decoder_time_kernel

    @property
    def temporal_factor(self) -> int:
        return self.patch[0] if self.kind == "patch" else 2 ** sum(bool(d) for d in self.temporal_downsample)

    def validate(self) -> None:
        if self.kind not in ("wan", "patch"):
            raise KinemaError(f"vae.kind {self.kind!r} is unknown; use \"wan\" or \"patch\" in the model's config")
        if self.kind == "patch" and (len(self.patch) != 3 or self.patch[1] != self.patch[2] or min(self.patch) < 1
                                     or min(self.time_kernel, self.decoder_kernel) < 1):
            raise KinemaError(f"vae.patch {list(self.patch)} must be [frames, size, size] with positive values and "
                              "vae.time_kernel and decoder_time_kernel at least 1; fix the model's config")
        if self.decoder_lookahead and self.kind != "patch":
            raise KinemaError("vae.decoder_lookahead needs vae.kind \"patch\"; set it to false in the model's config")
        if self.frame_head < 0 or (self.frame_head and self.kind != "patch"):
            raise KinemaError(f"vae.frame_head = {self.frame_head} must be 0, or positive with vae.kind \"patch\"; "
                              "fix the model's config")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise KinemaError("vae.temporal_downsample needs one entry per downsampling stage "
                              f"({len(self.dim_mult) - 1}); fix the model's config.json")
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise KinemaError(f"vae.latents_mean/std need {self.z_dim} values (z_dim); fix config.json")


@dataclass
class DiTConfig:
    """Diffusion transformer on 1x2x2 spacetime patches (Wan2.1 layout)."""

    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_heads: int = 12
    head_dim: int = 128
    ffn_dim: int = 8960
    num_layers: int = 30
    text_dim: int = 4096
    freq_dim: int = 256
    cross_attn_norm: bool = True
    qk_norm: bool = True
    eps: float = 1e-6
    rope_max_seq_len: int = 1024

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    def tokens(self, frames: int, height: int, width: int) -> int:
        """Spacetime patches (the DiT's sequence length) for latents of (frames, height, width)."""
        pt, ph, pw = self.patch_size
        return (frames // pt) * (height // ph) * (width // pw)

    def validate(self) -> None:
        for name in ("num_heads", "num_layers", "ffn_dim", "freq_dim", "in_channels", "out_channels", "text_dim"):
            if getattr(self, name) < 1:
                raise KinemaError(f"dit.{name}={getattr(self, name)} must be at least 1; the model's config.json is "
                                  "damaged, or the recipe sets it wrong")
        if self.head_dim % 2 or self.head_dim < 12:
            raise KinemaError(f"dit.head_dim={self.head_dim} must be even and at least 12 so rotary "
                              "positions can split it over (t, h, w); use e.g. 64 or 128")


@dataclass
class TextConfig:
    """Text encoder: `minilm` (bundled, offline) or `t5`/`umt5` from a local folder."""

    kind: str = "minilm"
    path: str | None = None  # local folder for t5/umt5; None = the packaged MiniLM
    max_length: int = 64
    dim: int = 384  # the encoder's width times len(layers)
    # Which hidden states the DiT reads, side by side: -1 the last (contextual), 0 the token embeddings before
    # any attention. MiniLM, a sentence-similarity model, gives "moves to the left" and "... right" last states
    # 3.5x closer than "red" and "blue" (docs/MODEL.md, session 18); layer 0 keeps every word apart.
    layers: tuple[int, ...] = (-1,)

    def validate(self) -> None:
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise KinemaError(f"text.layers {list(self.layers)} must list distinct hidden-state indices, e.g. [-1] "
                              "or [-1, 0]")
        if self.kind not in ("minilm", "t5", "umt5"):
            raise KinemaError(f"unknown text encoder kind {self.kind!r}; use minilm, t5 or umt5")
        if self.kind != "minilm" and not self.path:
            raise KinemaError(f"text encoder {self.kind} needs text.path set to a local folder "
                              "holding its config.json, weights and tokenizer")


@dataclass
class SamplerConfig:
    """Default sampling settings; every field can be overridden per call."""

    method: str = "euler"  # euler | heun
    steps: int = 30
    guidance: float = 5.0
    shift: float = 3.0  # time shift at `shift_base_tokens`; grows with sqrt(tokens)
    shift_base_tokens: int = 4096
    # Correlation of neighbouring latent frames' starting noise (sampling.initial_noise); 0 is independent noise,
    # which training draws unless its recipe's [dit] noise_correlation says otherwise.
    noise_correlation: float = 0.0
    # How fast the starting noise travels the way the prompt asks its lone object to go, in short sides per second
    # (prompting.asked_direction, sampling.initial_noise's drift); 0 keeps it in place. The world's objects cover
    # about 0.19 short sides a second.
    noise_drift: float = 0.0
    # Make a pan, tilt or zoom the prompt asks for by moving the output's frame over a larger generated scene
    # (kinema.camera), for models that do not move the camera by themselves: the bundled ones never did (docs/MODEL.md,
    # session 29).
    window_camera: bool = False

    def validate(self) -> None:
        if self.method not in ("euler", "heun"):
            raise KinemaError(f"unknown sampler {self.method!r}; use euler or heun")
        if self.steps < 1:
            raise KinemaError(f"steps must be at least 1, got {self.steps}")
        check_noise_correlation(self.noise_correlation)
        check_noise_drift(self.noise_drift)


# `kinema serve`'s defaults, shared by its options, server.create_app and jobs.Worker.
BENCH_SECTIONS = ("threads", "dit", "e2e", "vae", "memory", "train", "cache", "gpu")  # kinema bench's, in order

CONCURRENCY = 1  # jobs run at once
MAX_QUEUE = 64  # queued jobs before new ones get 429
RETENTION_HOURS = 168.0  # how long finished videos are kept: a week
SWEEP_S = 300.0  # how often expired videos are looked for

MAX_NOISE_CORRELATION = 0.99  # the CLI, the pipeline, the API and the web page all take 0 to this


def check_noise_correlation(rho: float) -> None:
    if not 0 <= rho <= MAX_NOISE_CORRELATION:
        raise KinemaError(f"noise_correlation must be from 0 (independent frames) to {MAX_NOISE_CORRELATION}, "
                          f"got {rho}; try 0.5", param="noise_correlation")


MAX_NOISE_DRIFT = 1.0  # short sides per second; the world's objects move about 0.19


def check_noise_drift(speed: float) -> None:
    if not 0 <= speed <= MAX_NOISE_DRIFT:
        raise KinemaError(f"noise_drift must be from 0 (noise in place) to {MAX_NOISE_DRIFT:g} short sides per "
                          f"second, got {speed}; kinema-small-fast uses 0.125", param="noise_drift")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model from its folder."""

    name: str = "custom"
    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    text: TextConfig = field(default_factory=TextConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    width: int = 256  # default output size and frame rate
    height: int = 256
    fps: int = 8

    def validate(self) -> ModelConfig:
        for part in (self.vae, self.dit, self.text, self.sampler):
            part.validate()
        if self.dit.in_channels != self.vae.z_dim:
            raise KinemaError(f"dit.in_channels={self.dit.in_channels} must equal vae.z_dim={self.vae.z_dim}")
        if self.dit.text_dim != self.text.dim:
            raise KinemaError(f"dit.text_dim={self.dit.text_dim} must equal text.dim={self.text.dim}")
        block = self.vae.spatial_factor * max(self.dit.patch_size[1:])
        if SIZE_MULTIPLE % block:
            _, patch_h, patch_w = self.dit.patch_size
            raise KinemaError(f"the VAE's {self.vae.spatial_factor}x downsampling times the DiT's {patch_h}x{patch_w} "
                              f"patches makes {block} px blocks; Kinema generates on sizes that are multiples of "
                              f"{SIZE_MULTIPLE}, so choose a smaller patch or VAE factor")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return from_dict(cls, data, where="model config").validate()


T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a dict, recursing into nested dataclasses.

    Unknown keys are an error naming the key and the keys that exist, so a typo
    never passes silently. Lists become tuples where the field is a tuple.
    """
    if not isinstance(data, dict):
        raise KinemaError(f"{where} must be a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise KinemaError(f"unknown key {unknown[0]!r} in {where}; valid keys: {', '.join(sorted(known))}")
    kwargs = {}
    hints = get_type_hints(cls)
    for name, value in data.items():
        default = getattr(cls(), name) if _has_default(known[name]) else None
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                keys = ", ".join(f.name for f in fields(default))
                raise KinemaError(f"{where}.{name} must be a table of keys ({keys}), got {value!r}")
            value = from_dict(type(default), value, where=f"{where}.{name}")
        elif isinstance(value, list) and _container(hints[name]) is tuple:
            value = tuple(value)
        _check_type(value, hints[name], f"{where} {name}")
        kwargs[name] = value
    return cls(**kwargs)


_PLAIN_TYPES = {bool: ((bool,), "true or false"), int: ((int,), "a whole number"), float: ((int, float), "a number"),
                str: ((str,), "a string")}


def _container(hint: Any) -> type | None:
    """tuple, list or dict for a hint such as tuple[int, ...] or dict[str, float] | None; else None."""
    union = get_origin(hint) in (UnionType, Union)  # X | None, Optional[X]
    kinds = {get_origin(arg) or arg for arg in (get_args(hint) if union else (hint,))}
    return next((kind for kind in (tuple, list, dict) if kind in kinds), None)


def _check_type(value: Any, hint: Any, where: str) -> None:
    """A one-line error for a value of the wrong kind (e.g. steps = "abc", frames = 5 for a list); what the items
    of a list must be is left to validate."""
    container = _container(hint)
    if container is not None and value is not None and not isinstance(value, container):
        raise KinemaError(f"{where} must be {'a table' if container is dict else 'a list'}, e.g. "
                          f"{'{...}' if container is dict else '[...]'}, got {value!r}")
    if hint not in _PLAIN_TYPES:
        return
    kinds, wanted = _PLAIN_TYPES[hint]
    if (not isinstance(value, kinds) or (isinstance(value, bool) and hint is not bool)
            or (isinstance(value, float) and math.isnan(value))):  # TOML's nan passes every range check
        raise KinemaError(f"{where} must be {wanted}, got {value!r}")


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


# ---------------------------------------------------------------------------------------------
# Presets: one registry, from the tiny CI model to the public Wan2.1-1.3B shape.
# ---------------------------------------------------------------------------------------------

def _debug() -> ModelConfig:
    """Tiny and random: for tests and CI, generates noise-like video in milliseconds."""
    z = 8
    return ModelConfig(
        name="debug",
        vae=VAEConfig(base_dim=8, z_dim=z, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
                      latents_mean=(0.0,) * z, latents_std=(1.0,) * z),
        dit=DiTConfig(in_channels=z, out_channels=z, num_heads=2, head_dim=24, ffn_dim=96,
                      num_layers=2, text_dim=384, freq_dim=32),
        text=TextConfig(kind="minilm", max_length=32, dim=384),
        sampler=SamplerConfig(steps=4, guidance=3.0, shift=1.0, shift_base_tokens=256),
        width=64, height=64, fps=8,
    )


def _small() -> ModelConfig:
    """The bundled model's shape: ~9M-parameter DiT on a 1.6M-parameter patch VAE (4x4x4 blocks, 8 channels).

    The patch VAE runs every conv at latent resolution: it learns the procedural world's flat colours and
    simple shapes in minutes on a CPU, and decodes 3-4x faster than a Wan-layout VAE of the same quality.
    """
    z = 8
    return ModelConfig(
        name="small",
        vae=VAEConfig(kind="patch", base_dim=128, z_dim=z, num_res_blocks=2, time_kernel=1,
                      latents_mean=(0.0,) * z, latents_std=(1.0,) * z),
        dit=DiTConfig(in_channels=z, out_channels=z, patch_size=(1, 4, 4), num_heads=4, head_dim=64,
                      ffn_dim=1024, num_layers=8, text_dim=384, freq_dim=128),
        text=TextConfig(kind="minilm", max_length=48, dim=384),
        # 16 steps: as good as 20 by the judge and 1.22x faster; 12 fell behind at 16:9 and 9:16
        # (bench/results/speed_quality.md)
        sampler=SamplerConfig(steps=16, guidance=4.0, shift=1.5, shift_base_tokens=320),
        width=128, height=128, fps=8,
    )


def _wan21_1_3b() -> ModelConfig:
    """The public Wan2.1-T2V-1.3B shape (weights load from a local diffusers folder)."""
    return ModelConfig(
        name="wan2.1-1.3b",
        vae=VAEConfig(),
        dit=DiTConfig(num_heads=12, head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096),
        text=TextConfig(kind="umt5", path="text_encoder", max_length=512, dim=4096),
        sampler=SamplerConfig(steps=50, guidance=5.0, shift=3.0, shift_base_tokens=32760),
        width=832, height=480, fps=16,
    )


PRESETS = {"debug": _debug, "small": _small, "wan2.1-1.3b": _wan21_1_3b}


def preset(name: str) -> ModelConfig:
    """The config of a named preset; unknown names list the valid ones."""
    if name not in PRESETS:
        raise KinemaError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} or pass a model folder")
    return PRESETS[name]().validate()


def load_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON file, turning a corrupt or missing file into a one-line error."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise KinemaError(f"{path} not found; a model folder needs config.json beside its weights") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise KinemaError(f"{path} is not valid JSON ({err}); restore or regenerate it") from None
