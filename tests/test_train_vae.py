"""The VAE stage (kinema.train_vae): batches rendered ahead, decoder fine-tunes on a trained encoder, and the
motion-weighted loss and block-jump measure."""

import dataclasses
from pathlib import Path

import pytest
import torch

from kinema import recipe, train, train_vae
from kinema.checkpoint import load_model
from kinema.errors import KinemaError
from kinema.train_loop import load_state

DEBUG = Path(__file__).parents[1] / "configs" / "debug.toml"


def test_vae_batches_rendered_ahead_are_the_same_batches(tmp_path):
    """With a pool of render processes the VAE's batches are drawn in the same order, and a checkpoint saved
    mid-prefetch holds the state before the first batch not yet trained on: resume stays exact."""
    from kinema.data import render_pool
    from kinema.train_vae import VAEStage

    r = recipe.load(DEBUG)
    plain = VAEStage(r, tmp_path / "plain", train._source(r), resume=False)
    with render_pool(2) as pool:
        ahead = VAEStage(r, tmp_path / "ahead", train._source(r), resume=False, pool=pool)
        for _ in range(3):
            assert torch.equal(plain.batch(), ahead.batch())
        assert len(ahead.ahead) > 0  # batches are waiting: the stage's generator has run ahead
        plain.save()
        ahead.save()
    a, b = (load_state(tmp_path / name / "checkpoint.pt") for name in ("plain", "ahead"))
    assert a["next_clip"] == b["next_clip"] == 3 * r.vae.batch and torch.equal(a["gen"], b["gen"])


def patch_vae_model(folder: Path, decoder_time_kernel: int | None = None) -> Path:
    """A tiny random model folder with a patch VAE; by default its decoder sees one latent frame (as the bundled
    one's did)."""

    from kinema.checkpoint import save_model
    from kinema.config import preset
    from kinema.models.dit import DiT
    from kinema.models.vae import CausalVAE

    base = preset("debug")
    vae_cfg = dataclasses.replace(base.vae, kind="patch", base_dim=16, num_res_blocks=1, time_kernel=1,
                                  decoder_time_kernel=decoder_time_kernel)
    cfg = dataclasses.replace(base, vae=vae_cfg, dit=dataclasses.replace(base.dit, patch_size=(1, 4, 4)))
    torch.manual_seed(0)
    return save_model(folder, cfg, CausalVAE(cfg.vae), DiT(cfg.dit))


def test_a_decoder_fine_tune_lengthens_its_time_kernel_and_keeps_encoder_and_dit(tmp_path):
    init = patch_vae_model(tmp_path / "init")
    overrides = {"model.init": str(init), "model.vae.decoder_time_kernel": 2, "dit.steps": 0,
                 "vae": {"steps": 3, "train_encoder": False, "batch": 2, "eval_every": 3, "eval_clips": 1}}
    run = train.run(DEBUG, out=tmp_path / "run", overrides=overrides, progress=False)
    before, after = load_model(init), load_model(run / "model")
    assert after.cfg.vae.decoder_kernel == 2 and after.vae.decoder.blocks[0].conv1.weight.shape[2] == 2
    assert after.cfg.vae.latents_std == before.cfg.vae.latents_std  # the latents are the init's
    old, new = before.vae.state_dict(), after.vae.state_dict()
    kept = [k for k in old if k.startswith(("encoder.", "quant_conv."))]  # (exported in fp16)
    assert kept and all(torch.equal(old[k].half().float(), new[k]) for k in kept)
    assert not torch.equal(old["decoder.conv_out.weight"], new["decoder.conv_out.weight"])
    assert all(torch.equal(v.half().float(), after.dit.state_dict()[k]) for k, v in before.dit.state_dict().items())
    assert not (run / "cache").exists() and not (run / "dit").exists()  # nothing for the DiT to train on


