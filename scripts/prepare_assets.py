"""Build the offline assets once: NLTK WordNet folder, plain-HF SmolLM2-135M, the embedded lexicon; compile kernels."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from clustering.kmeans import compile_kernels
from dataset.lexicon import wordnet_lexicon_dir
from run_config import assets


def main() -> int:
    print(f"[assets] WordNet for NLTK: {assets.nltk_data_dir()}")
    print(f"[assets] all-MiniLM-L6-v2: {assets.minilm_path()}")
    print(f"[assets] SmolLM2-135M (plain HF): {assets.smollm2_path()}")
    print(f"[assets] embedded lexicon: {wordnet_lexicon_dir()}")
    compile_kernels()
    print("[assets] clustering kernels compiled (numba cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
