"""API backends through the vendors' official async SDKs, with concurrency, a rate limit and retries.

Keys come from environment variables only. The SDKs' own retries are switched off: `ApiBackend`
retries 429, 5xx, timeouts, connection errors and broken replies (a 200 whose body is not JSON or has
no text) with capped exponential backoff (honouring `Retry-After`), and a request that still fails
becomes an error row, never an empty prediction and never a crash of the run. `timeout_s` bounds each
attempt as a whole (the SDKs' timeouts bound each read only, so a reply trickled in slowly would pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic

from inference.backend import Generation, Request, Sampling, derived_seed
from inference.response_cache import ResponseCache, request_key
from run_config.errors import ConfigError

# The SDKs' own base-URL variables: the URL a request really goes to is part of its cache key.
BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL", "gemini": "GOOGLE_GEMINI_BASE_URL"}
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class MalformedReply(Exception):
    """A reply without a usable answer: not JSON, no choices or text parts, or a text that is no string."""


# What the SDKs raise on a body they cannot parse; with MalformedReply, a broken reply.
UNPARSABLE = (json.JSONDecodeError, pydantic.ValidationError)
BROKEN_REPLY = (MalformedReply, *UNPARSABLE)


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
        return min(self.max_delay_s, self.base_delay_s * 2**attempt) * (0.5 + 0.5 * rng.random())


class RateLimiter:
    """Spaces request starts at least 1/rate seconds apart across the tasks of one event loop (None: no limit)."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0

    async def acquire(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


def http_status(exc: BaseException) -> int | None:
    for attr in ("status_code", "code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def retry_after_s(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _field(obj: Any, name: str) -> Any:
    """A field of an SDK object or of its JSON (a batch result line)."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _text(value: Any, vendor: str, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedReply(f"{vendor} reply: {what} is {type(value).__name__}, not text")
    return value


def messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    """The message list of one request: the system instruction (if any), then the prompt."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def sent_sampling(vendor: str, send: bool, sampling: Sampling) -> dict[str, Any]:
    """The length limit and (with `send`) sampling parameters a vendor's request carries, by its names.

    Anthropic's SDK no longer types sampling parameters and recent models reject them (and reject
    temperature together with top_p): temperature and top-k are sent only when asked for.
    """
    greedy = sampling.greedy
    if vendor == "openai":
        out: dict[str, Any] = {"max_completion_tokens": sampling.max_new_tokens}
        if send:
            out["temperature"] = 0.0 if greedy else sampling.temperature
            if not greedy and sampling.top_p is not None:
                out["top_p"] = sampling.top_p
        return out
    if vendor == "anthropic":
        out = {"max_tokens": sampling.max_new_tokens}
        if send:
            out["temperature"] = 0.0 if greedy else sampling.temperature
            if not greedy and sampling.top_k is not None:
                out["top_k"] = sampling.top_k
        return out
    out = {"max_output_tokens": sampling.max_new_tokens}
    if send:
        out |= {
            "temperature": 0.0 if greedy else sampling.temperature,
            "top_p": None if greedy else sampling.top_p,
            "top_k": None if greedy else sampling.top_k,
        }
    return out


class _OpenAIClient:
    vendor = "openai"

    def __init__(self, api_key: str, base_url: str | None, timeout_s: float, send_sampling: bool) -> None:
        self.send_sampling = send_sampling
        import openai

        self.client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)
        self.errors: tuple[type[BaseException], ...] = (openai.OpenAIError,)
        self.transient: tuple[type[BaseException], ...] = (openai.APITimeoutError, openai.APIConnectionError)

    def body(self, model: str, prompt: str, system: str | None, sampling: Sampling, seed: int) -> dict[str, Any]:
        """The request body (also one line of a batch)."""
        return {
            "model": model,
            "messages": messages(prompt, system),
            "seed": seed,
            "n": 1,
            **sent_sampling(self.vendor, self.send_sampling, sampling),
        }

    @staticmethod
    def text(response: Any) -> str:
        """The answer of a chat completion (an SDK object or its JSON); the SDK does not validate replies."""
        choices = _field(response, "choices")
        if not isinstance(choices, list) or not choices:
            raise MalformedReply("openai reply: no choices")
        return _text(_field(_field(choices[0], "message"), "content"), "openai", "message content")

    async def complete(self, model: str, prompt: str, system: str | None, sampling: Sampling, seed: int) -> str:
        return self.text(await self.client.chat.completions.create(**self.body(model, prompt, system, sampling, seed)))

    async def close(self) -> None:
        await self.client.close()


class _AnthropicClient:
    vendor = "anthropic"

    def __init__(self, api_key: str, base_url: str | None, timeout_s: float, send_sampling: bool) -> None:
        self.send_sampling = send_sampling
        import anthropic

        self.client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)
        self.errors = (anthropic.AnthropicError,)
        self.transient = (anthropic.APITimeoutError, anthropic.APIConnectionError)

    def body(self, model: str, prompt: str, system: str | None, sampling: Sampling, seed: int) -> dict[str, Any]:
        """The request parameters (also the `params` of a batch request); Anthropic takes no seed."""
        return {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            **({"system": system} if system else {}),
            **sent_sampling(self.vendor, self.send_sampling, sampling),
        }

    @staticmethod
    def text(message: Any) -> str:
        """The answer of a message (an SDK object or its JSON): its text blocks; not validated by the SDK."""
        blocks = _field(message, "content")
        texts = [_field(b, "text") for b in blocks if _field(b, "type") == "text"] if isinstance(blocks, list) else []
        if not texts:
            raise MalformedReply("anthropic reply: no text block")
        return "".join(_text(t, "anthropic", "text block") for t in texts)

    async def complete(self, model: str, prompt: str, system: str | None, sampling: Sampling, seed: int) -> str:
        body = self.body(model, prompt, system, sampling, seed)
        typed = {key: body.pop(key) for key in ("model", "max_tokens", "messages", "system") if key in body}
        return self.text(await self.client.messages.create(**typed, extra_body=body or None))

    async def close(self) -> None:
        await self.client.close()


