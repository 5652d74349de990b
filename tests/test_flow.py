import torch

from kinema import flow


def test_interpolation_endpoints_and_per_frame_time():
    # x0 + 1 * (eps - x0) rounds: near-zero eps can miss allclose's relative tolerance, so give an absolute one.
    x0, eps = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4)
    assert torch.equal(flow.interpolate(x0, eps, torch.zeros(2)), x0)
    assert torch.allclose(flow.interpolate(x0, eps, torch.ones(2)), eps, atol=1e-6)
    t = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.0, 0.25]])
    xt = flow.interpolate(x0, eps, t)
    assert torch.equal(xt[0, :, 0], x0[0, :, 0]) and torch.allclose(xt[0, :, 2], eps[0, :, 2], atol=1e-6)
    assert torch.allclose(xt[1, :, 2], 0.75 * x0[1, :, 2] + 0.25 * eps[1, :, 2], atol=1e-6)


def test_velocity_moves_noise_to_data():
    x0, eps = torch.randn(1, 2, 1, 2, 2), torch.randn(1, 2, 1, 2, 2)
    xt = flow.interpolate(x0, eps, torch.tensor([0.3]))
    # Following the target velocity backwards in time from t=0.3 lands exactly on the data.
    assert torch.allclose(xt - 0.3 * flow.velocity_target(x0, eps), x0, atol=1e-6)


def test_shift_is_monotonic_and_identity_at_one():
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(flow.shift_time(t, 1.0), t)
    shifted = flow.shift_time(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert torch.all(shifted[1:-1] > t[1:-1]) and torch.all(shifted.diff() > 0)
    assert flow.shift_for(4 * 320, 2.0, 320) == 4.0
    assert flow.shift_for(10, 2.0, 320) == 1.0  # never below 1: tiny videos are not shifted towards data


def test_logit_normal_times_concentrate_mid_range():
    t = flow.sample_t(20000, torch.Generator().manual_seed(0))
    assert 0 < t.min() and t.max() < 1
    assert abs(t.mean().item() - 0.5) < 0.01
    assert ((t > 0.25) & (t < 0.75)).float().mean() > 0.6  # uniform would give 0.5


def test_loss_zero_for_perfect_prediction_and_masks_frames():
    x0, eps = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    v = flow.velocity_target(x0, eps)
    assert flow.loss(v, x0, eps).item() == 0
    bad = v.clone()
    bad[:, :, 0] += 10  # wrong only on frame 0
    weight = torch.ones(2, 4)
    weight[:, 0] = 0
    assert flow.loss(bad, x0, eps, weight).item() == 0
    assert flow.loss(bad, x0, eps).item() > 1


def test_loss_is_the_velocity_loss_against_the_straight_line():
    x0, eps, v = torch.randn(3, 2, 4, 2, 2), torch.randn(3, 2, 4, 2, 2), torch.randn(3, 2, 4, 2, 2)
    weight = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]])
    expected = ((v - (eps - x0)).pow(2).mean(dim=(1, 3, 4)) * weight).sum() / weight.sum()
    assert torch.allclose(flow.loss(v, x0, eps, weight), expected)
    assert torch.allclose(flow.velocity_loss(v, eps - x0, weight, weight_total=torch.tensor(18.0)),
                          expected * weight.sum() / 18)


def test_loss_weighs_latent_pixels_where_frames_are_given_in_part():
    gen = torch.Generator().manual_seed(0)
    v, target = torch.randn(2, 4, 3, 4, 4, generator=gen), torch.randn(2, 4, 3, 4, 4, generator=gen)
    frames = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    pixels = frames[:, :, None, None].expand(2, 3, 4, 4)
    torch.testing.assert_close(flow.velocity_loss(v, target, pixels), flow.velocity_loss(v, target, frames))
    half = pixels.clone()
    half[0, 0, :, 2:] = 1.0  # half of a given frame drawn: its half counts as half a frame
    err = (v - target).pow(2).mean(dim=1)  # (B, T, H, W)
    expected = (err * half).sum() / 16 / 4.5
    torch.testing.assert_close(flow.velocity_loss(v, target, half), expected)
    torch.testing.assert_close(flow.velocity_loss(v, target, half, weight_total=torch.tensor(9.0)), expected / 2)
