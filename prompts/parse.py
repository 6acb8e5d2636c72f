"""Pull the answer out of a model's raw output: one definition, a `###` list, or a WSD option letter.

Chat models wrap a definition in a preamble ("Sure! Here is ..."), a label ("**Definition:**",
"**bank** (noun):", `Definition of "bank":`), a restatement of the term (`"bank" means`, `In this
context, bank refers to`), quotes, code fences, markdown, extra sections ("Example: ...") and a
sign-off ("Let me know if ..."). Only those wrappers go; the definition is kept word for word: a cut
falls at a line, after a whole wrapper or before a whole sign-off sentence, never inside a word or a
clause. "X is ..." with the bare term is content (3D-EX references read so), and so is a final ':'.
Of an answer in paragraphs, the labelled definition is kept, else the first paragraph.
"""

from __future__ import annotations

import re

from dataset.records import normalize_space
from prompts.builder import OPTION_LETTERS

_FENCE = re.compile(r"^(?:```|~~~)[\w+-]*$")
_RULE = re.compile(r"^(?:[-*_]\s*){3,}$")
_HEADING = re.compile(r"^#{1,6}\s+")
_QUOTE_MARK = re.compile(r"^>\s?")
_BULLET = re.compile(r"^(?:[-•*+]|\d{1,2}[.)]|\(\d{1,2}\))\s+")
_EMPHASIS = re.compile(r"(?<![\w*])(\*\*|__|\*|_)(?=[^\W_]|[\"“'‘(])(.+?)(?<=[^\W_]|[\"”'’).!?:])\1(?![\w*])")
_OPEN, _CLOSE = "\"“'‘«", "\"”'’»"
_TAG = re.compile(r"<(definition|answer|response)>\s*(.+?)\s*</\1>", re.I | re.S)
_PAIRS = {'"': '"', "“": "”", "'": "'", "‘": "’", "«": "»"}

_ACK = (
    r"(?:sure(?: thing)?|certainly|of course|absolutely|okay|ok|alright|gladly|no problem|"
    r"(?:great|good) question|happy to help)[!.,]+(?:\s+I(?:'d|’d| would| can| will)\s+(?:be (?:happy|glad) "
    r"to\s+)?help(?: you)?(?: with (?:that|this))?\s*[!.])?"
)
_HERE = r"(?:here(?:'s|’s| is| are)|below is|the following is)\b"
_CONTEXT = (
    r"(?:(?:in|within) (?:this|the given|the provided|the above|that|the|this particular|your) "
    r"(?:context|sentence|usage|example|case|passage|phrase)(?: of (?:the|this) (?:sentence|passage|example))?"
    r"(?:\s+[\"“'‘][^\"”’\n]{1,400}[\"”'’])?|"
    r"as used (?:here|in (?:this|the|that|the given) (?:context|sentence|example))|"
    r"(?:based on|given|considering|from) (?:the|this) (?:given )?(?:context|sentence|example)|in context|here)"
)
_NOUN = r"(?:word|term|phrase|expression|slang(?: term)?|acronym|abbreviation|idiom|name)"
_VERB = (
    r"(?:means|refers to|is referring to|is defined as|can be defined as|would be defined as|denotes|describes|"
    r"signifies|indicates|conveys|stands for|would mean|has the meaning(?: of)?|is (?:being )?used(?: here)? to "
    r"(?:mean|describe|refer to|indicate)|is used (?:here )?as an? (?:noun|verb|adjective|adverb|slang term|term) "
    r"(?:meaning|to mean|that means|referring to))"
)
_POS = r"\([^()\n]{1,40}\)"
_LABEL = (
    r"(?:(?:(?:a|the|my)\s+)?(?:(?:concise|short|brief|simple|contextual|dictionary(?:-style)?|one-line|"
    r"suggested|final)\s+)*(?:definition|meaning|answer|gloss|sense)|"
    r"noun|verb|adjective|adverb|interjection|idiom)"
)
_EXTRA = (
    r"(?:examples?(?: sentences?| usage)?|usage(?: example)?|synonyms?|antonyms?|notes?|etymology|origin|"
    r"part of speech|pronunciation|explanation|related terms?|in a sentence|translation|literal meaning)"
)
_SIGNOFF = (
    r"(?:(?:please )?let me know(?: if\b| whether\b|\s*[.!]*$)|i hope (?:this|that) (?:helps|clarifies)|"
    r"hope (?:this|that) helps|feel free to|"
    r"if you (?:have|need|want|'d like|would like) (?:any|more|another|further|other|me)\b|"
    r"is there anything else|would you like (?:me to|more|another|an? )|do you want me to|happy to help|"
    r"glad (?:i could|to) help|i can also (?:provide|give|offer))"
)
_SIGNOFF_LINE = re.compile(rf"^{_SIGNOFF}", re.I)
_TRAILING_SIGNOFF = re.compile(rf"(?<=[.!?)\"”])\s+(?:\(\s*)?{_SIGNOFF}.*$", re.I | re.S)
_EXTRA_LINE = re.compile(rf"^(\*\*|__|\*)?{_EXTRA}(?:\1)?\s*[:：]", re.I)
_ACK_ONLY = re.compile(rf"^{_ACK}$", re.I)
_PREAMBLE = re.compile(rf"^(?:{_ACK}\s*)?{_HERE}.*[:：]$", re.I)


