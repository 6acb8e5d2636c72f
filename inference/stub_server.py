"""Local stub servers on 127.0.0.1 speaking the OpenAI, Anthropic and Gemini wire formats (tests, benchmarks).

Each answers with a chatty definition of the term found in the prompt (or with `answer(prompt)`), after
`latency_s`; a 429 carries `Retry-After: retry_after_s`. Faults are scripted: `statuses` is consumed one
entry per request: an int HTTP status, "stall" (answer only after `stall_s`, so that the client's read
times out), "trickle" (send the reply in small pieces spread over `trickle_s`, so that no single read
times out) or a broken 200 reply:
"bad_json" (a cut-off body), "html" (an HTML page, as proxies send), "empty" (no choices / content
blocks / candidates), "no_text" (no text in the answer) or "wrong_type" (a number where the text
belongs). `fail_on` gives every prompt containing that text the fault `fail_with` (HTTP 500 by default).
The batch endpoints (`inference.stub_batches`) are served too: `batches` holds the jobs, each ending
`batch_s` seconds after the previous one; `fail_on` fails its items there and `expire_on` expires them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from inference.stub_batches import StubBatches

BROKEN = ("bad_json", "html", "empty", "no_text", "wrong_type")
FAULTS = ("stall", "trickle", *BROKEN)
TERM = re.compile(r'What is the definition of "(.+?)"\?')


def stub_answer(prompt: str) -> str:
    """The stub's chatty answer: option B for WSD, a numbered `###` list for the synthesis tasks, else a
    definition that `parse_definition` turns into `a definition of <term>`."""
    if "Please choose the right option" in prompt:
        return "The answer is B."
    if "separated by ###" in prompt:
        return "Here are ten of them:\n1. first, at 3.5 m ### 2. second ###"
    terms = TERM.findall(prompt)
    term = terms[-1] if terms else "it"
    return f'Sure! Here is a concise definition:\n\n**Definition:** "a definition of {term}"\n\nLet me know!'


def _prompt_text(vendor: str, body: dict[str, Any]) -> str:
    if vendor == "gemini":
        return " ".join(p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", []))
    return " ".join(
        m["content"] if isinstance(m["content"], str) else json.dumps(m["content"])
        for m in body.get("messages", [])
        if m.get("role") == "user"
    )


def _success(vendor: str, text: str, model: str) -> dict[str, Any]:
    if vendor == "openai":
        return {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }
    if vendor == "anthropic":
        return {
            "id": "msg_stub",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 10},
        }
    return {
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 10, "totalTokenCount": 20},
        "modelVersion": model,
    }


def _broken(vendor: str, fault: str, payload: dict[str, Any]) -> bytes:
    """A 200 body with `fault` (see the module docstring) in place of the answer of `payload`."""
    if fault == "bad_json":
        return json.dumps(payload).encode()[:-9]
    if fault == "html":
        return b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    if vendor == "openai":
        answer = payload["choices"][0]["message"]
        if fault == "empty":
            payload["choices"] = []
        elif fault == "no_text":
            del answer["content"]
        else:
            answer["content"] = 42
    elif vendor == "anthropic":
        if fault == "empty":
            payload["content"] = []
        elif fault == "no_text":
            payload["content"] = [{"type": "tool_use", "id": "toolu_stub", "name": "f", "input": {}}]
        else:
            payload["content"][0]["text"] = 42
    else:
        parts = payload["candidates"][0]["content"]["parts"]
        if fault == "empty":
            payload["candidates"] = []
        elif fault == "no_text":
            parts.clear()
        else:
            parts[0]["text"] = 42
    return json.dumps(payload).encode()


def _failure(vendor: str, status: int) -> dict[str, Any]:
    message = f"stub error {status}"
    if vendor == "openai":
        return {
            "error": {
                "message": message,
                "type": "rate_limit_error" if status == 429 else "server_error",
                "code": None,
                "param": None,
            }
        }
    if vendor == "anthropic":
        return {
            "type": "error",
            "error": {"type": "rate_limit_error" if status == 429 else "api_error", "message": message},
        }
    return {
        "error": {"code": status, "message": message, "status": "RESOURCE_EXHAUSTED" if status == 429 else "INTERNAL"}
    }


class StubServer:
    """One vendor's stub on 127.0.0.1 (a context manager); `requests` records every ordinary request body (with
    its arrival time `t`, time.monotonic), `max_in_flight` the most requests it held at once and
    `batch_requests` every request to a batch endpoint."""

    def __init__(
        self,
        vendor: str,
        *,
        latency_s: float = 0.0,
        statuses: Iterable[int | str] = (),
        fail_on: str | None = None,
        fail_with: int | str = 500,
        stall_s: float = 5.0,
        trickle_s: float = 3.0,
        answer: Callable[[str], str] = stub_answer,
        retry_after_s: float = 0.0,
        batch_s: float = 0.0,
        expire_on: str | None = None,
    ) -> None:
        if vendor not in ("openai", "anthropic", "gemini"):
            raise ValueError(f"unknown vendor {vendor!r}")
        self.statuses = deque(statuses)
        unknown = {s for s in (*self.statuses, fail_with) if not isinstance(s, int) and s not in FAULTS}
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {FAULTS} or an HTTP status")
        self.vendor, self.latency_s, self.stall_s, self.trickle_s = vendor, latency_s, stall_s, trickle_s
        self.fail_on, self.fail_with, self.answer = fail_on, fail_with, answer
        self.retry_after_s = retry_after_s
        self.requests: list[dict[str, Any]] = []
        self.responses: list[int | str] = []
        self.in_flight = self.max_in_flight = 0
        self.in_flight_seen: list[int] = []  # requests in flight as each one arrived
        self.batch_requests: list[tuple[str, str]] = []  # (method, path) of each batch endpoint request
        self.batches = StubBatches(
            vendor,
            prompt_text=_prompt_text,
            success=_success,
            failure=_failure,
            answer=answer,
            batch_s=batch_s,
            fail_on=fail_on,
            expire_on=expire_on,
        )
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The base URL to give the vendor's SDK client."""
        root = f"http://127.0.0.1:{self._server.server_address[1]}"
        return root + "/v1" if self.vendor == "openai" else root

    def _next_status(self, prompt: str) -> int | str:
        with self._lock:
            status: int | str = self.statuses.popleft() if self.statuses else 200
            if self.fail_on and self.fail_on in prompt:
                status = self.fail_with
            self.responses.append(status)
            return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms per keep-alive response

            def log_message(self, *_: Any) -> None:
                return

            def _batch(self, method: str, raw: bytes) -> bool:
                """Serve a batch endpoint; False when the path is none."""
                reply = stub.batches.handle(method, self.path, self.headers, raw)
                if reply is None:
                    return False
                with stub._lock:
                    stub.batch_requests.append((method, self.path.split("?")[0]))
                code, content_type, data = reply
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return True

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                if not self._batch("GET", b""):
                    self.send_error(404)

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self._batch("POST", raw):
                    return
                body = json.loads(raw or b"{}")
                with stub._lock:
                    stub.requests.append(
                        {"path": self.path, "body": body, "headers": dict(self.headers), "t": time.monotonic()}
                    )
                prompt = _prompt_text(stub.vendor, body)
                status = stub._next_status(prompt)
                with stub._lock:
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    stub.in_flight_seen.append(stub.in_flight)
                time.sleep(stub.stall_s if status == "stall" else stub.latency_s)
                with stub._lock:
                    stub.in_flight -= 1
                code = status if isinstance(status, int) else 200
                model = body.get("model") or self.path.split("/models/")[-1].split(":")[0]
                if code != 200:
                    data = json.dumps(_failure(stub.vendor, code)).encode()
                elif status in BROKEN:
                    data = _broken(stub.vendor, str(status), _success(stub.vendor, stub.answer(prompt), model))
                else:
                    data = json.dumps(_success(stub.vendor, stub.answer(prompt), model)).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "text/html" if status == "html" else "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if code == 429:
                        self.send_header("Retry-After", f"{stub.retry_after_s:g}")
                    self.end_headers()
                    if status == "trickle":
                        self._trickle(data)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def _trickle(self, data: bytes, pieces: int = 20) -> None:
                step = -(-len(data) // pieces)
                for i in range(0, len(data), step):
                    self.wfile.write(data[i : i + step])
                    self.wfile.flush()
                    time.sleep(stub.trickle_s / pieces)

        return Handler

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> int:
    """Serve one stub until interrupted; prints its base URL first (for benchmarks in another process)."""
    import argparse

    parser = argparse.ArgumentParser(prog="stub_server", description=main.__doc__)
    parser.add_argument("vendor", choices=["openai", "anthropic", "gemini"])
    parser.add_argument("--latency-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    with StubServer(args.vendor, latency_s=args.latency_s) as stub:
        print(stub.base_url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
