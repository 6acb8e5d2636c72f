"""API backends: the vendors' real SDK clients against local stub servers (retries, error rows, resume)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataset.predictions import read_rows
from inference.api import ApiBackend, RateLimiter, RetryPolicy, api_key_from_env
from inference.backend import Request, Sampling
from inference.infer import main
from inference.stub_server import BROKEN, StubServer
from run_config.errors import ConfigError
from tests.helpers.api import api_argv

REPO = Path(__file__).resolve().parents[2]
VENDORS = ["openai", "anthropic", "gemini"]
FAST_RETRY = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.05)


def request(term: str = "bank", samples: tuple[int, ...] = (0,)) -> Request:
    return Request(f"id-{term}", term, "she sat on the bank", f'"ctx" What is the definition of "{term}"?\n\n', samples)


def backend(vendor: str, stub: StubServer, **kw) -> ApiBackend:
    return ApiBackend(
        vendor,
        "model-x",
        api_key="test-key",
        base_url=stub.base_url,
        system_prompt="be brief",
        retry=kw.pop("retry", FAST_RETRY),
        timeout_s=kw.pop("timeout_s", 2.0),
        **kw,
    )


@pytest.mark.parametrize("vendor", VENDORS)
def test_429_then_success(vendor):
    with StubServer(vendor, statuses=[429, 503]) as stub:
        out = list(backend(vendor, stub).generate([request()], Sampling()))
    assert stub.responses == [429, 503, 200]
    assert len(out) == 1 and out[0].error is None and 'a definition of bank"' in out[0].text
    # Retries resend the same user prompt (the original resent it as an assistant message: bug 35).
    bodies = [r["body"] for r in stub.requests]
    assert all(b == bodies[0] for b in bodies)
    if vendor != "gemini":
        assert [m["role"] for m in bodies[0]["messages"]] in (["system", "user"], ["user"])


@pytest.mark.parametrize("vendor", VENDORS)
def test_persistent_500_is_an_error_row(vendor):
    with StubServer(vendor, statuses=[500] * 10) as stub:
        out = list(backend(vendor, stub).generate([request()], Sampling()))
    assert len(stub.requests) == FAST_RETRY.max_retries + 1
    assert out[0].text is None and "500" in out[0].error and "after 4 attempts" in out[0].error


@pytest.mark.parametrize("vendor", VENDORS)
def test_timeout_is_retried(vendor):
    with StubServer(vendor, statuses=["stall"], stall_s=3.0) as stub:
        out = list(backend(vendor, stub, timeout_s=0.5).generate([request()], Sampling()))
    assert out[0].error is None and len(stub.requests) == 2


@pytest.mark.parametrize("fault", BROKEN)
@pytest.mark.parametrize("vendor", VENDORS)
def test_broken_reply_is_retried_then_an_error_row(vendor, fault):
    """A 200 that is not JSON, has no choices / text part, or a number for the text is a failed attempt."""
    with StubServer(vendor, statuses=[fault], fail_on='"victim"', fail_with=fault) as stub:
        out = list(backend(vendor, stub, concurrency=1).generate([request("bank"), request("victim")], Sampling()))
    assert stub.responses == [fault, 200] + [fault] * (FAST_RETRY.max_retries + 1)
    ok, failed = out
    assert ok.error is None and 'a definition of bank"' in ok.text
    assert failed.text is None and failed.error.startswith("MalformedReply: ")
    assert "after 4 attempts" in failed.error and "\n" not in failed.error


@pytest.mark.parametrize("vendor", VENDORS)
def test_timeout_bounds_the_whole_reply(vendor):
    """A reply trickled in over 1.5 s, each piece well within the 0.5 s read timeout, still times out."""
    with StubServer(vendor, statuses=["trickle"], trickle_s=1.5) as stub:
        (retried,) = backend(vendor, stub, timeout_s=0.5).generate([request("bank")], Sampling())
        stub.statuses.extend(["trickle"] * 2)
        (failed,) = backend(vendor, stub, timeout_s=0.5, retry=RetryPolicy(1, 0.01, 0.01)).generate(
            [request("oak")], Sampling()
        )
        stub.statuses.append("trickle")
        (slow_ok,) = backend(vendor, stub, timeout_s=5.0).generate([request("elm")], Sampling())
    assert stub.responses == ["trickle", 200, "trickle", "trickle", "trickle"]
    assert retried.error is None and 'a definition of bank"' in retried.text  # a timeout is retried
    assert (
        failed.text is None
        and failed.error == "TimeoutError: no complete reply within timeout_s 0.5 (after 2 attempts)"
    )
    assert failed.latency_s < stub.trickle_s  # the last attempt was cut off, not waited for
    assert slow_ok.error is None and 'a definition of elm"' in slow_ok.text  # the trickled reply is valid


def test_client_errors_are_not_retried():
    with StubServer("openai", statuses=[400]) as stub:
        out = list(backend("openai", stub).generate([request()], Sampling()))
    assert len(stub.requests) == 1 and "400" in out[0].error


def test_concurrency_and_rate_limit():
    with StubServer("openai", latency_s=0.3) as stub:
        out = list(backend("openai", stub, concurrency=8).generate([request(f"t{i}") for i in range(16)], Sampling()))
    assert len(out) == 16 and all(g.error is None for g in out)
    assert 2 <= stub.max_in_flight <= 8  # requests overlap, never above the limit (speed: scripts/bench_api.py)
    limiter = RateLimiter(50.0)

    async def six_starts() -> None:
        await asyncio.gather(*(limiter.acquire() for _ in range(6)))

    began = time.monotonic()
    asyncio.run(six_starts())
    assert time.monotonic() - began >= 5 / 50 - 1e-3


def test_key_only_from_environment(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        api_key_from_env("anthropic")
    monkeypatch.setenv("MY_KEY", "abc")
    assert api_key_from_env("anthropic", "MY_KEY") == "abc"


@pytest.mark.parametrize("vendor", VENDORS)
def test_cli_writes_parsed_predictions_and_reruns_only_failures(vendor, wordnet_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "test-key")
    rows = [json.loads(line) for line in wordnet_rows.read_text().splitlines()]
    victim = rows[3]["context"]
    argv = [
        "--backend",
        vendor,
        "--model",
        "model-x",
        "--input",
        str(wordnet_rows),
        "--output-dir",
        str(tmp_path),
        "--api-key-env",
        "STUB_KEY",
        "--max-retries",
        "1",
        "--retry-base-delay-s",
        "0.01",
        "--concurrency",
        "4",
    ]
    with StubServer(vendor, fail_on=victim) as stub:
        assert main(argv + ["--base-url", stub.base_url]) == 0
    preds = {r["id"]: r for r in read_rows(tmp_path / "predictions.jsonl")[0]}
    assert len(preds) == len(rows)
    failed = preds[rows[3]["id"]]
    assert failed["prediction"] is None and "500" in failed["error"]
    ok = preds[rows[0]["id"]]
    assert ok["prediction"] == f"a definition of {rows[0]['term']}" and ok["error"] is None
    assert set(ok) >= {"id", "term", "context", "prediction", "model", "seed", "sample_idx", "latency_s", "error"}
    with StubServer(vendor) as stub:
        assert main(argv + ["--base-url", stub.base_url]) == 0
    assert len(stub.requests) == 1 and victim in json.dumps(stub.requests[0]["body"])
    samples, _ = read_rows(tmp_path / "samples.jsonl")
    assert len(samples) == len(rows) and all(r["error"] is None for r in samples)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["resumed_samples"] == len(rows) - 1 and summary["failed_predictions"] == 0


def test_kill_midway_then_resume(wordnet_rows, tmp_path, monkeypatch):
    """SIGKILL a running CLI, rerun: every (id, sample) exactly once, nothing lost or duplicated."""
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    n = len(wordnet_rows.read_text().splitlines())
    env = {**os.environ, "OPENAI_API_KEY": "test-key", "PYTHONPATH": str(REPO)}
    samples = tmp_path / "samples.jsonl"
    with StubServer("openai", latency_s=0.15) as stub:
        argv = [
            "--backend",
            "openai",
            "--model",
            "model-x",
            "--input",
            str(wordnet_rows),
            "--output-dir",
            str(tmp_path),
            "--base-url",
            stub.base_url,
            "--concurrency",
            "2",
            "--n-samples",
            "2",
        ]
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference.infer", *argv],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not samples.is_file() or len(samples.read_text().splitlines()) < 8):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == proc.pid  # the killed run's lock: stale
        before = len(read_rows(samples)[0])
        assert 8 <= before < 2 * n
        assert not (tmp_path / "predictions.jsonl").exists()
        assert main(argv) == 0
        assert not (tmp_path / ".lock").exists()
    rows, cut = read_rows(samples)
    keys = [(r["id"], r["sample_idx"]) for r in rows]
    assert not cut and len(keys) == len(set(keys)) == 2 * n
    # Only the samples missing after the kill were requested again (plus those in flight at the kill).
    assert 2 * n <= len(stub.requests) <= 2 * n + 4
    assert len(read_rows(tmp_path / "predictions.jsonl")[0]) == n


def test_resume_refuses_another_setup(wordnet_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with StubServer("openai") as stub:
        argv = [
            "--backend",
            "openai",
            "--model",
            "model-x",
            "--input",
            str(wordnet_rows),
            "--output-dir",
            str(tmp_path),
            "--base-url",
            stub.base_url,
            "--max-items",
            "3",
        ]
        assert main(argv) == 0
        assert main(argv[:-1] + ["4"]) == 2
        assert main(argv + ["--force"]) == 0


@pytest.mark.parametrize("vendor", VENDORS)
def test_dry_run_sends_nothing_and_counts(vendor, wordnet_rows, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("STUB_KEY", raising=False)  # a dry run needs no key
    n = len(wordnet_rows.read_text().splitlines())
    cache, out = tmp_path / "cache", tmp_path / "out"
    with StubServer(vendor) as stub:
        common = ("--api-cache-dir", str(cache), "--n-samples", "2", "--max-new-tokens", "40")
        assert main(api_argv(vendor, wordnet_rows, out, stub.base_url, *common, "--dry-run")) == 0
        assert stub.requests == [] and not out.exists()
        line = capsys.readouterr().out
        assert f"{2 * n} requests to send ({2 * n} samples to generate, 0 cache hits" in line
        assert f"at most {2 * n * 40} completion tokens" in line and "estimate (4 characters per token; " in line
        if vendor == "openai" and importlib.util.find_spec("tiktoken") is None:
            assert "tiktoken is not installed" in line  # the line says why it is an estimate
        elif vendor != "openai":
            assert f"no local {vendor} tokenizer" in line
        tokens = int(line.split("); ")[1].split(" prompt tokens")[0])
        assert 2 * n * 20 < tokens < 2 * n * 1000
        monkeypatch.setenv("STUB_KEY", "k")
        assert main(api_argv(vendor, wordnet_rows, tmp_path / "first", stub.base_url, *common, "--max-items", "5")) == 0
        sent = len(stub.requests)
        assert sent == 10
        assert (
            main(api_argv(vendor, wordnet_rows, out, stub.base_url, *common, "--dry-run", "--max-requests", "7")) == 0
        )
        assert len(stub.requests) == sent and not out.exists()
    line = capsys.readouterr().out
    assert f"7 requests to send ({2 * n} samples to generate, 10 cache hits" in line
    assert f"{2 * n - 10 - 7} over max_requests" in line


def test_dry_run_is_refused_for_local_models(wordnet_rows, tmp_path):
    argv = ["--backend", "local", "--model", "m", "--input", str(wordnet_rows), "--output-dir", str(tmp_path)]
    assert main(argv + ["--dry-run"]) == 2
    assert main(argv + ["--max-requests", "3"]) == 2


def test_429_halves_concurrency_honours_retry_after_and_grows_back():
    """Eight 429s with Retry-After 0.4 s: concurrency 8 -> 1, no request starts inside the pause, then back up."""
    with StubServer("openai", statuses=[429] * 8, latency_s=0.05, retry_after_s=0.4) as stub:
        api = backend("openai", stub, concurrency=8, retry=RetryPolicy(6, 0.01, 1.0))
        out = list(api.generate([request(f"t{i}") for i in range(60)], Sampling()))
    assert len(out) == 60 and all(g.error is None for g in out)
    assert api.stats["api_lowest_concurrency"] == 1 and api.stats["api_retries"] == 8
    # The first 8 requests (in flight together) got the 429s; nothing starts until their Retry-After is over.
    times = sorted(r["t"] for r in stub.requests)
    assert stub.responses[:8] == [429] * 8 and times[8] - times[0] >= 0.4 + 0.05
    # Right after the pause one request at a time, then concurrency grows back by one per `limit` successes.
    assert stub.in_flight_seen[8:10] == [1, 1] and max(stub.in_flight_seen[-20:]) >= 4
    assert api.stats["api_requests_sent"] == 60


def test_max_requests_stops_cleanly_rest_counted(wordnet_rows, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STUB_KEY", "k")
    n = len(wordnet_rows.read_text().splitlines())
    with StubServer("openai") as stub:
        argv = api_argv("openai", wordnet_rows, tmp_path, stub.base_url, "--max-requests", "10")
        assert main(argv) == 0
        assert len(stub.requests) == 10
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["api_not_sent"] == n - 10 and summary["failed_predictions"] == n - 10
        assert f"{n - 10} samples not sent: max_requests 10 reached" in capsys.readouterr().err
        preds = read_rows(tmp_path / "predictions.jsonl")[0]
        assert (
            len(preds) == n
            and sum(p["error"] is not None and p["error"].startswith("NotSent") for p in preds) == n - 10
        )
        assert main(argv[:-2]) == 0  # a rerun sends the rest
    assert len(stub.requests) == n
    assert all(p["error"] is None for p in read_rows(tmp_path / "predictions.jsonl")[0])
