"""MAUVE (mauve-text) between predictions and gold definitions, on features of a local or hub model."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from evaluation.metrics import Metric, Reduce, check_inputs

log = logging.getLogger(__name__)
MIN_RELIABLE_SAMPLES = 1000


class Mauve(Metric):
    """Corpus-level MAUVE of the prediction distribution against each example's own gold definition.

    The first reference of every example is its own gold definition (see evaluation.protocols).
    Features are computed here and passed as p/q features: text is never handed to mauve-text,
    which would download gpt2-large. As mauve-text drops empty strings, an empty (or failed)
    prediction, or a text the tokenizer turns into no tokens, is left out of its distribution and
    counted (`mauve_excluded_predictions`, `mauve_excluded_references`); with no prediction left,
    MAUVE is 0.
    """

    name = "mauve"
    per_example = False
    packages = ("mauve-text", "faiss-cpu", "transformers")
    settings_used = ("mauve_model", "mauve_pooling", "mauve_num_buckets", "max_length", "seed", "dtype")

    def _features(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Features of the non-empty texts that have tokens, and how many texts were left out."""
        from evaluation.encoders import load_encoder

        s = self.settings
        live = [t for t in texts if t.strip()]
        feats, kept = load_encoder(s.mauve_model, s.device, s.dtype).features(
            live, s.mauve_pooling, batch_size=s.batch_size, max_length=s.max_length
        )
        return feats, len(texts) - len(kept)

    def corpus_scores(
        self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max"
    ) -> tuple[dict[str, float], dict[str, int]]:
        import mauve

        check_inputs(self.name, hyps, refs)
        p, p_out = self._features(hyps)
        q, q_out = self._features([r[0] for r in refs])
        counts = {"mauve_excluded_predictions": p_out, "mauve_excluded_references": q_out}
        if p_out or q_out:
            log.warning("MAUVE: %d empty or token-less predictions and %d references left out (counted)", p_out, q_out)
        if not len(p) or not len(q):
            log.warning("MAUVE: no %s left to compare: 0", "prediction" if not len(p) else "reference")
            return {self.name: 0.0}, counts
        if len(p) < MIN_RELIABLE_SAMPLES:
            log.warning("MAUVE on %d samples (< %d): the estimate is noisy", len(p), MIN_RELIABLE_SAMPLES)
        s = self.settings
        out = mauve.compute_mauve(
            p_features=p,
            q_features=q,
            num_buckets=s.mauve_num_buckets or "auto",
            device_id=-1,
            seed=s.seed,
            verbose=False,
        )
        return {self.name: float(out.mauve) * 100.0}, counts

    def compute(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> dict[str, float]:
        return self.corpus_scores(hyps, refs, reduce)[0]
