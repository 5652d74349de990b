"""The Wan2.1 text-to-video diffusion transformer, with a timestep per latent frame.

Architecture (as diffusers' `WanTransformer3DModel`, T2V only): 1x2x2 Conv3d patches -> N blocks of
[adaLN self-attention with 3D rotary positions and RMS q/k norm] + [cross-attention to projected text
tokens] + [adaLN GELU(tanh) FFN] -> adaLN head -> unpatchify. Differences that do not change the
function: fused QKV / KV projections, modulation computed once per latent frame and broadcast over that
frame's tokens (so frames given by the user can stay clean at t = 0 while the rest are denoised; or once per
token, so part of a frame can), rotary
tables computed for any grid and cached, and a float32 residual stream under autocast (Wan's original
code promotes it to float32 as well). For sampling, `prepare_context` embeds the text and projects the
cross-attention keys and values once per generation instead of at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kinema.config import DiTConfig
from kinema.errors import KinemaError

_ROPE_THETA = 10000.0
_ROPE_CACHE_SIZE = 8  # distinct (grid, device) pairs kept; sampling reuses one, training buckets a few
_WAN_TIME_SCALE = 1000.0  # Wan was trained on timesteps in [0, 1000]


def _layer_norm(x: Tensor, eps: float) -> Tensor:
    """Non-affine LayerNorm in float32, as Wan's norm1/norm3/norm_out."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps)


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm over the last dim (all heads together) in float32; weight broadcasts over x.

    One vector_norm pass is ~2x faster on CPU than F.rms_norm, which decomposes into pow, mean and mul.
    """
    x = x.float()
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # (..., 1)
    return (x * (norm.square() / x.shape[-1] + eps).rsqrt()).mul_(weight)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return torch.addcmul(shift, x, 1 + scale)


class GeluTanh(nn.Module):
    """GELU with the tanh approximation, written as x * sigmoid(2u) = 0.5 x (1 + tanh(u)).

    The same function (to ~5e-7 in float32), but about 2x faster on CPU in bfloat16 than
    nn.GELU(approximate="tanh"), whose bfloat16 tanh kernel is slow; no parameters, so state dicts match.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x * (1.5957691216057308 + 0.07135481627260025 * x * x))


def _apply_rope(x: Tensor, rope: Tensor) -> Tensor:
    """Rotate interleaved pairs (x[..., 0::2], x[..., 1::2]) as complex numbers, as Wan does.

    x (B, N, ..., Dh) float32, rope (N, 1, ..., Dh/2) complex64 -> (B, N, ..., Dh) float32.
    One complex multiply is ~10x faster on CPU than the real-valued form on stride-2 views.
    """
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))  # (B, N, ..., Dh/2)
    return torch.view_as_real(pairs * rope).flatten(-2)


