"""Decoding controls shared by the local, MoE and vLLM backends: stop sequences and blocking the target term.

`cut_at_stop` cuts a generated text before its first stop sequence (infer keeps the model's text in the row's
`raw`). `--block-term` is Giulianelli et al.'s filter: the term may not appear in its own definition, as
bad-words token sequences of the term as written, lower-cased and capitalised, each bare and with a leading
space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """`text` up to (not including) the earliest occurrence of any stop sequence; unchanged without one."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(hits)] if hits else text


def term_variants(term: str) -> list[str]:
    """The term as written, lower-cased and capitalised, each bare and with a leading space (distinct, in order)."""
    forms = dict.fromkeys([term, term.lower(), term[:1].upper() + term[1:]])
    return list(dict.fromkeys(v for f in forms for v in (f, " " + f)))


def term_token_sequences(tokenizer: Any, term: str) -> list[list[int]]:
    """Token ids of every variant of `term` (no special tokens), each distinct sequence once."""
    seen: dict[tuple[int, ...], None] = {}
    for ids in tokenizer(term_variants(term), add_special_tokens=False)["input_ids"]:
        if ids:
            seen.setdefault(tuple(ids))
    return [list(ids) for ids in seen]


class BlockSequences:
    """A `generate` logits processor: row b may not complete any of `banned[b]`, the last token of a sequence
    is masked when the row ends with the sequence's other tokens (HF's bad_words_ids, one list per row).
    Plain callable (no torch import), so infer imports this module's text helpers without torch."""

    def __init__(self, banned: Sequence[Sequence[Sequence[int]]]) -> None:
        self.banned = [[list(s) for s in row] for row in banned]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != len(self.banned):
            raise ValueError(f"{scores.shape[0]} rows for {len(self.banned)} banned-token lists")
        tails = input_ids.tolist()
        for b, sequences in enumerate(self.banned):
            for seq in sequences:
                head = seq[:-1]
                if not head or tails[b][-len(head) :] == head:
                    scores[b, seq[-1]] = float("-inf")
        return scores
