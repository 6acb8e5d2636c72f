"""One-line signatures of scores, as sacreBLEU prints them: every setting that determines a number.

    bleu|protocol:max|refs:term|combine:max|case:mixed|order:4|tokenize:none|smooth:moses|lm-lexicon:0.1.0

Fields, in order: the metric, the protocol (`refs`: references by term or by (term, context); `combine`:
how several references combine; `max_refs`, `average:term`, `periods:stripped` and `round:up` where the
protocol has them), the metric's own settings (keys without the metric's prefix: `tokenize` is
`bleu_tokenize`), the versions of the packages that compute it, and the toolkit's version.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from evaluation.metrics import Metric
from evaluation.protocols import Protocol

TOOLKIT = "lm-lexicon"
FIXED = {  # settings a metric has no key for
    "bleu": {"case": "mixed", "order": 4},
    "sacrebleu": {"case": "mixed", "order": 4, "tokenize": "13a", "smooth": "exp", "nrefs": "all"},
    "meteor": {"tokenize": "nltk-word", "alpha": 0.9, "beta": 3, "gamma": 0.5},
    "nist": {"tokenize": "nltk-word"},
}


def toolkit_version() -> str:
    try:
        return version(TOOLKIT)
    except PackageNotFoundError:
        return "unknown"


def _key(metric: str, key: str) -> str:
    """`bleu_tokenize` -> `tokenize` for bleu, `rouge_tokenizer` -> `tokenizer` for rougeL; others as they are."""
    prefix, _, rest = key.partition("_")
    return rest if rest and metric.startswith(prefix) else key


def _value(value: object) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def signature(metric: Metric, protocol: Protocol) -> str:
    """The one-line signature of `metric`'s scores under `protocol`."""
    combine = protocol.reduce if metric.per_example else "corpus"
    parts = [metric.name, f"protocol:{protocol.name}", f"refs:{protocol.by}", f"combine:{combine}"]
    if protocol.max_refs is not None:
        parts.append(f"max_refs:{protocol.max_refs}")
    if protocol.average != "example":
        parts.append(f"average:{protocol.average}")
    if protocol.strip_periods:
        parts.append("periods:stripped")
    if protocol.round_up:
        parts.append("round:up")
    settings = {_key(metric.name, k): getattr(metric.settings, k) for k in metric.settings_used}
    parts += [f"{key}:{_value(value)}" for key, value in {**FIXED.get(metric.name, {}), **settings}.items()]
    parts += [f"{package}:{version(package)}" for package in metric.packages]
    parts.append(f"{TOOLKIT}:{toolkit_version()}")
    return "|".join(parts)
