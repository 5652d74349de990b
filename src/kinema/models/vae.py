"""Causal video VAE with the Wan2.1 architecture (loads diffusers' `AutoencoderKLWan` weights as they are).

Default layout: 8x spatial and 4x temporal compression; vae.kind = "patch" swaps in the encoder and
decoder of models/patch_vae.py (4x4x4 blocks, convs at latent resolution: the bundled model's VAE),
which keep every contract below. The first frame is its own latent frame, so a
clip has 1 + 4k frames and T' = 1 + k latent frames; an image is a 1-frame clip.

Every temporal operation looks only backwards, so a clip can be processed in chunks (the first frame,
then 4 frames per latent frame) with a small `CausalCache` - the last input frames each temporal kernel
can reach - and give the same result as the whole clip at once. The inference methods (`encode_dist`,
`encode`, `decode`, `decode_stream`) run chunked under `torch.no_grad`, so memory does not grow with the
clip's length; `forward` runs the whole clip at once with gradients, for training.

Parameter names equal diffusers', so `diffusers_layout.vae_state_dict` only checks the layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kinema.config import VAEConfig
from kinema.errors import KinemaError
from kinema.models.causal import CausalCache, CausalConv3d, Conv3d
from kinema.models.patch_vae import PatchBlock, PatchDecoder, PatchEncoder


class RMSNorm(nn.Module):
    """Scales each position's channel vector to norm sqrt(C), times a learned per-channel gain."""

    def __init__(self, dim: int, spatial_dims: int = 3) -> None:
        super().__init__()
        self.scale = dim**0.5
        # Shape (C, 1, 1[, 1]) as in diffusers, so checkpoints load unchanged.
        self.gamma = nn.Parameter(torch.empty(dim, *(1,) * spatial_dims))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, ...)
        # Squares are summed in fp32 (bf16 would lose bits over many channels); the scaling stays in
        # x's dtype so bf16 inference moves half the bytes. Same as F.normalize(x, dim=1) (eps 1e-12),
        # but ~3x faster on CPU than its vector_norm.
        sum_sq = (x * x).sum(1, keepdim=True, dtype=torch.float32)  # (B, 1, ...)
        inv_norm = sum_sq.clamp_min(1e-24).rsqrt().to(x.dtype)
        return x * inv_norm * (self.gamma * self.scale).to(x.dtype)


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(in_dim)
        self.conv1 = CausalConv3d(in_dim, out_dim)
        self.norm2 = RMSNorm(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_dim, out_dim)
        self.conv_shortcut = Conv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:  # (B, C, T, H, W)
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))), cache)
        return h + self.conv_shortcut(x)  # (B, C', T, H, W)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame; frames never mix, so it is causal."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, spatial_dims=2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W)
        b, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(y)).view(b * t, 1, 3 * c, h * w).transpose(2, 3)  # (BT, 1, HW, 3C)
        q, k, v = qkv.chunk(3, dim=-1)  # each (BT, 1, HW, C)
        y = F.scaled_dot_product_attention(q, k, v)  # (BT, 1, HW, C)
        y = self.proj(y.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w))
        return x + y.view(b, t, c, h, w).transpose(1, 2)


