"""The reference protocols: which definitions a prediction is scored against, and how they combine.

- `max` (the paper's, Huang et al. 2021): all definitions of the term in the evaluation split;
  each metric takes the maximum over single references.
- `multi-ref`: the same references, BLEU and NIST as one multi-reference score.
- `per-context`: only the definitions given for the same (term, context) pair.
- `orig-compat`: what the original inference code reports (docs/original_code.md, Scoring), INFLATED:
  periods removed from predictions and references, BLEU = max(multi-reference, max single-reference),
  ROUGE-L on NLTK word tokens with case kept, NIST 0 for a hypothesis shorter than its n-gram order,
  averages rounded up to two decimals.
- `ishiwatari` (Ishiwatari et al. 2019's scorer, after Noraset et al. 2017): the first 10 definitions of the
  term in file order (sense ids ignored: every definition of the word), BLEU as one multi-reference Moses
  score, averaged over each term's predictions and then over terms.
- `giulianelli` (Giulianelli et al. 2023's scorer): periods removed, BLEU from NLTK (smoothing method 2,
  auto_reweigh, whitespace tokens), each metric averaged over the term's references (their default `mean`).
References are never deduplicated; the first reference of each example is its own gold definition.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from dataset.records import Record
from evaluation.metrics import Reduce
from evaluation.metrics.settings import MetricSettings
from evaluation.references import context_references, term_references

_PERIOD = re.compile(r"\.(?!\d)")


@dataclass(frozen=True)
class Protocol:
    """How references are chosen (by term or by (term, context)) and combined."""

    name: str
    by: str  # "term" or "context"
    reduce: Reduce
    strip_periods: bool = False
    round_up: bool = False
    settings_update: dict = field(default_factory=dict)
    max_refs: int | None = None  # at most this many references, the term's first ones in file order
    average: str = "example"  # "example": mean over examples; "term": mean over terms of their examples' mean

    def settings(self, base: MetricSettings) -> MetricSettings:
        """Metric settings under this protocol (orig-compat forces the original ROUGE tokens and NIST rule)."""
        return base.model_copy(update=self.settings_update) if self.settings_update else base

    def text(self, text: str) -> str:
        """A prediction or reference as this protocol scores it."""
        return " ".join(_PERIOD.sub("", text).split()) if self.strip_periods else text

    def finish(self, value: float) -> float:
        """Final rounding of an averaged score (orig-compat rounds up like the original; idempotent)."""
        return math.ceil(round(value * 100, 6)) / 100 if self.round_up else value


PROTOCOLS: dict[str, Protocol] = {
    "max": Protocol("max", "term", "max"),
    "multi-ref": Protocol("multi-ref", "term", "multi"),
    "per-context": Protocol("per-context", "context", "max"),
    "orig-compat": Protocol(
        "orig-compat",
        "term",
        "best",
        strip_periods=True,
        round_up=True,
        settings_update={"rouge_tokenizer": "word", "rouge_stemmer": False, "nist_short": "zero"},
    ),
    "ishiwatari": Protocol("ishiwatari", "term", "multi", max_refs=10, average="term"),
    "giulianelli": Protocol(
        "giulianelli", "term", "mean", strip_periods=True, settings_update={"bleu_smooth": "nltk-method2"}
    ),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def reference_lists(targets: Sequence[Record], pool: Sequence[Record], protocol: Protocol) -> list[list[str]]:
    """References of each target record under `protocol`, drawn from `pool` (the evaluation split).

    The target's own definition comes first (one occurrence moved to the front, none removed), except under
    `max_refs`: then the term's first `max_refs` definitions in file order, as Ishiwatari et al.'s scorer reads
    them. Lists may be shared between targets: treat them as read-only.
    """
    if protocol.by == "term":
        by_key, key = term_references(pool), (lambda r: r.term)
    else:
        by_key, key = context_references(pool), (lambda r: (r.term, r.context))
    out = []
    for record in targets:
        refs = by_key.get(key(record), [])
        if protocol.max_refs is not None and refs:
            refs = refs[: protocol.max_refs]
        elif not refs or refs[0] != record.definition:
            rest = list(refs)
            if record.definition in rest:
                rest.remove(record.definition)
            refs = [record.definition, *rest]
        out.append([protocol.text(d) for d in refs] if protocol.strip_periods else refs)
    return out
