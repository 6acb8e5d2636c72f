"""Streaming readers: 3D-EX CSV and Ishiwatari et al. (2019) `.txt`/`.eg` files into Records.

Every reader yields `(line, item)` where item is a Record, a Dropped row (filtered, with its reason)
or a DataError (malformed row). The caller decides whether a DataError stops the run or is skipped; a
file that cannot be read at all (no header, a column named twice) raises instead.
"""

from __future__ import annotations

import ast
import csv
import functools
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from dataset.records import Dropped, Record, normalize_space, normalize_split, split_from_filename
from run_config.errors import DataError

# Sources without usable example contexts (paper, Appendix "Data Processing").
EXCLUDED_SOURCES = ("Hei++", "MultiRD", "Webster's Unabridged")
ISHIWATARI_SOURCES = {"wordnet": "WordNet", "oxford": "Oxford", "wiki": "Wikipedia", "slang": "Urban", "urban": "Urban"}
Item = Record | Dropped | DataError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@functools.lru_cache(maxsize=4096)
def _excluded(source: str, exclude: tuple[str, ...]) -> str | None:
    low = source.lower()
    return next((name for name in exclude if name.lower() in low), None)


def _literal_list(text: str) -> list | None:
    """Parse a Python-literal list as 3D-EX stores them (`"['a', 'b']"`); None if `text` is not one."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, list) else None


@functools.lru_cache(maxsize=4096)
def _source_names(raw: str) -> tuple[str, ...]:
    """DATASET_NAME is a plain name, a list of names, or a list of list-reprs (`["['WordNet']", ...]`)."""
    parsed = _literal_list(raw)
    if parsed is None:
        return (normalize_space(raw),)
    names = []
    for item in parsed:
        inner = _literal_list(item) if isinstance(item, str) else item
        if isinstance(inner, list):
            names.append(normalize_space(str(inner[0])) if inner else "")
        else:
            names.append(normalize_space(str(item)))
    return tuple(names)


def expand_examples(example: str, dataset_name: str) -> list[tuple[str, str]]:
    """Split one 3D-EX EXAMPLE cell into (source, context) pairs, one per example context.

    3D-EX stores several contexts as the repr of a list of lists, one inner list per source in
    DATASET_NAME. A plain string is one context. Raises ValueError when the two lists disagree.
    """
    sources = list(_source_names(dataset_name))
    parsed = _literal_list(example)
    if parsed is None or not all(isinstance(x, (str, list)) for x in parsed):
        return [(sources[0] if len(sources) == 1 else ",".join(sources), example)]
    if all(isinstance(x, str) for x in parsed):
        if len(sources) == 1:
            return [(sources[0], x) for x in parsed]
        if len(sources) == len(parsed):
            return list(zip(sources, parsed))
        raise ValueError(f"{len(parsed)} examples but {len(sources)} dataset names")
    groups = [g if isinstance(g, list) else [g] for g in parsed]
    if len(sources) == 1:
        sources = sources * len(groups)
    if len(groups) != len(sources):
        raise ValueError(f"{len(groups)} example groups but {len(sources)} dataset names")
    return [(src, str(ctx)) for src, group in zip(sources, groups) for ctx in group]


_SURROGATE = re.compile("[\udc80-\udcff]")


def _has_surrogates(text: str) -> bool:
    """True when decoding with surrogateescape met bytes that are not UTF-8."""
    return _SURROGATE.search(text) is not None


def iter_3dex_csv(
    path: str | Path, default_split: str | None = None, exclude: tuple[str, ...] = EXCLUDED_SOURCES
) -> Iterator[tuple[int, Item]]:
    """Stream a 3D-EX CSV (WORD or TERM, DEFINITION, EXAMPLE, DATASET_NAME, SPLIT_TYPE)."""
    path = Path(path)
    name = str(path)
    fallback_split = default_split or split_from_filename(path)
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = [h.strip().upper() for h in next(reader)]
        except StopIteration:
            raise DataError(name, None, None, "empty file: no header row") from None
        except csv.Error as e:
            yield 1, DataError(name, 1, None, f"malformed CSV header: {e}")
            return
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:  # a dict of columns would silently keep the last one
            raise DataError(
                name,
                1,
                repeated[0],
                f"column given {header.count(repeated[0])} times in the header ({', '.join(header)})",
            )
        col = {h: i for i, h in enumerate(header)}
        term_col = "WORD" if "WORD" in col else "TERM"
        for needed in (term_col, "DEFINITION"):
            if needed not in col:
                yield 1, DataError(name, 1, needed, f"column missing from the header ({', '.join(header)})")
                return
        rownum = 0
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield line, DataError(name, line, None, f"malformed CSV: {e}")
                return
            if not row:
                yield line, Dropped("blank line", line)
                continue
            rownum += 1
            yield from _csv_row(name, path.stem, line, rownum, row, header, col, term_col, fallback_split, exclude)


def _csv_row(
    name: str,
    stem: str,
    line: int,
    rownum: int,
    row: list[str],
    header: list[str],
    col: dict[str, int],
    term_col: str,
    fallback_split: str | None,
    exclude: tuple[str, ...],
) -> Iterator[tuple[int, Item]]:
    if len(row) < len(header):
        yield line, DataError(name, line, header[len(row)], f"missing (row has {len(row)} of {len(header)} fields)")
        return
    if len(row) > len(header):
        yield line, DataError(name, line, None, f"row has {len(row)} fields, header has {len(header)}")
        return
    if _has_surrogates("".join(row)):
        field = next(h for h, value in zip(header, row) if _has_surrogates(value))
        yield line, DataError(name, line, field, "invalid UTF-8 bytes")
        return
    get = {h: row[i] for h, i in col.items()}.get
    source_raw = get("DATASET_NAME", "").strip()
    excluded = _excluded(source_raw, exclude)
    if excluded:
        yield line, Dropped(f"excluded source {excluded} (no usage contexts)", line)
        return
    if "EXAMPLE" not in col:
        yield line, Dropped("no EXAMPLE column (source without usage contexts)", line)
        return
    term, definition = normalize_space(get(term_col)), normalize_space(get("DEFINITION"))
    example = get("EXAMPLE").strip()
    for field, value in (
        (term_col, term),
        ("DEFINITION", definition),
        ("EXAMPLE", example),
        ("DATASET_NAME", source_raw),
    ):
        if not value:
            yield line, Dropped(f"empty {field}", line)
            return
    split_raw = get("SPLIT_TYPE", "").strip() or fallback_split
    if not split_raw:
        yield line, DataError(name, line, "SPLIT_TYPE", "missing, and the file name names no split (pass --split)")
        return
    split = normalize_split(split_raw)
    if split is None:
        yield line, DataError(name, line, "SPLIT_TYPE", f"unknown split {split_raw!r} (use train/valid/test)")
        return
    try:
        pairs = expand_examples(example, source_raw)
    except ValueError as e:
        yield line, DataError(name, line, "EXAMPLE", str(e))
        return
    for k, (source, context) in enumerate(pairs):
        context = normalize_space(context)
        if not context:
            yield line, Dropped("empty example context", line)
        elif _excluded(source, exclude):
            yield line, Dropped(f"excluded source {_excluded(source, exclude)} (no usage contexts)", line)
        else:
            yield line, Record(f"{stem}:{rownum}:{k}", term, context, definition, source, split)


def iter_ishiwatari(path: str | Path, default_split: str | None = None) -> Iterator[tuple[int, Item]]:
    """Stream an Ishiwatari et al. (2019) split: `X.txt` (word%id, POS, source, definition, ...)
    paired line by line with `X.eg` (word%id, context with <TRG>)."""
    txt = Path(path).with_suffix(".txt")
    eg = txt.with_suffix(".eg")
    for p in (txt, eg):
        if not p.is_file():
            yield 0, DataError(str(p), None, None, "no such file (an Ishiwatari split needs both .txt and .eg)")
            return
    source, split = _ishiwatari_source_split(txt, default_split)
    if split is None:
        yield 0, DataError(str(txt), None, None, "cannot infer the split from the file name (pass --split)")
        return
    with (
        open(txt, encoding="utf-8", errors="surrogateescape") as ft,
        open(eg, encoding="utf-8", errors="surrogateescape") as fe,
    ):
        line = 0
        for line, (tline, eline) in enumerate(zip(ft, fe), 1):
            tcols, ecols = tline.rstrip("\n").split("\t"), eline.rstrip("\n").split("\t")
            if len(tcols) < 4:
                yield line, DataError(str(txt), line, "definition", f"missing (row has {len(tcols)} of >=4 columns)")
                continue
            if len(ecols) < 2:
                yield line, DataError(str(eg), line, "context", "missing (expected word%id<TAB>context)")
                continue
            if tcols[0] != ecols[0]:
                yield line, DataError(str(eg), line, "word", f"{ecols[0]!r} does not match {tcols[0]!r} in {txt.name}")
                continue
            term = tcols[0].split("%", 1)[0]
            context = normalize_space(ecols[1].replace("<TRG>", term))
            definition = normalize_space(tcols[3])
            if not term or not definition or not context:
                yield line, Dropped("empty term, definition or context", line)
            else:
                yield (
                    line,
                    Record(f"{_ishiwatari_prefix(source, split)}:{line}", term, context, definition, source, split),
                )
        for extra in (ft, fe):
            if next(extra, None) is not None:
                yield line + 1, DataError(str(txt), None, None, f"{txt.name} and {eg.name} have different line counts")
                return


def _ishiwatari_source_split(txt: Path, default_split: str | None) -> tuple[str, str | None]:
    """Source (from the folder name: `wordnet/test.txt` is WordNet) and split of an Ishiwatari file."""
    split = normalize_split(default_split or "") or split_from_filename(txt)
    return ISHIWATARI_SOURCES.get(txt.parent.name.lower(), txt.parent.name), split


def _ishiwatari_prefix(source: str, split: str) -> str:
    return f"{source.lower()}-{split}"


def id_prefix(path: str | Path, fmt: str, default_split: str | None = None) -> str | None:
    """The prefix P of the record ids a reader builds for a file (`P:<line>`, `P:<row>:<k>`): the file
    name for CSV and for JSONL lines without an id, source and split for Ishiwatari files (so
    `wordnet/test.txt` and `oxford/test.txt` cannot collide). None when the split is unknown (the
    reader reports that)."""
    path = Path(path)
    if fmt != "ishiwatari":
        return path.stem
    source, split = _ishiwatari_source_split(path.with_suffix(".txt"), default_split)
    return _ishiwatari_prefix(source, split) if split else None
