"""Frame conditioning: the one mechanism behind every Sora mode.

The DiT takes a timestep per latent frame. A latent frame the user gives (a still
image, the end of a clip to extend, both ends of a connection) is placed at its
position and kept clean with t = 0 at every sampling step, while the other frames
are denoised. Training draws random masks of the same kinds so one model learns
text-to-video, image-to-video, extension, loops and connections at once.

A frame may also be given in part (`partly`): its given tokens stay clean with t = 0 and the rest of it is
drawn around them, so a camera pan can cross a scene wider than a given image (outpainting). The DiT takes a
time per token for that; it was never trained on such frames, yet it draws the rest of a frame around its
clean tokens far better than by re-noising them at every step (docs/MODEL.md, session 32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FrameCondition:
    """Clean latent frames at known positions."""

    latents: torch.Tensor  # (B, C, T, H, W); only frames where mask (or region) is True are read
    mask: torch.Tensor  # (B, T) bool, True = given (kept clean)
    region: torch.Tensor | None = None  # (B, T, H / ph, W / pw) bool: tokens given in frames given in part

    @classmethod
    def none(cls, latent_shape: tuple[int, ...]) -> FrameCondition:
        b, _, t = latent_shape[:3]
        return cls(torch.zeros(latent_shape), torch.zeros(b, t, dtype=torch.bool))

    @classmethod
    def at(cls, latent_shape: tuple[int, ...], frames: torch.Tensor, positions: list[int]) -> FrameCondition:
        """Place `frames` (B, C, len(positions), H, W) at latent frame `positions` (negatives count from the end)."""
        cond = cls.none(latent_shape)
        t = latent_shape[2]
        for i, pos in enumerate(positions):
            pos = pos % t
            cond.latents[:, :, pos] = frames[:, :, i].to(cond.latents.dtype)
            cond.mask[:, pos] = True
        return cond

    @classmethod
    def window(cls, new_shape: tuple[int, ...], before: torch.Tensor | None = None,
               after: torch.Tensor | None = None) -> FrameCondition:
        """The sampling window [before | new | after]: clean context latents around `new` frames to generate.

        new_shape (B, C, m, H, W); before (B, C, k, H, W) and after (B, C, e, H, W) are optional. Extension
        puts context before (a "first k" mask), backward extension after ("last k"), connections both.
        """
        b, c, m, h, w = new_shape
        k = 0 if before is None else before.shape[2]
        e = 0 if after is None else after.shape[2]
        shape = (b, c, k + m + e, h, w)
        given = [x for x in (before, after) if x is not None]
        if not given:
            return cls.none(shape)
        return cls.at(shape, torch.cat(given, dim=2), [*range(k), *range(k + m, k + m + e)])

    def partly(self, top: int, left: int, height: int, width: int, patch: tuple[int, int]) -> FrameCondition:
        """This condition with its given frames given only inside a box of latent pixels, whole `patch`es
        (the DiT's) from the top left: the rest of those frames is drawn around it (outpainting)."""
        ph, pw = patch
        if top % ph or left % pw or height % ph or width % pw:
            raise ValueError(f"box {top, left, height, width} does not cover whole {ph}x{pw} patches")
        b, _, t, h, w = self.latents.shape
        region = torch.zeros(b, t, h // ph, w // pw, dtype=torch.bool)
        region[:, :, top // ph:(top + height) // ph, left // pw:(left + width) // pw] = True
        return FrameCondition(self.latents, torch.zeros_like(self.mask), region & self.mask[:, :, None, None])

    def given(self) -> torch.Tensor:
        """(B, 1, T, H, W) bool: the latent pixels kept clean."""
        given = self.mask[:, None, :, None, None]
        if self.region is None:
            return given
        h, w = self.latents.shape[-2:]
        pixels = self.region.repeat_interleave(h // self.region.shape[-2], dim=-2)
        return given | pixels.repeat_interleave(w // self.region.shape[-1], dim=-1)[:, None]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, T, H, W) with the given frames (or tokens) replaced by their clean latents."""
        return torch.where(self.given().to(x.device), self.latents.to(device=x.device, dtype=x.dtype), x)

    def frame_times(self, t: torch.Tensor) -> torch.Tensor:
        """The DiT's times: `t` (B,) everywhere except 0 where given; per frame (B, T), or per token
        (B, T, H / ph, W / pw) when frames are given in part."""
        times = t[:, None].expand(self.mask.shape).to(torch.float32)
        times = torch.where(self.mask.to(times.device), torch.zeros_like(times), times)
        if self.region is None:
            return times
        times = times[:, :, None, None].expand(self.region.shape)
        return torch.where(self.region.to(times.device), torch.zeros_like(times), times)

    def repeat(self, n: int) -> FrameCondition:
        """The same condition for a batch n times larger (e.g. for cond/uncond CFG)."""
        region = None if self.region is None else self.region.repeat(n, 1, 1, 1)
        return FrameCondition(self.latents.repeat(n, 1, 1, 1, 1), self.mask.repeat(n, 1), region)


# Training mask kinds and how often each is drawn; "none" dominates so text-to-video stays the main task.
MASK_KINDS = {"none": 0.5, "first": 0.2, "first_k": 0.1, "last_k": 0.1, "first_last": 0.1}


def random_regions(given: torch.Tensor, grid: tuple[int, int], share: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Give a `share` of clips their given frames only in part, as a camera move gives an image or a clip's end
    inside a larger scene (`FrameCondition.partly`): returns the frame mask (B, T) with those clips' frames no longer
    whole, and the tokens given (B, T, h', w') on a `grid` of h' x w' tokens. Such a clip with no frame given gets
    its first; its box covers 50-90% of each side at a random place, and at least one token is left to draw."""
    batch, frames = given.shape
    rows, cols = grid
    given, region = given.clone(), torch.zeros(batch, frames, rows, cols, dtype=torch.bool)
    picked = torch.rand(batch, generator=generator) < share
    for b in picked.nonzero().flatten().tolist():
        sides = [max(1, round(side * float(0.5 + 0.4 * torch.rand((), generator=generator)))) for side in grid]
        if sides == [rows, cols]:
            continue  # a grid too small to leave a token: the clip keeps whole frames
        top, left = (int(torch.randint(0, side - size + 1, (), generator=generator))
                     for side, size in zip(grid, sides, strict=True))
        chosen = given[b] if given[b].any() else torch.arange(frames) == 0
        region[b, chosen, top:top + sides[0], left:left + sides[1]] = True
        given[b] = False
    return given, region


def random_masks(batch: int, frames: int, generator: torch.Generator | None = None,
                 probs: dict[str, float] | None = None) -> torch.Tensor:
    """Random training masks (B, T) bool: none, first frame, first k, last k, or first + last.

    At least one latent frame is always left to denoise, so a 1-frame clip is never masked.
    """
    probs = probs or MASK_KINDS
    kinds = list(probs)
    weights = torch.tensor([probs[k] for k in kinds])
    choice = torch.multinomial(weights, batch, replacement=True, generator=generator)
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    if frames < 2:
        return mask
    for b, c in enumerate(choice.tolist()):
        k = int(torch.randint(1, max(2, frames // 2 + 1), (1,), generator=generator))
        kind = kinds[c]
        if kind == "first":
            mask[b, 0] = True
        elif kind == "first_k":
            mask[b, :k] = True
        elif kind == "last_k":
            mask[b, frames - k:] = True
        elif kind == "first_last" and frames >= 3:
            mask[b, 0] = mask[b, -1] = True
    return mask
