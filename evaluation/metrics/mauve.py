"""MAUVE (mauve-text) between predictions and gold definitions, on features of a local or hub model."""
from __future__ import annotations

import logging
from collections.abc import Sequence

from evaluation.metrics import Metric, Reduce, check_inputs

log = logging.getLogger(__name__)
MIN_RELIABLE_SAMPLES = 1000


class Mauve(Metric):
    """Corpus-level MAUVE of the prediction distribution against each example's own gold definition.

    The first reference of every example is its own gold definition (see evaluation.protocols).
    Features are computed here and passed as p/q features: text is never handed to mauve-text,
    which would download gpt2-large.
    """

    name = "mauve"
    per_example = False
    packages = ("mauve-text", "faiss-cpu", "transformers")
    settings_used = ("mauve_model", "mauve_pooling", "mauve_num_buckets", "max_length", "seed")

    def compute(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> dict[str, float]:
        import mauve

        from evaluation.encoders import load_encoder

        check_inputs(self.name, hyps, refs)
        if len(hyps) < MIN_RELIABLE_SAMPLES:
            log.warning("MAUVE on %d samples (< %d): the estimate is noisy", len(hyps), MIN_RELIABLE_SAMPLES)
        s = self.settings
        enc = load_encoder(s.mauve_model, s.device, s.max_length)
        p = enc.features(list(hyps), s.mauve_pooling, batch_size=s.batch_size)
        q = enc.features([r[0] for r in refs], s.mauve_pooling, batch_size=s.batch_size)
        out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=s.mauve_num_buckets or "auto",
                                  device_id=-1, seed=s.seed, verbose=False)
        return {self.name: float(out.mauve) * 100.0}
