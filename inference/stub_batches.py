"""The batch endpoints of the local stub servers: OpenAI Batch (JSONL file upload), Anthropic Message Batches
and Gemini batch mode (inlined requests), in each vendor's wire format.

A batch ends `batch_s * n` seconds after it was created, n being its creation order (1, 2, ...), so the
batches of one run end one after another. Each item is answered with `answer(prompt)`; an item whose
prompt contains `fail_on` fails (HTTP 500 inside the batch) and one containing `expire_on` expires
(OpenAI `batch_expired`, Anthropic `expired`, Gemini `DEADLINE_EXCEEDED`). Batches created while
`expire_batches` is set expire whole: OpenAI status `expired` with every item `batch_expired`, every
Anthropic item `expired`, Gemini `BATCH_STATE_EXPIRED` without output.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Reply = tuple[int, str, bytes]  # HTTP status, content type, body
OPENAI_ENDPOINT = "/v1/chat/completions"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _json(payload: Any, code: int = 200) -> Reply:
    return code, "application/json", json.dumps(payload).encode()


def _jsonl(rows: list[dict[str, Any]]) -> Reply:
    return 200, "application/binary", "".join(json.dumps(r) + "\n" for r in rows).encode()


def _multipart_file(content_type: str, raw: bytes) -> bytes:
    """The `file` part of a multipart/form-data upload."""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True)
    raise ValueError("multipart upload without a file part")


class StubBatches:
    """The batch jobs one stub holds. `created` lists the ids in creation order; `items` counts batch items."""

    def __init__(
        self,
        vendor: str,
        *,
        prompt_text: Callable[[str, dict[str, Any]], str],
        success: Callable[[str, str, str], dict[str, Any]],
        failure: Callable[[str, int], dict[str, Any]],
        answer: Callable[[str], str],
        batch_s: float,
        fail_on: str | None,
        expire_on: str | None,
    ) -> None:
        self.vendor, self.batch_s, self.fail_on, self.expire_on = vendor, batch_s, fail_on, expire_on
        self._prompt_text, self._success, self._failure, self._answer = prompt_text, success, failure, answer
        self.batches: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []
        self.items = 0
        self.expire_batches = False  # batches created while True expire whole (no item is answered)
        self._files: dict[str, bytes] = {}
        self._lock = threading.Lock()

    # -- shared -------------------------------------------------------------------------------------------
    def _create(self, prefix: str, items: list[tuple[str, dict[str, Any]]], model: str) -> dict[str, Any]:
        with self._lock:
            batch_id = f"{prefix}{len(self.created) + 1:04d}"
            now = time.time()
            batch = {"id": batch_id, "items": items, "model": model, "created": now, "expire": self.expire_batches}
            batch["ends"] = now + self.batch_s * (len(self.created) + 1)
            self.batches[batch_id] = batch
            self.created.append(batch_id)
            self.items += len(items)
        return batch

    def _outcome(self, batch: dict[str, Any], body: dict[str, Any]) -> str:
        """'expired', 'failed' or the answer text of one item."""
        prompt = self._prompt_text(self.vendor, body)
        if batch["expire"] or self.expire_on and self.expire_on in prompt:
            return "expired"
        if self.fail_on and self.fail_on in prompt:
            return "failed"
        return self._answer(prompt)

    @staticmethod
    def _ended(batch: dict[str, Any]) -> bool:
        return time.time() >= batch["ends"]

    def handle(self, method: str, path: str, headers: Any, raw: bytes) -> Reply | None:
        """The reply to a batch request, or None when `path` is no batch endpoint."""
        route = {"openai": self._openai, "anthropic": self._anthropic, "gemini": self._gemini}[self.vendor]
        return route(method, path.split("?")[0], headers, raw)

    # -- OpenAI: POST /v1/files, POST /v1/batches, GET /v1/batches/{id}, GET /v1/files/{id}/content ---------
    def _openai(self, method: str, path: str, headers: Any, raw: bytes) -> Reply | None:
        if method == "POST" and path == "/v1/files":
            data = _multipart_file(headers["Content-Type"], raw)
            with self._lock:
                file_id = f"file-{len(self._files) + 1:04d}"
                self._files[file_id] = data
            return _json(
                {
                    "id": file_id,
                    "object": "file",
                    "bytes": len(data),
                    "created_at": int(time.time()),
                    "filename": "batch.jsonl",
                    "purpose": "batch",
                    "status": "processed",
                }
            )
        if method == "POST" and path == "/v1/batches":
            body = json.loads(raw)
            lines = [json.loads(line) for line in self._files[body["input_file_id"]].decode().splitlines() if line]
            items = [(line["custom_id"], line["body"]) for line in lines]
            batch = self._create("batch_", items, lines[0]["body"]["model"] if lines else "")
            batch["input_file_id"] = body["input_file_id"]
            return _json(self._openai_batch(batch))
        if method == "GET" and (m := re.fullmatch(r"/v1/batches/([^/]+)", path)):
            return _json(self._openai_batch(self.batches[m[1]])) if m[1] in self.batches else None
        if method == "GET" and (m := re.fullmatch(r"/v1/files/([^/]+)/content", path)):
            return (200, "application/octet-stream", self._files[m[1]]) if m[1] in self._files else None
        return None

    def _openai_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        ended = self._ended(batch)
        if ended and "output_file_id" not in batch:
            out, errors = [], []
            for n, (custom_id, body) in enumerate(batch["items"]):
                outcome = self._outcome(batch, body)
                row: dict[str, Any] = {"id": f"batch_req_{n}", "custom_id": custom_id, "error": None}
                if outcome == "expired":
                    row["response"] = None
                    row["error"] = {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion window expired.",
                    }
                    errors.append(row)
                elif outcome == "failed":
                    row["response"] = {
                        "status_code": 500,
                        "request_id": f"req_{n}",
                        "body": self._failure("openai", 500),
                    }
                    errors.append(row)
                else:
                    reply = self._success("openai", outcome, body["model"])
                    row["response"] = {"status_code": 200, "request_id": f"req_{n}", "body": reply}
                    out.append(row)
            with self._lock:
                for name, rows in (("output_file_id", out), ("error_file_id", errors)):
                    file_id = f"file-{batch['id']}-{name.split('_')[0]}"
                    self._files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    batch[name] = file_id if rows else None
                batch["counts"] = {"total": len(batch["items"]), "completed": len(out), "failed": len(errors)}
        return {
            "id": batch["id"],
            "object": "batch",
            "endpoint": OPENAI_ENDPOINT,
            "errors": None,
            "input_file_id": batch["input_file_id"],
            "completion_window": "24h",
            "status": ("expired" if batch["expire"] else "completed") if ended else "in_progress",
            "output_file_id": batch.get("output_file_id"),
            "error_file_id": batch.get("error_file_id"),
            "created_at": int(batch["created"]),
            "in_progress_at": int(batch["created"]),
            "expires_at": int(batch["created"]) + 86400,
            "completed_at": int(batch["ends"]) if ended else None,
            "request_counts": batch.get("counts", {"total": len(batch["items"]), "completed": 0, "failed": 0}),
            "metadata": None,
        }

    # -- Anthropic: POST /v1/messages/batches, GET /v1/messages/batches/{id}[/results] ------------------------
    def _anthropic(self, method: str, path: str, headers: Any, raw: bytes) -> Reply | None:
        if method == "POST" and path == "/v1/messages/batches":
            requests = json.loads(raw)["requests"]
            items = [(r["custom_id"], r["params"]) for r in requests]
            batch = self._create("msgbatch_", items, requests[0]["params"]["model"] if requests else "")
            return _json(self._anthropic_batch(batch, headers))
        m = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results)?", path)
        if method != "GET" or not m or m[1] not in self.batches:
            return None
        batch = self.batches[m[1]]
        if not m[2]:
            return _json(self._anthropic_batch(batch, headers))
        if not self._ended(batch):
            return _json({"type": "error", "error": {"type": "not_found_error", "message": "not ended"}}, 404)
        rows = []
        for custom_id, params in batch["items"]:
            outcome = self._outcome(batch, params)
            if outcome == "expired":
                result: dict[str, Any] = {"type": "expired"}
            elif outcome == "failed":
                result = {"type": "errored", "error": self._failure("anthropic", 500)}
            else:
                result = {"type": "succeeded", "message": self._success("anthropic", outcome, params["model"])}
            rows.append({"custom_id": custom_id, "result": result})
        return _jsonl(rows)

    def _anthropic_batch(self, batch: dict[str, Any], headers: Any) -> dict[str, Any]:
        ended, n = self._ended(batch), len(batch["items"])
        outcomes = [self._outcome(batch, params) for _, params in batch["items"]] if ended else []
        expired, failed = outcomes.count("expired"), outcomes.count("failed")
        return {
            "id": batch["id"],
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else n,
                "succeeded": n - expired - failed if ended else 0,
                "errored": failed,
                "canceled": 0,
                "expired": expired,
            },
            "created_at": _iso(batch["created"]),
            "expires_at": _iso(batch["created"] + 86400),
            "ended_at": _iso(batch["ends"]) if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"http://{headers['Host']}/v1/messages/batches/{batch['id']}/results" if ended else None,
        }

    # -- Gemini: POST /v1[beta]/models/{model}:batchGenerateContent, GET /v1[beta]/batches/{id} --------------------
    def _gemini(self, method: str, path: str, headers: Any, raw: bytes) -> Reply | None:
        if method == "POST" and (m := re.fullmatch(r"/v1(?:beta)?/models/([^/:]+):batchGenerateContent", path)):
            requests = json.loads(raw)["batch"]["inputConfig"]["requests"]["requests"]
            items = [(r.get("metadata", {}).get("key", ""), r["request"]) for r in requests]
            return _json(self._gemini_batch(self._create("", items, m[1])))
        if method == "GET" and (m := re.fullmatch(r"/v1(?:beta)?/batches/([^/]+)", path)) and m[1] in self.batches:
            return _json(self._gemini_batch(self.batches[m[1]]))
        return None

    def _gemini_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        ended = self._ended(batch)
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "model": f"models/{batch['model']}",
            "name": f"batches/{batch['id']}",
            "displayName": "lm-lexicon",
            "state": ("BATCH_STATE_EXPIRED" if batch["expire"] else "BATCH_STATE_SUCCEEDED")
            if ended
            else "BATCH_STATE_RUNNING",
            "createTime": _iso(batch["created"]),
            "updateTime": _iso(min(time.time(), batch["ends"])),
        }
        if ended and not batch["expire"]:  # an expired Gemini batch has no output
            responses = []
            for key, request in batch["items"]:
                outcome = self._outcome(batch, request)
                row: dict[str, Any] = {"metadata": {"key": key}}
                if outcome == "expired":
                    row["error"] = {"code": 4, "message": "Deadline expired before operation could complete."}
                elif outcome == "failed":
                    row["error"] = {"code": 13, "message": "stub error 500"}
                else:
                    row["response"] = self._success("gemini", outcome, batch["model"])
                responses.append(row)
            metadata["endTime"] = _iso(batch["ends"])
            metadata["output"] = {"inlinedResponses": {"inlinedResponses": responses}}
        return {"name": f"batches/{batch['id']}", "metadata": metadata, "done": ended}
