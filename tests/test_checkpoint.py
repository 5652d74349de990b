"""Model names and folders: the two bundled models, presets and folders (kinema.checkpoint)."""

import dataclasses

import pytest
import torch

from kinema import recipe
from kinema.checkpoint import BUNDLED, BUNDLED_FAST, DEFAULT_MODEL, bundled_folder, load_model
from kinema.errors import KinemaError


def test_bundled_names_map_to_their_folders():
    assert DEFAULT_MODEL == "kinema-small-fast"
    for spec in (None, "", "default", "kinema-small-fast"):
        assert bundled_folder(spec) == BUNDLED_FAST
    assert bundled_folder("kinema-small") == BUNDLED
    assert bundled_folder("debug") is None and bundled_folder("my/model") is None


def test_recipes_start_from_the_base_model_by_default():
    """A recipe's init "default" is the trainable base (kinema-small), not the distilled default for generation."""
    assert recipe.init_folder("default") == BUNDLED == recipe.init_folder("kinema-small")
    with pytest.raises(KinemaError, match="not a Kinema model folder"):
        recipe.init_folder("no/such/folder")


@pytest.mark.skipif(not (BUNDLED_FAST / "config.json").exists(), reason="needs both bundled models installed")
def test_the_default_model_is_the_distilled_one():
    fast, base = load_model(None), load_model("kinema-small")
    assert (fast.cfg.sampler.steps, fast.cfg.sampler.guidance) == (base.cfg.sampler.steps // 2, 1.0)
    assert fast.cfg.dit == base.cfg.dit  # same shapes
    # The same latent space: one encoder and its statistics; only the default's decoder looks back a latent frame.
    assert dataclasses.replace(fast.cfg.vae, decoder_time_kernel=None) == base.cfg.vae
    fast_vae, base_vae = fast.vae.state_dict(), base.vae.state_dict()
    assert all(torch.equal(fast_vae[name], tensor) for name, tensor in base_vae.items() if name.startswith("encoder"))
    assert fast.cfg.name == "kinema-small-fast" and base.cfg.name == "kinema-small"


def test_saved_tensors_get_the_permissions_of_any_new_file(tmp_path):
    from kinema.checkpoint import load_tensors, save_tensors

    (tmp_path / "plain").touch()
    save_tensors(tmp_path / "w.safetensors", {"w": torch.arange(3.0)})
    assert (tmp_path / "w.safetensors").stat().st_mode == (tmp_path / "plain").stat().st_mode  # not 0600
    assert torch.equal(load_tensors(tmp_path / "w.safetensors")["w"], torch.arange(3.0))


def _debug_model():
    from kinema.config import preset
    from kinema.models.dit import DiT
    from kinema.models.vae import CausalVAE

    cfg = preset("debug")
    return cfg, CausalVAE(cfg.vae), DiT(cfg.dit)


def test_a_model_folder_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    from kinema import checkpoint

    cfg, vae, dit = _debug_model()
    folder = checkpoint.save_model(tmp_path / "model", cfg, vae, dit)
    before = {name: (folder / name).read_bytes() for name in checkpoint.MODEL_FILES}
    real_save = checkpoint.save_tensors

    def crash_on_the_dit(path, tensors, dtype=None):
        if path.name == "dit.safetensors":
            raise OSError("disk full")
        real_save(path, tensors, dtype)

    monkeypatch.setattr(checkpoint, "save_tensors", crash_on_the_dit)
    torch.nn.init.ones_(next(vae.parameters()))
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_model(folder, cfg, vae, dit)
    assert {name: (folder / name).read_bytes() for name in checkpoint.MODEL_FILES} == before  # the new VAE did not land
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left behind
    monkeypatch.setattr(checkpoint, "save_tensors", real_save)
    checkpoint.save_model(folder, cfg, vae, dit)
    assert (folder / "vae.safetensors").read_bytes() != before["vae.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    name, changed = next(iter(vae.named_parameters()))
    assert torch.equal(load_model(folder).vae.state_dict()[name], changed)


def test_a_model_saved_into_a_folder_with_other_files_keeps_them(tmp_path):
    from kinema import checkpoint

    cfg, vae, dit = _debug_model()
    (tmp_path / "notes.txt").write_text("mine")
    checkpoint.save_model(tmp_path, cfg, vae, dit)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*checkpoint.MODEL_FILES, "notes.txt"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(KinemaError, match="it is a file"):
        checkpoint.save_model(tmp_path / "file", cfg, vae, dit)
