"""Causal building blocks shared by the video VAEs: a conv that only looks back in time, and the cache
that lets a clip be processed in chunks with the same result as all at once."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CausalCache:
    """What each causal module remembers of earlier chunks of one stream.

    Only the frames a temporal kernel can still reach are kept (2 for a 3-tap conv, 1 for the stride-2
    downsampler), cloned so that the rest of a chunk's activations can be freed.
    """

    def __init__(self) -> None:
        self._tails: dict[nn.Module, Tensor] = {}
        self._started: set[nn.Module] = set()

    def tail(self, module: nn.Module) -> Tensor | None:
        return self._tails.get(module)

    def keep(self, module: nn.Module, frames: Tensor) -> None:
        self._tails[module] = frames.clone()

    def first_call(self, module: nn.Module) -> bool:
        """True the first time `module` asks: it is then seeing the stream's first frame."""
        first = module not in self._started
        self._started.add(module)
        return first


class Conv3d(nn.Conv3d):
    """nn.Conv3d that takes oneDNN for fp32 on CPU.

    PyTorch's heuristic sends small-batch fp32 video convs to its reference kernel (slow_conv3d), about
    10x slower here; bf16 (autocast) already goes to oneDNN.
    """

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W)
        if (x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available()):
            return torch.ops.aten.mkldnn_convolution(
                x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super().forward(x)


class CausalConv3d(Conv3d):
    """3D conv that only looks back in time: its k-1 frames of left context come from the previous
    chunk (via the cache), or are zeros at the start of the stream; space is zero-padded 'same'."""

    def __init__(self, in_dim: int, out_dim: int, kernel: tuple[int, int, int] = (3, 3, 3)) -> None:
        super().__init__(in_dim, out_dim, kernel, padding=(0, kernel[1] // 2, kernel[2] // 2))
        self.time_pad = kernel[0] - 1

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:  # (B, C, T, H, W)
        if self.time_pad == 0:  # a 1-frame kernel needs no context
            return super().forward(x)
        prev = cache.tail(self) if cache is not None else None
        if prev is None:
            b, c, _, h, w = x.shape
            prev = x.new_zeros(b, c, self.time_pad, h, w)
        x = torch.cat([prev, x], dim=2)  # (B, C, T + k - 1, H, W)
        if cache is not None:
            cache.keep(self, x[:, :, -self.time_pad:])
        return super().forward(x)  # (B, C', T, H, W)