def _build_rules() -> tuple[re.Pattern, re.Pattern, re.Pattern, tuple[re.Pattern, ...]]:
    """The definition-label, headword-label and headword patterns, and every prefix wrapper (each may follow an
    acknowledgement: "Sure! ..."). A match counts only when its groups `t<n>` hold the term (`_holds_term`)."""
    names = iter(range(1000))
    emphasis = r"(?:\*\*|__|\*|_)"
    word = r"(?:[^\s,:：\"“”‘’«»*()']|(?<=\w)['’](?=\w))+"

    def group(kind: str, pattern: str) -> str:
        return rf"(?P<{kind}{next(names)}>{pattern})"

    def quoted() -> str:  # **bank**, *"bank"*, "f*ck", 'any phrase'
        return (
            rf"(?:{emphasis}[{_OPEN}]?[^{_OPEN}{_CLOSE}*\n]{{1,60}}[{_CLOSE}]?{emphasis}|\"[^\"\n]{{1,60}}\"|"
            rf"“[^”\n]{{1,60}}”|«[^»\n]{{1,60}}»|"
            rf"['‘](?:[^'‘’\n]|(?<=\w)['’](?=\w)){{1,60}}['’])"
        )

    def bare() -> str:  # (the word) bank / banks / it
        return rf"(?:(?:the )?{_NOUN} )?{group('tb', rf'{word}(?: {word}){{0,5}}')}"

    def subject() -> str:  # (the word) "bank" / "banks" / "kicked the bucket"
        return rf"(?:(?:the )?{_NOUN} )?{quoted()}"

    def context() -> str:
        return rf"(?:\s*,?\s*{_CONTEXT}\s*,?)?"

    def head() -> str:  # **Bank (noun)**, "bank", To run, Bank (n.), *stand one's ground*
        words = group("th", rf"{word}(?: {word}){{0,5}}")
        return rf"(?P<e>{emphasis})?[{_OPEN}]?(?:to )?{words}[{_CLOSE}]?(?:(?P=e))?(?:\s*{_POS})?(?:(?P=e))?"

    end = r"\s*[:：]?\s+(?=\S)"
    lead = (
        rf"(?P<e>\*\*|__|\*)?{_LABEL}(?:\s+of\s+(?:{subject()}|{bare()}))?{context()}(?:\s*{_POS})?(?:(?P=e))?"
        rf"\s*[:：](?(e)(?:(?P=e)|(?![*_])))\s*"
    )
    label = rf"(?:(?-i:A)|{head()})\s*[:：](?(e)(?:(?P=e)|(?![*_])))\s*"
    prefixes = [
        rf"{_HERE}[^:：\n]{{0,120}}[:：]\s+(?=\S)",
        lead + r"(?=\S)",
        label + r"(?=\S)",
        rf"(?=[*_\"“'‘]|.*?\)\s+[-–—]){head()}\s+[-–—]\s+(?=\S)",
        rf"{_CONTEXT}(?:\s*,\s*|(?<=[\"”'’])\s+)(?:{subject()}|{bare()})(?:\s*{_POS})?\s*,?\s+(?:{_VERB}|is){end}",
        rf"{subject()}(?:\s*{_POS})?{context()}\s+{_VERB}{end}",
        rf"{bare()}\s*,?\s+{_CONTEXT}\s*,?\s+{_VERB}{end}",
        rf"(?:the )?(?:contextual |intended )?(?:definition|meaning|sense) of "
        rf"(?:{subject()}{context()}|{bare()}\s*,?\s*{_CONTEXT}\s*,?)\s+(?:is|would be){end}",
        rf"I(?:'d|’d| would) define (?:{subject()}|{bare()}){context()} as{end}",
    ]
    return (
        re.compile(f"^{lead}", re.I),
        re.compile(f"^{label}", re.I),
        re.compile(rf"^{head()}$", re.I),
        tuple(re.compile(rf"^(?:{_ACK}\s+)?" + r, re.I) for r in prefixes),
    )


