"""BERTScore F1 (bert-score package): any hub model or local folder, chosen layer, optional idf/rescaling.

A pair with an empty side scores 0 (bert-score's rule for its raw scores) without reaching the model.
idf weights come from the references of the call, each counted once per prediction scored against
it, as `bert_score.score` counts them. Rescaling needs a baseline table: bert-score ships one per
hub model it knows; a local folder needs `bertscore_baseline_file`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from evaluation.metrics import Metric, Reduce, best_per_example, flatten_pairs
from evaluation.metrics.settings import MetricSettings
from run_config.devices import resolve_device, resolve_dtype
from run_config.errors import ConfigError

IDF_DOCUMENTS = "each reference once per prediction scored against it (bert-score's count)"


class BertScore(Metric):
    """BERTScore F1; several references: the best one (max over single-reference pairs)."""

    name = "bertscore"
    packages = ("bert-score", "transformers")
    settings_used = (
        "bertscore_model",
        "bertscore_num_layers",
        "bertscore_idf",
        "bertscore_rescale",
        "bertscore_baseline_file",
        "dtype",
    )

    def __init__(self, settings: MetricSettings | None = None):
        super().__init__(settings)
        from bert_score.utils import model2layers

        s = self.settings
        if s.bertscore_num_layers is None and s.bertscore_model not in model2layers:
            raise ConfigError(
                f"bertscore_num_layers: required for model {s.bertscore_model!r} "
                "(bert-score knows default layers only for hub names such as roberta-large)"
            )
        self._scorer = None

    def signature(self) -> dict[str, object]:
        return {
            **super().signature(),
            **({"bertscore_idf_documents": IDF_DOCUMENTS} if self.settings.bertscore_idf else {}),
        }

    def _get_scorer(self, idf_sents: Sequence[str]):
        """The scorer (model loaded once); with idf, its weights are recomputed from these references."""
        from bert_score import BERTScorer

        s = self.settings
        if self._scorer is None:
            device = resolve_device(s.device)
            self._scorer = BERTScorer(
                model_type=s.bertscore_model,
                num_layers=s.bertscore_num_layers,
                idf=s.bertscore_idf,
                rescale_with_baseline=s.bertscore_rescale,
                lang="en",
                baseline_path=s.bertscore_baseline_file,
                device=device,
                batch_size=s.batch_size,
            )
            self._scorer._model.to(resolve_dtype(s.dtype, device))  # bert-score loads float32 only
        if s.bertscore_idf:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Overwriting the previous importance weights")
                self._scorer.compute_idf(list(idf_sents))
        return self._scorer

    def sentence_scores(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> np.ndarray:
        if not hyps:
            return np.zeros(0)
        flat_h, flat_r, sizes = flatten_pairs(hyps, refs)
        live = [i for i, (h, r) in enumerate(zip(flat_h, flat_r)) if h.strip() and r.strip()]
        pair = np.zeros(len(flat_h))
        if live:
            scorer = self._get_scorer(flat_r)
            _, _, f1 = scorer.score(
                [flat_h[i] for i in live], [flat_r[i] for i in live], batch_size=self.settings.batch_size
            )
            pair[live] = f1.numpy()
        return best_per_example(pair, sizes) * 100.0
