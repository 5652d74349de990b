"""Text encoder: MiniLM token states, tiny local T5/UMT5 folders, caching and clear errors."""

import logging
import shutil

import pytest
import torch
import transformers

from kinema.config import TextConfig
from kinema.errors import KinemaError
from kinema.models.text import TextEncoder, minilm_folder

TINY_DIM = 32


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder(TextConfig(kind="minilm", max_length=16, dim=384))


def test_minilm_shapes_mask_and_zero_padding(minilm):
    tokens, mask = minilm(["a red ball bounces", ""])
    assert tokens.shape == (2, 16, 384) and tokens.dtype == torch.float32
    assert mask.shape == (2, 16) and mask.dtype == torch.bool
    assert mask[1].sum() == 2  # "" is [CLS] [SEP]: a real unconditional embedding, not all padding
    assert mask[0].sum() > mask[1].sum()
    assert torch.all(tokens[~mask] == 0)
    assert torch.all(tokens[mask].abs().sum(-1) > 0)
    assert not tokens.requires_grad


def test_minilm_matches_transformers_bert_state_for_state(minilm):
    """kinema.models.minilm loads without transformers; it must give what transformers' BertModel gives."""
    folder = minilm_folder()
    reference = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    prompts = ["a small red circle moves to the right over a dark blue gradient", "", "Ünïcödé 🎬 and CAPS!",
               "a prompt long enough that it runs past the sixteen tokens this encoder reads, so it is cut"]
    batch = tokenizer(prompts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    ours = minilm.tokenizer(prompts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    assert all(torch.equal(ours[key], batch[key]) for key in ("input_ids", "attention_mask"))
    assert [minilm.tokenizer(p)["input_ids"] for p in prompts] == [tokenizer(p)["input_ids"] for p in prompts]
    with torch.no_grad():
        expected = reference(**batch, output_hidden_states=True)
        got = minilm.model(batch["input_ids"], batch["attention_mask"], output_hidden_states=True)
    keep = batch["attention_mask"].bool()  # states at padding never leave the encoder (they are zeroed)
    for mine, theirs in zip(got.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(mine[keep], theirs[keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.last_hidden_state[keep], expected.last_hidden_state[keep], rtol=1e-5, atol=1e-5)


def test_minilm_is_deterministic_and_prompt_dependent(minilm):
    first, _ = minilm(["a blue cube slides left"])
    minilm._cache.clear()
    again, _ = minilm(["a blue cube slides left"])
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    other, _ = minilm(["a green sphere falls"])
    assert not torch.allclose(first, other)


def test_layers_put_the_token_embeddings_beside_the_last_states(minilm):
    """text.layers = [-1, 0]: the last states, unchanged, then layer 0, where "left" and "right" stay far apart
    (MiniLM's last states bring them 3.5x closer than "red" and "blue", docs/MODEL.md session 18)."""
    wide = TextEncoder(TextConfig(kind="minilm", max_length=16, dim=768, layers=(-1, 0)))
    prompts = ["a red circle moves to the left", "a red circle moves to the right", "a blue circle moves to the left"]
    narrow_states, mask = minilm(prompts)
    states, wide_mask = wide(prompts)
    assert states.shape == (3, 16, 768) and torch.equal(wide_mask, mask)
    torch.testing.assert_close(states[..., :384], narrow_states, rtol=0, atol=0)
    assert torch.all(states[~mask] == 0)

    def change(a: int, b: int, part: slice) -> float:  # how far two prompts' states are, over the whole prompt
        return float((states[a, :, part] - states[b, :, part]).norm(dim=-1).sum())
    last, embeddings = slice(0, 384), slice(384, 768)
    assert change(0, 1, last) < 0.5 * change(0, 2, last)  # last states: the direction barely changes them
    assert change(0, 1, embeddings) > 0.7 * change(0, 2, embeddings)  # layer 0: as far apart as two colours


def test_layers_must_fit_the_encoder():
    with pytest.raises(KinemaError, match=r"text.dim=384 .* gives 768 \(2 x 384\); set text.dim to 768"):
        TextEncoder(TextConfig(kind="minilm", max_length=16, dim=384, layers=(-1, 0)))
    with pytest.raises(KinemaError, match="reach past the minilm encoder's 7 hidden states"):
        TextEncoder(TextConfig(kind="minilm", max_length=16, dim=768, layers=(-1, 7)))
    with pytest.raises(KinemaError, match="distinct hidden-state indices"):
        TextConfig(layers=(0, 0)).validate()


def test_cache_skips_re_encoding(minilm, monkeypatch):
    calls = []
    encode = minilm.encode
    monkeypatch.setattr(minilm, "encode", lambda prompts: calls.append(prompts) or encode(prompts))
    first, _ = minilm(["", "a cat", "a cat"])
    second, _ = minilm(["a cat", ""])
    third, _ = minilm(["", "a dog"])
    assert calls == [["", "a cat"], ["a dog"]]
    torch.testing.assert_close(first[1], second[0])
    torch.testing.assert_close(first[0], third[0])


def test_long_prompts_truncate_quietly(minilm, caplog):
    with caplog.at_level(logging.WARNING):
        tokens, mask = minilm(["a very long prompt " * 50])
    assert tokens.shape == (1, 16, 384) and mask.all()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_frozen_and_stays_in_eval(minilm):
    assert not any(p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.training and not minilm.model.training


def save_tiny_encoder(folder, kind="t5", tokenizer_folder=None):
    """A random 2-layer encoder with MiniLM's tokenizer saved beside it (or in `tokenizer_folder`)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_folder(), local_files_only=True)
    config_class, model_class = {
        "t5": (transformers.T5Config, transformers.T5EncoderModel),
        "umt5": (transformers.UMT5Config, transformers.UMT5EncoderModel),
    }[kind]
    torch.manual_seed(0)
    config = config_class(vocab_size=len(tokenizer), d_model=TINY_DIM, d_kv=8, d_ff=64, num_layers=2,
                          num_heads=4, pad_token_id=tokenizer.pad_token_id)
    model = model_class(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(tokenizer_folder or folder)
    return model, tokenizer


@pytest.mark.parametrize("kind", ["t5", "umt5"])
def test_tiny_local_encoder_matches_transformers(tmp_path, kind):
    model, tokenizer = save_tiny_encoder(tmp_path / "enc", kind)
    encoder = TextEncoder(TextConfig(kind=kind, path=str(tmp_path / "enc"), max_length=12, dim=TINY_DIM))
    prompts = ["a red ball", "", "a much longer prompt that will certainly be truncated here"]
    tokens, mask = encoder(prompts)
    assert tokens.shape == (3, 12, TINY_DIM)
    batch = tokenizer(prompts, padding="max_length", truncation=True, max_length=12, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).last_hidden_state * batch["attention_mask"][..., None]
    torch.testing.assert_close(tokens, expected)
    assert torch.equal(mask, batch["attention_mask"].bool())
    wide = TextEncoder(TextConfig(kind=kind, path=str(tmp_path / "enc"), max_length=12, dim=2 * TINY_DIM,
                                  layers=(-1, 0)))
    with torch.no_grad():  # the token embeddings, as the encoder's first hidden state
        embeddings = model.get_input_embeddings()(batch["input_ids"]) * batch["attention_mask"][..., None]
    torch.testing.assert_close(wide(prompts)[0], torch.cat([expected, embeddings], -1))


def test_diffusers_layout(tmp_path):
    root = tmp_path / "wan"
    save_tiny_encoder(root / "text_encoder", tokenizer_folder=root / "tokenizer")
    relative = TextEncoder(TextConfig(kind="t5", path="text_encoder", max_length=8, dim=TINY_DIM), root=root)
    whole = TextEncoder(TextConfig(kind="t5", path=str(root), max_length=8, dim=TINY_DIM))
    torch.testing.assert_close(relative(["a cat"])[0], whole(["a cat"])[0])


def test_missing_or_incomplete_folders_are_clear_errors(tmp_path):
    with pytest.raises(KinemaError, match="not found"):
        TextEncoder(TextConfig(kind="t5", path=str(tmp_path / "nowhere"), dim=TINY_DIM))
    save_tiny_encoder(tmp_path / "enc")
    with pytest.raises(KinemaError, match="text.dim"):
        TextEncoder(TextConfig(kind="t5", path=str(tmp_path / "enc"), dim=64))
    shutil.copy(tmp_path / "enc" / "config.json", tmp_path / "config.json")
    with pytest.raises(KinemaError, match="no weights"):
        TextEncoder(TextConfig(kind="t5", path=str(tmp_path), dim=TINY_DIM))
    (tmp_path / "enc" / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(KinemaError, match="cannot load"):
        TextEncoder(TextConfig(kind="t5", path=str(tmp_path / "enc"), dim=TINY_DIM))