_LEAD_RULE, _LABEL_RULE, _HEAD_RULE, _PREFIX_RULES = _build_rules()


def _holds_term(m: re.Match, term: str) -> bool:
    """Every term group of `m` holds the term or an inflection of it (up to 4 more letters); a `tb` group may
    also be "it", a `th` group (a headword) a marked phrase using the term (`To stand one's ground:`, `**x y**:`)."""
    want = term.casefold()
    start = m.string[m.start() : m.start() + 3]
    marked = start[:1] in "*_\"“'‘" or start.casefold() == "to "
    for name, value in m.groupdict().items():
        if not name.startswith("t") or value is None:
            continue
        got = value.casefold()
        inflected = bool(want) and got.startswith(want) and len(got) - len(want) <= 4 and got[len(want) :].isalpha()
        uses = bool(want) and re.search(rf"(?<!\w){re.escape(want)}(?!\w)", got) is not None
        if not (
            got == want
            or inflected
            or (name.startswith("tb") and got == "it")
            or (name.startswith("th") and marked and uses)
        ):
            return False
    return True


def _match(rule: re.Pattern, text: str, term: str) -> re.Match | None:
    m = rule.match(text)
    return m if m and _holds_term(m, term) else None


def unwrap_emphasis(text: str) -> str:
    """Drop markdown emphasis markers around words (`**x**`, `*x*`, `__x__`, `_x_`); `f*ck` stays."""
    previous = None
    while previous != text:
        previous, text = text, _EMPHASIS.sub(r"\2", text)
    return text


def _unquote(text: str) -> str:
    """Drop quotes (with a period after them) or one XML-style tag (`<definition>`) around the whole text."""
    tag = _TAG.fullmatch(text)
    if tag:
        return tag.group(2).strip()
    if len(text) < 3 or text[0] not in _PAIRS:
        return text
    close = _PAIRS[text[0]]
    inner = text[1:-1] if text.endswith(close) else text[1:-2] if text[-1] in ".!" and text[-2] == close else None
    if inner is None or any(c in inner for c in {text[0], close}):
        return text
    return inner.strip()


def _strip_wrappers(text: str, term: str) -> str:
    """Remove prefix wrappers, whole-text quotes and emphasis until none is left."""
    previous = None
    while previous != text:
        previous = text
        for rule in _PREFIX_RULES:
            m = _match(rule, text, term)
            if m:
                text = text[m.end() :]
        stripped = unwrap_emphasis(text)
        if _unquote(stripped) != stripped or _EMPHASIS.fullmatch(text):
            text = _unquote(stripped)
    return text


