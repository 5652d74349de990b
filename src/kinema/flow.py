"""Rectified flow: the whole training objective on one screen.

    x_t = (1 - t) * x0 + t * eps          t in [0, 1], t = 0 is data, t = 1 is noise
    v   = eps - x0                        the velocity the DiT learns to predict
    dx/dt = v  => sampling walks from t = 1 down to t = 0

Time is drawn logit-normally (most weight on mid t, where the task is hardest) and
shifted towards noise for larger videos, whose many tokens let more signal survive
a given noise level (SD3 / Wan practice).
"""

from __future__ import annotations

import math

import torch


def interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for latents (B, C, T, H, W) and t of shape (B,) or per frame (B, T)."""
    return x0 + _frame_view(t, x0) * (eps - x0)


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return eps - x0


def sample_t(batch: int, generator: torch.Generator | None = None, mean: float = 0.0, std: float = 1.0,
             shift: float = 1.0) -> torch.Tensor:
    """Logit-normal training times (B,), optionally shifted like the sampling schedule."""
    t = torch.sigmoid(mean + std * torch.randn(batch, generator=generator))
    return shift_time(t, shift)


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Warp t towards 1 (noise) by `shift`: t' = s t / (1 + (s - 1) t); shift 1 is the identity."""
    return shift * t / (1 + (shift - 1) * t)


def shift_for(num_tokens: int, base_shift: float, base_tokens: int) -> float:
    """Resolution/duration-dependent shift: noise must rise as sqrt(tokens) to hide the same signal."""
    return max(1.0, base_shift * math.sqrt(num_tokens / base_tokens))


def loss(v_pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, frame_weight: torch.Tensor | None = None,
         weight_total: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error against the straight line's velocity eps - x0."""
    return velocity_loss(v_pred, velocity_target(x0, eps), frame_weight, weight_total)


def velocity_loss(v_pred: torch.Tensor, target: torch.Tensor, frame_weight: torch.Tensor | None = None,
                  weight_total: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared velocity error; `frame_weight` (B, T) zeroes frames given as clean conditioning, or (B, T, H, W)
    the latent pixels given where frames are given in part.

    `weight_total` (in whole frames) divides instead of frame_weight's own sum: a rank holding part of a global batch
    passes the batch's total over the number of ranks, so the ranks' average is the whole batch's loss.
    """
    if frame_weight is not None and frame_weight.dim() == 4:  # per latent pixel: a frame's pixels weigh 1 in all
        pixels = frame_weight.shape[2] * frame_weight.shape[3]
        err = (v_pred.float() - target.float()).pow(2).mean(dim=1) / pixels  # (B, T, H, W)
        total = frame_weight.sum() / pixels if weight_total is None else weight_total
        return (err * frame_weight).sum() / total.clamp_min(1)
    err = (v_pred.float() - target.float()).pow(2).mean(dim=(1, 3, 4))  # (B, T)
    if frame_weight is None:
        return err.mean()
    total = frame_weight.sum() if weight_total is None else weight_total
    return (err * frame_weight).sum() / total.clamp_min(1)


def _frame_view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast t (B,) or (B, T) against x (B, C, T, H, W)."""
    if t.dim() == 1:
        return t.view(-1, 1, 1, 1, 1).to(x.dtype)
    return t[:, None, :, None, None].to(x.dtype)
