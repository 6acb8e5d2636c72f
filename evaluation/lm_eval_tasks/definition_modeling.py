"""The `definition_modeling` lm-evaluation-harness task's functions: 3D-EX data, the toolkit's prompt and its
`max`-protocol BLEU and ROUGE-L (every definition of the term in the evaluation split is a reference).

lm-eval loads this file by path (`!function` in definition_modeling.yaml); it imports the installed toolkit.
The data folder is preprocess's `--output-dir` (test.jsonl scored, train.jsonl the few-shot pool when present):
`--metadata '{"data_dir": "data/3dex"}'`, else $LMLEXICON_LM_EVAL_DATA, else `data/3dex`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from dataset.records import FIELDS, Record, load_records, normalize_space
from evaluation.api import build_metrics
from evaluation.metrics.settings import MetricSettings
from evaluation.protocols import Protocol, get_protocol, reference_lists
from evaluation.scoring import score_samples, summarize
from prompts.builder import build_prompt

DATA_ENV = "LMLEXICON_LM_EVAL_DATA"
DEFAULT_DATA_DIR = "data/3dex"
PROTOCOL = "max"
METRICS = ("bleu", "rougeL")


def data_folder(data_dir: str | None = None) -> Path:
    """The preprocessed folder: `data_dir` (lm-eval `--metadata`), else $LMLEXICON_LM_EVAL_DATA, else data/3dex."""
    folder = Path(data_dir or os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)
    if not (folder / "test.jsonl").is_file():
        raise FileNotFoundError(
            f"{folder / 'test.jsonl'}: no preprocessed evaluation split (run `python main.py preprocess "
            f"--output-dir {folder}`, or pass --metadata '{{\"data_dir\": ...}}' or set ${DATA_ENV})"
        )
    return folder


def split_rows(records: list[Record], with_references: bool) -> dict[str, list]:
    """Columns of a split; `references` = each record's references under the `max` protocol (the whole split)."""
    columns = {f: [getattr(r, f) for r in records] for f in FIELDS}
    if with_references:
        columns["references"] = reference_lists(records, records, get_protocol(PROTOCOL))
    return columns


def load_3dex(data_dir: str | None = None, **_metadata: object):
    """lm-eval `custom_dataset`: {"test": test.jsonl with references, "train": train.jsonl or empty}.

    lm-eval passes every `--metadata` key and model argument; only `data_dir` is read.
    """
    import datasets

    folder = data_folder(data_dir)
    train = folder / "train.jsonl"
    return datasets.DatasetDict(
        {
            "test": datasets.Dataset.from_dict(split_rows(load_records(folder / "test.jsonl"), True)),
            "train": datasets.Dataset.from_dict(split_rows(load_records(train) if train.is_file() else [], False)),
        }
    )


def doc_to_text(doc: dict) -> str:
    """The toolkit's prompt (prompts.builder); lm-eval adds BOS with `--model_args add_bos_token=True`."""
    return build_prompt(doc["term"], doc["context"])


def definitions(resps: Iterable[list[str]], docs: Iterable[dict]) -> list[list[str]]:
    """lm-eval filter: each answer as the toolkit's local inference keeps it (whitespace collapsed)."""
    return [[normalize_space(r) for r in rs] for rs, _ in zip(resps, docs)]


@cache
def scorer() -> tuple[Protocol, list]:
    protocol = get_protocol(PROTOCOL)
    return protocol, build_metrics(METRICS, MetricSettings(), protocol)


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """BLEU and ROUGE-L (0-100) of the first answer against the doc's references, by the toolkit's scorer
    (an empty answer scores 0 and counts in `empty`)."""
    protocol, metrics = scorer()
    summary = summarize(score_samples([[results[0]]], [doc["references"]], metrics, protocol), protocol)
    return {**{m: summary["scores"][m] for m in METRICS}, "empty": float(summary["n_empty"])}
