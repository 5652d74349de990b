"""The patch VAE's encoder and decoder: a causal video VAE whose convs all run at latent resolution.

The Wan layout (models/vae.py) spends its compute on full-resolution convs and, at the bundled model's
width, learns slowly on a CPU: 8k steps reached 21.6 dB with object colours still wrong. Here each `patch`
block (4 frames x 4 x 4 pixels x RGB = 192 values) is folded into the channels of one latent pixel, a 1x1
conv reads it, and every further conv runs on the latent grid. In the same CPU time as 1.4k steps of the
Wan layout (which then still drew every object brown), it reached 23.5 dB and the judge read the right
colour in two thirds of its round trips.

`CausalVAE` swaps these in for its encoder and decoder (vae.kind = "patch") and keeps its contract: a clip
has 1 + 4k frames, the first frame is its own latent frame (repeated to fill its block), each later latent
frame holds 4 frames, and every temporal conv looks only back, so chunks with a `CausalCache` give the
result of the whole clip at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kinema.config import VAEConfig
from kinema.models.causal import CausalCache, CausalConv3d, Conv3d


def fold(x: Tensor, patch: tuple[int, int, int]) -> Tensor:
    """(B, 3, n*pt, h*ph, w*pw) -> (B, 3*pt*ph*pw, n, h, w): each block into one position's channels."""
    b, c, t, hh, ww = x.shape
    pt, ph, pw = patch
    x = x.view(b, c, t // pt, pt, hh // ph, ph, ww // pw, pw).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * pt * ph * pw, t // pt, hh // ph, ww // pw)


def unfold(y: Tensor, patch: tuple[int, int, int]) -> Tensor:
    """The inverse of `fold`: (B, 3*pt*ph*pw, n, h, w) -> (B, 3, n*pt, h*ph, w*pw)."""
    b, _, n, h, w = y.shape
    pt, ph, pw = patch
    y = y.view(b, 3, pt, ph, pw, n, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, 3, n, pt, h, ph, w, pw)
    return y.reshape(b, 3, n * pt, h * ph, w * pw)


class PatchBlock(nn.Module):
    """x + conv(silu(conv(silu(x)))) on the latent grid; each conv sees `time_kernel` latent frames back.
    conv2 starts at zero (CausalVAE._init_weights), so a new block is the identity."""

    def __init__(self, dim: int, time_kernel: int) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(dim, dim, (time_kernel, 3, 3))
        self.conv2 = CausalConv3d(dim, dim, (time_kernel, 3, 3))

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:  # (B, C, T', h, w)
        return x + self.conv2(F.silu(self.conv1(F.silu(x), cache)), cache)


class PatchEncoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        pt, ph, pw = self.patch = tuple(cfg.patch)
        self.conv_in = Conv3d(3 * pt * ph * pw, cfg.base_dim, 1)
        self.blocks = nn.ModuleList(PatchBlock(cfg.base_dim, cfg.time_kernel) for _ in range(cfg.num_res_blocks))
        self.conv_out = CausalConv3d(cfg.base_dim, 2 * cfg.z_dim, (1, 3, 3))

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:  # (B, 3, T, H, W)
        pt = self.patch[0]
        if x.shape[2] % pt:  # the stream's first frame (1 + 4k frames): repeated to fill its block
            x = torch.cat([x[:, :, :1].expand(-1, -1, pt - x.shape[2] % pt, -1, -1), x], dim=2)
        h = self.conv_in(fold(x, self.patch))  # (B, C, T', h, w)
        for block in self.blocks:
            h = block(h, cache)
        return self.conv_out(F.silu(h), cache)  # (B, 2z, T', H/ph, W/pw)


class FrameHead(nn.Module):
    """Latent features (B, dim, T', h, w) -> an added image per video frame (B, 3, pt*T', ph*h, pw*w): each latent
    pixel's features split into `channels` per frame, two causal 3-frame convs over the frames (across block
    boundaries), then a 1x1 conv to its ph x pw pixels."""

    def __init__(self, dim: int, channels: int, patch: tuple[int, int, int]) -> None:
        super().__init__()
        self.patch, self.channels = patch, channels
        self.split = Conv3d(dim, patch[0] * channels, 1)
        self.conv1 = CausalConv3d(channels, channels, (3, 3, 3))
        self.conv2 = CausalConv3d(channels, channels, (3, 3, 3))
        self.out = Conv3d(channels, 3 * patch[1] * patch[2], 1)

    def forward(self, h: Tensor, cache: CausalCache | None = None) -> Tensor:
        b, _, t, height, width = h.shape
        pt = self.patch[0]
        f = self.split(F.silu(h)).view(b, pt, self.channels, t, height, width)
        f = f.permute(0, 2, 3, 1, 4, 5).reshape(b, self.channels, t * pt, height, width)  # frame t*pt + j
        f = self.conv2(F.silu(self.conv1(f, cache)), cache)
        return unfold(self.out(F.silu(f)), (1, *self.patch[1:]))


class PatchDecoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        pt, ph, pw = self.patch = tuple(cfg.patch)
        # With decoder_lookahead each position reads its latent frame and the next, side by side (CausalVAE).
        self.conv_in = CausalConv3d(cfg.z_dim * (1 + cfg.decoder_lookahead), cfg.base_dim, (1, 3, 3))
        self.blocks = nn.ModuleList(PatchBlock(cfg.base_dim, cfg.decoder_kernel)
                                    for _ in range(cfg.num_res_blocks + 1))
        self.conv_out = Conv3d(cfg.base_dim, 3 * pt * ph * pw, 1)
        self.frame_head = FrameHead(cfg.base_dim, cfg.frame_head, self.patch) if cfg.frame_head else None

    def forward(self, z: Tensor, cache: CausalCache | None = None) -> Tensor:  # (B, z or 2z, T', h, w)
        h = self.conv_in(z, cache)
        for block in self.blocks:
            h = block(h, cache)
        x = unfold(self.conv_out(F.silu(h)), self.patch)  # (B, 3, 4T', H, W)
        if self.frame_head is not None:
            x = x + self.frame_head(h, cache)
        starts = cache is None or cache.first_call(self)
        return x[:, :, self.patch[0] - 1:] if starts else x  # the first block holds 1 frame, repeated


def widen_time_kernels(state: dict[str, Tensor], like: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state` with each conv weight whose temporal kernel is shorter than its counterpart in `like` padded with
    zero taps for the earlier frames. A causal conv's last tap reads the current frame, so the widened conv
    computes what the narrow one did until training teaches it to use the frames before."""
    out = dict(state)
    for key, weight in state.items():
        target = like.get(key)
        if (target is not None and weight.ndim == 5 and target.shape[2] > weight.shape[2]
                and target.shape[:2] + target.shape[3:] == weight.shape[:2] + weight.shape[3:]):
            out[key] = torch.cat([weight.new_zeros(*weight.shape[:2], target.shape[2] - weight.shape[2],
                                                   *weight.shape[3:]), weight], dim=2)
    return out
