"""CausalVAE: shapes, causality, chunked == whole-clip, tiling, parity with diffusers' AutoencoderKLWan."""

import json

import pytest
import torch
from torch import nn

from kinema.config import VAEConfig
from kinema.diffusers_layout import vae_config, vae_state_dict
from kinema.errors import KinemaError
from kinema.models import vae as vae_module
from kinema.models.patch_vae import PatchBlock, fold, unfold, widen_time_kernels
from kinema.models.vae import CausalCache, CausalVAE

Z = 4


def tiny_cfg(**overrides) -> VAEConfig:
    fields = dict(base_dim=8, z_dim=Z, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
                  latents_mean=(0.0,) * Z, latents_std=(1.0,) * Z)
    return VAEConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def vae() -> CausalVAE:
    torch.manual_seed(0)
    # Non-trivial latent statistics, so normalisation mistakes show up.
    return CausalVAE(tiny_cfg(latents_mean=(0.1, -0.2, 0.3, 0.0), latents_std=(1.5, 0.5, 2.0, 1.0))).eval()


def video(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(("shape", "latent"), [
    ((1, 3, 1, 64, 96), (1, Z, 1, 8, 12)),  # an image, wide
    ((2, 3, 9, 48, 80), (2, Z, 3, 6, 10)),  # a batch of short clips, odd aspect
])
def test_shapes_round_trip(vae, shape, latent):
    x = video(*shape)
    z = vae.encode(x)
    assert z.shape == latent and z.dtype == torch.float32
    y = vae.decode(z)
    assert y.shape == shape and y.min() >= -1 and y.max() <= 1
    recon, mean, logvar = vae(x)
    assert recon.shape == shape and mean.shape == logvar.shape == latent


def test_encode_sample_follows_generator(vae):
    x = video(1, 3, 5, 32, 32)
    a = vae.encode(x, generator=torch.Generator().manual_seed(1))
    b = vae.encode(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, vae.encode(x), atol=1e-3)


def test_causal_in_time(vae):
    x = video(1, 3, 9, 32, 32)
    later = x.clone()
    later[:, :, 5:] = video(1, 3, 4, 32, 32, seed=1)  # frames 5-8 make latent frame 2
    z, z_later = vae.encode(x), vae.encode(later)
    assert torch.equal(z[:, :, :2], z_later[:, :, :2])
    assert not torch.allclose(z[:, :, 2], z_later[:, :, 2], atol=1e-3)
    # The whole-clip training path must be causal too.
    mean, mean_later = vae(x)[1], vae(later)[1]
    torch.testing.assert_close(mean[:, :, :2], mean_later[:, :, :2], atol=1e-5, rtol=0)

    z_later = z.clone()
    z_later[:, :, 2] = torch.randn(1, Z, 4, 4)
    y, y_later = vae.decode(z), vae.decode(z_later)
    assert torch.equal(y[:, :, :5], y_later[:, :, :5])
    assert not torch.allclose(y[:, :, 5:], y_later[:, :, 5:], atol=1e-3)


def test_chunked_equals_whole_clip(vae):
    x = video(1, 3, 9, 32, 40)
    mean, logvar = vae.encode_dist(x)  # chunked: 1, 4, 4 frames
    recon, mean_full, logvar_full = vae(x)  # whole clip at once (eval: decodes the mean)
    torch.testing.assert_close(mean, mean_full, atol=1e-5, rtol=0)
    torch.testing.assert_close(logvar, logvar_full, atol=1e-5, rtol=0)

    z = (mean - vae.latents_mean) / vae.latents_std
    chunks = list(vae.decode_stream(z))
    assert [c.shape[2] for c in chunks] == [1, 4, 4]
    y = vae.decode(z)
    assert torch.equal(torch.cat(chunks, dim=2), y)
    torch.testing.assert_close(y, recon.clamp(-1, 1), atol=1e-4, rtol=0)


def test_training_backward_matches_reference_conv(monkeypatch):
    torch.manual_seed(0)
    vae = CausalVAE(tiny_cfg()).train()
    x = video(1, 3, 5, 32, 32)

    def grads() -> dict[str, torch.Tensor]:
        vae.zero_grad()
        torch.manual_seed(1)  # the same posterior sample both times
        recon, mean, logvar = vae(x)
        ((recon - x) ** 2).mean().add(1e-3 * (mean**2 + logvar.exp()).mean()).backward()
        return {name: p.grad.clone() for name, p in vae.named_parameters()}

    fast = grads()  # Conv3d's oneDNN path
    monkeypatch.setattr(vae_module.Conv3d, "forward", nn.Conv3d.forward)
    reference = grads()
    for name, g in fast.items():
        assert g.abs().sum() > 0, name
        assert (g - reference[name]).norm() <= 1e-4 * reference[name].norm(), name


class PixelDecoder(nn.Module):
    """Stand-in decoder without spatial context: every latent pixel becomes an 8x8 block of frames."""

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:  # (B, z, 1, h, w)
        frames = 1 if cache.first_call(self) else 4
        return x[:, :3].repeat_interleave(frames, 2).repeat_interleave(8, 3).repeat_interleave(8, 4)


def test_tiled_blend_is_exact_without_spatial_context():
    vae = CausalVAE(tiny_cfg()).eval()
    vae.decoder = PixelDecoder()
    z = torch.randn(1, Z, 3, 11, 7)
    torch.testing.assert_close(vae.decode(z, tile=(32, 24)), vae.decode(z), atol=1e-6, rtol=0)


def test_tiled_decode_close_to_full(vae):
    z = torch.randn(1, Z, 2, 12, 12, generator=torch.Generator().manual_seed(0))
    full = vae.decode(z)
    assert torch.equal(vae.decode(z, tile=(96, 96)), full)  # one tile: the plain decode
    tiled = vae.decode(z, tile=(80, 80))
    assert tiled.shape == full.shape
    # Not equal: the receptive field is wide (pixels near a tile edge see zero padding instead of their
    # neighbours) and the mid-block attention sees only its own tile. Random weights make that worst.
    assert (tiled - full).abs().mean() < 0.1


def test_wan_parity(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from safetensors.torch import load_file

    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLWan(
        base_dim=8, z_dim=Z, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.5, 2.0, 1.0],
    ).eval()
    with torch.no_grad():  # diffusers initialises norm gains to 1: perturb them so they are tested
        for name, p in ref.named_parameters():
            if name.endswith("gamma"):
                p.add_(0.2 * torch.randn_like(p))
    ref.save_pretrained(tmp_path)

    cfg = vae_config(json.loads((tmp_path / "config.json").read_text()))
    vae = CausalVAE(cfg).eval()
    vae.load_state_dict(vae_state_dict(load_file(tmp_path / "diffusion_pytorch_model.safetensors")))

    x = video(1, 3, 9, 32, 32)
    with torch.no_grad():
        ref_mean = ref.encode(x).latent_dist.mean  # raw latents
        z_raw = torch.randn_like(ref_mean)
        ref_video = ref.decode(z_raw).sample
    mean, _ = vae.encode_dist(x)
    assert (mean - ref_mean).abs().max() < 1e-4
    torch.testing.assert_close(vae.encode(x), (ref_mean - vae.latents_mean) / vae.latents_std, atol=1e-4, rtol=0)
    assert (vae.decode((z_raw - vae.latents_mean) / vae.latents_std) - ref_video).abs().max() < 1e-4


def test_decode_under_bf16_autocast(vae):
    z = torch.randn(1, Z, 2, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = vae.decode(z)
        lat = vae.encode(video(1, 3, 5, 32, 32))
    assert y.dtype == lat.dtype == torch.float32
    assert (y - vae.decode(z)).abs().mean() < 0.05


@pytest.mark.parametrize(("shape", "hint"), [
    ((1, 3, 8, 32, 32), "use 9 frames"),
    ((1, 3, 0, 32, 32), "use 1 frames"),
    ((1, 3, 5, 60, 32), "height 60 is not a multiple of 8; use 64"),
    ((1, 3, 5, 32, 4), "width 4 is not a multiple of 8; use 8"),
    ((1, 4, 5, 32, 32), "(B, 3, T, H, W)"),
])
def test_bad_video_shapes(vae, shape, hint):
    with pytest.raises(KinemaError, match=hint.replace("(", r"\(").replace(")", r"\)")):
        vae.encode(torch.zeros(shape))
    with pytest.raises(KinemaError):
        vae(torch.zeros(shape))


def test_bad_latents_and_tiles(vae):
    with pytest.raises(KinemaError, match=f"B, {Z}, T'"):
        vae.decode_stream(torch.zeros(1, Z + 1, 2, 4, 4))  # raised on the call, not on iteration
    with pytest.raises(KinemaError, match="tile size 30 .* use 32"):
        vae.decode(torch.zeros(1, Z, 1, 4, 4), tile=(30, 32))


def test_unsupported_diffusers_layouts():
    for bad in ({"is_residual": True}, {"patch_size": 2}, {"attn_scales": [0.5]}, {"decoder_base_dim": 64}):
        with pytest.raises(KinemaError):
            vae_config({"z_dim": 16, **bad})
    with pytest.raises(KinemaError, match="Wan2.2"):
        vae_state_dict({"encoder.down_blocks.0.resnets.0.conv1.weight": torch.zeros(1)})
    assert vae_config({"_class_name": "AutoencoderKLWan"}) == VAEConfig()


# -- the patch VAE (vae.kind = "patch"): same contract, convs at latent resolution ----------------


@pytest.fixture(scope="module")
def patch_vae() -> CausalVAE:
    torch.manual_seed(0)
    vae = CausalVAE(tiny_cfg(kind="patch", base_dim=16, num_res_blocks=1, time_kernel=2,
                             latents_mean=(0.1, -0.2, 0.3, 0.0), latents_std=(1.5, 0.5, 2.0, 1.0))).eval()
    for block in vae.modules():  # the residual blocks start as the identity: give them something to do
        if isinstance(block, PatchBlock):
            nn.init.normal_(block.conv2.weight, std=0.05)
    return vae


def decode_whole(vae: CausalVAE, z: torch.Tensor) -> torch.Tensor:
    """Normalized latents decoded in one decoder call, without the causal cache `decode` streams with."""
    return vae.decoder(vae.post_quant_conv(z * vae.latents_std + vae.latents_mean)).clamp(-1, 1)


def test_fold_and_unfold_are_inverse_and_keep_blocks_together():
    x = video(2, 3, 8, 12, 16)
    folded = fold(x, (4, 4, 4))
    assert folded.shape == (2, 192, 2, 3, 4)
    assert torch.equal(unfold(folded, (4, 4, 4)), x)
    # Latent pixel (1, 2, 3) holds exactly frames 4-7, rows 8-11, columns 12-15.
    assert torch.equal(folded[0, :, 1, 2, 3].sort().values, x[0, :, 4:8, 8:12, 12:16].flatten().sort().values)


@pytest.mark.parametrize(("shape", "latent"), [((1, 3, 1, 32, 48), (1, Z, 1, 8, 12)),
                                               ((2, 3, 9, 48, 80), (2, Z, 3, 12, 20))])
def test_patch_vae_shapes_round_trip(patch_vae, shape, latent):
    z = patch_vae.encode(video(*shape))
    assert z.shape == latent and patch_vae.decode(z).shape == shape
    assert patch_vae.cfg.spatial_factor == 4 and patch_vae.cfg.temporal_factor == 4


def test_patch_vae_chunked_equals_whole_clip_and_is_causal(patch_vae):
    x = video(1, 3, 13, 32, 40)
    mean, _ = patch_vae.encode_dist(x)  # chunked: 1, 4, 4, 4 frames
    recon, mean_full, _ = patch_vae(x)
    torch.testing.assert_close(mean, mean_full, atol=1e-5, rtol=0)
    z = (mean - patch_vae.latents_mean) / patch_vae.latents_std
    chunks = list(patch_vae.decode_stream(z))
    assert [c.shape[2] for c in chunks] == [1, 4, 4, 4]
    torch.testing.assert_close(torch.cat(chunks, dim=2), recon.clamp(-1, 1), atol=1e-4, rtol=0)

    later = x.clone()
    later[:, :, 5:9] = video(1, 3, 4, 32, 40, seed=1)  # latent frame 2; with time_kernel 2 also frame 3
    z_later = patch_vae.encode(later)
    assert torch.equal(z[:, :, :2], z_later[:, :, :2])
    assert not torch.allclose(z[:, :, 2], z_later[:, :, 2], atol=1e-3)
    assert not torch.allclose(z[:, :, 3], z_later[:, :, 3], atol=1e-3)  # it sees one latent frame back


@pytest.mark.parametrize(("overrides", "words"), [({"kind": "bogus"}, "vae.kind 'bogus' is unknown"),
                                                  ({"kind": "patch", "patch": (4, 4, 2)}, "vae.patch"),
                                                  ({"kind": "patch", "time_kernel": 0}, "time_kernel"),
                                                  ({"kind": "patch", "decoder_time_kernel": 0}, "decoder_time_kernel"),
                                                  ({"kind": "patch", "frame_head": -1}, "vae.frame_head = -1"),
                                                  ({"frame_head": 8}, "positive with vae.kind \"patch\"")])
def test_bad_patch_configs_are_one_line_errors(overrides, words):
    with pytest.raises(KinemaError, match=words):
        CausalVAE(tiny_cfg(**overrides))


def test_a_widened_decoder_starts_as_the_narrow_one_and_then_sees_the_frame_before():
    torch.manual_seed(1)
    narrow = CausalVAE(tiny_cfg(kind="patch", base_dim=16, num_res_blocks=1, time_kernel=1)).eval()
    for block in narrow.modules():
        if isinstance(block, PatchBlock):
            nn.init.normal_(block.conv2.weight, std=0.05)
    wide = CausalVAE(tiny_cfg(kind="patch", base_dim=16, num_res_blocks=1, time_kernel=1,
                              decoder_time_kernel=2)).eval()
    state = widen_time_kernels(narrow.state_dict(), wide.state_dict())
    wide.load_state_dict(state)
    assert wide.decoder.blocks[0].conv1.weight.shape[2] == 2 and wide.encoder.blocks[0].conv1.weight.shape[2] == 1
    assert torch.equal(state["encoder.blocks.0.conv1.weight"], narrow.state_dict()["encoder.blocks.0.conv1.weight"])
    z = torch.randn(1, Z, 4, 6, 8)
    with torch.no_grad():
        torch.testing.assert_close(wide.decode(z), narrow.decode(z), atol=1e-5, rtol=0)
        for block in wide.decoder.blocks:  # once the earlier taps learn something, frame 2 depends on frame 1
            nn.init.normal_(block.conv1.weight[:, :, 0], std=0.05)
        changed = z.clone()
        changed[:, :, 1] += 1
        a, b = wide.decode(z), wide.decode(changed)
    assert torch.equal(a[:, :, :1], b[:, :, :1])  # causal: latent frame 0 (frame 0) comes before the change
    assert not torch.allclose(a[:, :, 5:9], b[:, :, 5:9], atol=1e-3)  # latent frame 2 (frames 5-8) looks back at 1


def test_the_widened_decoder_streams_like_the_whole_clip():
    torch.manual_seed(2)
    vae = CausalVAE(tiny_cfg(kind="patch", base_dim=16, num_res_blocks=1, time_kernel=1,
                             decoder_time_kernel=3)).eval()
    for block in vae.decoder.blocks:
        nn.init.normal_(block.conv2.weight, std=0.05)
    z = torch.randn(1, Z, 4, 6, 8)
    with torch.no_grad():
        chunks = torch.cat(list(vae.decode_stream(z)), dim=2)
    torch.testing.assert_close(chunks, decode_whole(vae, z), atol=1e-4, rtol=0)


def test_the_frame_head_draws_across_block_boundaries_streams_like_the_whole_clip_and_is_causal():
    torch.manual_seed(3)
    vae = CausalVAE(tiny_cfg(kind="patch", base_dim=16, num_res_blocks=1, time_kernel=1, frame_head=4)).eval()
    z = torch.randn(1, Z, 4, 6, 8)
    with torch.no_grad():
        whole = decode_whole(vae, z)  # (1, 3, 13, 24, 32)
        chunks = list(vae.decode_stream(z))
        changed = z.clone()
        changed[:, :, 2] += 1  # latent frame 2: video frames 5-8
        after = decode_whole(vae, changed)
        head = vae.decoder.frame_head
        vae.decoder.frame_head = None
        without = decode_whole(vae, z)
        vae.decoder.frame_head = head
    assert whole.shape == (1, 3, 13, 24, 32) and [c.shape[2] for c in chunks] == [1, 4, 4, 4]
    torch.testing.assert_close(torch.cat(chunks, dim=2), whole, atol=1e-4, rtol=0)
    assert torch.equal(after[:, :, :5], whole[:, :, :5])  # causal: frames before the changed block are kept
    # The block head alone sees one latent frame (time_kernel 1); the frame head's 3-frame convs carry the change
    # into the next block's first frames.
    assert not torch.allclose(after[:, :, 9:11], whole[:, :, 9:11], atol=1e-4)
    assert not torch.allclose(without, whole, atol=1e-3)


def test_the_lookahead_decoder_reads_the_next_latent_frame_and_streams_like_the_whole_clip():
    torch.manual_seed(4)
    vae = CausalVAE(tiny_cfg(kind="patch", base_dim=16, num_res_blocks=1, time_kernel=1,
                             decoder_lookahead=True)).eval()
    assert vae.decoder.conv_in.weight.shape[1] == 2 * Z
    z = torch.randn(1, Z, 4, 6, 8)
    with torch.no_grad():
        whole = torch.cat(list(vae.decode_stream(z)), dim=2)
        recon = vae.decoder(vae._decoder_input(vae.post_quant_conv(z)))  # as training decodes (statistics 0 / 1)
        changed = z.clone()
        changed[:, :, 2] += 1  # latent frame 2: video frames 5-8
        after = torch.cat(list(vae.decode_stream(changed)), dim=2)
    torch.testing.assert_close(whole, recon.clamp(-1, 1), atol=1e-4, rtol=0)
    assert torch.equal(after[:, :, :1], whole[:, :, :1])  # frame 0 reads latent frames 0 and 1 only
    assert not torch.allclose(after[:, :, 1:5], whole[:, :, 1:5], atol=1e-3)  # latent frame 1 reads frame 2 ahead
    assert torch.equal(after[:, :, 9:], whole[:, :, 9:])  # latent frame 3 reads 3 (and itself again), not 2
    with pytest.raises(KinemaError, match="decoder_lookahead needs vae.kind"):
        CausalVAE(tiny_cfg(decoder_lookahead=True))
