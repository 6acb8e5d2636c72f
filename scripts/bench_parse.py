"""Benchmark: the chatty-answer parser changes no clean definition, served as API answers (goal: 0 changed).

Every Urban test definition of 3D-EX (15,375, read by the project's 3D-EX reader) and every distinct
gloss of the embedded WordNet lexicon (31,344) is sent back, as the answer to its own prompt, by a local
OpenAI-format stub on 127.0.0.1. `infer` runs as a user runs it (real SDK client, `parse_answer: auto`,
so the parser is on); a row is changed when its scored `prediction` differs from the `raw` text the stub
sent (`parser_changed` in summary.json). Prints the per-corpus counts and the first changed rows, and
ends with `changed=<n> goal=0`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter, defaultdict, deque
from pathlib import Path

from dataset.lexicon import wordnet_lexicon_dir
from dataset.predictions import read_rows
from dataset.readers import iter_3dex_csv
from dataset.records import Record, load_records
from inference.infer import main as infer_main
from inference.stub_server import StubServer
from inference.tasks import build_items, item_prompt
from scripts.bench_data import add_urban_option, urban_csv

SHOWN = 5


def urban_records(path: Path) -> list[Record]:
    return [item for _, item in iter_3dex_csv(path) if isinstance(item, Record)]


def wordnet_glosses() -> list[Record]:
    """The first record of each distinct gloss of the embedded lexicon (all splits)."""
    first: dict[str, Record] = {}
    for record in load_records(wordnet_lexicon_dir() / "all.jsonl"):
        first.setdefault(record.definition, record)
    return list(first.values())


def serve(records: list[Record], out: Path, concurrency: int) -> dict:
    """Run `infer` on `records` against a stub that answers each prompt with its record's definition."""
    rows_file = out / "input.jsonl"
    out.mkdir(parents=True)
    rows_file.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    answers: dict[str, deque[str]] = defaultdict(deque)  # a (term, context) pair can have several definitions
    for item, record in zip(build_items("word_interpretation", records, range(len(records)), 0), records):
        answers[item_prompt("word_interpretation", item, "")].append(record.definition)
    with StubServer("openai", answer=lambda prompt: answers[prompt].popleft()) as stub:
        code = infer_main(
            [
                "--backend",
                "openai",
                "--model",
                "stub",
                "--input",
                str(rows_file),
                "--output-dir",
                str(out / "run"),
                "--base-url",
                stub.base_url,
                "--concurrency",
                str(concurrency),
                "--parse-answer",
                "auto",
            ]
        )
    rows, _ = read_rows(out / "run" / "predictions.jsonl")
    summary = json.loads((out / "run" / "summary.json").read_text(encoding="utf-8"))
    served = Counter(r.definition for r in records)
    if code != 0 or Counter(r["raw"] for r in rows) != served:  # every answer arrived (an emptied one counts)
        raise SystemExit(f"bench run failed (exit {code}, summary {summary})")
    changed = [r for r in rows if r["prediction"] != r["raw"]]
    if len(changed) != summary["parser_changed"]:
        raise SystemExit(f"summary parser_changed {summary['parser_changed']} != {len(changed)} changed rows")
    return {"rows": len(rows), "changed": changed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_urban_option(parser, "--urban")
    parser.add_argument("--limit", type=int, default=None, help="only the first N definitions of each corpus")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    args.urban = str(urban_csv(parser, "--urban", args.urban))
    os.environ.setdefault("OPENAI_API_KEY", "bench-key")
    corpora = {"urban": urban_records(Path(args.urban)), "wordnet": wordnet_glosses()}
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, records in corpora.items():
            records = records[: args.limit]
            began = time.perf_counter()
            result = serve(records, Path(tmp) / name, args.concurrency)
            total += len(result["changed"])
            print(
                f"{name}: {len(result['changed'])} of {result['rows']} served definitions changed by the parser "
                f"({time.perf_counter() - began:.1f} s)"
            )
            for row in result["changed"][:SHOWN]:
                print(f"  {row['term']!r}: {row['raw']!r} -> {row['prediction']!r}")
    print(f"changed={total} goal=0")


if __name__ == "__main__":
    main()