def _lines(text: str) -> list[tuple[str, bool]]:
    """The answer's lines as (text, is a markdown heading), without fences, rules, quote marks and bullets;
    ("", False) is a paragraph break."""
    out = []
    for line in (text or "").splitlines():
        line = line.strip()
        if _FENCE.match(line) or _RULE.match(line):
            continue
        heading = _HEADING.match(line)
        line = _BULLET.sub("", _QUOTE_MARK.sub("", line[heading.end() :] if heading else line)).strip()
        out.append((line, bool(heading and line)))
    return out


def _is_wrapper_line(line: str, term: str) -> bool:
    """A line that only announces what follows: "**Definition:**", "Sure! Here's what it means:", "Bank (n.):"."""
    plain = unwrap_emphasis(line).rstrip()
    if _ACK_ONLY.match(plain) or _PREAMBLE.match(plain):
        return True
    return plain.endswith((":", "：")) and _strip_wrappers(line + " x", term) == "x"


def _definition_block(lines: list[tuple[str, bool]], term: str) -> str:
    """The labelled definition section, else the first paragraph, without wrapper or extra lines."""
    sections: list[tuple[str, list[str]]] = []
    open_section = False
    for i, (line, heading) in enumerate(lines):
        more = any(text for text, _ in lines[i + 1 :])
        if not line:
            open_section = False
        elif sections and _EXTRA_LINE.match(line):
            sections.append(("extra", []))
            open_section = True
        elif sections and _SIGNOFF_LINE.match(unwrap_emphasis(line)):
            open_section = False
        elif more and (_is_wrapper_line(line, term) or heading or _match(_HEAD_RULE, line, term)):
            sections.append(("label", []))
            open_section = True
        else:
            if _match(_LEAD_RULE, line, term) or _match(_LABEL_RULE, line, term):
                sections.append(("label", []))
            elif not open_section:
                sections.append(("text", []))
            open_section = True
            sections[-1][1].append(line)
    labelled = [s for kind, s in sections if kind == "label" and s]
    texts = [s for kind, s in sections if kind == "text" and s]
    return " ".join(labelled[0] if labelled else texts[0] if texts else [])


def parse_definition(text: str, term: str = "") -> str:
    """Return the one definition in `text` (empty when there is none); a bare definition passes unchanged."""
    term = term.strip()
    lines = _lines(text)
    if not any(line for line, _ in lines):
        return ""
    block = _strip_wrappers(normalize_space(_definition_block(lines, term)), term)
    block = _TRAILING_SIGNOFF.sub("", unwrap_emphasis(block))
    return normalize_space(_unquote(block.strip()))


def split_list(text: str) -> list[str]:
    """Split a `###`-separated answer into whitespace-normalised items, as written."""
    return [item for item in (normalize_space(p) for p in re.split(r"#{3,}", text or "")) if item]


_LIST_PREAMBLE = re.compile(r"^(?:(?:here (?:are|is)|sure\b|certainly\b|of course\b).*|.*:)$", re.I)


def parse_list(text: str) -> list[str]:
    """Split a chatty `###`-separated answer into items; preambles, fences, markdown and numbering go."""
    items = []
    for piece in re.split(r"\s*#{3,}\s*", text or ""):
        lines = [unwrap_emphasis(line) for line, _ in _lines(piece)]
        piece = " ".join(line for line in lines if line and not _LIST_PREAMBLE.match(line))
        if piece:
            items.append(piece)
    return items


def parse_choice(text: str) -> int | None:
    """Return the index of the WSD option letter the answer picks (None when it names none)."""
    letters = OPTION_LETTERS
    text = unwrap_emphasis(text or "").strip()
    for pattern in (
        rf"(?:answer|option|choice)\s*(?:is)?\s*[:：]?\s*\(?([{letters}])\b",
        rf"^\(?([{letters}])(?:[.):]|\s|$)",
        rf"\(([{letters}])\)",
        rf"\b([{letters}])\b(?!['’])",
    ):
        m = re.search(pattern, text, re.I if pattern.startswith("(?:") else 0)
        if m:
            return letters.index(m.group(1).upper())
    return None
