"""Preprocess stage: 3D-EX CSV / JSONL / Ishiwatari files (or the embedded lexicon) -> JSONL records.

Writes `all.jsonl`, one `<split>.jsonl` per split and `<source>/<split>.jsonl` per source and split,
then `summary.json` (every dropped row counted with its reason) and `manifest.json`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from dataset.config import PreprocessConfig
from dataset.readers import EXCLUDED_SOURCES, Item, id_prefix, iter_3dex_csv, iter_ishiwatari
from dataset.records import Dropped, Record, iter_jsonl
from run_config.cli import config_from_args, run_main, skip_finished, stage_parser
from run_config.errors import ConfigError, DataError
from run_config.runtime import AtomicFileSet, inputs_fingerprint, is_finished, set_seed, write_json, write_manifest

log = logging.getLogger(__name__)
MAX_LISTED_ERRORS = 20


@dataclass
class FileSummary:
    """What happened to one input file."""

    path: str
    records: int = 0
    dropped: Counter = field(default_factory=Counter)
    bad_rows: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "records": self.records,
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "bad_rows_skipped": self.bad_rows,
            "errors": self.errors,
        }

    def line(self) -> str:
        parts = [f"{Path(self.path).name}: {self.records} records"]
        if self.dropped:
            reasons = ", ".join(f"{n} {r}" for r, n in self.dropped.most_common())
            parts.append(f"{sum(self.dropped.values())} rows dropped ({reasons})")
        if self.bad_rows:
            parts.append(f"{self.bad_rows} malformed rows skipped")
        return "; ".join(parts)


def detect_format(path: Path) -> str:
    """Guess an input's format from its suffix."""
    suffix = path.suffix.lower()
    formats = {".csv": "3dex-csv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "ishiwatari", ".eg": "ishiwatari"}
    if suffix not in formats:
        raise ConfigError(f"{path}: cannot tell the format from the suffix {suffix!r}; pass --format")
    return formats[suffix]


def resolved_format(path: Path, fmt: str) -> str:
    """The configured format, or the one the suffix tells (`auto`)."""
    return detect_format(path) if fmt == "auto" else fmt


def claim_id_prefixes(cfg: PreprocessConfig) -> dict[str, str]:
    """The id prefix (dataset.readers.id_prefix, with its ':') of each CSV/Ishiwatari input, whose ids are
    all built from it: two inputs with one prefix would give the same ids and are refused. Files may
    share a name when their ids cannot collide (`wordnet/test.txt`, `oxford/test.txt`). A JSONL file
    (ids of its own, else built from its name) claims its prefix with its first id that starts with it,
    checked while reading."""
    given = Counter(str(Path(p).resolve()) for p in cfg.input)
    problems = [f"{p}: given {n} times" for p, n in given.items() if n > 1]
    claims: dict[str, str] = {}
    for p in cfg.input:
        fmt = resolved_format(Path(p), cfg.format)
        prefix = id_prefix(p, fmt, cfg.split)
        if fmt == "jsonl" or prefix is None:
            continue
        owner = claims.setdefault(prefix + ":", p)
        if owner != p:
            problems.append(f"{owner} and {p} would give the same record ids ({prefix}:...): rename one of them")
    if problems:
        raise ConfigError(problems)
    return claims


def iter_input(path: Path, fmt: str, split: str | None, exclude: tuple[str, ...]) -> Iterator[tuple[int, Item]]:
    """Stream (line, item) from one input file in the given format."""
    fmt = resolved_format(path, fmt)
    if fmt == "3dex-csv":
        return iter_3dex_csv(path, split, exclude)
    if fmt == "jsonl":
        return iter_jsonl(path, default_split=split)
    return iter_ishiwatari(path, split)


def source_slug(source: str) -> str:
    """File-system name of a source: `Webster's Unabridged` -> `webster-s-unabridged`."""
    return re.sub(r"[^a-z0-9]+", "-", source.lower()).strip("-") or "unknown"


def is_up_to_date(cfg: PreprocessConfig) -> bool:
    """True when `output_dir` already holds the outputs of this exact config and these inputs."""
    return is_finished(cfg.output_dir, cfg, lambda: inputs_fingerprint(cfg), "all.jsonl")


def _input_items(cfg: PreprocessConfig) -> Iterator[tuple[str, Iterator[tuple[int, Item]]]]:
    if cfg.builtin:
        from dataset.wordnet import iter_wordnet_records

        yield "builtin:wordnet", ((0, r) for r in iter_wordnet_records(cfg.seed))
        return
    for p in cfg.input:
        yield p, iter_input(Path(p), cfg.format, cfg.split, tuple(cfg.exclude_sources))


def preprocess(cfg: PreprocessConfig) -> dict:
    """Run the stage; return the summary. Nothing is written if a malformed row stops the run."""
    set_seed(cfg.seed, frameworks=False)  # pure Python: no torch or NumPy import (flat, small RSS)
    for p in cfg.input:
        if not Path(p).is_file():
            raise DataError(p, None, None, "no such file")
        if Path(p).stat().st_size == 0:
            raise DataError(p, None, None, "empty file (0 bytes)")
    claims = claim_id_prefixes(cfg)
    jsonl_prefixes = {p: Path(p).stem + ":" for p in cfg.input if resolved_format(Path(p), cfg.format) == "jsonl"}
    out = Path(cfg.output_dir)
    summaries: list[FileSummary] = []
    counts: Counter = Counter()
    ids: set[str] = set()
    with AtomicFileSet() as files:
        all_file = files.get(out / "all.jsonl")  # exists even when every row was dropped
        targets: dict[tuple[str, str], tuple] = {}
        for name, items in _input_items(cfg):
            summary = FileSummary(name)
            summaries.append(summary)
            prefix = jsonl_prefixes.get(name)
            for line, item in tqdm(items, desc=Path(name).name, unit=" rows", mininterval=1.0, disable=None):
                if isinstance(item, Record):
                    if prefix and item.id.startswith(prefix) and claims.setdefault(prefix, name) != name:
                        raise DataError(
                            name,
                            line,
                            "id",
                            f"{item.id!r} has the id prefix {prefix!r} of "
                            f"{claims[prefix]} too; rename one of the files",
                        )
                    if item.id in ids:
                        item = DataError(name, line, "id", f"duplicate record id {item.id!r} (an earlier row has it)")
                if isinstance(item, Record):
                    ids.add(item.id)
                    key = (item.source, item.split)
                    if key not in targets:
                        targets[key] = (
                            files.get(out / f"{item.split}.jsonl"),
                            files.get(out / source_slug(item.source) / f"{item.split}.jsonl"),
                        )
                    line = item.to_json() + "\n"
                    all_file.write(line)
                    targets[key][0].write(line)
                    targets[key][1].write(line)
                    summary.records += 1
                    counts[key] += 1
                elif isinstance(item, Dropped):
                    summary.dropped[item.reason] += 1
                else:
                    if cfg.on_bad_row == "error":
                        raise item
                    summary.bad_rows += 1
                    if len(summary.errors) < MAX_LISTED_ERRORS:
                        summary.errors.append(str(item))
            log.debug(summary.line())
    result = {
        "files": [s.as_dict() for s in summaries],
        "records": sum(s.records for s in summaries),
        "dropped": sum(sum(s.dropped.values()) for s in summaries),
        "bad_rows_skipped": sum(s.bad_rows for s in summaries),
        "by_source_split": [{"source": src, "split": sp, "records": n} for (src, sp), n in sorted(counts.items())],
    }
    write_json(out / "summary.json", result)
    write_manifest(out, "preprocess", cfg, inputs=inputs_fingerprint(cfg), records=result["records"])
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("preprocess", __doc__, PreprocessConfig)
    parser.add_argument(
        "--stats", metavar="FILE", nargs="+", help="print statistics of these files (any input format) and exit"
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.stats:
        from dataset.stats import compute_stats, format_stats

        exclude = tuple(args.exclude_sources or EXCLUDED_SOURCES)
        items = (it for p in args.stats for _, it in iter_input(Path(p), args.format or "auto", args.split, exclude))
        print(format_stats(compute_stats(items)))
        return 0
    cfg = config_from_args(args, PreprocessConfig)
    if skip_finished("preprocess", cfg, is_up_to_date):
        return 0
    result = preprocess(cfg)
    for f in result["files"]:
        print(FileSummary(f["path"], f["records"], Counter(f["dropped"]), f["bad_rows_skipped"]).line())
    print(f"preprocess: {result['records']} records -> {Path(cfg.output_dir) / 'all.jsonl'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