class Resample(nn.Module):
    """2x spatial up/down sampling per frame, plus 2x in time for the '3d' modes.

    Time follows the 1 + 2k rule: the stream's first frame passes through alone. Temporal upsampling
    turns every later frame into two (a causal conv emits both); temporal downsampling merges frames
    (2j-2, 2j-1, 2j) into output j with a stride-2 conv.
    """

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(
                nn.Upsample(scale_factor=2.0, mode="nearest-exact"), nn.Conv2d(dim, dim // 2, 3, padding=1)
            )
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1))
        else:
            # Pad right/bottom only, like Wan, so output pixel i sees input pixels 2i..2i+2.
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
            if mode == "downsample3d":
                self.time_conv = Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:  # (B, C, T, H, W)
        if self.mode == "upsample3d":
            x = self._double_frames(x, cache)
        b, c, t, h, w = x.shape
        y = self.resample(x.transpose(1, 2).reshape(b * t, c, h, w))  # (BT, C', H', W')
        x = y.view(b, t, *y.shape[1:]).transpose(1, 2)  # (B, C', T, H', W')
        if self.mode == "downsample3d":
            x = self._halve_frames(x, cache)
        return x

    def _double_frames(self, x: Tensor, cache: CausalCache | None) -> Tensor:  # T -> 2T (-1 at start)
        parts = []
        if cache is None or cache.first_call(self):
            parts.append(x[:, :, :1])
            x = x[:, :, 1:]
        if x.shape[2]:
            b, c, t, h, w = x.shape
            y = self.time_conv(x, cache).view(b, 2, c, t, h, w)  # two output frames per input frame
            parts.append(y.permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w))
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def _halve_frames(self, x: Tensor, cache: CausalCache | None) -> Tensor:  # T -> T/2 (+1 at start)
        prev = cache.tail(self) if cache is not None else None
        seq = x if prev is None else torch.cat([prev, x], dim=2)
        if cache is not None:
            cache.keep(self, seq[:, :, -1:])
        parts = [x[:, :, :1]] if prev is None else []
        if seq.shape[2] >= 3:
            parts.append(self.time_conv(seq))  # (B, C, (T'-1)/2, H, W)
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]


class MidBlock(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim, dropout), ResidualBlock(dim, dim, dropout)])
        self.attentions = nn.ModuleList([AttentionBlock(dim)])

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:  # (B, C, T, H, W)
        x = self.resnets[0](x, cache)
        x = self.attentions[0](x)
        return self.resnets[1](x, cache)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
        self.conv_in = CausalConv3d(3, dims[0])
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                in_dim = out_dim
            if i < len(cfg.dim_mult) - 1:
                blocks.append(Resample(out_dim, "downsample3d" if cfg.temporal_downsample[i] else "downsample2d"))
        # A flat list, as in diffusers, so parameter names match.
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(dims[-1], cfg.dropout)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], 2 * cfg.z_dim)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:  # (B, 3, T, H, W)
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)  # (B, 2z, T', H/8, W/8)


class UpBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, mode: str | None):
        super().__init__()
        dims = [in_dim] + [out_dim] * num_res_blocks
        self.resnets = nn.ModuleList(ResidualBlock(a, b, dropout) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.upsamplers = nn.ModuleList([Resample(out_dim, mode)] if mode else [])

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:  # (B, C, T, H, W)
        for block in (*self.resnets, *self.upsamplers):
            x = block(x, cache)
        return x


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        mult = cfg.dim_mult
        dims = [cfg.base_dim * m for m in (mult[-1], *mult[::-1])]
        temporal_up = cfg.temporal_downsample[::-1]
        self.conv_in = CausalConv3d(cfg.z_dim, dims[0])
        self.mid_block = MidBlock(dims[0], cfg.dropout)
        blocks = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            if i > 0:
                in_dim //= 2  # the previous stage's upsampler halved the channels
            mode = None
            if i < len(mult) - 1:
                mode = "upsample3d" if temporal_up[i] else "upsample2d"
            blocks.append(UpBlock(in_dim, out_dim, cfg.num_res_blocks + 1, cfg.dropout, mode))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], 3)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:  # (B, z, T', h, w)
        x = self.mid_block(self.conv_in(x, cache), cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)  # (B, 3, 1 + 4(T'-1), 8h, 8w)


