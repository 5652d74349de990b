"""Import of diffusers' Wan2.1 layout: a WanTransformer3DModel's and an AutoencoderKLWan's config.json and weights
turned into Kinema's DiTConfig / VAEConfig and state dicts (checkpoint.load_model reads a diffusers folder with these).
Text-to-video transformers and Wan2.1 VAEs only; anything else is a one-line error naming what is not supported.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from kinema.config import DiTConfig, VAEConfig
from kinema.errors import KinemaError

# ---------------------------------------------------------------------------------------------
# The transformer: WanTransformer3DModel -> models.dit.DiT
# ---------------------------------------------------------------------------------------------

_DIFFUSERS_DEFAULTS = {  # WanTransformer3DModel.__init__ defaults, for keys a config.json leaves out
    "patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 16,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None,
    "added_kv_proj_dim": None, "rope_max_seq_len": 1024, "pos_embed_seq_len": None,
}
_UNSUPPORTED = ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len")  # image-to-video parts


def dit_config(cfg_dict: dict) -> DiTConfig:
    """A diffusers WanTransformer3DModel config.json (as a dict) -> DiTConfig. T2V models only."""
    fields = {k: v for k, v in cfg_dict.items() if not k.startswith("_")}  # drop _class_name etc.
    unknown = sorted(set(fields) - set(_DIFFUSERS_DEFAULTS))
    if unknown:
        raise KinemaError(f"unknown field {unknown[0]!r} in the diffusers transformer config; "
                          "only WanTransformer3DModel configs can be imported")
    d = {**_DIFFUSERS_DEFAULTS, **fields}
    for name in _UNSUPPORTED:
        if d[name] is not None:
            raise KinemaError(f"diffusers transformer config sets {name}={d[name]!r} (an image-to-video "
                              "model); only Wan text-to-video transformers are supported")
    cfg = DiTConfig(
        in_channels=d["in_channels"], out_channels=d["out_channels"] or d["in_channels"],
        patch_size=tuple(d["patch_size"]), num_heads=d["num_attention_heads"],
        head_dim=d["attention_head_dim"], ffn_dim=d["ffn_dim"], num_layers=d["num_layers"],
        text_dim=d["text_dim"], freq_dim=d["freq_dim"], cross_attn_norm=bool(d["cross_attn_norm"]),
        # diffusers builds and applies the across-heads RMS q/k norm whatever `qk_norm` says.
        qk_norm=True, eps=d["eps"], rope_max_seq_len=d["rope_max_seq_len"],
    )
    cfg.validate()
    return cfg


_RENAMES = (  # diffusers key part -> ours, for tensors that only move
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    (".attn1.to_out.0.", ".self_attn.out."),
    (".attn2.to_out.0.", ".cross_attn.out."),
    (".norm2.", ".cross_norm."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
)
_FUSED = re.compile(r"(blocks\.\d+)\.attn([12])\.(to_q|to_k|to_v|norm_q|norm_k)\.(weight|bias)")
_TABLE = re.compile(r"(blocks\.\d+\.)?scale_shift_table")
_OWN_KEY = re.compile(r"(patch_embedding|proj_out)\.(weight|bias)|time_embedding\.[02]\.\w+|"
                      r"time_projection\.1\.\w+|text_embedding\.[02]\.\w+|"
                      r"blocks\.\d+\.(self_attn\.out|cross_attn\.out|cross_norm|ffn\.[02])\.(weight|bias)")


def dit_state_dict(sd: dict) -> dict:
    """A diffusers WanTransformer3DModel state dict -> ours: q/k/v fused, q/k norm gains stacked."""
    out, parts = {}, {}
    for key, value in sd.items():
        if match := _FUSED.fullmatch(key):
            block, attn, name, kind = match.groups()
            parts.setdefault((block, attn, kind), {})[name] = value
        elif match := _TABLE.fullmatch(key):
            out[f"{match.group(1)}modulation" if match.group(1) else "head_modulation"] = value.flatten(0, 1)
        else:
            new = key
            for old, replacement in _RENAMES:
                new = new.replace(old, replacement)
            if not _OWN_KEY.fullmatch(new):
                raise KinemaError(f"unexpected tensor {key!r} in the diffusers transformer weights; "
                                  "only Wan text-to-video transformers can be imported")
            out[new] = value
    for (block, attn, kind), p in parts.items():
        out.update(_fuse_attention(block, attn, kind, p))
    return out


def _fuse_attention(block: str, attn: str, kind: str, p: dict) -> dict:
    """diffusers attn{1,2} to_q/to_k/to_v/norm_q/norm_k tensors of one kind -> our fused tensors."""
    def take(name: str) -> Tensor:
        if name not in p:
            raise KinemaError(f"diffusers transformer weights lack {block}.attn{attn}.{name}.{kind}; "
                              "the checkpoint is incomplete")
        return p[name]

    prefix = f"{block}.{'self_attn' if attn == '1' else 'cross_attn'}"
    out = {}
    if "norm_q" in p or "norm_k" in p:
        out[f"{prefix}.norm_qk"] = torch.stack([take("norm_q"), take("norm_k")])
    if any(name.startswith("to_") for name in p):
        if attn == "1":
            out[f"{prefix}.qkv.{kind}"] = torch.cat([take("to_q"), take("to_k"), take("to_v")])
        else:
            out[f"{prefix}.q.{kind}"] = take("to_q")
            out[f"{prefix}.kv.{kind}"] = torch.cat([take("to_k"), take("to_v")])
    return out


# ---------------------------------------------------------------------------------------------
# The VAE: AutoencoderKLWan -> models.vae.CausalVAE (the same parameter names, by design)
# ---------------------------------------------------------------------------------------------

def vae_config(cfg_dict: dict) -> VAEConfig:
    """VAEConfig from an `AutoencoderKLWan` config.json dict (Wan2.1 layout only)."""
    if cfg_dict.get("is_residual"):
        raise KinemaError("this VAE is the Wan2.2 residual layout (is_residual=true); only Wan2.1 VAEs load")
    if cfg_dict.get("patch_size") is not None:
        raise KinemaError("this VAE uses patch_size (the Wan2.2 layout); only Wan2.1 VAEs without it load")
    if cfg_dict.get("attn_scales"):
        raise KinemaError("VAE attn_scales is not supported (Wan2.1 uses none); use a Wan2.1 VAE")
    for key in ("in_channels", "out_channels"):
        if cfg_dict.get(key, 3) != 3:
            raise KinemaError(f"VAE {key}={cfg_dict[key]} is not supported; Kinema videos are RGB (3)")
    default = VAEConfig()
    base = cfg_dict.get("base_dim", default.base_dim)
    if cfg_dict.get("decoder_base_dim") not in (None, base):
        raise KinemaError("VAE decoder_base_dim different from base_dim is not supported; use a Wan2.1 VAE")

    def get(key: str, fallback):
        value = cfg_dict.get(key, fallback)
        return tuple(value) if isinstance(value, list) else value

    cfg = VAEConfig(
        base_dim=base,
        z_dim=get("z_dim", default.z_dim),
        dim_mult=get("dim_mult", default.dim_mult),
        num_res_blocks=get("num_res_blocks", default.num_res_blocks),
        temporal_downsample=get("temperal_downsample", default.temporal_downsample),  # diffusers' spelling
        dropout=get("dropout", default.dropout),
        latents_mean=get("latents_mean", default.latents_mean),
        latents_std=get("latents_std", default.latents_std),
    )
    cfg.validate()
    return cfg


def vae_state_dict(sd: dict) -> dict:
    """Kinema state dict from an `AutoencoderKLWan` one: the names are the same by design.

    Wan2.2's residual layout is recognised by its per-stage `resnets` in the encoder and rejected.
    """
    if any(key.startswith("encoder.down_blocks.") and ".resnets." in key for key in sd):
        raise KinemaError("these VAE weights are the Wan2.2 residual layout; only Wan2.1 VAEs load")
    return dict(sd)
