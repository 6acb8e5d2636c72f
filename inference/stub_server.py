"""Local stub servers on 127.0.0.1 speaking the OpenAI, Anthropic and Gemini wire formats (tests, benchmarks).

Each answers with a chatty definition of the term found in the prompt, after `latency_s`. Faults are
scripted: `statuses` is consumed one entry per request (an int HTTP status, or "stall" to answer only
after `stall_s`, so that the client times out); `fail_on` makes every prompt containing that text
fail with HTTP 500.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
    return " ".join(m["content"] if isinstance(m["content"], str) else json.dumps(m["content"])
                    for m in body.get("messages", []) if m.get("role") == "user")


def _success(vendor: str, text: str, model: str) -> dict[str, Any]:
    if vendor == "openai":
        return {"id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}
    if vendor == "anthropic":
        return {"id": "msg_stub", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 10}}
    return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 10, "totalTokenCount": 20},
            "modelVersion": model}


def _failure(vendor: str, status: int) -> dict[str, Any]:
    message = f"stub error {status}"
    if vendor == "openai":
        return {"error": {"message": message, "type": "rate_limit_error" if status == 429 else "server_error",
                          "code": None, "param": None}}
    if vendor == "anthropic":
        return {"type": "error", "error": {"type": "rate_limit_error" if status == 429 else "api_error",
                                           "message": message}}
    return {"error": {"code": status, "message": message,
                      "status": "RESOURCE_EXHAUSTED" if status == 429 else "INTERNAL"}}


class StubServer:
    """One vendor's stub on 127.0.0.1 (a context manager); `requests` records every request body and
    `max_in_flight` the most requests it held at once."""

    def __init__(self, vendor: str, *, latency_s: float = 0.0, statuses: Iterable[int | str] = (),
                 fail_on: str | None = None, stall_s: float = 5.0) -> None:
        if vendor not in ("openai", "anthropic", "gemini"):
            raise ValueError(f"unknown vendor {vendor!r}")
        self.vendor, self.latency_s, self.fail_on, self.stall_s = vendor, latency_s, fail_on, stall_s
        self.statuses = deque(statuses)
        self.requests: list[dict[str, Any]] = []
        self.responses: list[int | str] = []
        self.in_flight = self.max_in_flight = 0
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
                status = 500
            self.responses.append(status)
            return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms per keep-alive response

            def log_message(self, *_: Any) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub._lock:
                    stub.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                prompt = _prompt_text(stub.vendor, body)
                status = stub._next_status(prompt)
                with stub._lock:
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                time.sleep(stub.stall_s if status == "stall" else stub.latency_s)
                with stub._lock:
                    stub.in_flight -= 1
                code = 200 if status == "stall" else int(status)
                model = body.get("model") or self.path.split("/models/")[-1].split(":")[0]
                payload = (_success(stub.vendor, stub_answer(prompt), model) if code == 200
                           else _failure(stub.vendor, code))
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if code == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return

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