class CausalVAE(nn.Module):
    """Wan2.1 causal video VAE. See the module docstring and docs/CONTRACTS.md."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        cfg.validate()
        if cfg.attn_scales:
            # Wan2.1 has none, and diffusers cannot run a Wan VAE with them, so no weights exist to load.
            raise KinemaError("vae.attn_scales is not supported (Wan2.1 uses no attention outside the "
                              "mid block); set it to []")
        self.cfg = cfg
        z = cfg.z_dim
        patch = cfg.kind == "patch"
        self.encoder = PatchEncoder(cfg) if patch else Encoder(cfg)
        self.quant_conv = Conv3d(2 * z, 2 * z, 1)
        self.post_quant_conv = Conv3d(z, z, 1)
        self.decoder = PatchDecoder(cfg) if patch else Decoder(cfg)
        # Derived from the config, so not saved with the weights.
        self.register_buffer("latents_mean", torch.tensor(cfg.latents_mean).view(1, z, 1, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(cfg.latents_std).view(1, z, 1, 1, 1), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """All initialisation: convs keep activations O(1) (std 1/sqrt(fan_in)), norms start as identity,
        and so do the patch VAE's residual blocks (their last conv starts at zero)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.gamma)
        for m in self.modules():
            if isinstance(m, PatchBlock):
                nn.init.zeros_(m.conv2.weight)

    # -- inference: chunked, causal cache, no gradients -------------------------------------------

    @torch.no_grad()
    def encode_dist(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw latent Gaussian of video x (B, 3, T, H, W): (mean, logvar), each (B, z, T', H/8, W/8) fp32."""
        self._check_video(x)
        cache = CausalCache()
        h = torch.cat([self.encoder(chunk, cache) for chunk in self._chunks(x)], dim=2)
        return self._posterior(h)

    @torch.no_grad()
    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Normalized latents (B, z, T', H/8, W/8): the posterior mean, or a sample given a generator."""
        mean, logvar = self.encode_dist(x)
        if generator is not None:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            mean = mean + (0.5 * logvar).exp() * noise
        return (mean - self.latents_mean) / self.latents_std

    def decode(self, z: Tensor, tile: tuple[int, int] | None = None) -> Tensor:
        """Normalized latents (B, z, T', h, w) -> video (B, 3, 1 + 4(T'-1), 8h, 8w) in [-1, 1]."""
        return torch.cat(list(self.decode_stream(z, tile)), dim=2)

    def decode_stream(self, z: Tensor, tile: tuple[int, int] | None = None) -> Iterator[Tensor]:
        """Yield decoded frames (B, 3, t, H, W) in order: 1 frame, then 4 per further latent frame.

        `tile=(th, tw)` (pixels) decodes overlapping spatial tiles, each with its own cache, and blends
        them linearly; it bounds memory for large frames at the cost of small seams (see `_decode_tiled`).
        """
        if z.ndim != 5 or z.shape[1] != self.cfg.z_dim or 0 in z.shape[2:]:
            raise KinemaError(f"VAE latents must be (B, {self.cfg.z_dim}, T', h, w), got shape {tuple(z.shape)}")
        if tile is not None:
            self._check_tile(tile)
        return self._decode_stream(z, tile)  # validated now, decoded lazily

    @torch.no_grad()
    def _decode_stream(self, z: Tensor, tile: tuple[int, int] | None) -> Iterator[Tensor]:
        x = self._decoder_input(self.post_quant_conv(z * self.latents_std + self.latents_mean))  # (B, z|2z, T', h, w)
        if tile is None:
            cache = CausalCache()
            chunks = (self.decoder(x[:, :, k : k + 1], cache) for k in range(x.shape[2]))
        else:
            chunks = self._decode_tiled(x, tile)
        for chunk in chunks:
            yield chunk.clamp(-1.0, 1.0).float()

    def _decode_tiled(self, x: Tensor, tile: tuple[int, int]) -> Iterator[Tensor]:
        """Decode each latent frame tile by tile and blend with linear ramps over the overlaps.

        The result is close to, not equal to, the untiled decode: the decoder's receptive field spans
        many latent pixels, so pixels near a tile's edge see zero padding instead of their neighbours.
        """
        f = self.cfg.spatial_factor
        rows, cols = _spans(x.shape[3], tile[0] // f), _spans(x.shape[4], tile[1] // f)
        row_w, col_w = _ramps(rows, f, x.device), _ramps(cols, f, x.device)
        weight = torch.zeros(x.shape[3] * f, x.shape[4] * f, device=x.device)  # (H, W) sum of tile weights
        for (r0, r1), wr in zip(rows, row_w, strict=True):
            for (c0, c1), wc in zip(cols, col_w, strict=True):
                weight[r0 * f : r1 * f, c0 * f : c1 * f] += wr[:, None] * wc[None, :]
        caches = [[CausalCache() for _ in cols] for _ in rows]
        for k in range(x.shape[2]):
            out = None
            for (r0, r1), wr, row_caches in zip(rows, row_w, caches, strict=True):
                for (c0, c1), wc, cache in zip(cols, col_w, row_caches, strict=True):
                    y = self.decoder(x[:, :, k : k + 1, r0:r1, c0:c1], cache)  # (B, 3, t, th, tw)
                    if out is None:
                        out = y.new_zeros(*y.shape[:3], *weight.shape, dtype=torch.float32)
                    out[..., r0 * f : r1 * f, c0 * f : c1 * f] += y * (wr[:, None] * wc[None, :])
            yield out / weight

    # -- training: the whole clip at once, differentiable -----------------------------------------

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, 3, T, H, W) -> (recon, mean, logvar); recon is unclamped so every pixel gets a gradient.

        Decodes a posterior sample in training mode and the mean in eval mode.
        """
        self._check_video(x)
        mean, logvar = self._posterior(self.encoder(x))
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean) if self.training else mean
        return self.decoder(self._decoder_input(self.post_quant_conv(z))), mean, logvar

    # -- helpers ------------------------------------------------------------------------------------

    def _decoder_input(self, x: Tensor) -> Tensor:  # (B, z, T', h, w) raw latents
        """x, or with decoder_lookahead x and its next latent frame side by side (B, 2z, T', h, w); the last latent
        frame has no next one and reads itself again."""
        if not self.cfg.decoder_lookahead:
            return x
        return torch.cat([x, torch.cat([x[:, :, 1:], x[:, :, -1:]], dim=2)], dim=1)

    def _posterior(self, h: Tensor) -> tuple[Tensor, Tensor]:  # (B, 2z, T', h, w) encoder output
        mean, logvar = self.quant_conv(h).float().chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # as diffusers: keeps exp(logvar) finite

    def _chunks(self, x: Tensor) -> Iterator[Tensor]:  # (B, 3, T, H, W): first frame, then groups
        step = self.cfg.temporal_factor
        yield x[:, :, :1]
        for start in range(1, x.shape[2], step):
            yield x[:, :, start : start + step]

    def _check_video(self, x: Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != 3:
            raise KinemaError(f"VAE input must be a video (B, 3, T, H, W), got shape {tuple(x.shape)}")
        tf, sf = self.cfg.temporal_factor, self.cfg.spatial_factor
        t, h, w = x.shape[2:]
        if t < 1 or (t - 1) % tf:
            near = 1 + tf * max(0, round((t - 1) / tf))
            raise KinemaError(f"video has {t} frames but the VAE needs 1+{tf}k frames; use {near} frames")
        for name, size in (("height", h), ("width", w)):
            if size < 1 or size % sf:
                raise KinemaError(f"video {name} {size} is not a multiple of {sf}; use {_nearest(size, sf, sf)}")

    def _check_tile(self, tile: tuple[int, int]) -> None:
        sf = self.cfg.spatial_factor
        for size in tile:
            if size < 2 * sf or size % sf:
                raise KinemaError(f"VAE tile size {size} must be a multiple of {sf} and at least {2 * sf}; "
                                  f"use {_nearest(size, sf, 2 * sf)}")


def _nearest(size: int, multiple: int, minimum: int) -> int:
    return max(minimum, round(size / multiple) * multiple)


def _spans(size: int, tile: int) -> list[tuple[int, int]]:
    """(start, end) of tiles of length `tile` covering [0, size), overlapping by at least tile/4, spread
    evenly so that all overlaps are about equal."""
    if tile >= size:
        return [(0, size)]
    overlap = max(1, tile // 4)
    n = math.ceil((size - tile) / (tile - overlap)) + 1
    return [(s, s + tile) for s in (round(i * (size - tile) / (n - 1)) for i in range(n))]


def _ramps(spans: list[tuple[int, int]], factor: int, device: torch.device) -> list[Tensor]:
    """Per tile, a 1D pixel weight: linear ramps across the overlap with each neighbour, 1 elsewhere.

    Weights stay positive (the ramp starts at 0.5/n), so the normalised blend is defined everywhere.
    """
    overlap = factor * min((a[1] - b[0] for a, b in zip(spans, spans[1:], strict=False)), default=0)
    ramp = (torch.arange(overlap, device=device) + 0.5) / max(overlap, 1)
    weights = []
    for i, (start, end) in enumerate(spans):
        w = torch.ones((end - start) * factor, device=device)
        if i > 0:
            w[:overlap] = ramp
        if i < len(spans) - 1:
            w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
        weights.append(w)
    return weights
