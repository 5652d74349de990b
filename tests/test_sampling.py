import pytest
import torch

from kinema import sampling
from kinema.conditioning import FrameCondition


def oracle(x0: torch.Tensor):
    """The exact velocity field of a one-point data set: v = (x_t - x0) / t."""
    return lambda x, t: (x - x0) / t[:, None, :, None, None].clamp_min(1e-8)


def test_schedule_endpoints_and_edit_start():
    s = sampling.schedule(10, shift=3.0)
    assert s.shape == (11,) and s[0] == 1 and s[-1] == 0 and torch.all(s.diff() < 0)
    part = sampling.schedule(10, shift=1.0, start=0.4)
    assert abs(part[0].item() - 0.4) < 1e-6 and part[-1] == 0
    # With a shift, an edit's start is where the full schedule is after 60% of its way, then 10 finer steps.
    part = sampling.schedule(10, shift=3.0, start=0.4)
    assert part[0].item() == pytest.approx(s[6].item()) == pytest.approx(1.2 / 1.8)
    assert part.shape == (11,) and part[-1] == 0 and torch.all(part.diff() < 0)


def test_euler_and_heun_reach_the_data_point_of_an_exact_field():
    x0 = torch.randn(1, 3, 2, 4, 4)
    noise = torch.randn(1, 3, 2, 4, 4)
    for method in ("euler", "heun"):
        out = sampling.sample(oracle(x0), noise, sampling.schedule(6, 2.0), method=method)
        assert torch.allclose(out, x0, atol=1e-5), method


def test_condition_keeps_given_frames_clean_and_sees_t_zero():
    x0 = torch.randn(1, 3, 4, 4, 4)
    given = torch.randn(1, 3, 1, 4, 4)
    cond = FrameCondition.at((1, 3, 4, 4, 4), given, [0])
    seen = []

    def model_fn(x, t):
        seen.append(t.clone())
        assert torch.equal(x[:, :, 0], given[:, :, 0])
        return oracle(x0)(x, t)

    out = sampling.sample(model_fn, torch.randn(1, 3, 4, 4, 4), sampling.schedule(5), cond)
    assert torch.equal(out[:, :, 0], given[:, :, 0])
    assert torch.allclose(out[:, :, 1:], x0[:, :, 1:], atol=1e-5)
    assert all(t[0, 0] == 0 and t[0, 1] > 0 for t in seen)


def test_flow_edit_keeps_what_the_prompts_agree_on_and_reaches_the_target():
    source, target = torch.randn(1, 3, 3, 4, 4), torch.randn(1, 3, 3, 4, 4)
    gen = torch.Generator().manual_seed(0)
    noise = lambda: torch.randn(source.shape, generator=gen)  # noqa: E731
    times = sampling.schedule(5, 3.0, start=0.7)
    same = sampling.flow_edit(oracle(source), oracle(source), source, times, noise)
    assert torch.allclose(same, source, atol=1e-5)  # the two velocities cancel: nothing to change
    # With exact one-point fields the change is (edit - target) / t whatever the noise: Euler lands on the target.
    assert torch.allclose(sampling.flow_edit(oracle(source), oracle(target), source, times, noise), target, atol=1e-5)
    edited = torch.randn(1, 3, 1, 4, 4)  # a window's context, already edited: given as is to the target pass
    cond = FrameCondition.at(tuple(source.shape), edited, [0])
    seen = []

    def source_fn(x, t):
        seen.append(torch.equal(x[:, :, 0], source[:, :, 0]) and t[0, 0] == 0)  # the source's own frame, clean
        return oracle(source)(x, t)

    out = sampling.flow_edit(source_fn, oracle(target), source, times, noise, cond)
    assert torch.equal(out[:, :, 0], edited[:, :, 0]) and all(seen) and len(seen) == 5
    assert torch.allclose(out[:, :, 1:], target[:, :, 1:], atol=1e-5)


def test_callback_reports_every_step():
    calls = []
    sampling.sample(lambda x, t: torch.zeros_like(x), torch.randn(1, 1, 1, 2, 2), sampling.schedule(7),
                    callback=lambda i, n, t: calls.append((i, n)))
    assert calls == [(i, 7) for i in range(1, 8)]


