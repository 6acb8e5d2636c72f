"""Builders shared by the MoE tests: pico Llama experts (mergekit-style) with a tiny word-level tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from scripts.bench_merge import perturbed_copy  # noqa: F401  (the bench's distinct experts, reused)

WORDS = (
    "the what is of definition a an word to in and bank river money water financial side land "
    "institution slope edge place run quickly move fast"
).split()


def tiny_tokenizer():
    """A word-level fast tokenizer over a few dozen words plus BOS/EOS/PAD/UNK."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    punct = list("\"?.,:;!'") + ["\n"]
    vocab = {t: i for i, t in enumerate(specials + punct + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def pico_llama(
    folder: Path, seed: int, tie: bool = False, vocab_size: int = 64, hidden: int = 32, layers: int = 2, tokenizer=None
) -> Path:
    """Save a randomly initialised 2-layer Llama (hidden 32) and the tiny tokenizer into `folder`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    (tokenizer or tiny_tokenizer()).save_pretrained(str(folder))
    return folder


def write_minilm_clusters(folder: Path, pairs: list[tuple[str, str]], k: int, minilm_dir: Path, seed: int = 0):
    """Cluster (term, context) questions with MiniLM + k-means; write centroids.npy + embedder.json; return labels.

    The files follow the cluster stage's format (clustering/assign.py `load_assigner`).
    """
    import json

    import numpy as np
    from sentence_transformers import SentenceTransformer
    from sklearn.cluster import KMeans

    from prompts.builder import render_question

    emb = SentenceTransformer(str(minilm_dir), device="cpu").encode(
        [render_question(t, c) for t, c in pairs], normalize_embeddings=True
    )
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(emb)
    centroids = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "centroids.npy", centroids.astype(np.float32))
    (folder / "embedder.json").write_text(
        json.dumps(
            {"kind": "sentence-transformers", "model": str(minilm_dir), "max_length": 256, "dim": int(emb.shape[1])}
        )
    )
    return [int(x) for x in np.argmax(emb @ centroids.T, axis=1)]
