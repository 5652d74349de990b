"""The Wan2.1 DiT: shapes, parity with diffusers, per-frame timesteps, masking, init and learning."""

import json

import pytest
import torch
from safetensors.torch import load_file

from kinema.config import DiTConfig
from kinema.diffusers_layout import dit_config, dit_state_dict
from kinema.errors import KinemaError
from kinema.models.dit import DiT
from kinema.train import resize_patches, widen_text

TINY = dict(in_channels=4, out_channels=4, num_heads=2, head_dim=24, ffn_dim=64, num_layers=2,
            text_dim=32, freq_dim=32)


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random (zero-init adaLN tables, norms or heads would hide wiring bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)


def _inputs(shape, batch_context=7, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    context = torch.randn(shape[0], batch_context, TINY["text_dim"], generator=gen)
    return x, context, gen


@pytest.fixture(scope="module")
def random_dit():
    torch.manual_seed(0)
    model = DiT(DiTConfig(**TINY)).eval()
    _randomize(model)
    return model


@pytest.mark.parametrize("shape", [(1, 4, 1, 4, 6), (2, 4, 3, 6, 10), (1, 4, 5, 8, 4)])
def test_output_shape_matches_input(random_dit, shape):
    x, context, gen = _inputs(shape)
    with torch.no_grad():
        out = random_dit(x, torch.rand(shape[0], generator=gen), context)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


@pytest.fixture(scope="module")
def wan_pair(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(
        num_attention_heads=2, attention_head_dim=24, in_channels=4, out_channels=4, text_dim=32,
        freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=32).eval()
    _randomize(ref, seed=3)
    folder = tmp_path_factory.mktemp("wan")
    ref.save_pretrained(folder)
    cfg = dit_config(json.loads((folder / "config.json").read_text()))
    ours = DiT(cfg).eval()
    ours.load_state_dict(dit_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors")))
    return ref, ours


@pytest.mark.parametrize("per_frame", [False, True])
def test_matches_diffusers_wan(wan_pair, per_frame):
    ref, ours = wan_pair
    shape = (2, 4, 3, 6, 10)
    x, context, gen = _inputs(shape)
    batch, frames, tokens_per_frame = shape[0], shape[2], (shape[3] // 2) * (shape[4] // 2)
    t = torch.rand((batch, frames) if per_frame else (batch,), generator=gen)
    # diffusers takes a timestep per token (B, N) in [0, 1000]: expand our per-frame t over each frame.
    t_ref = t.repeat_interleave(tokens_per_frame, dim=1) if per_frame else t
    with torch.no_grad():
        expected = ref(x, t_ref * 1000, context, return_dict=False)[0]
        got = ours(x, t, context)
    assert expected.abs().max() > 0.1  # a meaningful comparison, not two near-zero outputs
    assert (got - expected).abs().max().item() < 1e-4


def test_per_frame_timesteps_equal_scalar(random_dit):
    shape = (2, 4, 3, 4, 4)
    x, context, _ = _inputs(shape)
    s = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        scalar = random_dit(x, s, context)
        per_frame = random_dit(x, s[:, None].expand(2, 3), context)
        varied = random_dit(x, torch.tensor([[0.3, 0.3, 0.0], [0.8, 0.8, 0.8]]), context)
    torch.testing.assert_close(per_frame, scalar, atol=1e-5, rtol=1e-5)
    assert (varied - scalar).abs().max() > 1e-3  # per-frame t really reaches the tokens


def test_per_token_timesteps_equal_per_frame_and_reach_their_own_patch(random_dit):
    shape = (2, 4, 3, 4, 4)  # a 2x2 token grid per frame (2x2 patches)
    x, context, _ = _inputs(shape)
    per_frame = torch.tensor([[0.3, 0.3, 0.0], [0.8, 0.5, 0.8]])
    per_token = per_frame[:, :, None, None].expand(2, 3, 2, 2).clone()
    with torch.no_grad():
        frames = random_dit(x, per_frame, context)
        tokens = random_dit(x, per_token, context)
        per_token[0, 1, 0, 0] = 0.0  # one token of one frame given clean: its patch reads t = 0
        one = random_dit(x, per_token, context)
    torch.testing.assert_close(tokens, frames, atol=1e-5, rtol=1e-5)
    changed = (one - frames).abs().amax(dim=1)  # (B, T, H, W)
    assert changed[0, 1, :2, :2].min() > 1e-3 and changed[1].max() == 0  # its own patch moves; the other clip not
    with pytest.raises(KinemaError, match="one per token"):
        random_dit(x, torch.zeros(2, 3, 4, 4), context)  # per latent pixel, not per token


def test_padding_mask_ignores_padded_tokens(random_dit):
    shape = (2, 4, 2, 4, 4)
    x, context, gen = _inputs(shape)
    t = torch.rand(2, generator=gen)
    garbage = torch.randn(2, 5, TINY["text_dim"], generator=gen) * 10
    padded = torch.cat([context, garbage], dim=1)
    mask = torch.cat([torch.ones(2, 7, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        plain = random_dit(x, t, context)
        masked = random_dit(x, t, padded, mask)
        unmasked = random_dit(x, t, padded)
    torch.testing.assert_close(masked, plain, atol=1e-5, rtol=1e-5)
    assert (unmasked - plain).abs().max() > 1e-3


def test_fresh_model_outputs_zero():
    torch.manual_seed(0)
    x, context, _ = _inputs((1, 4, 2, 4, 4))
    out = DiT(DiTConfig(**TINY))(x, torch.tensor([0.5]), context)
    assert out.abs().max() == 0


def test_overfits_one_pair():
    torch.manual_seed(0)
    model = DiT(DiTConfig(**TINY))
    x0, context, gen = _inputs((1, 4, 2, 4, 4))
    eps = torch.randn(x0.shape, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_at(t):
        xt = (1 - t) * x0 + t * eps
        return (model(xt, t.flatten(), context) - (eps - x0)).pow(2).mean()

    with torch.no_grad():
        fixed_t = torch.linspace(0.05, 0.95, 8).view(8, 1, 1, 1, 1)
        start = sum(loss_at(t.view(1, 1, 1, 1, 1)) for t in fixed_t.flatten()) / 8
    for _ in range(200):
        loss = loss_at(torch.rand(1, 1, 1, 1, 1, generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = sum(loss_at(t.view(1, 1, 1, 1, 1)) for t in fixed_t.flatten()) / 8
    assert end < start / 10, (start.item(), end.item())


def test_bf16_autocast_runs(random_dit):
    x, context, _ = _inputs((1, 4, 2, 4, 4))
    with torch.no_grad():
        ref = random_dit(x, torch.tensor([0.4]), context)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = random_dit(x, torch.tensor([0.4]), context)
    assert out.dtype == x.dtype
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize("shape", [(1, 4, 2, 5, 4), (1, 4, 2, 4, 7)])
def test_bad_latent_size_raises(random_dit, shape):
    x, context, _ = _inputs(shape)
    with pytest.raises(KinemaError, match="patch"):
        random_dit(x, torch.tensor([0.5]), context)


@pytest.mark.parametrize("field", ["image_dim", "added_kv_proj_dim", "pos_embed_seq_len"])
def test_rejects_image_to_video_configs(field):
    with pytest.raises(KinemaError, match=field):
        dit_config({"num_attention_heads": 2, "attention_head_dim": 24, field: 16})


def test_resize_patches_keeps_what_the_model_computes():
    """1x4x4 -> 1x2x2: a small patch embeds as the old patch filled with it upsampled 2x, and each new output
    pixel is the mean of the old outputs over its 2x2 block; every other tensor is unchanged."""
    coarse = DiT(DiTConfig(**{**TINY, "patch_size": (1, 4, 4)}))
    _randomize(coarse)
    state = resize_patches(coarse.state_dict(), (1, 2, 2))
    fine = DiT(DiTConfig(**{**TINY, "patch_size": (1, 2, 2)}))
    fine.load_state_dict(state)  # strict: every shape fits
    x = torch.randn(2, TINY["in_channels"], 3, 2, 2)  # one 2x2 patch per frame
    upsampled = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)  # fills one 4x4 patch
    torch.testing.assert_close(fine.patch_embedding(x), coarse.patch_embedding(upsampled), rtol=1e-5, atol=1e-5)
    h = torch.randn(5, fine.cfg.dim)
    old = coarse.proj_out(h).view(5, 4, 4, TINY["out_channels"])  # (ph, pw, C) as _unpatchify reads it
    new = fine.proj_out(h).view(5, 2, 2, TINY["out_channels"])
    torch.testing.assert_close(new, old.view(5, 2, 2, 2, 2, -1).mean(dim=(2, 4)), rtol=1e-5, atol=1e-5)
    assert torch.equal(state["blocks.0.ffn.0.weight"], coarse.state_dict()["blocks.0.ffn.0.weight"])
    assert resize_patches(state, (1, 2, 2)) is state  # already that size
    with pytest.raises(KinemaError, match="1 x q x q with q dividing 4"):
        resize_patches(coarse.state_dict(), (1, 3, 3))


def test_widen_text_predicts_as_before_until_trained():
    """Text states widened by appended layers ([-1] -> [-1, 0]): the new input columns start at zero, so the DiT
    predicts exactly what the init did from the old columns, whatever the new ones hold."""
    narrow = DiT(DiTConfig(**TINY))
    _randomize(narrow)
    text_dim = TINY["text_dim"]
    wide = DiT(DiTConfig(**{**TINY, "text_dim": 2 * text_dim}))
    wide.load_state_dict(widen_text(narrow.state_dict(), 2 * text_dim))  # strict: every shape fits
    x, context, _ = _inputs((1, 4, 2, 4, 4))
    t = torch.tensor([0.4])
    extra = torch.randn_like(context)
    torch.testing.assert_close(wide(x, t, torch.cat([context, extra], -1)), narrow(x, t, context))
    state = narrow.state_dict()
    assert widen_text(state, text_dim) is state  # already that wide
    with pytest.raises(KinemaError, match="cannot narrow a DiT's text input from 64 to 32"):
        widen_text(wide.state_dict(), text_dim)
