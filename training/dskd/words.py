"""Group subword tokens into words (lower-cased alphabetic runs), the unit of senses and relations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WordSpan:
    """Tokens [start, end) of one sequence spell `word`."""

    start: int
    end: int
    word: str


class TokenTexts:
    """Cached surface text of each token id (`tokenizer.decode([id])`)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._texts: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self._tokenizer.decode([token_id])
        return text


def word_spans(token_ids: Sequence[int], texts: TokenTexts, begin: int = 0, end: int | None = None) -> list[WordSpan]:
    """Return the words of `token_ids[begin:end]`.

    A word starts at an alphabetic token preceded by whitespace (or by a non-word token) and goes on
    over the following alphabetic tokens that carry no leading whitespace (` un` + `kind` -> `unkind`).
    """
    end = len(token_ids) if end is None else end
    spans: list[WordSpan] = []
    start: int | None = None
    parts: list[str] = []
    for i in range(begin, end):
        text = texts(int(token_ids[i]))
        core = text.lstrip()
        alphabetic = core.isalpha() and core.isascii()
        if start is not None and alphabetic and core == text:
            parts.append(core)
            continue
        if start is not None:
            spans.append(WordSpan(start, i, "".join(parts).lower()))
            start, parts = None, []
        if alphabetic:
            start, parts = i, [core]
    if start is not None:
        spans.append(WordSpan(start, end, "".join(parts).lower()))
    return spans
