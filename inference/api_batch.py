"""The vendors' batch APIs (`api_batch`): OpenAI Batch (a JSONL file upload), Anthropic Message Batches and
Gemini batch mode (inlined requests), through the official SDKs.

Requests go out in batches of `api_batch_size`; each batch id is appended to `<output_dir>/api_batches.jsonl`
(flushed and synced) as soon as the vendor accepts it, so a killed run picks up its open batches instead of
resubmitting. A batch's results are handed back as soon as it ends (the earlier batches' rows are written
while later ones still run). Custom ids are the requests' response-cache keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.api import BROKEN_REPLY, CLIENTS, RETRY_STATUS, ApiBackend, failure_reason, http_status, retry_after_s
from inference.backend import Generation, Request, Sampling
from run_config.errors import LexiconError

log = logging.getLogger(__name__)

LEDGER = "api_batches.jsonl"
# The most one batch may carry, with room to spare: OpenAI's input file 200 MB, Anthropic's batch 256 MB,
# Gemini's inlined requests 20 MB (counted: the UTF-8 prompt and system text + ITEM_OVERHEAD bytes each).
MAX_BATCH_BYTES = {"openai": 190_000_000, "anthropic": 240_000_000, "gemini": 18_000_000}
ITEM_OVERHEAD = 1024
# Results: custom id -> (answer, None) or (None, one-line reason).
Results = dict[str, tuple[str | None, str | None]]


@dataclass(frozen=True)
class BatchItem:
    key: str  # custom id: the request's response-cache key
    prompt: str
    seed: int


class BatchLedger:
    """`api_batches.jsonl`: a `submitted` line per batch (its id and custom ids), a `collected` line once its
    results were handed back. Open batches are the submitted ones not collected."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LEDGER

    def open_batches(self, vendor: str) -> dict[str, list[str]]:
        if not self.path.is_file():
            return {}
        submitted: dict[str, list[str]] = {}
        collected = set()
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except ValueError:  # a line cut off by a kill (the next append started a new line)
                log.warning("%s:%d: a cut-off line, skipped (its batch, if any, is not picked up)", self.path, n)
                continue
            if row.get("vendor") != vendor:
                continue
            if row["event"] == "submitted":
                submitted[row["batch_id"]] = row["keys"]
            else:
                collected.add(row["batch_id"])
        return {batch_id: keys for batch_id, keys in submitted.items() if batch_id not in collected}

    def _append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            f.seek(0, os.SEEK_END)
            cut = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n"  # a line cut off by a kill
            f.write((b"\n" if cut else b"") + json.dumps(row).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def submitted(self, vendor: str, batch_id: str, keys: list[str]) -> None:
        self._append({"event": "submitted", "vendor": vendor, "batch_id": batch_id, "keys": keys})

    def collected(self, vendor: str, batch_id: str) -> None:
        self._append({"event": "collected", "vendor": vendor, "batch_id": batch_id})


def split_batches(sizes: list[int], max_items: int, max_bytes: int) -> list[slice]:
    """Consecutive runs of items with at most `max_items` items and `max_bytes` bytes each (an item larger
    than `max_bytes` goes alone)."""
    out, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start == max_items or total + size > max_bytes):
            out.append(slice(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        out.append(slice(start, len(sizes)))
    return out


def _line(reason: str) -> str:
    return " ".join(reason.split())[:500]


class _Batches:
    """One vendor's batch calls on top of its `inference.api` client (`client.client` is the SDK's)."""

    def __init__(self, client: Any, model: str, system: str | None, sampling: Sampling) -> None:
        self.client, self.sdk, self.model, self.system, self.sampling = client, client.client, model, system, sampling

    def body(self, item: BatchItem) -> dict[str, Any]:
        return self.client.body(self.model, item.prompt, self.system, self.sampling, item.seed)

    def answer(self, reply: Any) -> tuple[str | None, str | None]:
        try:
            return self.client.text(reply), None
        except BROKEN_REPLY as exc:
            return None, _line(f"MalformedReply: {exc}")


class OpenAIBatches(_Batches):
    """Upload the requests as a JSONL file (purpose `batch`), create a batch on /v1/chat/completions, read the
    output and error files once it ends."""

    ENDED = ("completed", "failed", "expired", "cancelled")

    async def submit(self, items: list[BatchItem]) -> str:
        lines = [
            json.dumps({"custom_id": i.key, "method": "POST", "url": "/v1/chat/completions", "body": self.body(i)})
            for i in items
        ]
        upload = await self.sdk.files.create(file=("batch.jsonl", "\n".join(lines).encode()), purpose="batch")
        batch = await self.sdk.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        return batch.id

    async def status(self, batch_id: str) -> tuple[str, bool]:
        batch = await self.sdk.batches.retrieve(batch_id)
        return batch.status, batch.status in self.ENDED

    async def results(self, batch_id: str) -> Results:
        batch = await self.sdk.batches.retrieve(batch_id)
        out: Results = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self.sdk.files.content(file_id)
            for line in content.text.splitlines():
                if line.strip():
                    row = json.loads(line)
                    out[row["custom_id"]] = self._row(row)
        return out

    def _row(self, row: dict[str, Any]) -> tuple[str | None, str | None]:
        if row.get("error"):
            return None, _line(f"BatchError: {row['error'].get('code')}: {row['error'].get('message')}")
        response = row.get("response") or {}
        if response.get("status_code") != 200:
            message = ((response.get("body") or {}).get("error") or {}).get("message", "")
            return None, _line(f"BatchError: HTTP {response.get('status_code')}: {message}")
        return self.answer(response.get("body"))


class AnthropicBatches(_Batches):
    """Message Batches: create with the requests' params, poll `processing_status`, stream the results."""

    async def submit(self, items: list[BatchItem]) -> str:
        batch = await self.sdk.messages.batches.create(
            requests=[{"custom_id": i.key, "params": self.body(i)} for i in items]
        )
        return batch.id

    async def status(self, batch_id: str) -> tuple[str, bool]:
        batch = await self.sdk.messages.batches.retrieve(batch_id)
        return batch.processing_status, batch.processing_status == "ended"

    async def results(self, batch_id: str) -> Results:
        out: Results = {}
        async for row in await self.sdk.messages.batches.results(batch_id):
            result = row.result
            if result.type == "succeeded":
                out[row.custom_id] = self.answer(result.message)
            elif result.type == "errored":
                error = getattr(result.error, "error", None)
                kind, message = getattr(error, "type", "error"), getattr(error, "message", "")
                out[row.custom_id] = None, _line(f"BatchError: {kind}: {message}")
            else:
                out[row.custom_id] = None, f"BatchError: {result.type}"
        return out


class GeminiBatches(_Batches):
    """Batch mode with inlined requests (the custom id in each request's metadata `key`)."""

    ENDED = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")

    async def submit(self, items: list[BatchItem]) -> str:
        requests = [{**self.body(i), "metadata": {"key": i.key}} for i in items]
        job = await self.sdk.aio.batches.create(model=self.model, src=requests, config={"display_name": "lm-lexicon"})
        return job.name

    async def status(self, batch_id: str) -> tuple[str, bool]:
        job = await self.sdk.aio.batches.get(name=batch_id)
        state = str(getattr(job.state, "value", job.state))
        return state, state in self.ENDED

    async def results(self, batch_id: str) -> Results:
        job = await self.sdk.aio.batches.get(name=batch_id)
        out: Results = {}
        for row in (job.dest.inlined_responses if job.dest else None) or []:
            key = (row.metadata or {}).get("key", "")
            if row.error is not None:
                out[key] = None, _line(f"BatchError: {row.error.code}: {row.error.message}")
            elif row.response is None:
                out[key] = None, "BatchError: no response"
            else:
                out[key] = self.answer(row.response)
        return out


BATCH_APIS = {"openai": OpenAIBatches, "anthropic": AnthropicBatches, "gemini": GeminiBatches}


class BatchApiBackend(ApiBackend):
    """`ApiBackend` that sends through the vendor's batch API: `batch_size` requests a batch, polled every
    `poll_s` seconds, its ledger in `folder`. Items the vendor failed or expired are error rows, or with
    `retry_failed` sent again as ordinary requests. `stats` adds batches submitted, resumed and retried items."""

    def __init__(
        self,
        *args: Any,
        folder: str | Path,
        batch_size: int = 10_000,
        poll_s: float = 30.0,
        retry_failed: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.ledger = BatchLedger(folder)
        self.batch_size, self.poll_s, self.retry_failed = batch_size, poll_s, retry_failed

    def already_sent(self) -> set[str]:
        return {k for keys in self.ledger.open_batches(self.vendor).values() for k in keys}

    def _call(self, runner: asyncio.Runner, client: Any, what: str, make: Any) -> Any:
        """Run one batch call (`make()` gives its coroutine), retrying transient failures like any request."""
        rng = random.Random(0)
        for attempt in range(self.retry.max_retries + 1):
            try:
                return runner.run(asyncio.wait_for(make(), self.timeout_s))
            except (*client.errors, *BROKEN_REPLY, TimeoutError) as exc:
                transient = isinstance(exc, (*client.transient, TimeoutError)) or http_status(exc) in RETRY_STATUS
                if not transient or attempt == self.retry.max_retries:
                    raise LexiconError(
                        f"{self.vendor} batch API: {what} failed: {failure_reason(exc, self.timeout_s)[:300]} "
                        f"(submitted batches are in {self.ledger.path}: rerun to pick them up)"
                    ) from exc
                time.sleep(self.retry.delay(attempt, retry_after_s(exc), rng))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _submit(
        self, runner: asyncio.Runner, client: Any, api: Any, jobs: dict[str, tuple[Request, int]], sampling: Sampling
    ) -> dict[str, list[str]]:
        """Submit `jobs` (by custom id) in batches, each recorded in the ledger once accepted; returns them."""
        system = len((self.system_prompt or "").encode())
        keys = list(jobs)
        sizes = [len(jobs[k][0].prompt.encode()) + system + ITEM_OVERHEAD for k in keys]
        submitted = {}
        for part in split_batches(sizes, self.batch_size, MAX_BATCH_BYTES[self.vendor]):
            items = [BatchItem(k, jobs[k][0].prompt, self.seed(*jobs[k], sampling)) for k in keys[part]]
            batch_id = self._call(runner, client, "submitting a batch", lambda: api.submit(items))
            self.ledger.submitted(self.vendor, batch_id, keys[part])
            submitted[batch_id] = keys[part]
            self.stats["api_batches_submitted"] += 1
            self.stats["api_requests_sent"] += len(items)
        return submitted

    def _send(self, jobs: Iterator[tuple[Request, int, str]], sampling: Sampling) -> Iterator[Generation]:
        by_key = {key: (request, idx) for request, idx, key in jobs}
        for key in ("api_batches_submitted", "api_batches_resumed", "api_batch_failed_items", "api_batch_retried"):
            self.stats.setdefault(key, 0)
        failed: list[tuple[Request, int, str]] = []
        with asyncio.Runner() as runner:
            client = CLIENTS[self.vendor](*self._client_args)
            api = BATCH_APIS[self.vendor](client, self.name, self.system_prompt, sampling)
            try:
                open_batches = self.ledger.open_batches(self.vendor)  # a killed run's: picked up, not resent
                self.stats["api_batches_resumed"] += len(open_batches)
                waiting = {k for keys in open_batches.values() for k in keys}
                fresh = {k: job for k, job in by_key.items() if k not in waiting}
                open_batches |= self._submit(runner, client, api, fresh, sampling)
                began = time.monotonic()
                while open_batches:
                    for batch_id in list(open_batches):
                        status, ended = self._call(runner, client, f"polling {batch_id}", lambda: api.status(batch_id))
                        if not ended:
                            continue
                        results = self._call(runner, client, f"reading {batch_id}", lambda: api.results(batch_id))
                        missing = None, f"BatchError: batch {batch_id} ended {status} without this request's result"
                        for key in open_batches.pop(batch_id):
                            text, error = results.get(key) or missing
                            if error is None and self.cache is not None:
                                self.cache.put(key, self.vendor, self.name, text)
                            if key not in by_key:  # submitted by an earlier run, no longer wanted: cached only
                                continue
                            request, idx = by_key[key]
                            if error is not None:
                                self.stats["api_batch_failed_items"] += 1
                                if self.retry_failed:
                                    failed.append((request, idx, key))
                                    continue
                            yield Generation(request.item_id, idx, text, time.monotonic() - began, error)
                        self.ledger.collected(self.vendor, batch_id)
                    if open_batches:
                        time.sleep(self.poll_s)
            finally:
                runner.run(client.close())
        if failed:
            self.stats["api_batch_retried"] += len(failed)
            yield from super()._send(iter(failed), sampling)
