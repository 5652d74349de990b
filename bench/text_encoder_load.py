"""Fresh-process time to load all-MiniLM-L6-v2 both ways, after `import torch`: transformers (before session 37)
against kinema.models.minilm (now). Run: python bench/text_encoder_load.py old|new"""
import sys
import time

import torch  # noqa: F401  (every kinema process has it imported already)

start = time.perf_counter()
from kinema.models.text import minilm_folder  # noqa: E402

folder = minilm_folder()
if sys.argv[1] == "old":
    import transformers

    transformers.AutoModel.from_pretrained(folder, local_files_only=True)
    transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
else:
    from kinema.models.minilm import MiniLM, WordPieceTokenizer

    MiniLM(folder)
    WordPieceTokenizer(folder)
print(f"{time.perf_counter() - start:.2f}")
