"""Stage 2: the DiT on cached latents, with rectified flow.

Each step draws one bucket (so a batch has one size), clips from that bucket's shuffled
epoch order, fresh captions (10% dropped to "" for classifier-free guidance), noise, a
logit-normal time and a random frame-conditioning mask. Masked latent frames stay clean
with t = 0 and are left out of the loss, so one model learns text-to-video, image-to-video,
extension and connections; with `[dit] outpaint_share`, a share of clips is given only inside a
box of tokens, which get t = 0 each (outpainting). bf16 autocast for the DiT, fp32 weights, AdamW, EMA.

On a GPU the model, the text encoder and the whole latent cache live there. Every random draw
still comes from the CPU generator, so a step's batch, noise and masks do not depend on the device.
Under torchrun every rank draws the same global batch and trains on its share of the rows
(rank, rank + N, ...), with the DiT sharded by FSDP2 (kinema.parallel), which averages the
gradients: the same update as one process with the whole batch.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from kinema import conditioning, flow, parallel, probe, sampling, world
from kinema.checkpoint import Model
from kinema.conditioning import FrameCondition
from kinema.config import ModelConfig
from kinema.data import CachedBucket, Source, WorldSource, stable_seed
from kinema.models.dit import DiT
from kinema.models.text import TextEncoder
from kinema.parallel import ONE_CPU, Dist
from kinema.pipeline import Pipeline
from kinema.recipe import Recipe
from kinema.train_loop import EMA, Metrics, load_state, lr_factor, rng_state, save_state, set_rng_state


class DiTStage:
    name = "dit"
    plot_title = "DiT (rectified flow)"  # of loss.png

    def __init__(self, recipe: Recipe, model_cfg: ModelConfig, folder: Path, cache: list[CachedBucket],
                 source: Source, vae: torch.nn.Module, resume: bool,
                 init_state: dict[str, torch.Tensor] | None = None, dist: Dist = ONE_CPU):
        self.recipe, self.cfg, self.model_cfg, self.folder = recipe, recipe.dit, model_cfg, folder
        self.dist = dist
        self.device = device = dist.device
        self.cache = [dataclasses.replace(c, latents=c.latents.to(device)) for c in cache]
        self.source, self.vae = source, vae.to(device)
        self.total, self.seed = self.cfg.steps, recipe.data.seed
        torch.manual_seed(self.seed)
        self.dit = DiT(model_cfg.dit)
        if init_state is not None:
            self.dit.load_state_dict(init_state)
        self.dit.to(device)
        if dist.world_size > 1:
            parallel.parallelize(self.dit, fsdp=True)
        self.ema = EMA(self.dit, self.cfg.ema_decay)
        self.opt = torch.optim.AdamW(_param_groups(self.dit, self.cfg.weight_decay), lr=self.cfg.lr,
                                     betas=(0.9, 0.99))
        self.text = TextEncoder(model_cfg.text).to(device)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.step = 0
        self.cursor = [[0, 0] for _ in cache]  # per bucket: [epoch, position in that epoch's order]
        weights = [w if len(c.latents) else 0.0 for w, c in zip(recipe.bucket_weights, cache, strict=True)]
        self.bucket_weights = torch.tensor(weights, dtype=torch.float64)
        self.batch_sizes = [_share_evenly(c.bucket.batch_size(model_cfg, self.cfg.batch_tokens, self.cfg.max_batch),
                                          dist.world_size) for c in cache]
        if resume:
            self._load(load_state(folder / "checkpoint.pt"))
        self.metrics = Metrics(folder / "metrics.jsonl", self.step if resume else None, enabled=dist.is_main)

    # -- checkpoints -----------------------------------------------------------------------------
    def _load(self, state: dict) -> None:
        parallel.scatter_state(self.dit, self.opt, state["dit"], state["opt"])
        self.ema.shadow = parallel.shard_like(self.dit, state["ema"])
        self.step, self.cursor = state["step"], state["cursor"]
        self.gen.set_state(state["gen"])
        set_rng_state(state["rng"])

    def save(self) -> None:
        """Full tensors in one file (gathered from every rank), written by the first rank only."""
        dit_state, opt_state = parallel.gather_state(self.dit, self.opt)
        ema = parallel.full_tensors(self.ema.shadow)
        if not self.dist.is_main:
            return
        save_state(self.folder / "checkpoint.pt", {
            "dit": dit_state, "ema": ema, "opt": opt_state,
            "step": self.step, "cursor": self.cursor, "gen": self.gen.get_state(), "rng": rng_state()})
        self.metrics.plot(self.folder / "loss.png", self.plot_title)

    # -- one step --------------------------------------------------------------------------------
    def _indices(self, bucket: int, count: int) -> list[int]:
        """The next `count` clips of the bucket's epoch order (a fresh shuffle every epoch)."""
        epoch, pos = self.cursor[bucket]
        size, picked = len(self.cache[bucket].latents), []
        while len(picked) < count:
            if pos >= size:  # a resumed run whose cache has since shrunk: that epoch is over
                epoch, pos = epoch + 1, 0
            shuffle = torch.Generator().manual_seed(stable_seed(self.seed, bucket, epoch))
            order = torch.randperm(size, generator=shuffle)
            take = order[pos:pos + count - len(picked)].tolist()
            picked += take
            pos += len(take)
            if pos == size:
                epoch, pos = epoch + 1, 0
        self.cursor[bucket] = [epoch, pos]
        return picked

    def captions(self, metas: list[dict]) -> list[str]:
        """Fresh captions (the world re-draws them from its grammar), some dropped to "" for CFG."""
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=self.gen)))
        drop = torch.rand(len(metas), generator=self.gen) < self.cfg.caption_dropout
        return ["" if d else self.source.caption(m, rng) for m, d in zip(metas, drop.tolist(), strict=True)]

    def next_batch(self) -> tuple[CachedBucket, torch.Tensor, list[str]]:
        """A bucket, its next clips' latents (B, C, T, h, w) fp32 and their fresh captions."""
        b = int(torch.multinomial(self.bucket_weights, 1, generator=self.gen))
        cached = self.cache[b]
        idx = self._indices(b, self.batch_sizes[b])
        return cached, cached.latents[idx].float(), self.captions([cached.metas[i] for i in idx])

    def train_step(self) -> dict[str, float]:
        start = time.perf_counter()
        cached, x0, captions = self.next_batch()  # the global batch: x0 (B, C, T, h, w)
        batch = x0.shape[0]
        eps = sampling.initial_noise(x0.shape, self.cfg.noise_correlation, self.gen)  # rho 0: plain randn
        tokens = cached.bucket.tokens(self.model_cfg)
        sampler = self.model_cfg.sampler
        shift = flow.shift_for(tokens, sampler.shift, sampler.shift_base_tokens)  # as sampling will use
        path = self.draw_times(batch, shift)  # (B, K): each clip's noise level t, then the times its step visits
        cond = self.draw_condition(x0)  # which frames (or tokens) are given clean
        weight = loss_weight(cond)  # (B, T), or (B, T, h, w) where frames are given in part
        weight_total = (weight.sum() / (weight[0, 0].numel() * self.dist.world_size)).to(self.device)  # per rank
        rows = slice(self.dist.rank, None, self.dist.world_size)  # this rank's share (all rows in one process)
        x0, eps, weight = x0[rows].to(self.device), eps[rows].to(self.device), weight[rows].to(self.device)
        cond = FrameCondition(x0, cond.mask[rows].to(self.device),
                              None if cond.region is None else cond.region[rows].to(self.device))
        path = path[rows].to(self.device)
        t = path[:, 0]  # (b,)
        context, context_mask = self.text.encode(captions[rows])  # (b, L, D), (b, L)
        t_model = cond.frame_times(t)  # (b, T), or (b, T, h', w') per token
        x_t = cond.apply(flow.interpolate(x0, eps, t))  # (b, C, T, h, w), clean where given
        target = self.velocity_target(x0, eps, x_t, path, cond, context, context_mask)

        lr = self.cfg.lr * lr_factor(self.step, self.cfg.warmup, self.total)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.dit.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            v = self.dit(x_t, t_model, context, context_mask)
        loss = flow.velocity_loss(v, target, frame_weight=weight, weight_total=weight_total)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.dit.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.ema.update(self.dit, self.step)
        self.step += 1
        return {"loss": parallel.mean_over_ranks(loss.item()), "lr": lr,
                "grad_norm": float(parallel.full_tensor(grad_norm)), "batch": batch,
                "tokens_per_s": batch * tokens / (time.perf_counter() - start)}

    def draw_condition(self, x0: torch.Tensor) -> FrameCondition:
        """Random frame masks (none, first frame, first k, last k, first + last) for the batch x0 (B, C, T, h, w);
        with `outpaint_share`, that share of clips gets its given frames only in part (a box of whole tokens)."""
        batch, _, frames, height, width = x0.shape
        given = conditioning.random_masks(batch, frames, self.gen, self.cfg.mask_probs)  # (B, T) True = clean
        if not self.cfg.outpaint_share:
            return FrameCondition(x0, given)
        _, ph, pw = self.model_cfg.dit.patch_size
        given, region = conditioning.random_regions(given, (height // ph, width // pw), self.cfg.outpaint_share,
                                                    self.gen)
        return FrameCondition(x0, given, region)

    def draw_times(self, batch: int, shift: float) -> torch.Tensor:
        """(B, 1): each clip's noise level, logit-normal and shifted as sampling will be. Rectified flow learns
        the velocity at that instant; a distillation also returns the times its step passes through."""
        return flow.sample_t(batch, self.gen, self.cfg.t_mean, self.cfg.t_std, shift)[:, None]

    def velocity_target(self, x0: torch.Tensor, eps: torch.Tensor, x_t: torch.Tensor, path: torch.Tensor,
                        cond: FrameCondition, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """What the DiT should output at x_t (b, C, T, h, w): for rectified flow, the straight line's eps - x0."""
        return flow.velocity_target(x0, eps)

    # -- samples ---------------------------------------------------------------------------------
    def periodic(self) -> dict[str, float]:
        """Samples and, on the world, the word probe: which words the EMA model reads so far."""
        if self.step % self.cfg.sample_every and self.step != self.total:
            return {}
        ema_dit = self.ema_model()  # collective: every rank gathers, only the first gets the model
        if ema_dit is None:
            return {}
        self.sample(self.folder / "samples" / f"step_{self.step:06d}.png", ema_dit)
        if not (self.cfg.probe_clips and isinstance(self.source, WorldSource)):
            return {}
        pipe = Pipeline(Model(self.model_cfg, self.vae.eval(), ema_dit, self.text, str(self.folder)),
                        self.device, bf16=self.cfg.bf16)
        gaps = probe.word_gaps(pipe, self.cfg.probe_clips, self.seed)
        return {f"prefers {name}": row["prefers"] for name, row in gaps.items()}

    def sample_prompts(self) -> list[str]:
        """The recipe's prompts, else two training captions and, for the world, two held-out ones."""
        if self.cfg.sample_prompts:
            return list(self.cfg.sample_prompts)
        rng = np.random.default_rng(self.seed)
        prompts = [self.source.caption(m, rng) for m in self.cache[0].metas[:2]]
        if isinstance(self.source, WorldSource):
            prompts += [text for text, _ in world.heldout_prompts(2, self.seed)]
        return prompts

    def ema_model(self) -> DiT | None:
        """The EMA weights as a DiT on the first rank (None on the others)."""
        shadow = parallel.full_tensors(self.ema.shadow)  # on every rank: gathering shards is collective
        if not self.dist.is_main:
            return None
        ema_dit = DiT(self.model_cfg.dit).eval()
        ema_dit.load_state_dict(self.ema.model_state(ema_dit, shadow))
        return ema_dit.to(self.device)

    @torch.no_grad()
    def sample(self, path: Path, ema_dit: DiT) -> None:
        """A grid of the fixed prompts sampled with the EMA weights, from the same noise every time."""
        from kinema.io import to_uint8
        from kinema.sheets import save_grid

        prompts, sampler, bucket = self.sample_prompts(), self.model_cfg.sampler, self.cache[0].bucket
        context, context_mask = self.text(prompts)  # (P, L, D), (P, L)
        uncond, uncond_mask = self.text([""])
        noise = sampling.initial_noise((len(prompts), *bucket.latent_shape(self.model_cfg)), sampler.noise_correlation,
                                       torch.Generator().manual_seed(self.seed)).to(self.device)  # (P, C, T, h, w)
        shift = flow.shift_for(bucket.tokens(self.model_cfg), sampler.shift, sampler.shift_base_tokens)
        times = sampling.schedule(self.cfg.sample_steps or sampler.steps, shift)
        model_fn = sampling.guided(ema_dit, context, context_mask, uncond, uncond_mask, sampler.guidance)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            latents = sampling.sample(model_fn, noise, times, method=sampler.method)
            videos = self.vae.eval().decode(latents.float()).cpu()  # (P, 3, T, H, W)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_grid(path, [to_uint8(v) for v in videos], [f"step {self.step}: {p}" for p in prompts])


def loss_weight(cond: FrameCondition) -> torch.Tensor:
    """1 where the loss is taken: (B, T) on frames not given, or (B, T, h, w) on latent pixels not given when
    frames are given in part."""
    if cond.region is None:
        return (~cond.mask).float()
    return (~cond.given()[:, 0]).float()


def _share_evenly(batch: int, ranks: int) -> int:
    """The batch rounded down to a multiple of the ranks (at least one clip each): equal shares."""
    return max(ranks, batch - batch % ranks)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; norms, biases and embeddings' scales are left alone."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
