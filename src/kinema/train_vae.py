"""Stage 1: the causal VAE, in fp32 on small random crops of short clips and single frames.

    loss = L1 + MSE                          pixels in [-1, 1], each weighted 1 + motion_weight * |x_t - x_t-1|
         + edge_weight * L1(grad recon - grad x)   spatial gradients: keeps edges sharp
         + kl_weight * KL(q(z|x) || N(0, 1))       small: only keeps the latent scale in check

The decoder sees the posterior mean unless [vae] sample_posterior is set (see recipe.VAERecipe).
fp32 on purpose: under bf16 autocast, conv3d weight gradients crash this CPU at >= 96 px.
Afterwards the per-channel mean/std of latents over a sample of clips are measured; they map
latents to ~N(0, 1) for the DiT and go into the exported config.
"""

from __future__ import annotations

import json
import math
from collections import deque
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import torch

from kinema.checkpoint import atomic_write, save_tensors
from kinema.config import VAEConfig
from kinema.data import Bucket, Source, to_video
from kinema.errors import KinemaError
from kinema.models.patch_vae import widen_time_kernels
from kinema.models.vae import CausalVAE
from kinema.parallel import ONE_CPU
from kinema.recipe import Recipe
from kinema.train_loop import Metrics, load_state, lr_factor, rng_state, save_state, set_rng_state