class TinyDiT(torch.nn.Module):
    """Depends on x, t and the text so guidance has something to act on."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 3)

    def forward(self, x, t, ctx, mask=None):
        bias = self.proj(ctx.mean(1))[:, :, None, None, None]
        return torch.tanh(x) * (1 + t[:, None, :, None, None]) + bias


def test_cfg_scale_one_equals_conditional_path_and_batches_once():
    torch.manual_seed(0)
    dit = TinyDiT()
    ctx, unc = torch.randn(1, 5, 8), torch.zeros(1, 5, 8)
    mask = torch.ones(1, 5, dtype=torch.bool)
    x, t = torch.randn(1, 3, 2, 4, 4), torch.full((1, 2), 0.7)
    cond_only = dit(x, t, ctx, mask)
    assert torch.equal(sampling.guided(dit, ctx, mask, unc, mask, 1.0)(x, t), cond_only)
    # The batched cond/uncond path at g -> 1 converges to the same values.
    near_one = sampling.guided(dit, ctx, mask, unc, mask, 1.0 + 1e-6)(x, t)
    assert torch.allclose(near_one, cond_only, atol=1e-5)
    # At g = 3 it extrapolates away from the unconditional prediction.
    g3 = sampling.guided(dit, ctx, mask, unc, mask, 3.0)(x, t)
    uncond = dit(x, t, unc, mask)
    assert torch.allclose(g3, uncond + 3 * (cond_only - uncond), atol=1e-5)


def test_same_seed_same_output_bit_identical():
    torch.manual_seed(0)
    dit = TinyDiT()
    ctx, unc = torch.randn(1, 5, 8), torch.zeros(1, 5, 8)
    fn = sampling.guided(dit, ctx, None, unc, None, 4.0)

    def run(seed):
        noise = torch.randn(1, 3, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
        return sampling.sample(fn, noise, sampling.schedule(5, 2.0), method="heun")

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_initial_noise_correlates_neighbouring_frames_by_rho():
    shape = (2, 8, 5, 16, 16)
    plain = sampling.initial_noise(shape, 0.0, torch.Generator().manual_seed(7))
    assert torch.equal(plain, torch.randn(shape, generator=torch.Generator().manual_seed(7)))  # old seeds hold
    x = sampling.initial_noise(shape, 0.5, torch.Generator().manual_seed(7))
    assert x.std().item() == pytest.approx(1.0, abs=0.03)  # still N(0, 1) per value
    corr = torch.corrcoef(x.transpose(1, 2).flatten(2)[0])  # (T', T'): every pair of frames
    for k, expected in ((1, 0.5), (2, 0.25), (4, 0.0625)):  # rho^k, k frames apart
        assert torch.diagonal(corr, k).mean().item() == pytest.approx(expected, abs=0.05)
    assert torch.corrcoef(plain[0].transpose(0, 1).flatten(1))[0, 1].abs() < 0.05


def test_drifting_noise_carries_each_frame_on_by_the_drift():
    shape, drift = (2, 8, 5, 16, 16), (2.0, -1.25)  # 2 px right, 1.25 px up a latent frame: 1.25, 2.5, 3.75, 5
    still = sampling.initial_noise(shape, 0.9, torch.Generator().manual_seed(7))
    assert torch.equal(sampling.initial_noise(shape, 0.9, torch.Generator().manual_seed(7), (0.0, 0.0)), still)
    x = sampling.initial_noise(shape, 0.9, torch.Generator().manual_seed(7), drift)
    assert x.std().item() == pytest.approx(1.0, abs=0.03)
    for t, up in enumerate([1, 1, 2, 1], start=1):  # whole pixels, rounded so the total stays on course
        carried = torch.corrcoef(torch.stack([x[:, :, t, :-up, 2:].flatten(), x[:, :, t - 1, up:, :-2].flatten()]))
        assert carried[0, 1].item() == pytest.approx(0.9, abs=0.03)  # what moved 2 right and `up` up
        in_place = torch.corrcoef(torch.stack([x[:, :, t].flatten(), x[:, :, t - 1].flatten()]))
        assert abs(in_place[0, 1].item()) < 0.1  # the structure is not where it was
        uncovered = torch.corrcoef(torch.stack([x[:, :, t, :, :2].flatten(), x[:, :, t - 1, :, -2:].flatten()]))
        assert abs(uncovered[0, 1].item()) < 0.15  # fresh noise enters the left edge; nothing wraps round