def _sinusoid(t: Tensor, dim: int) -> Tensor:
    """Timestep features [cos | sin] of t * 1000 (diffusers' flip_sin_to_cos, shift 0): (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) / half * torch.arange(half, device=t.device, dtype=torch.float32))
    args = (t.float() * _WAN_TIME_SCALE)[..., None] * freqs  # (..., dim/2)
    return torch.cat([args.cos(), args.sin()], dim=-1)


class Rope3D(nn.Module):
    """Wan's 3D rotary positions: head_dim split over (t, h, w), integer positions, theta 10000.

    Tables are computed exactly (float64 angles, like diffusers' table) for any grid on first use and
    cached per (grid, device), so any size, aspect or duration works and repeated steps cost nothing.
    """

    def __init__(self, head_dim: int):
        super().__init__()
        hw = 2 * (head_dim // 6)
        self.dims = (head_dim - 2 * hw, hw, hw)
        self._cache: dict[tuple, Tensor] = {}

    def forward(self, grid: tuple[int, int, int], device: torch.device) -> Tensor:
        """grid (T', H', W') -> (N, 1, 1, head_dim/2) complex64, N = T' H' W' in (t, h, w) order."""
        key = (grid, device)
        table = self._cache.get(key)  # one lookup: another thread may clear the cache between two
        if table is None:
            if len(self._cache) >= _ROPE_CACHE_SIZE:
                self._cache.clear()
            table = self._cache[key] = self._table(grid).to(device)
        return table

    def _table(self, grid: tuple[int, int, int]) -> Tensor:
        angles = []
        for axis, (size, dim) in enumerate(zip(grid, self.dims, strict=True)):
            freqs = _ROPE_THETA ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
            axis_angles = torch.outer(torch.arange(size, dtype=torch.float64), freqs)  # (size, dim/2)
            shape = [1, 1, 1, dim // 2]
            shape[axis] = size
            angles.append(axis_angles.view(shape).expand(*grid, dim // 2))
        angles = torch.cat(angles, dim=-1).flatten(0, 2)  # (N, head_dim/2)
        return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)[:, None, None]


class SelfAttention(nn.Module):
    """Self-attention with one fused QKV projection, RMS q/k norm across heads and 3D rope."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float):
        super().__init__()
        self.num_heads, self.eps = num_heads, eps
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm_qk = nn.Parameter(torch.empty(2, dim)) if qk_norm else None  # RMS gains of q and k
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: Tensor) -> Tensor:
        """x (B, N, D), rope (N, 1, 1, Dh/2) -> (B, N, D)."""
        dim = x.shape[-1]
        qkv = self.qkv(x)  # (B, N, 3D)
        qk = qkv[..., : 2 * dim].unflatten(-1, (2, dim)).float()  # (B, N, 2, D): q and k normed together
        if self.norm_qk is not None:
            qk = _rms_norm(qk, self.norm_qk, self.eps)
        qk = _apply_rope(qk.unflatten(-1, (self.num_heads, -1)), rope)  # (B, N, 2, H, Dh)
        q, k = qk.to(qkv.dtype).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, Dh) each
        v = qkv[..., 2 * dim :].unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, H, N, Dh)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh)
        return self.out(out.transpose(1, 2).flatten(2))


@dataclass
class TextContext:
    """Text prepared once per generation (`DiT.prepare_context`): it is the same at every sampling step.

    kv: per block, the cross-attention keys (normed) and values (B, H, L, Dh); mask: (B, 1, 1, L) or None.
    """

    kv: list[tuple[Tensor, Tensor]]
    mask: Tensor | None

    @property
    def batch(self) -> int:
        return self.kv[0][0].shape[0] if self.kv else 0


class CrossAttention(nn.Module):
    """Attention from video tokens to text tokens, fused KV projection, RMS q/k norm, no positions."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float):
        super().__init__()
        self.num_heads, self.eps = num_heads, eps
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.norm_qk = nn.Parameter(torch.empty(2, dim)) if qk_norm else None
        self.out = nn.Linear(dim, dim)

    def project_context(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Embedded text (B, L, D) -> keys (normed) and values (B, H, L, Dh), in the projection's dtype."""
        k, v = self.kv(context).chunk(2, dim=-1)  # (B, L, D) each
        if self.norm_qk is not None:
            k = _rms_norm(k, self.norm_qk[1], self.eps).to(v.dtype)
        return tuple(y.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for y in (k, v))

    def forward(self, x: Tensor, context: Tensor | tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        """x (B, N, D), context: embedded text (B, L, D) or its `project_context`, mask (B, 1, 1, L) bool
        or None -> (B, N, D). Raw text is projected here, inside the block (where FSDP unshards it)."""
        kv = self.project_context(context) if isinstance(context, Tensor) else context
        q = self.q(x)  # (B, N, D)
        if self.norm_qk is not None:
            q = _rms_norm(q, self.norm_qk[0], self.eps).to(q.dtype)
        q = q.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, H, N, Dh)
        k, v = (y.to(q.dtype) for y in kv)  # a context prepared outside autocast meets bf16 queries
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, N, Dh)
        return self.out(out.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """One Wan block: 6-way adaLN (per latent frame) around self-attention and FFN, plain cross-attention."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim, self.eps = cfg.dim, cfg.eps
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.cross_norm = nn.LayerNorm(dim, eps=cfg.eps) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), GeluTanh(),
                                 nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.empty(6, dim))  # Wan's scale_shift_table

    def forward(self, x: Tensor, mods: Tensor, context: Tensor | tuple[Tensor, Tensor], mask: Tensor | None,
                rope: Tensor) -> Tensor:
        """x (B, T, S, D) float32 residual, S = H'W' tokens per frame; mods (B, 1 or T, 1 or S, 6, D) float32;
        context: embedded text (B, L, D) or this block's prepared cross-attention keys and values."""
        # Each (B, 1 or T, 1 or S, D): one modulation per latent frame broadcast over its tokens, or one per token.
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + mods).unbind(3)
        h = _modulate(_layer_norm(x, self.eps), shift1, scale1)  # (B, T, S, D)
        x = torch.addcmul(x, self.self_attn(h.flatten(1, 2), rope).view_as(x), gate1)
        h = self.cross_norm(x)
        x = x + self.cross_attn(h.flatten(1, 2), context, mask).view_as(x)
        h = _modulate(_layer_norm(x, self.eps), shift2, scale2)
        return torch.addcmul(x, self.ffn(h), gate2)


