"""all-MiniLM-L6-v2 (a 6-layer BERT encoder) in plain torch, and its WordPiece tokenizer on `tokenizers` alone.

The bundled models' text encoder. Loading it through transformers imports half of that library (and scipy, sympy
and torch._dynamo with it): ~4 s of every `kinema generate` on a 2-core CPU, for 22M weights that load in 50 ms.
tests/test_text.py holds it to transformers' BertModel and tokenizer, state for state and token for token.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

# BertModel's parameter names -> this module's (per layer: the part after "encoder.layer.N.")
EMBEDDINGS = {"embeddings.word_embeddings": "words", "embeddings.position_embeddings": "positions",
              "embeddings.token_type_embeddings": "token_types", "embeddings.LayerNorm": "norm"}
LAYER = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
         "attention.output.dense": "out", "attention.output.LayerNorm": "attention_norm",
         "intermediate.dense": "up", "output.dense": "down", "output.LayerNorm": "mlp_norm"}


class BertLayer(nn.Module):
    """Post-norm attention and GELU MLP, as BERT has them."""

    def __init__(self, dim: int, hidden: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.up, self.down = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.attention_norm, self.mlp_norm = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # x: (B, L, D); keep: (B, 1, 1, L) bool, False at padding
        split = (*x.shape[:2], self.heads, -1)
        q, k, v = (proj(x).view(split).transpose(1, 2) for proj in (self.query, self.key, self.value))  # (B, H, L, d)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=q.shape[-1] ** -0.5)  # as BERT's
        attended = attended.transpose(1, 2).reshape(x.shape)
        x = self.attention_norm(self.out(attended) + x)
        return self.mlp_norm(self.down(F.gelu(self.up(x))) + x)


class MiniLM(nn.Module):
    """BertModel's encoder in eval mode: `model(input_ids, attention_mask, output_hidden_states)` gives
    `.last_hidden_state` (B, L, D) and `.hidden_states` (the embeddings, then each layer's), as transformers does."""

    def __init__(self, folder: Path):
        super().__init__()
        self.config = c = SimpleNamespace(**json.loads((folder / "config.json").read_text()))
        dim = c.hidden_size
        # On the meta device nothing is initialised that the file replaces. An embedding gets its weight given:
        # its own init on meta tensors would import torch._dynamo (~2 s).
        with torch.device("meta"):
            self.words, self.positions, self.token_types = (
                nn.Embedding(rows, dim, _weight=torch.empty(rows, dim))
                for rows in (c.vocab_size, c.max_position_embeddings, c.type_vocab_size))
            self.norm = nn.LayerNorm(dim, eps=c.layer_norm_eps)
            self.layers = nn.ModuleList(BertLayer(dim, c.intermediate_size, c.num_attention_heads, c.layer_norm_eps)
                                        for _ in range(c.num_hidden_layers))
        self.load_state_dict(_renamed(load_file(str(folder / "model.safetensors"))), strict=True, assign=True)
        self.dtype = torch.float32

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                output_hidden_states: bool = False) -> SimpleNamespace:
        positions = self.positions.weight[: input_ids.shape[1]]
        x = self.norm(self.words(input_ids) + self.token_types.weight[0] + positions)  # (B, L, D); one segment
        keep = attention_mask.bool()[:, None, None, :]
        states = [x]
        for layer in self.layers:
            x = layer(x, keep)
            states.append(x)
        return SimpleNamespace(last_hidden_state=x, hidden_states=tuple(states) if output_hidden_states else None)


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BertModel's weights under this module's names; its pooler and position-id buffer are not used."""
    renamed = {}
    for name, value in state.items():
        name = name.removeprefix("bert.")
        module, _, param = name.rpartition(".")
        if module in EMBEDDINGS:
            renamed[f"{EMBEDDINGS[module]}.{param}"] = value
        elif module.startswith("encoder.layer."):
            index, _, part = module.removeprefix("encoder.layer.").partition(".")
            renamed[f"layers.{index}.{LAYER[part]}.{param}"] = value
    return renamed


class WordPieceTokenizer:
    """What TextEncoder asks of a transformers tokenizer, on `tokenizers`: `tok(prompt)["input_ids"]` (all of
    them) and `tok(prompts, padding="max_length", truncation=True, max_length=n, return_tensors="pt")`.

    Truncation and padding are settings of a `tokenizers.Tokenizer`, so each length gets its own instance: a
    server's jobs tokenize at once from several threads."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        self._file = str(folder / "tokenizer.json")
        self._whole = Tokenizer.from_file(self._file)
        self._whole.no_truncation()
        self._whole.no_padding()
        self._fixed: dict[int, Tokenizer] = {}
        self._lock = threading.Lock()

    def __call__(self, prompts: str | list[str], padding: str | None = None, truncation: bool = False,
                 max_length: int | None = None, return_tensors: str | None = None) -> dict:
        if padding not in (None, "max_length") or truncation != (padding == "max_length"):
            raise ValueError("WordPieceTokenizer pads and truncates to max_length together, or neither")
        tokenizer = self._whole if padding is None else self._fixed_length(max_length)
        encoded = tokenizer.encode_batch([prompts] if isinstance(prompts, str) else list(prompts))
        ids, mask = [e.ids for e in encoded], [e.attention_mask for e in encoded]
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        return {"input_ids": ids[0], "attention_mask": mask[0]} if isinstance(prompts, str) else \
            {"input_ids": ids, "attention_mask": mask}

    def _fixed_length(self, length: int):
        from tokenizers import Tokenizer

        with self._lock:
            if length not in self._fixed:
                tokenizer = Tokenizer.from_file(self._file)
                tokenizer.enable_truncation(length)
                tokenizer.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
                self._fixed[length] = tokenizer
            return self._fixed[length]
