"""Model names and folders: the two bundled models, presets and folders (kinema.checkpoint)."""

import dataclasses

import pytest
import torch

from kinema import recipe
from kinema.checkpoint import BUNDLED, BUNDLED_FAST, DEFAULT_MODEL, bundled_folder, load_model, locate_model
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


def tiny_wan_folder(root):
    """A random Wan2.1 model in diffusers' layout, as a user downloads one (transformer/, vae/, text_encoder/,
    tokenizer/), at a size that generates in a second."""
    diffusers = pytest.importorskip("diffusers")
    import transformers

    from kinema.models.text import minilm_folder

    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_folder(), local_files_only=True)
    text = transformers.UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   pad_token_id=tokenizer.pad_token_id)
    transformers.UMT5EncoderModel(text).eval().save_pretrained(root / "text_encoder")
    tokenizer.save_pretrained(root / "tokenizer")
    diffusers.WanTransformer3DModel(num_attention_heads=2, attention_head_dim=24, in_channels=4, out_channels=4,
                                    text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=32,
                                    patch_size=(1, 2, 2)).save_pretrained(root / "transformer")
    diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                               temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
                               latents_std=[1.5, 0.5, 2.0, 1.0]).save_pretrained(root / "vae")
    return root


def test_a_wan_folder_loads_by_a_relative_path_and_generates(tmp_path, monkeypatch):
    from kinema.pipeline import Pipeline, Request

    tiny_wan_folder(tmp_path / "wan")
    monkeypatch.chdir(tmp_path)
    pipe = Pipeline.load("wan")  # relative, as typed after cd: the text encoder is found inside it
    assert pipe.cfg.text.kind == "umt5" and pipe.cfg.vae.z_dim == 4
    frames = pipe.decode(pipe.generate(Request("a red ball", width=64, height=64, frames=5, steps=1)))
    assert frames.shape == (5, 64, 64, 3) and 0 < frames.std()
    (tmp_path / "wan" / "text_encoder" / "config.json").write_text("{}")  # a config that is not its weights'
    with pytest.raises(KinemaError, match="cannot load the .* text encoder .* belongs to its weights"):
        Pipeline.load("wan")


def test_a_preset_has_the_same_random_weights_at_every_load():
    first, second = load_model("debug"), load_model("debug")
    pairs = zip(first.dit.state_dict().values(), second.dit.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_a_run_folder_given_as_a_model_points_to_its_export(tmp_path):
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text("{}")
    with pytest.raises(KinemaError, match=r"is not a model folder \(a training run: its model is in .*run/model\)"):
        locate_model(tmp_path / "run")


def test_a_preset_without_its_text_encoder_fails_before_its_dit_is_built(tmp_path, monkeypatch):
    import kinema.models.dit

    monkeypatch.chdir(tmp_path)  # no ./text_encoder here
    monkeypatch.setattr(kinema.models.dit, "DiT", lambda cfg: pytest.fail("built the DiT first"))
    with pytest.raises(KinemaError, match=r"text encoder folder text_encoder not found.*a preset looks in"):
        load_model("wan2.1-1.3b")


def test_a_file_given_as_a_model_is_named_as_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(KinemaError, match="notes.txt is a file; --model takes a model folder"):
        locate_model(tmp_path / "notes.txt")


def test_a_config_that_leaves_out_a_weight_shape_is_named(tmp_path):
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(BUNDLED, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["dit"]["num_layers"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(KinemaError, match=r"does not state dit.num_layers, which shape the weights"):
        load_model(folder)


def test_a_file_named_like_a_preset_does_not_hide_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "debug").write_text("my notes")
    assert locate_model("debug") == ("preset", "debug")