class _GeminiClient:
    vendor = "gemini"

    def __init__(self, api_key: str, base_url: str | None, timeout_s: float, send_sampling: bool) -> None:
        self.send_sampling = send_sampling
        import httpx2
        from google import genai
        from google.genai import errors, types

        options = types.HttpOptions(
            base_url=base_url, timeout=int(timeout_s * 1000), retry_options=types.HttpRetryOptions(attempts=1)
        )
        self.client = genai.Client(api_key=api_key, http_options=options)
        self.types = types
        self.errors = (errors.APIError, httpx2.TransportError)
        self.transient = (httpx2.TransportError,)

    def body(self, model: str, prompt: str, system: str | None, sampling: Sampling, seed: int) -> dict[str, Any]:
        """The `generate_content` arguments but the model (also one inlined request of a batch)."""
        knobs = sent_sampling(self.vendor, self.send_sampling, sampling)
        return {
            "contents": prompt,
            "config": self.types.GenerateContentConfig(system_instruction=system, seed=seed, **knobs),
        }

    @staticmethod
    def text(response: Any) -> str:
        """The answer of a GenerateContentResponse (the SDK validates types; `text` is None without text parts)."""
        return _text(response.text, "gemini", "the text of the first candidate")

    async def complete(self, model: str, prompt: str, system: str | None, sampling: Sampling, seed: int) -> str:
        body = self.body(model, prompt, system, sampling, seed)
        return self.text(await self.client.aio.models.generate_content(model=model, **body))

    async def close(self) -> None:
        await self.client.aio.aclose()


CLIENTS = {"openai": _OpenAIClient, "anthropic": _AnthropicClient, "gemini": _GeminiClient}


def api_key_from_env(vendor: str, env_name: str | None = None) -> str:
    """Return the API key from its environment variable, or a ConfigError naming the variable."""
    name = env_name or DEFAULT_KEY_ENV[vendor]
    key = os.environ.get(name, "")
    if not key:
        raise ConfigError(f"backend {vendor}: set the API key in the environment variable {name}")
    return key


def failure_reason(exc: BaseException, timeout_s: float) -> str:
    """One line saying why an attempt failed."""
    if isinstance(exc, TimeoutError):
        return f"TimeoutError: no complete reply within timeout_s {timeout_s:g}"
    text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return f"MalformedReply: {text}" if isinstance(exc, UNPARSABLE) else text


