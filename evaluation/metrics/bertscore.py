"""BERTScore F1 (bert-score package): any hub model or local folder, chosen layer, optional idf/rescaling.

A pair with an empty side scores 0 (bert-score's rule for its raw scores) without reaching the model.
idf weights come from the references of the call, each counted once per prediction scored against
it, as `bert_score.score` counts them. Rescaling needs a baseline table: bert-score ships one per
hub model it knows; a local folder needs `bertscore_baseline_file`.
"""

from __future__ import annotations

import csv
import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.config import MetricSettings
from evaluation.metrics import Metric, Reduce, best_per_example, flatten_pairs
from run_config.errors import ConfigError

IDF_DOCUMENTS = "each reference once per prediction scored against it (bert-score's count)"


def packaged_baseline(model: str, lang: str = "en") -> Path | None:
    """The baseline table bert-score ships for hub model `model` (None when it has none)."""
    spec = importlib.util.find_spec("bert_score")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "rescale_baseline" / lang / f"{model}.tsv"
    return path if path.is_file() else None


def baseline_problem(rescale: bool, model: str, num_layers: int | None, given: str | None) -> str | None:
    """Why `bertscore_baseline_file` cannot serve these settings (None when rescaling can work, or is off)."""
    if not rescale:
        return "given but bertscore_rescale is off" if given else None
    if given is None:
        if packaged_baseline(model) is not None:
            return None
        return (
            f"needed with bertscore_rescale: bert-score ships no baseline for {model!r} "
            "(give a CSV table LAYER,P,R,F with one row per layer)"
        )
    path = Path(given)
    if not path.is_file():
        return f"{given}: no such file"
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["LAYER", "P", "R", "F"]:
        return f"{given}:1: expected the header LAYER,P,R,F"
    for line, row in enumerate(rows[1:], 2):
        try:
            if len(row) != 4:
                raise ValueError
            [float(c) for c in row]
        except ValueError:
            return f"{given}:{line}: expected four numbers, got {','.join(row)[:60]!r}"
    if num_layers is not None and len(rows) - 1 <= num_layers:
        return f"{given}: no row for layer {num_layers} ({len(rows) - 1} rows)"
    return None


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
            self._scorer = BERTScorer(
                model_type=s.bertscore_model,
                num_layers=s.bertscore_num_layers,
                idf=s.bertscore_idf,
                rescale_with_baseline=s.bertscore_rescale,
                lang="en",
                baseline_path=s.bertscore_baseline_file,
                device=s.device,
                batch_size=s.batch_size,
            )
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
