"""Recipes: a TOML file per training run, merged with --set overrides and checked before any work."""

import dataclasses
from pathlib import Path

import pytest

from kinema import recipe, world
from kinema.errors import KinemaError

CONFIGS = Path(__file__).parents[1] / "configs"
DEBUG = CONFIGS / "debug.toml"
SMALL = CONFIGS / "small.toml"


def test_recipes_parse_and_reject_typos(tmp_path):
    small = recipe.load(SMALL)
    assert small.model.name == "kinema-small" and small.model.dit.num_layers == 8
    assert (128, 128, 17) in small.buckets and any(b[2] == 1 for b in small.buckets)
    assert recipe.load(DEBUG, {"dit.steps": 9, "vae": {"lr": 0.01}}).dit.steps == 9
    with pytest.raises(KinemaError, match="unknown key 'stpes'"):
        recipe.load(DEBUG, {"dit.stpes": 9})
    with pytest.raises(KinemaError, match="unknown key"):
        recipe.load(DEBUG, {"model.dit.layers": 3})
    with pytest.raises(KinemaError, match="multiples of 16"):
        recipe.load(DEBUG, {"data.buckets": [[40, 32, 5]]})
    narrow = recipe.load(DEBUG, {"data.world.stay_in_frame": False, "data.world.objects": [1]}).data.world
    assert not narrow.stay_in_frame and narrow.objects == (1,) and narrow.motions == world.MOTIONS
    with pytest.raises(KinemaError, match=r"\[data.world\] chooses the world's scenes"):
        recipe.load(DEBUG, {"data.world.stay_in_frame": False, "data.source": str(tmp_path)})
    with pytest.raises(KinemaError, match="unknown 'pink'; use some of red"):
        recipe.load(DEBUG, {"data.world.colours": ["red", "pink"]})
    with pytest.raises(KinemaError, match="unknown key 'object'"):
        recipe.load(DEBUG, {"data.world.object": [1]})
    blended = recipe.load(DEBUG, {"data.blend_share": 0.2, "data.blend.objects": [1]}).data
    assert blended.blend_share == 0.2 and blended.blend.objects == (1,) and blended.world.objects == (1, 2, 3)
    for overrides, says in (({"vae.frames": 5}, r"recipe \[vae\] frames must be a list, e.g. \[...\], got 5"),
                            ({"data.bucket_weights": 3}, "bucket_weights must be a list"),
                            ({"dit.mask_probs": 5}, r"mask_probs must be a table"),
                            ({"dit.lr": float("nan")}, "lr must be a number, got nan"),
                            ({"vae.steps.x": 1}, "vae.steps is a value, not a table: cannot set vae.steps.x"),
                            ({"model.dit": [1, 2]}, r"model config.dit must be a table of keys \("),
                            ({"vae.lr": float("inf")}, r"\[vae\] lr must be a finite number above 0, got inf"),
                            ({"dit.steps": -1}, r"\[dit\] steps must be 0 or more, got -1"),
                            ({"vae.crop": 0}, r"crop=0 must be a multiple of"),
                            ({"vae.crop": -32}, r"crop=-32 must be a multiple of"),
                            ({"model.dit.num_heads": 0}, r"dit.num_heads=0 must be at least 1")):
        with pytest.raises(KinemaError, match=says):
            recipe.load(DEBUG, overrides)
    with pytest.raises(KinemaError, match="blend_share = 1 must be at least 0 and below 1"):
        recipe.load(DEBUG, {"data.blend_share": 1, "data.blend.objects": [1]})
    with pytest.raises(KinemaError, match="blend_share = 0.2 .* only for source = \"world\""):
        recipe.load(DEBUG, {"data.blend_share": 0.2, "data.source": str(tmp_path)})
    with pytest.raises(KinemaError, match=r"\[data.blend\] is a scene mix no clip is drawn from"):
        recipe.load(DEBUG, {"data.blend.objects": [1]})
    with pytest.raises(KinemaError, match=r"judge_clips = -1 must be at least 0 \(0: no judge\)"):
        recipe.load(DEBUG, {"vae.judge_clips": -1})
    with pytest.raises(KinemaError, match=r"\[dit\] noise_correlation = 0.5 .* \[model.sampler\] .* is 0.0"):
        recipe.load(DEBUG, {"dit.noise_correlation": 0.5})
    with pytest.raises(KinemaError, match="noise_correlation must be from 0"):
        recipe.load(DEBUG, {"dit.noise_correlation": 1.0, "model.sampler.noise_correlation": 1.0})
    bad = tmp_path / "bad.toml"
    bad.write_text("[dit\nsteps = 1")
    with pytest.raises(KinemaError, match="not valid TOML"):
        recipe.load(bad)


