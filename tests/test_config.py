import json

import pytest

from kinema.config import PRESETS, ModelConfig, SamplerConfig, from_dict, load_json, preset
from kinema.errors import KinemaError


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json(name):
    cfg = preset(name)
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_wan_preset_has_the_public_shape():
    cfg = preset("wan2.1-1.3b")
    assert (cfg.dit.dim, cfg.dit.num_layers, cfg.dit.ffn_dim, cfg.dit.text_dim) == (1536, 30, 8960, 4096)
    assert cfg.vae.spatial_factor == 8 and cfg.vae.temporal_factor == 4


def test_unknown_keys_and_presets_are_clear_errors(tmp_path):
    with pytest.raises(KinemaError, match="unknown key 'bogus' in model config.dit"):
        ModelConfig.from_dict({"dit": {"bogus": 1}})
    with pytest.raises(KinemaError, match="unknown preset 'huge'.*debug"):
        preset("huge")
    with pytest.raises(KinemaError, match="model config.dit num_layers must be a whole number, got '8'"):
        ModelConfig.from_dict({"dit": {"num_layers": "8"}})
    with pytest.raises(KinemaError, match="sampler shift must be a number, got True"):
        from_dict(SamplerConfig, {"shift": True}, where="sampler")
    assert from_dict(SamplerConfig, {"shift": 6}).shift == 6  # a whole number is a number
    with pytest.raises(KinemaError, match="must equal vae.z_dim"):
        ModelConfig.from_dict({"dit": {"in_channels": 3}})
    wan = json.loads(preset("wan2.1-1.3b").to_json())
    wan["dit"]["patch_size"] = [1, 4, 4]  # 8 x 4 = 32 px blocks would not tile a 16-multiple canvas
    with pytest.raises(KinemaError, match="8x downsampling times the DiT's 4x4 patches makes 32 px blocks"):
        ModelConfig.from_dict(wan)
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(KinemaError, match="not valid JSON"):
        load_json(bad)