class DiT(nn.Module):
    """Wan2.1 T2V transformer predicting the rectified-flow velocity v = eps - x0.

    forward(x (B, C, T', H', W'), t (B,) or (B, T') or (B, T', H'/ph, W'/pw) in [0, 1], context (B, L, text_dim)
    or a `prepare_context` result, context_mask (B, L) bool or None) -> v (B, C_out, T', H', W') in x's dtype.
    A time per token lets part of a latent frame stay clean while the rest is denoised (outpainting);
    the usual time per frame costs one modulation row per frame.
    Parameters stay float32; run under torch.autocast for bfloat16 compute.
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        cfg.validate()
        if tuple(cfg.patch_size)[0] != 1:
            raise KinemaError(f"dit.patch_size={tuple(cfg.patch_size)} must have temporal size 1 so every "
                              "latent frame can carry its own timestep; use (1, 2, 2)")
        if cfg.freq_dim % 2:
            raise KinemaError(f"dit.freq_dim={cfg.freq_dim} must be even (cos and sin halves); use e.g. 256")
        self.cfg = cfg
        dim, patch = cfg.dim, tuple(cfg.patch_size)
        self.patch_embedding = nn.Conv3d(cfg.in_channels, dim, kernel_size=patch, stride=patch)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), GeluTanh(),
                                            nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.rope = Rope3D(cfg.head_dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head_modulation = nn.Parameter(torch.empty(2, dim))  # Wan's output scale_shift_table
        self.proj_out = nn.Linear(dim, cfg.out_channels * math.prod(patch))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """All initialisation: Wan's scheme, plus adaLN-Zero (every block starts as the identity and the
        output as zero), which is standard DiT practice for training from scratch."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        nn.init.xavier_uniform_(self.patch_embedding.weight.view(self.cfg.dim, -1))
        nn.init.zeros_(self.patch_embedding.bias)
        for linear in (self.text_embedding[0], self.text_embedding[2],
                       self.time_embedding[0], self.time_embedding[2]):
            nn.init.normal_(linear.weight, std=0.02)
        for block in self.blocks:
            for attn in (block.self_attn, block.cross_attn):
                if attn.norm_qk is not None:
                    nn.init.ones_(attn.norm_qk)
            nn.init.zeros_(block.modulation)
        for param in (self.time_projection[1].weight, self.time_projection[1].bias, self.head_modulation,
                      self.proj_out.weight, self.proj_out.bias):
            nn.init.zeros_(param)

    def prepare_context(self, context: Tensor, context_mask: Tensor | None = None) -> TextContext:
        """Embed the text and project every block's cross-attention keys and values, once.

        The text does not change across sampling steps, so a sampler passes the result as `context` to
        every forward call instead of the raw tokens (same output, less work per step). Call it under the
        same autocast as the forward calls to keep the keys and values in bfloat16. For inference: it
        uses every block's weights outside the blocks' forward, where FSDP would hold them sharded.
        """
        context = self.text_embedding(context)  # (B, L, D)
        kv = [block.cross_attn.project_context(context) for block in self.blocks]
        return TextContext(kv, _attention_mask(context_mask))

    def forward(self, x: Tensor, t: Tensor, context: Tensor | TextContext,
                context_mask: Tensor | None = None) -> Tensor:
        grid = self._grid(x)  # (T', H'/ph, W'/pw)
        t = self._token_times(t, x, grid)  # (B, 1 or T', 1 or S)
        rope = self.rope(grid, x.device)  # (N, 1, 1, Dh/2)
        h = self.patch_embedding(x).float()  # (B, D, T', H'/ph, W'/pw)
        h = h.flatten(3).permute(0, 2, 3, 1).contiguous()  # (B, T', S, D)
        temb, mods = self._time_embed(t)  # (B, 1 or T', 1 or S, D), (B, 1 or T', 1 or S, 6, D)
        per_block, mask = self._text(context, context_mask, x.shape[0])
        for block, text in zip(self.blocks, per_block, strict=True):
            h = block(h, mods, text, mask, rope)
        shift, scale = (self.head_modulation + temb.unsqueeze(3)).unbind(3)  # (B, 1|T', 1|S, D)
        h = self.proj_out(_modulate(_layer_norm(h, self.cfg.eps), shift, scale))  # (B, T', S, p C_out)
        return self._unpatchify(h, grid).to(x.dtype)

    def _text(self, context: Tensor | TextContext, context_mask: Tensor | None,
              batch: int) -> tuple[list, Tensor | None]:
        """Each block's text input (embedded tokens, or prepared keys and values) and the attention mask."""
        if not isinstance(context, TextContext):
            return [self.text_embedding(context)] * len(self.blocks), _attention_mask(context_mask)
        if context_mask is not None:
            raise KinemaError("a prepared context already holds its mask; pass context_mask to prepare_context")
        if context.batch != batch:
            raise KinemaError(f"the prepared context has batch {context.batch} but the latents have {batch}; "
                              "prepare the context for the batch the model is called with (CFG: both halves)")
        return context.kv, context.mask

    def _grid(self, x: Tensor) -> tuple[int, int, int]:
        if x.ndim != 5 or x.shape[1] != self.cfg.in_channels:
            raise KinemaError(f"DiT input must be latents (B, {self.cfg.in_channels}, T, H, W), "
                              f"got shape {tuple(x.shape)}; check the VAE's z_dim")
        _, ph, pw = self.cfg.patch_size
        _, _, frames, height, width = x.shape
        if height % ph or width % pw:
            raise KinemaError(f"latent size {height}x{width} is not divisible by the DiT patch {ph}x{pw}; "
                              f"use a frame width and height that are multiples of {ph}x{pw} times the "
                              "VAE downsampling (16 for Wan)")
        return frames, height // ph, width // pw

    @staticmethod
    def _token_times(t: Tensor, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """t (B,), (B, T') or (B, T', H'/ph, W'/pw) -> (B, 1, 1), (B, T', 1) or (B, T', S) float32 on x's device."""
        batch, frames = x.shape[0], x.shape[2]
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        if t.shape == (batch,):
            return t[:, None, None]
        if t.shape == (batch, frames):
            return t[:, :, None]
        if t.shape == (batch, *grid):
            return t.flatten(2)
        raise KinemaError(f"timestep shape {tuple(t.shape)} does not fit latents {tuple(x.shape)}; pass t as "
                          f"({batch},), ({batch}, {frames}) (one per latent frame) or {(batch, *grid)} (one per "
                          "token)")

    def _time_embed(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """t (B, Tt, St) -> temb (B, Tt, St, D) and block modulations (B, Tt, St, 6, D), both float32.

        Computed in float32 even under autocast (as Wan does): these few rows scale every token.
        """
        with torch.autocast(t.device.type, enabled=False):
            temb = self.time_embedding(_sinusoid(t, self.cfg.freq_dim))  # (B, Tt, St, D)
            mods = self.time_projection(temb).unflatten(-1, (6, -1))  # (B, Tt, St, 6, D)
        return temb, mods

    def _unpatchify(self, h: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """(B, T', S, pt ph pw C) -> (B, C, T' pt, H' ph, W' pw)."""
        frames, height, width = grid
        pt, ph, pw = self.cfg.patch_size
        h = h.view(h.shape[0], frames, height, width, pt, ph, pw, self.cfg.out_channels)
        h = h.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, T', pt, H', ph, W', pw)
        return h.reshape(h.shape[0], self.cfg.out_channels, frames * pt, height * ph, width * pw)


def _attention_mask(context_mask: Tensor | None) -> Tensor | None:
    """(B, L) bool, True = real token -> (B, 1, 1, L) for SDPA.

    A row with no real token attends to all of them (the zeroed padding) instead of giving NaN.
    """
    if context_mask is None:
        return None
    mask = context_mask.bool()
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask[:, None, None, :]