async def _cancel(tasks: set[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class AdaptiveConcurrency:
    """How many attempts may be in flight: halved on a 429 (and every start paused for its Retry-After),
    grown back by one after `limit` successes in a row, never above `ceiling`. Retries queue here too."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = self.limit = self.lowest = ceiling
        self.in_flight = 0
        self._streak = 0
        self._paused_until = 0.0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        """Wait for a free slot and for the end of a pause that a Retry-After asked for."""
        async with self._changed:
            while True:
                left = self._paused_until - time.monotonic()
                if left > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), left)
                elif self.in_flight < self.limit:
                    self.in_flight += 1
                    return
                else:
                    await self._changed.wait()

    async def release(self, status: int | None, retry_after: float | None) -> None:
        """Free the slot of an attempt that ended with HTTP `status` (None: a reply, or no HTTP status)."""
        async with self._changed:
            self.in_flight -= 1
            if status == 429:
                self.limit = max(1, self.limit // 2)
                self.lowest = min(self.lowest, self.limit)
                self._streak = 0
                if retry_after:
                    self._paused_until = max(self._paused_until, time.monotonic() + retry_after)
            elif status is None:
                self._streak += 1
                if self.limit < self.ceiling and self._streak >= self.limit:
                    self.limit, self._streak = self.limit + 1, 0
            self._changed.notify_all()


# Token counts of a dry run without the vendor's tokenizer: about 4 characters per token for English.
CHARS_PER_TOKEN = 4


def estimate_tokens(texts: Sequence[str]) -> int:
    """Prompt tokens of `texts` at CHARS_PER_TOKEN characters a token (rounded up per text)."""
    return sum(-(-len(t) // CHARS_PER_TOKEN) for t in texts)


def count_prompt_tokens(vendor: str, model: str, texts: Sequence[str]) -> tuple[int, str]:
    """Prompt tokens of `texts` and how they were counted: OpenAI's tokenizer (tiktoken) where it is installed
    and its vocabulary loads (tiktoken fetches it once, or reads it from TIKTOKEN_CACHE_DIR), else the estimate."""
    estimate = f"estimate ({CHARS_PER_TOKEN} characters per token"
    if vendor != "openai":
        return estimate_tokens(texts), f"{estimate}; no local {vendor} tokenizer)"
    try:
        import tiktoken
    except ImportError:
        return estimate_tokens(texts), f"{estimate}; tiktoken is not installed)"
    try:
        try:
            encoding = tiktoken.encoding_for_model(model)
        except KeyError:  # a model tiktoken does not know: the current models' vocabulary
            encoding = tiktoken.get_encoding("o200k_base")
    except Exception as exc:  # noqa: BLE001 (offline: the vocabulary download fails in many ways)
        reason = " ".join(str(exc).split())[:120]
        return estimate_tokens(texts), f"{estimate}; tiktoken could not load its vocabulary: {reason})"
    return sum(len(encoding.encode(t)) for t in texts), f"tiktoken {encoding.name}"


class ApiBackend:
    """Runs up to `concurrency` requests at a time on one event loop (fewer after 429s); yields each sample
    as it completes. Answers found in `cache` are not requested; `max_requests` caps what is sent, the
    samples past it become `NotSent` error rows (a rerun sends them). `stats` counts cache hits, sent
    requests (first attempts), retries, not-sent samples and the lowest concurrency reached."""

    bos_token = ""

    def __init__(
        self,
        vendor: str,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        system_prompt: str | None = None,
        concurrency: int = 8,
        requests_per_second: float | None = None,
        retry: RetryPolicy = RetryPolicy(),
        timeout_s: float = 60.0,
        send_sampling: bool = True,
        cache: ResponseCache | None = None,
        max_requests: int | None = None,
    ) -> None:
        if vendor not in CLIENTS:
            raise ConfigError(f"unknown API backend {vendor!r}; choose from {sorted(CLIENTS)}")
        self.vendor, self.name, self.system_prompt = vendor, model, system_prompt
        self.base_url = base_url or os.environ.get(BASE_URL_ENV[vendor]) or None
        self.send_sampling = send_sampling
        self._client_args = (api_key, base_url, timeout_s, send_sampling)
        self.concurrency, self.retry, self.timeout_s = concurrency, retry, timeout_s
        self.requests_per_second = requests_per_second
        self.cache, self.max_requests = cache, max_requests
        self.stats: Counter[str] = Counter()

    def seed(self, request: Request, sample_idx: int, sampling: Sampling) -> int:
        return derived_seed(sampling.seed, request.item_id, sample_idx)

    def cache_key(self, request: Request, sample_idx: int, sampling: Sampling) -> str:
        return request_key(
            self.vendor,
            self.name,
            self.base_url,
            messages(request.prompt, self.system_prompt),
            sent_sampling(self.vendor, self.send_sampling, sampling),
            self.seed(request, sample_idx, sampling),
            sample_idx,
        )

    def plan(self, requests: Sequence[Request], sampling: Sampling) -> dict[str, Any]:
        """What a run would send, without a network call: samples, cache hits, requests, tokens."""
        jobs = [(r, i, self.cache_key(r, i, sampling)) for r in requests for i in r.sample_indices]
        missing = [(r, i, k) for r, i, k in jobs if self.cache is None or self.cache.get(k) is None]
        sent_before = self.already_sent()
        to_send = [(r, i) for r, i, k in missing if k not in sent_before]
        sent = to_send[: self.max_requests] if self.max_requests is not None else to_send
        tokens, counted_with = count_prompt_tokens(
            self.vendor, self.name, [(self.system_prompt or "") + r.prompt for r, _ in sent]
        )
        return {
            "samples": len(jobs),
            "cache_hits": len(jobs) - len(missing),
            "awaited": len(missing) - len(to_send),
            "requests": len(sent),
            "not_sent": len(to_send) - len(sent),
            "prompt_tokens": tokens,
            "prompt_tokens_counted_with": counted_with,
            "max_completion_tokens": len(sent) * sampling.max_new_tokens,
        }

    async def _one(
        self,
        client: Any,
        limiter: RateLimiter,
        control: AdaptiveConcurrency,
        request: Request,
        sample_idx: int,
        sampling: Sampling,
    ) -> Generation:
        seed = self.seed(request, sample_idx, sampling)
        rng = random.Random(seed)
        for attempt in range(self.retry.max_retries + 1):
            await control.acquire()
            await limiter.acquire()
            self.stats["api_retries" if attempt else "api_requests_sent"] += 1
            start = time.monotonic()
            try:
                text = await asyncio.wait_for(
                    client.complete(self.name, request.prompt, self.system_prompt, sampling, seed), self.timeout_s
                )
            except (*client.errors, *BROKEN_REPLY, TimeoutError) as exc:
                status = http_status(exc)
                await control.release(status if status is not None else 0, retry_after_s(exc))
                transient = isinstance(exc, (*client.transient, *BROKEN_REPLY, TimeoutError)) or status in RETRY_STATUS
                if transient and attempt < self.retry.max_retries:
                    await asyncio.sleep(self.retry.delay(attempt, retry_after_s(exc), rng))
                    continue
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                return Generation(
                    request.item_id,
                    sample_idx,
                    None,
                    time.monotonic() - start,
                    failure_reason(exc, self.timeout_s)[:500] + tries,
                )
            await control.release(None, None)
            return Generation(request.item_id, sample_idx, text, time.monotonic() - start)
        raise AssertionError("unreachable: the last attempt returns")

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[Generation]:
        for key in ("api_cache_hits", "api_requests_sent", "api_retries", "api_not_sent"):
            self.stats.setdefault(key, 0)
        jobs, waiting, sent_before = [], [], self.already_sent()
        for request in requests:
            for idx in request.sample_indices:
                key = self.cache_key(request, idx, sampling)  # also a batch request's custom id
                text = self.cache.get(key) if self.cache is not None else None
                if text is not None:
                    self.stats["api_cache_hits"] += 1
                    yield Generation(request.item_id, idx, text, 0.0)
                else:
                    (waiting if key in sent_before else jobs).append((request, idx, key))
        if self.max_requests is not None and len(jobs) > self.max_requests:
            reason = f"NotSent: max_requests {self.max_requests} reached (rerun to send it)"
            for request, idx, _ in jobs[self.max_requests :]:
                self.stats["api_not_sent"] += 1
                yield Generation(request.item_id, idx, None, 0.0, reason)
            jobs = jobs[: self.max_requests]
        if jobs or waiting:
            yield from self._send(iter(waiting + jobs), sampling)

    def already_sent(self) -> set[str]:
        """Keys of requests sent by an earlier run whose answers are still to come (batches): not resent."""
        return set()

    def _send(self, jobs: Iterator[tuple[Request, int, str]], sampling: Sampling) -> Iterator[Generation]:
        with asyncio.Runner() as runner:
            loop = runner.get_loop()
            # A fresh SDK client per call: async clients belong to the event loop they first ran on.
            client = CLIENTS[self.vendor](*self._client_args)
            limiter = RateLimiter(self.requests_per_second)
            control = AdaptiveConcurrency(self.concurrency)
            pending: dict[asyncio.Task, str] = {}
            try:
                while True:
                    while len(pending) < control.ceiling and (job := next(jobs, None)) is not None:
                        task = loop.create_task(self._one(client, limiter, control, job[0], job[1], sampling))
                        pending[task] = job[2]
                    if not pending:
                        return
                    finished, _ = runner.run(asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED))
                    for task in finished:
                        key, gen = pending.pop(task), task.result()
                        if self.cache is not None and gen.error is None:
                            self.cache.put(key, self.vendor, self.name, gen.text)
                        yield gen
            finally:
                self.stats["api_lowest_concurrency"] = control.lowest
                runner.run(_cancel(set(pending)))
                runner.run(client.close())
