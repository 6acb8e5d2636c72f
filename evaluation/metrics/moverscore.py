"""MoverScore (Zhao et al. 2019, unigram, as the original's moverscore_v2) with POT's exact EMD.

Tokens: one layer of any encoder (DistilBERT's last layer by default), special tokens kept,
WordPiece continuations (`##`) and punctuation removed, uniform weights (the original's idf of 1).
Score = 1 / (1 + EMD) between the L2-normalised token embeddings of reference and hypothesis; a
pair with an empty side (or a side left with no token) scores 0. Texts are cut at
`moverscore_max_length` subwords before special tokens are added (510, as the original).
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from evaluation.metrics import Metric, Reduce, best_per_example, flatten_pairs

_PUNCTUATION = set(string.punctuation)


def mover_distance(ref: np.ndarray, hyp: np.ndarray) -> float:
    """Earth mover's distance between two uniform clouds of unit vectors (Euclidean cost)."""
    import ot

    cost = np.sqrt(np.maximum(((ref[:, None, :] - hyp[None, :, :]) ** 2).sum(-1), 0.0)).astype(np.float64)
    return float(ot.emd2(np.full(len(ref), 1.0 / len(ref)), np.full(len(hyp), 1.0 / len(hyp)), cost))


class MoverScore(Metric):
    """MoverScore; several references: the best one (max over single-reference pairs)."""

    name = "moverscore"
    packages = ("POT", "transformers")
    settings_used = ("moverscore_model", "moverscore_layer", "moverscore_max_length", "dtype")

    def embed(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Unit-normalised embeddings of the kept tokens of each distinct text ((0, dim) when none is kept)."""
        from evaluation.encoders import load_encoder

        s = self.settings
        unique = sorted(set(texts))
        enc = load_encoder(s.moverscore_model, s.device, s.dtype)
        max_length = s.moverscore_max_length + enc.tokenizer.num_special_tokens_to_add(pair=False)
        out = {}
        for text, (tokens, states) in zip(
            unique, enc.token_states(unique, s.moverscore_layer, s.batch_size, max_length)
        ):
            keep = [i for i, t in enumerate(tokens) if "##" not in t and t not in _PUNCTUATION]
            vecs = states[keep]
            out[text] = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-30)
        return out

    def sentence_scores(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> np.ndarray:
        if not hyps:
            return np.zeros(0)
        flat_h, flat_r, sizes = flatten_pairs(hyps, refs)
        emb = self.embed([t for t in (*flat_h, *flat_r) if t.strip()])
        none = np.zeros((0, 0))
        pairs = tqdm(
            zip(flat_h, flat_r), total=len(flat_h), desc="moverscore", unit=" pairs", disable=None, mininterval=1.0
        )
        pair = [
            1.0 / (1.0 + mover_distance(ref, hyp)) if len(ref) and len(hyp) else 0.0
            for ref, hyp in ((emb.get(r, none), emb.get(h, none)) for h, r in pairs)
        ]
        return best_per_example(pair, sizes) * 100.0
