"""API backends through the vendors' official SDKs, with concurrency, a rate limit and retries.

Keys come from environment variables only. The SDKs' own retries are switched off: `ApiBackend`
retries 429, 5xx, timeouts and connection errors with capped exponential backoff (honouring
`Retry-After`), and a request that still fails becomes an error row, never an empty prediction.
"""
from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from inference.backend import Generation, Request, Sampling, derived_seed
from run_config.errors import ConfigError

DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before retrying a transient failure."""

    max_retries: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Backoff before retry number `attempt` (0-based): base * 2^attempt with jitter, or Retry-After."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay_s)
        return min(self.max_delay_s, self.base_delay_s * 2 ** attempt) * (0.5 + 0.5 * rng.random())


class RateLimiter:
    """Spaces request starts at least 1/rate seconds apart across threads (None: no limit)."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class _OpenAIClient:
    vendor = "openai"

    def __init__(self, api_key: str, base_url: str | None, timeout_s: float, send_sampling: bool) -> None:
        self.send_sampling = send_sampling
        import openai

        self.client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)
        self.errors: tuple[type[BaseException], ...] = (openai.OpenAIError,)
        self.transient: tuple[type[BaseException], ...] = (openai.APITimeoutError, openai.APIConnectionError)

    def complete(self, model: str, prompt: str, system: str | None, sampling: Sampling, seed: int) -> str:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        extra: dict[str, Any] = {}
        if self.send_sampling:
            extra["temperature"] = 0.0 if sampling.greedy else sampling.temperature
            if not sampling.greedy and sampling.top_p is not None:
                extra["top_p"] = sampling.top_p
        response = self.client.chat.completions.create(
            model=model, messages=messages, max_completion_tokens=sampling.max_new_tokens, seed=seed, n=1, **extra)
        return response.choices[0].message.content or ""


class _AnthropicClient:
    vendor = "anthropic"

    def __init__(self, api_key: str, base_url: str | None, timeout_s: float, send_sampling: bool) -> None:
        self.send_sampling = send_sampling
        import anthropic

        self.client = anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)
        self.errors = (anthropic.AnthropicError,)
        self.transient = (anthropic.APITimeoutError, anthropic.APIConnectionError)

    def complete(self, model: str, prompt: str, system: str | None, sampling: Sampling, seed: int) -> str:
        # This SDK no longer types sampling parameters and recent models reject them (and reject
        # temperature together with top_p): temperature and top-k go in the body only when asked for.
        body: dict[str, Any] = {}
        if self.send_sampling:
            body["temperature"] = 0.0 if sampling.greedy else sampling.temperature
            if not sampling.greedy and sampling.top_k is not None:
                body["top_k"] = sampling.top_k
        message = self.client.messages.create(
            model=model, max_tokens=sampling.max_new_tokens, messages=[{"role": "user", "content": prompt}],
            **({"system": system} if system else {}), extra_body=body or None)
        return "".join(block.text for block in message.content if getattr(block, "type", "") == "text")


class _GeminiClient:
    vendor = "gemini"

    def __init__(self, api_key: str, base_url: str | None, timeout_s: float, send_sampling: bool) -> None:
        self.send_sampling = send_sampling
        import httpx2
        from google import genai
        from google.genai import errors, types

        options = types.HttpOptions(base_url=base_url, timeout=int(timeout_s * 1000),
                                    retry_options=types.HttpRetryOptions(attempts=1))
        self.client = genai.Client(api_key=api_key, http_options=options)
        self.types = types
        self.errors = (errors.APIError, httpx2.TransportError)
        self.transient = (httpx2.TransportError,)

    def complete(self, model: str, prompt: str, system: str | None, sampling: Sampling, seed: int) -> str:
        knobs: dict[str, Any] = {}
        if self.send_sampling:
            knobs = {"temperature": 0.0 if sampling.greedy else sampling.temperature,
                     "top_p": None if sampling.greedy else sampling.top_p,
                     "top_k": None if sampling.greedy else sampling.top_k}
        config = self.types.GenerateContentConfig(system_instruction=system, max_output_tokens=sampling.max_new_tokens,
                                                  seed=seed, **knobs)
        response = self.client.models.generate_content(model=model, contents=prompt, config=config)
        return response.text or ""


CLIENTS = {"openai": _OpenAIClient, "anthropic": _AnthropicClient, "gemini": _GeminiClient}


def api_key_from_env(vendor: str, env_name: str | None = None) -> str:
    """Return the API key from its environment variable, or a ConfigError naming the variable."""
    name = env_name or DEFAULT_KEY_ENV[vendor]
    key = os.environ.get(name, "")
    if not key:
        raise ConfigError(f"backend {vendor}: set the API key in the environment variable {name}")
    return key


class ApiBackend:
    """Runs requests on a thread pool; yields each sample as it completes."""

    bos_token = ""

    def __init__(self, vendor: str, model: str, *, api_key: str, base_url: str | None = None,
                 system_prompt: str | None = None, concurrency: int = 8, requests_per_second: float | None = None,
                 retry: RetryPolicy = RetryPolicy(), timeout_s: float = 60.0, send_sampling: bool = True) -> None:
        if vendor not in CLIENTS:
            raise ConfigError(f"unknown API backend {vendor!r}; choose from {sorted(CLIENTS)}")
        self.client = CLIENTS[vendor](api_key, base_url, timeout_s, send_sampling)
        self.name, self.system_prompt = model, system_prompt
        self.concurrency, self.retry = concurrency, retry
        self.limiter = RateLimiter(requests_per_second)

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, self.client.transient) or _status(exc) in RETRY_STATUS

    def _one(self, request: Request, sample_idx: int, sampling: Sampling) -> Generation:
        seed = derived_seed(sampling.seed, request.item_id, sample_idx)
        rng = random.Random(seed)
        for attempt in range(self.retry.max_retries + 1):
            self.limiter.acquire()
            start = time.monotonic()
            try:
                text = self.client.complete(self.name, request.prompt, self.system_prompt, sampling, seed)
            except self.client.errors as exc:
                if self._is_transient(exc) and attempt < self.retry.max_retries:
                    time.sleep(self.retry.delay(attempt, _retry_after(exc), rng))
                    continue
                reason = f"{type(exc).__name__}: {exc}"[:500]
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                return Generation(request.item_id, sample_idx, None, time.monotonic() - start, reason + tries)
            return Generation(request.item_id, sample_idx, text, time.monotonic() - start)
        raise AssertionError("unreachable: the last attempt returns")

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[Generation]:
        jobs = iter([(r, i) for r in requests for i in r.sample_indices])
        window = self.concurrency * 2
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"{self.client.vendor}-api") as pool:
            pending: set[Future] = set()
            try:
                while True:
                    while len(pending) < window:
                        job = next(jobs, None)
                        if job is None:
                            break
                        pending.add(pool.submit(self._one, job[0], job[1], sampling))
                    if not pending:
                        return
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        yield future.result()
            finally:
                for future in pending:
                    future.cancel()
