"""Sense ranking: similarities of a prediction to each definition of its term (evaluation.sense ranks them).

Two similarities: the toolkit's sentence BLEU (`bleu`, with the run's BLEU settings) and the cosine of
mean-pooled last-layer embeddings from `sense_model` (evaluation.encoders). Both on 0-100.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.metrics import Metric
from evaluation.metrics.bleu import SentenceBleu
from evaluation.metrics.settings import MetricSettings

SIMILARITIES = ("bleu", "embedding")


class SenseRanking(Metric):
    """Ranks the row's own sense among the term's senses: scored by evaluation.sense, not against the
    protocol's references."""

    name = "sense"
    ranks_senses = True
    packages = ("transformers",)
    settings_used = ("bleu_tokenize", "bleu_smooth", "sense_model", "dtype")
    score_names = tuple(f"sense_{s}_{k}" for s in SIMILARITIES for k in ("acc", "mrr", "gap"))

    def __init__(self, settings: MetricSettings | None = None):
        super().__init__(settings)
        self.bleu = SentenceBleu(self.settings)

    def similarities(self, hyps: Sequence[str], candidates: Sequence[str]) -> dict[str, np.ndarray]:
        """similarity name -> (pair,) scores of hypothesis `hyps[i]` against candidate `candidates[i]`."""
        return {
            "bleu": self.bleu.sentence_scores(hyps, [[c] for c in candidates], "max"),
            "embedding": self.cosines(hyps, candidates),
        }

    def cosines(self, hyps: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """100 x cosine of mean-pooled embeddings of each pair, each distinct text encoded once; a text the
        tokenizer turns into no tokens has no embedding and its pairs score 0."""
        if not hyps:
            return np.zeros(0)
        from evaluation.encoders import load_encoder

        s = self.settings
        texts = list(dict.fromkeys([*hyps, *candidates]))
        feats, kept = load_encoder(s.sense_model, s.device, s.dtype).features(
            texts, pooling="mean", batch_size=s.batch_size
        )
        unit = np.zeros((len(texts), feats.shape[1]), dtype=np.float64)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        unit[kept] = feats / np.where(norms > 0, norms, 1.0)
        index = {t: i for i, t in enumerate(texts)}
        h = unit[[index[t] for t in hyps]]
        c = unit[[index[t] for t in candidates]]
        return 100.0 * (h * c).sum(axis=1)