def test_recipes_in_configs_load():
    """Every committed recipe parses. The GPU one fine-tunes the bundled model: small.toml's, with MiniLM's token
    embeddings appended to the text it reads (session 20)."""
    gpu = recipe.load(Path(__file__).parents[1] / "configs" / "small_gpu.toml")
    assert gpu.init == "default" and gpu.vae.steps == 0 and gpu.data.clips == 30000 and not gpu.data.world.stay_in_frame
    small = recipe.load(SMALL).model
    assert dataclasses.replace(gpu.model.dit, text_dim=small.dit.text_dim) == small.dit
    assert gpu.model.text.layers == (*small.text.layers, 0) and gpu.model.dit.text_dim == 2 * small.dit.text_dim
    # The motion-weighted VAE recipe fine-tunes kinema-small's VAE, encoder too, then trains its DiT as the GPU one.
    motion = recipe.load(Path(__file__).parents[1] / "configs" / "small_motion_vae.toml")
    assert motion.init == "default" and motion.vae.steps > 0 and motion.vae.train_encoder
    assert motion.vae.motion_weight == 4.0 and motion.vae.judge_clips > 0
    assert motion.model == gpu.model and motion.dit.mask_probs == gpu.dit.mask_probs
    assert motion.data.buckets == gpu.data.buckets and motion.data.world == gpu.data.world
    for path in (Path(__file__).parents[1] / "configs").glob("*.toml"):
        recipe.load(path)  # raises on an unknown key, a bad value or a missing init model


def test_bundled_recipes_load_by_name_wherever_kinema_runs(tmp_path, monkeypatch):
    """An installed wheel has no configs/ folder: its recipes travel inside the package."""
    assert sorted(p.name for p in recipe.RECIPES.glob("*.toml")) == sorted(p.name for p in CONFIGS.glob("*.toml"))
    monkeypatch.chdir(tmp_path)  # nowhere near the repository
    assert recipe.load("small") == recipe.load(SMALL) == recipe.load("configs/small.toml")
    (tmp_path / "small.toml").write_text('[model]\npreset = "debug"\n')  # a file of that name wins
    assert recipe.load("small.toml").model.name != recipe.load("small").model.name
    with pytest.raises(KinemaError, match=r"recipe other/small.toml not found; pass a TOML file or a bundled recipe "
                                          r"\(debug, small, small_decoder"):
        recipe.load("other/small.toml")


def test_a_fine_tune_may_only_refine_the_patch():
    gpu = Path(__file__).parents[1] / "configs" / "small_gpu.toml"
    finer = recipe.load(gpu, {"model.dit.patch_size": [1, 2, 2]})
    assert finer.model.dit.patch_size == (1, 2, 2) and finer.model.dit.num_layers == 8
    with pytest.raises(KinemaError, match="num_layers = 4 differs from the init model's 8"):
        recipe.load(gpu, {"model.dit.num_layers": 4})
    distill = Path(__file__).parents[1] / "configs" / "small_distill.toml"
    with pytest.raises(KinemaError, match="patch_size .* not when distilling"):
        recipe.load(distill, {"model.dit.patch_size": [1, 2, 2]})
