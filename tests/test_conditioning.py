import pytest
import torch

from kinema.conditioning import MASK_KINDS, FrameCondition, random_masks, random_regions


def test_place_and_apply_frames_with_negative_positions():
    frames = torch.randn(2, 4, 2, 3, 3)
    cond = FrameCondition.at((2, 4, 5, 3, 3), frames, [0, -1])
    assert cond.mask.tolist() == [[True, False, False, False, True]] * 2
    x = cond.apply(torch.zeros(2, 4, 5, 3, 3))
    assert torch.equal(x[:, :, 0], frames[:, :, 0]) and torch.equal(x[:, :, 4], frames[:, :, 1])
    assert x[:, :, 1:4].abs().sum() == 0
    t = cond.frame_times(torch.tensor([0.8, 0.3]))
    assert torch.allclose(t, torch.tensor([[0, 0.8, 0.8, 0.8, 0], [0, 0.3, 0.3, 0.3, 0]]))


def test_a_frame_given_in_part_keeps_its_box_clean_and_draws_the_rest():
    frames = torch.randn(1, 4, 1, 4, 6)
    cond = FrameCondition.at((1, 4, 3, 4, 6), frames, [0]).partly(0, 2, 4, 4, (2, 2))  # columns 2..5 of frame 0
    assert not cond.mask.any() and cond.region.shape == (1, 3, 2, 3) and cond.given().any()
    assert cond.region[0, 0].tolist() == [[False, True, True]] * 2 and not cond.region[0, 1:].any()
    x = cond.apply(torch.zeros(1, 4, 3, 4, 6))
    assert torch.equal(x[:, :, 0, :, 2:], frames[:, :, 0, :, 2:]) and x[:, :, 0, :, :2].abs().sum() == 0
    t = cond.frame_times(torch.tensor([0.7]))  # per token: 0 inside the box, 0.7 elsewhere
    assert t.shape == (1, 3, 2, 3) and t[0, 0].tolist() == [[pytest.approx(0.7), 0, 0]] * 2 and (t[0, 1:] == 0.7).all()
    assert cond.repeat(2).region.shape == (2, 3, 2, 3)
    with pytest.raises(ValueError, match="whole 2x2 patches"):
        FrameCondition.at((1, 4, 3, 4, 6), frames, [0]).partly(0, 1, 4, 4, (2, 2))


def test_random_regions_give_boxes_of_whole_tokens_in_place_of_whole_frames():
    gen = torch.Generator().manual_seed(0)
    given = torch.tensor([[True, True, False], [False, False, True], [False, False, False], [True, False, False]])
    kept, region = random_regions(given, (6, 10), 1.0, gen)
    assert not kept.any() and region.shape == (4, 3, 6, 10)
    for b, frames in enumerate([[0, 1], [2], [0], [0]]):  # the given frames, or the first where none was given
        assert region[b].any(dim=(1, 2)).tolist() == [f in frames for f in range(3)]
        rows, cols = region[b, frames[0]].any(dim=1), region[b, frames[0]].any(dim=0)
        assert 3 <= rows.sum() <= 5 and 5 <= cols.sum() <= 9  # 50-90% of each side, one box
        assert region[b, frames[0]].sum() == rows.sum() * cols.sum()
    assert torch.equal(random_regions(given, (6, 10), 0.0, gen)[0], given)  # share 0: whole frames as drawn
    assert not random_regions(given, (1, 1), 1.0, gen)[1].any()  # no token would be left to draw


def test_repeat_for_cfg_batches():
    cond = FrameCondition.at((1, 2, 3, 2, 2), torch.ones(1, 2, 1, 2, 2), [1]).repeat(2)
    assert cond.latents.shape == (2, 2, 3, 2, 2) and cond.mask.tolist() == [[False, True, False]] * 2


def test_random_masks_cover_every_kind_and_leave_frames_to_denoise():
    masks = random_masks(4000, 5, torch.Generator().manual_seed(0))
    assert masks.shape == (4000, 5)
    assert (~masks).any(dim=1).all()  # something is always left to generate
    none = (~masks.any(1)).float().mean().item()
    assert abs(none - MASK_KINDS["none"]) < 0.03
    first_only = (masks[:, 0] & ~masks[:, 1:].any(1)).float().mean().item()
    assert first_only > 0.15  # "first" (plus first_k with k=1)
    assert (masks[:, -1] & ~masks[:, 0]).any()  # last k
    assert (masks[:, 0] & masks[:, -1] & ~masks[:, 1:-1].any(1)).any()  # first + last
    assert not random_masks(10, 1).any()  # an image has nothing to condition on


def test_window_puts_context_before_and_after_the_new_frames():
    before, after = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 1, 3, 3)
    cond = FrameCondition.window((1, 4, 3, 3, 3), before, after)  # [2 given | 3 new | 1 given]
    assert cond.mask.tolist() == [[True, True, False, False, False, True]]
    assert torch.equal(cond.latents[:, :, :2], before) and torch.equal(cond.latents[:, :, 5:], after)
    assert FrameCondition.window((1, 4, 3, 3, 3), after=after).mask.tolist() == [[False] * 3 + [True]]
    assert not FrameCondition.window((1, 4, 3, 3, 3)).given().any()