def test_a_fresh_decoder_gets_a_frame_head_on_the_init_encoder(tmp_path):
    init = patch_vae_model(tmp_path / "init", decoder_time_kernel=2)
    overrides = {"model.init": str(init), "model.vae.frame_head": 4, "model.vae.decoder_time_kernel": 1,
                 "dit.steps": 0, "vae": {"steps": 2, "train_encoder": False, "fresh_decoder": True, "batch": 2,
                                         "eval_every": 2, "eval_clips": 1}}
    run = train.run(DEBUG, out=tmp_path / "run", overrides=overrides, progress=False)
    before, after = load_model(init), load_model(run / "model")
    assert after.cfg.vae.frame_head == 4 and after.cfg.vae.decoder_kernel == 1
    assert after.cfg.vae.latents_std == before.cfg.vae.latents_std
    old, new = before.vae.state_dict(), after.vae.state_dict()
    kept = [k for k in old if k.startswith(("encoder.", "quant_conv."))]
    assert kept and all(torch.equal(old[k].half().float(), new[k]) for k in kept)
    # the decoder started from its own random weights, not from the init's
    assert (old["decoder.conv_out.weight"] - new["decoder.conv_out.weight"]).abs().max() > 0.01
    with pytest.raises(KinemaError, match="frame_head = 4 differs from the init model's 0"):
        recipe.load(DEBUG, {**overrides, "vae": {"train_encoder": False}})
    with pytest.raises(KinemaError, match="fresh_decoder = true .* set train_encoder = false too"):
        recipe.load(DEBUG, {**overrides, "vae": {"fresh_decoder": True}})


def test_a_fine_tune_keeps_the_init_vae_but_may_lengthen_the_decoder_kernel(tmp_path):
    tuned = recipe.load(Path(__file__).parents[1] / "configs" / "small_decoder.toml")
    assert tuned.model.vae.decoder_kernel == 2 and tuned.model.vae.time_kernel == 1 and not tuned.vae.train_encoder
    gpu = Path(__file__).parents[1] / "configs" / "small_gpu.toml"
    with pytest.raises(KinemaError, match="base_dim = 64 differs from the init model's 128"):
        recipe.load(gpu, {"model.vae.base_dim": 64})
    with pytest.raises(KinemaError, match="decoder_time_kernel = 1 is shorter than the trained VAE's 2"):
        recipe.load(DEBUG, {"model.init": str(patch_vae_model(tmp_path, 2)), "model.vae.decoder_time_kernel": 1})
    with pytest.raises(KinemaError, match="train_encoder = false fine-tunes a trained model's decoder"):
        recipe.load(DEBUG, {"vae.train_encoder": False})


def test_block_jump_reads_stop_motion():
    frames = torch.zeros(1, 3, 17, 4, 32)
    for t in range(17):
        frames[:, :, t, :, t] = 1.0
    stills = frames[:, :, [0] + [4 * (1 + (t - 1) // 4) for t in range(1, 17)]]  # each block shows its last frame
    assert train_vae.block_jump(frames, 4) == pytest.approx(1.0)
    assert train_vae.block_jump(stills, 4) > 100


def test_motion_weights_favour_what_moves_and_keep_the_loss_scale():
    x = torch.full((1, 3, 5, 8, 8), -1.0)
    for t in range(5):
        x[:, :, t, 2:4, t:t + 2] = 1.0  # a 2x2 square one pixel further right each frame
    weight = train_vae.motion_weights(x, 4.0)
    assert weight.shape == (1, 1, 5, 8, 8) and weight.mean().item() == pytest.approx(1.0)
    # At frame 2 the square left column 1 and reached column 3: both changed by 2 (the full range), so weigh 1 + 4 * 2
    # against the unchanged pixels' 1.
    assert weight[0, 0, 2, 2, 1] / weight[0, 0, 2, 6, 6] == pytest.approx(9.0)
    assert weight[0, 0, 2, 2, 2] == weight[0, 0, 2, 6, 6]  # covered in both frames: unchanged
    assert torch.equal(train_vae.motion_weights(x[:, :, :1], 4.0), torch.ones(1, 1, 1, 8, 8))  # a still
    assert torch.equal(train_vae.motion_weights(x, 0.0), torch.ones(1, 1, 5, 8, 8))
    recon = x + 0.1
    plain, _ = train_vae.vae_loss(recon, x, torch.zeros(1), torch.zeros(1), 0.0, 0.0)
    weighted, _ = train_vae.vae_loss(recon, x, torch.zeros(1), torch.zeros(1), 0.0, 0.0, motion_weight=4.0)
    assert weighted.item() == pytest.approx(plain.item())  # an even error costs the same: the weights average 1
    with pytest.raises(KinemaError, match="motion_weight = -1 must be at least 0"):
        recipe.load(DEBUG, {"vae.motion_weight": -1})