DECODER_SIDE = ("decoder.", "post_quant_conv.")  # parameters that act after the latents
TRAIN_STREAM = -1  # the source's random stream for VAE training clips (buckets use 0, 1, ...)
PREFETCH = 4  # batches rendered ahead when a pool of render processes is given


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
             kl_weight: float, edge_weight: float, motion_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts; recon, x (B, 3, T, H, W), mean/logvar (B, z, T', h, w)."""
    diff = recon - x
    weight = motion_weights(x, motion_weight)  # (B, 1, T, H, W), mean 1
    l1, mse = (weight * diff.abs()).mean(), (weight * diff.pow(2)).mean()
    edge = _gradient_l1(recon, x)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
    loss = l1 + mse + edge_weight * edge + kl_weight * kl
    return loss, {"l1": l1.item(), "mse": mse.item(), "edge": edge.item(), "kl": kl.item()}


def motion_weights(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-pixel loss weights (B, 1, T, H, W) of videos x (B, 3, T, H, W), scaled to mean 1: 1 + strength times how
    much each pixel changed from the frame before (frame 0 takes frame 1's change). Moving objects are a few pixels
    of a clip, and the ones a 4-frame latent block smears (docs/MODEL.md, session 19); stills weigh 1 everywhere."""
    if not strength or x.shape[2] < 2:
        return x.new_ones(x.shape[0], 1, *x.shape[2:])
    change = x.diff(dim=2).abs().mean(dim=1, keepdim=True)  # (B, 1, T - 1, H, W)
    weight = 1 + strength * torch.cat([change[:, :, :1], change], dim=2)
    return weight / weight.mean(dim=(1, 2, 3, 4), keepdim=True)


def _gradient_l1(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical finite differences of recon and x."""
    dx = (recon.diff(dim=-1) - x.diff(dim=-1)).abs().mean()
    dy = (recon.diff(dim=-2) - x.diff(dim=-2)).abs().mean()
    return dx + dy


def psnr(recon: torch.Tensor, x: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (as 8-bit images would be scored: peak 1 on a [0, 1] scale)."""
    mse = ((recon.clamp(-1, 1) - x) / 2).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-10))


class VAEStage:
    name = "vae"

    def __init__(self, recipe: Recipe, folder: Path, source: Source, resume: bool,
                 init_state: dict[str, torch.Tensor] | None = None, device: torch.device = ONE_CPU.device,
                 pool: Executor | None = None):
        self.recipe, self.cfg, self.folder, self.source = recipe, recipe.vae, folder, source
        self.eval_source = source.held_out()
        # With a pool, the next PREFETCH batches render in other processes while this one trains. Their crops are
        # drawn here in order, each with the generator state before it, so batches and checkpoints are the same
        # as without one.
        self.pool, self.ahead = pool, deque()
        self.device = device
        self.total = self.cfg.steps
        torch.manual_seed(recipe.data.seed)  # the posterior sample in CausalVAE.forward uses it
        self.vae = CausalVAE(recipe.model.vae)
        if init_state is not None and self.cfg.fresh_decoder:  # only the encoder: the decoder starts random
            self.vae.load_state_dict(encoder_side(init_state), strict=False)
        elif init_state is not None:  # a longer decoder time kernel starts as the init's (widen_time_kernels)
            self.vae.load_state_dict(widen_time_kernels(init_state, self.vae.state_dict()))
        self.vae.to(device)
        if not self.cfg.train_encoder:  # the latents stay the init model's: only the decoder side learns
            for name, param in self.vae.named_parameters():
                param.requires_grad_(name.startswith(DECODER_SIDE))
        trainable = [p for p in self.vae.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(trainable, lr=self.cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(recipe.data.seed)
        self.step, self.next_clip = 0, 0
        self.sizes = sorted({(w, h) for w, h, _ in recipe.buckets})
        self.eval_bucket = _eval_bucket(recipe)
        self.judged: tuple[int, dict[str, float]] = (-1, {})  # (step, judge_scores) of the last judged eval
        if resume:
            self._load(load_state(folder / "checkpoint.pt"))
        self.metrics = Metrics(folder / "metrics.jsonl", self.step if resume else None)

    def _load(self, state: dict) -> None:
        self.vae.load_state_dict(state["vae"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.next_clip = state["step"], state["next_clip"]
        self.gen.set_state(state["gen"])
        set_rng_state(state["rng"])

    def save(self) -> None:
        """The generator state and clip counter are those before the first batch not yet trained on."""
        gen, next_clip = self.ahead[0][0] if self.ahead else (self.gen.get_state(), self.next_clip)
        save_state(self.folder / "checkpoint.pt", {
            "vae": self.vae.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
            "next_clip": next_clip, "gen": gen, "rng": rng_state()})
        self.metrics.plot(self.folder / "loss.png", "VAE")

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.gen))

    def batch(self) -> torch.Tensor:
        """Random crops (B, 3, T, crop, crop) of fresh clips rendered at a bucket's size; one T per batch."""
        if self.pool is None:
            return to_video([_crop(self.source, *spec) for spec in self._draw_crops()])
        while len(self.ahead) < PREFETCH:
            before = (self.gen.get_state(), self.next_clip)
            self.ahead.append((before, [self.pool.submit(_crop, self.source, *spec) for spec in self._draw_crops()]))
        _, crops = self.ahead.popleft()
        return to_video([crop.result() for crop in crops])

    def _draw_crops(self) -> list[tuple[int, Bucket, int, int, int]]:
        """One batch's crops as (clip index, bucket, top, left, size); one frame count for the whole batch."""
        frames = self.cfg.frames[self._randint(len(self.cfg.frames))]
        crops = []
        for _ in range(self.cfg.batch):
            width, height = self.sizes[self._randint(len(self.sizes))]
            top, left = self._randint(height - self.cfg.crop + 1), self._randint(width - self.cfg.crop + 1)
            crops.append((self.next_clip, Bucket(width, height, frames), top, left, self.cfg.crop))
            self.next_clip += 1
        return crops

    def train_step(self) -> dict[str, float]:
        x = self.batch().to(self.device)  # (B, 3, T, crop, crop)
        lr = self.cfg.lr * lr_factor(self.step, self.cfg.warmup, self.total)
        for group in self.opt.param_groups:
            group["lr"] = lr
        # Eval mode makes forward decode the posterior mean (it would also switch off vae.dropout, 0 in presets).
        self.vae.train(self.cfg.sample_posterior)
        recon, mean, logvar = self.vae(x)
        loss, parts = vae_loss(recon, x, mean, logvar, self.cfg.kl_weight, self.cfg.edge_weight,
                               self.cfg.motion_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.vae.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        return {"loss": loss.item(), **parts, "lr": lr, "grad_norm": float(grad_norm), "frames": x.shape[2]}

    def periodic(self) -> dict[str, float]:
        if self.step % self.cfg.eval_every == 0 or self.step == self.total:
            x, _ = self.eval_clips()
            recon = self.reconstruct(x)
            scores = {"psnr": psnr(recon, x)}
            block = self.recipe.model.vae.temporal_factor
            if x.shape[2] > block:  # frames on both sides of a latent-frame boundary
                scores["block_jump"] = block_jump(recon, block)
            return scores | self.judge_scores()
        return {}

    def judge_scores(self) -> dict[str, float]:
        """The judge on round trips of `judge_clips` hold-out prompts' true renders at the eval bucket's size, per
        target attribute and overall (evaluate.judge_round_trips)."""
        if not self.cfg.judge_clips or self.recipe.data.source != "world":  # world scenes say nothing of your videos
            return {}
        if self.judged[0] == self.step:  # the last eval's, which finish() repeats
            return self.judged[1]
        from kinema.evaluate import TARGETS, judge_round_trips, scenes_for
        from kinema.io import to_uint8

        def round_trip(clip: np.ndarray) -> np.ndarray:
            return to_uint8(self.reconstruct(to_video([clip]).to(self.device)).cpu())

        bucket, tf = self.eval_bucket, self.recipe.model.vae.temporal_factor
        pairs = scenes_for("heldout", self.cfg.judge_clips, seed=0)
        scores = judge_round_trips(round_trip, pairs, bucket.width, bucket.height, bucket.frames, self.source.fps, tf)
        self.judged = (self.step, {f"judge_{name}": round(scores[name], 4) for name in (*TARGETS, "overall")})
        return self.judged[1]

    def eval_clips(self) -> tuple[torch.Tensor, int]:
        """Clips to measure on (B, 3, T, H, W): the source's held-out ones (the world's eval split, a folder's
        every 20th video), or its first training clips when it holds none out (`measured_on` says which); and how
        many videos they come from (a folder with few videos gives several windows of each)."""
        source = self.eval_source or self.source
        clips = [source.clip(i, self.eval_bucket) for i in range(self.cfg.eval_clips)]
        videos = len({clip.meta.get("path", i) for i, clip in enumerate(clips)})  # world clips are all distinct
        return to_video([clip.frames for clip in clips]).to(self.device), videos

    @property
    def measured_on(self) -> str:
        return "held-out" if self.eval_source else "training"

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        self.vae.eval()  # decodes the posterior mean
        return torch.cat([self.vae(x[i:i + 1])[0] for i in range(len(x))])

    def finish(self, keep_stats: VAEConfig | None = None) -> dict:
        """Write the VAE weights, a reconstruction grid and result.json with the latent statistics
        (measured, or those of `keep_stats`)."""
        from kinema.io import to_uint8
        from kinema.sheets import save_grid

        x, videos = self.eval_clips()
        recon = self.reconstruct(x)
        score = psnr(recon, x)
        pairs = [to_uint8(v.cpu()) for pair in zip(x, recon, strict=True) for v in pair]
        save_grid(self.folder / "reconstructions.png", pairs,
                  [f"{self.measured_on} clip {i // 2}" + (" (VAE)" if i % 2 else "") for i in range(len(pairs))])
        mean, std = (keep_stats.latents_mean, keep_stats.latents_std) if keep_stats else self.latent_stats()
        save_tensors(self.folder / "vae.safetensors", self.vae.state_dict())
        result = {"steps": self.step, "psnr": round(score, 3), "psnr_clips": self.measured_on, "psnr_videos": videos,
                  **self.judge_scores(), "latents_mean": mean, "latents_std": std}
        with atomic_write(self.folder / "result.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        return result

    @torch.no_grad()
    def latent_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of raw latent means over `stats_clips` training clips."""
        bucket = self.eval_bucket
        means = []
        for i in range(self.cfg.stats_clips):
            clip = self.source.clip(i, bucket, TRAIN_STREAM)
            means.append(self.vae.encode_dist(to_video([clip.frames]).to(self.device))[0].cpu())  # (1, z, T', h, w)
        z = torch.cat(means).transpose(0, 1).flatten(1)  # (z, N * T' * h * w)
        mean, std = z.mean(dim=1), z.std(dim=1).clamp_min(1e-4)
        if not torch.isfinite(std).all():
            raise KinemaError("the VAE's latents are not finite; lower [vae] lr and train the VAE again")
        return [round(v, 5) for v in mean.tolist()], [round(v, 5) for v in std.tolist()]


def encoder_side(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights of `state` that act before the latents."""
    return {key: value for key, value in state.items() if not key.startswith(DECODER_SIDE)}


def block_jump(video: torch.Tensor, block: int) -> float:
    """Mean frame difference across latent-frame boundaries over that inside blocks, for (B, 3, 1 + k*block, H, W).

    About 1 for motion spread evenly over the frames; well above 1 for stop motion (stills that jump at each
    latent frame). The first frame is its own latent frame, so boundaries fall after frames 0, block, 2*block...
    An L1 loss on frame differences does not lower it: unsure of the motion, its optimum is none, so it makes
    each block stiller (docs/MODEL.md, session 12).
    """
    diffs = video.diff(dim=2).abs().mean(dim=(0, 1, 3, 4))  # (T - 1,)
    at_boundary = torch.zeros_like(diffs, dtype=torch.bool)
    at_boundary[::block] = True
    inside = diffs[~at_boundary].mean()
    return float(diffs[at_boundary].mean() / inside.clamp_min(1e-8))


def _crop(source: Source, index: int, bucket: Bucket, top: int, left: int, size: int) -> np.ndarray:
    """Frames (T, size, size, 3) of training clip `index` rendered at the bucket's size, cut at (top, left)."""
    return source.clip(index, bucket, TRAIN_STREAM).frames[:, top:top + size, left:left + size]


def _eval_bucket(recipe: Recipe) -> Bucket:
    """The first video bucket (else the first bucket), at full size."""
    videos = [b for b in recipe.buckets if b[2] > 1] or recipe.buckets
    return Bucket(*videos[0])
