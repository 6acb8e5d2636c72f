"""The one interface every generation backend implements (local HF, vLLM, OpenAI, Anthropic, Gemini)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Sampling:
    """Decoding settings (paper defaults: T 0.6, top-k 50, top-p 0.9, repetition penalty 1.05, 64 tokens)."""

    greedy: bool = False
    temperature: float = 0.6
    top_k: int | None = 50
    top_p: float | None = 0.9
    repetition_penalty: float = 1.05
    max_new_tokens: int = 64
    seed: int = 42  # the run's; sample i of item x draws with derived_seed(seed, x, i) in every backend
    num_beams: int = 1  # > 1: beam search (deterministic; the sampling knobs are unused)
    length_penalty: float = 1.0  # beam search: score = sum log-prob / length ** length_penalty
    stop: tuple[str, ...] = ()  # generation ends at the first of these (the text keeps it; infer cuts it)
    block_term: bool = False  # the request's term may not appear in its own answer (inference.decoding)


@dataclass(frozen=True)
class Request:
    """One input: its full prompt text and the sample indices still to generate for it."""

    item_id: str
    term: str
    context: str
    prompt: str
    sample_indices: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Generation:
    """One sample's raw text (or the error that prevented it) and how long it took."""

    item_id: str
    sample_idx: int
    text: str | None
    latency_s: float
    error: str | None = None
    logprob: float | None = None
    expert: Any = None  # a routed MoE's `expert` and `router_margin` row fields (dataset.predictions)
    router_margin: float | None = None


class Backend(Protocol):
    """Generates samples for requests, yielding each as soon as it exists (order not guaranteed)."""

    name: str
    bos_token: str

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[Generation]: ...


def group_by_domain(routes: dict[str, Any], requests: Sequence[Request]) -> dict[int, list[Request]]:
    """Requests per domain, ascending, by the one expert of each request's route (`routes[item_id].experts`)."""
    groups: dict[int, list[Request]] = {}
    for request in requests:
        groups.setdefault(int(routes[request.item_id].experts[0]), []).append(request)
    return dict(sorted(groups.items()))


def derived_seed(seed: int, *keys: object) -> int:
    """A 31-bit seed from `seed` and keys (stable across runs and processes, unlike hash())."""
    blob = repr((seed, *keys)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF
