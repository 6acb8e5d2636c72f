"""Pull the answer out of a model's raw output: one definition, a `###` list, or a WSD option letter.

Chat models wrap definitions in preambles ("Sure! Here is ..."), labels ("**Definition:**"), quotes,
"X refers to ..." phrasing and closing chatter. The original's heuristic parser (ORIGINAL.md §4) cut
text after the last ':' and deleted "1."..."10." anywhere, mangling ordinary text ("3.5" -> "5");
these rules only touch line starts, whole-line wrappers and known phrasings.
"""
from __future__ import annotations

import re

from prompts.builder import OPTION_LETTERS

_FENCE = re.compile(r"^```[\w-]*\s*$", re.M)
_MARKUP = re.compile(r"\*\*|__|(?<!\w)\*(?!\s)|(?<!\s)\*(?!\w)")
_BULLET = re.compile(r"^(?:[-•*]\s+|\d{1,2}[.)]\s+|\(\d{1,2}\)\s+)")
_LABEL = re.compile(r"^(?:concise\s+|short\s+|contextual\s+)?(?:definition|meaning|answer|gloss|a)"
                    r"(?:\s+of\s+[\"'“‘]?[^:\"'”’]{1,60}[\"'”’]?)?\s*(?:\([^)]*\))?\s*[:：]\s*", re.I)
_ACK = re.compile(r"^(?:sure|certainly|of course|okay|ok|absolutely|great question)\b[^.!\n]*[.!]\s*", re.I)
_PREAMBLE = re.compile(r"^(?:here(?:'s| is| are)|below is|the following)\b", re.I)
_CONTEXT_LEAD = re.compile(r"^(?:in (?:this|the given|that|the provided|the above) (?:context|sentence|usage)|"
                           r"as used here|here)\s*,\s*", re.I)
_VERBS = r"(?:means|refers to|is defined as|can be defined as|denotes|describes|is used to mean|signifies|is)"
_CHATTER = re.compile(r"\s*(?:let me know|i hope|hope this|feel free|if you (?:have|need|want)|"
                      r"is there anything|this definition)\b.*$", re.I | re.S)
_TAGS = re.compile(r"\[CONCISE DEFINITION\]|\(short and concise\)", re.I)
_QUOTES = [('"', '"'), ("“", "”"), ("'", "'"), ("‘", "’"), ("«", "»")]


def _unquote(text: str) -> str:
    text = text.strip()
    for left, right in _QUOTES:
        if len(text) > 1 and text.startswith(left) and text.endswith(right) and text.count(left) <= 2:
            return text[1:-1].strip()
    return text


_DEF_OF = re.compile(r"^(?:the\s+)?definition\s+of\s+", re.I)
_AFTER_DEF_OF = re.compile(r"^\s+(?:in this context\s+)?is\s*:?\s*", re.I)
_WORD_LEAD = re.compile(r"^the\s+(?:word|term|phrase|expression|slang(?: term)?)\s+", re.I)
_AFTER_TERM = re.compile(r"^\s*(?:\([^)]*\)\s*)?(?:,?\s*(?:as used )?(?:here|in this context|in this sentence),?\s*)?"
                         + _VERBS + r"\s*:?\s*", re.I)
_ANY_QUOTED = re.compile(r"^[\"'“‘][^\"'”’]{1,60}[\"'”’]")


def _skip_term(text: str, term: str) -> int | None:
    """Index just after `term` (optionally quoted) or any quoted phrase (an inflected term) at the start of `text`."""
    i = 1 if text[:1] in "\"'“‘" else 0
    j = i + len(term)
    if not term or text[i:j].casefold() != term.casefold() or (text[j:j + 1].isalnum()):
        m = _ANY_QUOTED.match(text)
        return m.end() if m else None
    i = j
    return i + 1 if text[i:i + 1] in ("\"", "'", "”", "’") and text[i:i + 1] else i


def _strip_term_lead(text: str, term: str) -> str:
    """Drop `"<term>" means`, `The definition of "<term>" is`, `The word <term> here refers to`."""
    for lead, after in ((_DEF_OF, _AFTER_DEF_OF), (_WORD_LEAD, _AFTER_TERM), (None, _AFTER_TERM)):
        start = 0
        if lead is not None:
            m = lead.match(text)
            if not m:
                continue
            start = m.end()
        end = _skip_term(text[start:], term)
        if end is None:
            continue
        rest = after.match(text[start + end:])
        if rest and text[start + end + rest.end():].strip():
            return text[start + end + rest.end():]
    return text


def _clean_line(line: str) -> str:
    line = _MARKUP.sub("", line).strip()
    return _BULLET.sub("", line).strip()


def parse_definition(text: str, term: str = "") -> str:
    """Return the one definition in `text` (empty when there is none); clean definitions pass unchanged."""
    text = _TAGS.sub("\n", _FENCE.sub("", text or ""))
    lines = [_clean_line(line) for line in text.splitlines()]
    lines = [line for line in lines if line]
    chosen = ""
    for i, line in enumerate(lines):
        label = _LABEL.match(line)
        if label:
            rest = line[label.end():].strip()
            chosen = rest or (lines[i + 1] if i + 1 < len(lines) else "")
            break
    if not chosen:
        for line in lines:
            line = _ACK.sub("", line).strip()
            if not line or line.endswith(":") or (_PREAMBLE.match(line) and ":" in line and line.index(":") > len(line) - 3):
                continue
            chosen = line
            break
    if not chosen and lines and not _PREAMBLE.match(lines[0]):
        chosen = lines[0]  # a cut-off answer such as "The original sentence is:"
    chosen = _CONTEXT_LEAD.sub("", _unquote(chosen))
    chosen = _strip_term_lead(chosen, term.strip())
    chosen = _CHATTER.sub("", chosen)
    return " ".join(_unquote(chosen.rstrip(" :：")).split())


_LIST_PREAMBLE = re.compile(r"^(?:(?:here (?:are|is)|sure\b|certainly\b|of course\b).*|.*:)$", re.I)


def parse_list(text: str) -> list[str]:
    """Split a `###`-separated answer into items; numbering is removed only at an item's start."""
    items = []
    for piece in re.split(r"\s*#{3,}\s*", _FENCE.sub("", text or "")):
        lines = [_clean_line(line) for line in piece.splitlines()]
        piece = " ".join(line for line in lines if line and not _LIST_PREAMBLE.match(line))
        if piece:
            items.append(_BULLET.sub("", piece).strip())
    return items


def parse_choice(text: str) -> int | None:
    """Return the index of the WSD option letter the answer picks (None when it names none)."""
    letters = OPTION_LETTERS
    text = _MARKUP.sub("", text or "").strip()
    for pattern in (rf"(?:answer|option|choice)\s*(?:is)?\s*[:：]?\s*\(?([{letters}])\b",
                    rf"^\(?([{letters}])(?:[.):]|\s|$)", rf"\(([{letters}])\)", rf"\b([{letters}])\b(?!['’])"):
        m = re.search(pattern, text, re.I if pattern.startswith("(?:") else 0)
        if m:
            return letters.index(m.group(1).upper())
    return None
