"""Distillation: a trained DiT (the teacher) becomes a student that samples in half the steps, without CFG.

One round of progressive distillation (Salimans & Ho, 2022) in rectified-flow form, with classifier-free
guidance folded in at the same time (Meng et al., 2023):

    teacher   two guided Euler steps   x_t -> x_mid -> x_end    on the 2N-step schedule
    student   one plain Euler step     x_t -> x_end             on every other time of it (N steps)
    target    (x_end - x_t) / (t_end - t)

x_t comes from the cached latents and fresh noise at the schedule's times, as in progressive distillation.
The frames given as conditioning stay clean and out of the loss, exactly as in training, so the student keeps
every mode (image-to-video, extension, loops, connections). It samples with N DiT calls of batch 1, where the
teacher needed 2N calls of batch 2 (conditional and unconditional): a quarter of the work.
"""

from __future__ import annotations

import torch

from kinema import sampling
from kinema.conditioning import FrameCondition
from kinema.models.dit import DiT
from kinema.train_dit import DiTStage


class DistillStage(DiTStage):
    """The DiT stage with the teacher's two guided steps as the target; everything else (data, masks,
    optimizer, EMA, checkpoints, samples) is the DiT stage's. `model_cfg.sampler` is the student's."""

    plot_title = "DiT distillation (two guided teacher steps in one)"

    def __init__(self, *args, teacher_state: dict[str, torch.Tensor], guidance: float,
                 student_state: dict[str, torch.Tensor] | None = None, **kwargs):
        """The student starts as the teacher, or from `student_state` (e.g. an earlier student of it)."""
        super().__init__(*args, init_state=teacher_state if student_state is None else student_state, **kwargs)
        self.teacher = DiT(self.model_cfg.dit).eval().requires_grad_(False)
        self.teacher.load_state_dict(teacher_state)
        self.teacher.to(self.device)
        self.guidance = guidance
        self.uncond, self.uncond_mask = self.text([""])  # (1, L, D), (1, L): CFG's unconditional input

    def draw_times(self, batch: int, shift: float) -> torch.Tensor:
        """(B, 3): t, t_mid, t_end of one student step, a uniformly drawn pair of the teacher's steps."""
        steps = self.model_cfg.sampler.steps
        times = sampling.schedule(2 * steps, shift)  # (2N + 1,) from 1 down to 0
        k = 2 * torch.randint(steps, (batch,), generator=self.gen)
        return torch.stack([times[k], times[k + 1], times[k + 2]], dim=1)

    @torch.no_grad()
    def velocity_target(self, x0: torch.Tensor, eps: torch.Tensor, x_t: torch.Tensor, path: torch.Tensor,
                        cond: FrameCondition, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """The constant velocity that lands where the teacher's two guided Euler steps land (b, C, T, h, w)."""
        teacher = sampling.guided(self.teacher, context, context_mask, self.uncond, self.uncond_mask, self.guidance)
        x = x_t
        for i in range(2):
            t, t_next = path[:, i], path[:, i + 1]  # (b,)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
                v = teacher(x, cond.frame_times(t)).float()
            x = cond.apply(x + _per_clip(t_next - t) * v)  # given frames stay clean, as the sampler keeps them
        return (x - x_t) / _per_clip(path[:, 2] - path[:, 0])


def _per_clip(values: torch.Tensor) -> torch.Tensor:
    """(b,) -> (b, 1, 1, 1, 1), to scale latents clip by clip."""
    return values.view(-1, 1, 1, 1, 1)
