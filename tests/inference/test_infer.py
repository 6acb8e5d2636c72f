"""The infer CLI end to end on SmolLM2 and real Urban rows: outputs, never-truncated prompts, Best-of-N, WSD."""

from __future__ import annotations

import json
import random
import shutil

import pytest

import inference.infer as infer
from dataset.predictions import read_rows
from dataset.records import load_records
from evaluation.bleu import moses_max_single_bleu
from evaluation.references import term_references
from inference.tasks import build_items


@pytest.fixture
def local(monkeypatch, smol_backend, smollm2_dir):
    """Run the CLI with the local backend; the already-loaded SmolLM2 stands in for loading it again."""
    monkeypatch.setattr(infer, "build_backend", lambda cfg: smol_backend)

    def run(rows, out, *extra):
        return infer.main(
            [
                "--backend",
                "local",
                "--model",
                str(smollm2_dir),
                "--input",
                str(rows),
                "--output-dir",
                str(out),
                "--max-new-tokens",
                "8",
                *map(str, extra),
            ]
        )

    return run


def test_greedy_cli_writes_parsed_predictions(local, urban_rows, tmp_path):
    assert local(urban_rows, tmp_path, "--greedy") == 0
    preds, _ = read_rows(tmp_path / "predictions.jsonl")
    assert [p["id"] for p in preds] == [r.id for r in load_records(urban_rows)]
    assert all(p["prediction"] and p["error"] is None and p["logprob"] < 0 for p in preds)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stage"] == "infer" and manifest["summary"]["predictions"] == 6
    assert local(urban_rows, tmp_path, "--greedy") == 0  # finished: nothing regenerated
    assert json.loads((tmp_path / "summary.json").read_text())["pending_samples"] == 0


def test_long_prompts_are_never_truncated(local, urban_rows, tmp_path, capsys):
    lengths = infer.build_backend(None).count_tokens(
        [
            infer.item_prompt("word_interpretation", i, "<|im_start|>")
            for i in build_items("word_interpretation", load_records(urban_rows), range(1, 7), 42)
        ]
    )
    limit = sorted(lengths)[2]
    assert local(urban_rows, tmp_path, "--greedy", "--max-prompt-tokens", limit) == 1
    err = capsys.readouterr().err
    first = next(i for i, n in enumerate(lengths) if n > limit)
    assert f"urban_test.jsonl:{first + 1}: context: prompt has {lengths[first]} tokens, more than" in err
    assert not (tmp_path / "samples.jsonl").exists()
    assert local(urban_rows, tmp_path, "--greedy", "--max-prompt-tokens", limit, "--on-long-prompt", "skip") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    too_long = sum(n > limit for n in lengths)
    assert summary["long_prompts_skipped"] == summary["failed_predictions"] == too_long


def test_best_of_n_oracle_picks_the_max_bleu_sample(local, urban_rows, tmp_path):
    assert local(urban_rows, tmp_path, "--n-samples", 3, "--selection", "oracle", "--seed", 3) == 0
    samples, _ = read_rows(tmp_path / "samples.jsonl")
    preds, _ = read_rows(tmp_path / "predictions.jsonl")
    refs = term_references(load_records(urban_rows))
    assert len(samples) == 18 and len(preds) == 6
    for pred in preds:
        mine = [s for s in samples if s["id"] == pred["id"] and s["error"] is None]
        best = max(moses_max_single_bleu(s["prediction"], refs[pred["term"]]) for s in mine)
        assert moses_max_single_bleu(pred["prediction"], refs[pred["term"]]) == best


def test_wsd_items_and_prompts(urban_records):
    items = build_items("wsd", urban_records[:40], range(40), seed=1)
    for item in items:
        assert len(item.options) == 4 and item.options[item.answer] == item.definition
        assert len(set(item.options)) == 4
    prompt = infer.item_prompt("wsd", items[0], "")
    assert prompt.startswith("Please choose the right option from A, B, C, and D.\n")
    assert f"{'ABCD'[items[0].answer]}. {items[0].definition}" in prompt
    assert infer.parse_answer("wsd", items[0], f"The answer is {'ABCD'[items[0].answer]}.") == items[0].definition


@pytest.mark.parametrize(
    "task,expected",
    [
        ("context_synthesis", "first, at 3.5 m\nsecond"),
        ("definition_synthesis", "first, at 3.5 m\nsecond"),
        ("wsd", None),
    ],
)
def test_other_tasks_through_an_api(task, expected, urban_rows, tmp_path, monkeypatch):
    from inference.stub_server import StubServer

    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    with StubServer("gemini") as stub:
        assert (
            infer.main(
                [
                    "--backend",
                    "gemini",
                    "--model",
                    "g",
                    "--task",
                    task,
                    "--input",
                    str(urban_rows),
                    "--output-dir",
                    str(tmp_path),
                    "--base-url",
                    stub.base_url,
                ]
            )
            == 0
        )
    prompts = [r["body"]["contents"][0]["parts"][0]["text"] for r in stub.requests]
    preds, _ = read_rows(tmp_path / "predictions.jsonl")
    items = {i.id: i for i in build_items(task, load_records(urban_rows), range(1, 7), 42)}
    for pred in preds:
        assert pred["prediction"] == (expected or items[pred["id"]].options[1])
    if task == "wsd":
        accuracy = sum(i.answer == 1 for i in items.values()) / len(items)
        assert json.loads((tmp_path / "summary.json").read_text())["wsd_accuracy"] == accuracy
        assert all("\nB. " in p for p in prompts)
    else:
        assert all("separated by ###" in p for p in prompts)


def test_samples_of_a_changed_model_are_stale(tmp_path):
    from inference.config import InferConfig
    from inference.infer import INPUTS, inputs_changed
    from run_config.runtime import inputs_fingerprint

    model, data = tmp_path / "model", tmp_path / "test.jsonl"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data.write_text("")
    cfg = InferConfig(input=str(data), output_dir=str(tmp_path / "out"), model=str(model))
    assert not inputs_changed(cfg, tmp_path / "out")  # nothing generated yet
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / INPUTS).write_text(json.dumps(inputs_fingerprint(cfg)))
    assert not inputs_changed(cfg, tmp_path / "out")
    (model / "manifest.json").write_text("{}")  # the model folder was retrained in place
    assert inputs_changed(cfg, tmp_path / "out")


def test_seeded_samples_survive_batch_size_order_and_a_killed_run(
    monkeypatch, smol_backend, smollm2_dir, urban_records, tmp_path
):
    """Same seed: the same samples with batch size 8 or 1, a shuffled input file, or a run killed mid-way."""
    from inference.local import LocalBackend

    monkeypatch.setattr(
        infer,
        "build_backend",
        lambda cfg: LocalBackend(smol_backend.model, smol_backend.tokenizer, name=cfg.model, batch_size=cfg.batch_size),
    )
    records = urban_records[:6]
    ordered, shuffled = tmp_path / "test.jsonl", tmp_path / "shuffled.jsonl"
    ordered.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    shuffled.write_text("".join(r.to_json() + "\n" for r in random.Random(1).sample(records, 6)), encoding="utf-8")

    def run(rows, out, batch_size):
        assert (
            infer.main(
                [
                    "--model",
                    str(smollm2_dir),
                    "--input",
                    str(rows),
                    "--output-dir",
                    str(out),
                    "--max-new-tokens",
                    "6",
                    "--n-samples",
                    "3",
                    "--seed",
                    "11",
                    "--batch-size",
                    str(batch_size),
                ]
            )
            == 0
        )
        return {(r["id"], r["sample_idx"]): r["prediction"] for r in read_rows(out / "samples.jsonl")[0]}

    full = run(ordered, tmp_path / "full", 8)
    assert len(full) == 18 and len(set(full.values())) > 12
    assert run(shuffled, tmp_path / "shuffled", 1) == full
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", killed)
    lines = (killed / "samples.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    kept = lines[::3]
    (killed / "samples.jsonl").write_text("".join(kept) + lines[1][:25], encoding="utf-8")  # cut mid-line
    for name in ("predictions.jsonl", "summary.json", "manifest.json"):
        (killed / name).unlink()
    assert run(ordered, killed, 4) == full
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed_samples"] == len(kept) and summary["pending_samples"] == 18 - len(kept)
    predictions = lambda out: [(p["id"], p["prediction"]) for p in read_rows(out / "predictions.jsonl")[0]]
    assert predictions(killed) == predictions(tmp_path / "full")


def _api_argv(vendor: str, rows, out, stub, *extra: str) -> list[str]:
    return [
        "--backend",
        vendor,
        "--model",
        "model-x",
        "--input",
        str(rows),
        "--output-dir",
        str(out),
        "--base-url",
        stub.base_url,
        "--max-retries",
        "1",
        "--retry-base-delay-s",
        "0.01",
        "--concurrency",
        "4",
        *extra,
    ]


@pytest.mark.parametrize(
    "vendor,fault,reason",
    [
        ("openai", "bad_json", "MalformedReply"),
        ("openai", "trickle", "TimeoutError"),
        ("anthropic", "html", "MalformedReply"),
        ("anthropic", "no_text", "MalformedReply"),
        ("gemini", "wrong_type", "MalformedReply"),
        ("gemini", "empty", "MalformedReply"),
    ],
)
def test_broken_replies_are_error_rows_of_a_finished_run(vendor, fault, reason, wordnet_rows, tmp_path, monkeypatch):
    from inference.stub_server import StubServer

    monkeypatch.setenv("STUB_KEY", "test-key")
    rows = [json.loads(line) for line in wordnet_rows.read_text().splitlines()]
    victim = rows[2]
    with StubServer(vendor, fail_on=victim["context"], fail_with=fault, trickle_s=1.5) as stub:
        assert (
            infer.main(
                _api_argv(vendor, wordnet_rows, tmp_path, stub, "--api-key-env", "STUB_KEY", "--timeout-s", "0.5")
            )
            == 0
        )
    assert stub.responses.count(fault) == 2  # the victim was retried once, then given up
    preds, _ = read_rows(tmp_path / "predictions.jsonl")
    assert [p["id"] for p in preds] == [r["id"] for r in rows]
    for pred in preds:
        if pred["id"] == victim["id"]:
            assert pred["prediction"] is None and pred["error"].startswith(f"{reason}: ")
        else:
            assert pred["error"] is None and pred["prediction"] == f"a definition of {pred['term']}"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["generated"] == len(rows) - 1 and summary["failed"] == summary["failed_predictions"] == 1
    assert summary["failure_reasons"] == {reason: 1}


@pytest.mark.parametrize(
    "vendor,error", [("openai", "AuthenticationError"), ("anthropic", "AuthenticationError"), ("gemini", "ClientError")]
)
def test_every_request_failing_exits_1_with_every_row_written(
    vendor, error, wordnet_rows, tmp_path, monkeypatch, capsys
):
    from inference.stub_server import StubServer

    monkeypatch.setenv(f"{vendor.upper()}_API_KEY", "a-revoked-key")
    n = len(wordnet_rows.read_text().splitlines())
    with StubServer(vendor, statuses=[401] * n) as stub:
        assert infer.main(_api_argv(vendor, wordnet_rows, tmp_path, stub)) == 1
    assert stub.responses == [401] * n  # an auth error is not retried
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"infer: error: every one of the {n} inputs failed ({json.dumps({error: n})}); error rows in "
        f"{tmp_path / 'predictions.jsonl'}, counts in {tmp_path / 'summary.json'}"
    ]
    preds, _ = read_rows(tmp_path / "predictions.jsonl")
    assert len(preds) == n and all(p["prediction"] is None and "401" in p["error"] for p in preds)
    assert json.loads((tmp_path / "summary.json").read_text())["failed_predictions"] == n


@pytest.mark.parametrize(
    "key",
    [
        "sk-proj-" + "Zq3vN8xWc2LmT5rYb7KdE1fGh4JpS6uA9oI0eXnM",
        "sk-ant-api03-Xy8Wv2Qp5Rt7-Lm3Nb",
        "AIza" + "SyDq4Lm8Xv2Np6Rt0Wb3Jk7Hc5Fg9Ys1Ze",
        "my secret key",
    ],
)
def test_an_api_key_in_place_of_its_env_name_is_refused_unseen(key, wordnet_rows, tmp_path, capsys, caplog):
    from inference.stub_server import StubServer

    config = tmp_path / "infer.json"
    config.write_text(
        json.dumps(
            {
                "backend": "openai",
                "model": "model-x",
                "input": str(wordnet_rows),
                "output_dir": str(tmp_path / "from_file"),
                "api_key_env": key,
            },
            indent=1,
        )
    )
    with StubServer("openai") as stub:
        assert infer.main(_api_argv("openai", wordnet_rows, tmp_path / "out", stub, "--api-key-env", key)) == 2
        assert infer.main(["--config", str(config), "--base-url", stub.base_url]) == 2
    assert stub.requests == []
    err = capsys.readouterr().err.splitlines()
    message = (
        "api_key_env: takes the name of the environment variable that holds the API key (letters, digits, "
        "_), not the key itself; the value is not shown or saved: put the key in e.g. OPENAI_API_KEY and "
        "pass that name"
    )
    assert err == [f"infer: error: command line: {message}", f"infer: error: {config}:6: {message}"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "from_file").exists()  # no config.json anywhere
    assert key[:8] not in caplog.text


def test_two_runs_racing_on_one_folder_one_refuses(wordnet_rows, tmp_path):
    """Two real `infer` processes started together on one folder: one writes every sample once, the other
    refuses in one line naming the folder and the winner's pid (both used to append: 92 rows for 60 ids)."""
    import os
    import subprocess
    import sys

    from inference.stub_server import StubServer
    from tests.conftest import REPO_ROOT

    n = len(wordnet_rows.read_text().splitlines())
    out = tmp_path / "out"
    env = {**os.environ, "OPENAI_API_KEY": "test-key", "PYTHONPATH": str(REPO_ROOT)}
    with StubServer("openai", latency_s=0.05) as stub:
        argv = [
            sys.executable,
            "main.py",
            "infer",
            "--backend",
            "openai",
            "--model",
            "model-x",
            "--input",
            str(wordnet_rows),
            "--output-dir",
            str(out),
            "--base-url",
            stub.base_url,
            "--concurrency",
            "2",
        ]
        procs = [
            subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        results = [(p.pid, p.wait(timeout=300), p.stderr.read()) for p in procs]
    ((winner, _, _),) = [r for r in results if r[1] == 0]
    ((_, code, err),) = [r for r in results if r[1] != 0]
    assert code == 1
    (line,) = err.strip().splitlines()
    assert line.startswith(f"infer: error: {out} is in use by another run (pid {winner} on host ")
    assert line.endswith(f"lock file {out / '.lock'}); wait for it to end or stop it")
    rows, _ = read_rows(out / "samples.jsonl")
    ids = [json.loads(line)["id"] for line in wordnet_rows.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(ids)  # each once: the refused run appended nothing
    assert len(stub.requests) == n and len(read_rows(out / "predictions.jsonl")[0]) == n


def test_a_failed_start_does_not_block_the_corrected_rerun(wordnet_rows, tmp_path, monkeypatch, capsys):
    """A missing API key stops the run before any sample; the rerun with another temperature and the key
    set is no 'other setup' (there are no samples to mix with)."""
    from inference.stub_server import StubServer

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "out"
    with StubServer("openai") as stub:
        argv = [
            "--backend",
            "openai",
            "--model",
            "model-x",
            "--input",
            str(wordnet_rows),
            "--output-dir",
            str(out),
            "--base-url",
            stub.base_url,
            "--max-items",
            "3",
        ]
        assert infer.main(argv + ["--temperature", "1.3"]) == 2
        assert "set the API key in the environment variable OPENAI_API_KEY" in capsys.readouterr().err
        assert not (out / ".lock").exists()
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        assert infer.main(argv + ["--temperature", "0.7"]) == 0
    assert len(read_rows(out / "predictions.jsonl")[0]) == 3
    assert json.loads((out / "config.json").read_text())["temperature"] == 0.7
    assert {r["body"]["temperature"] for r in stub.requests} == {0.7}


def test_api_rows_keep_the_raw_answer_and_count_what_the_parser_changed(urban_rows, tmp_path, monkeypatch):
    from evaluation.predictions import read_predictions
    from inference.stub_server import StubServer, stub_answer

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    records = load_records(urban_rows)
    argv = ["--backend", "openai", "--model", "gpt-x", "--input", str(urban_rows)]
    with StubServer("openai") as stub:
        assert infer.main(argv + ["--output-dir", str(tmp_path / "auto"), "--base-url", stub.base_url]) == 0
        assert (
            infer.main(
                argv + ["--output-dir", str(tmp_path / "never"), "--base-url", stub.base_url, "--parse-answer", "never"]
            )
            == 0
        )
    prompts = {
        r.id: infer.item_prompt("word_interpretation", i, "")
        for r, i in zip(records, build_items("word_interpretation", records, range(1, 7), 42))
    }
    for mode, parsed in (("auto", True), ("never", False)):
        preds, _ = read_rows(tmp_path / mode / "predictions.jsonl")
        summary = json.loads((tmp_path / mode / "summary.json").read_text())
        assert summary["parse_answer"] is parsed and summary["parser_changed"] == (6 if parsed else 0)
        for pred in preds:
            assert pred["raw"] == stub_answer(prompts[pred["id"]])  # the answer as the API sent it
            as_written = " ".join(pred["raw"].split())
            assert pred["prediction"] == (f"a definition of {pred['term']}" if parsed else as_written)
        assert len(read_predictions(tmp_path / mode / "predictions.jsonl")) == 6  # evaluate reads the new rows


def test_local_answers_are_scored_as_generated_unless_asked(local, urban_rows, tmp_path):
    from prompts.parse import parse_definition

    assert local(urban_rows, tmp_path / "auto", "--greedy") == 0
    assert local(urban_rows, tmp_path / "always", "--greedy", "--parse-answer", "always") == 0
    auto, _ = read_rows(tmp_path / "auto" / "predictions.jsonl")
    always, _ = read_rows(tmp_path / "always" / "predictions.jsonl")
    assert [r["raw"] for r in auto] == [r["raw"] for r in always]
    assert all(r["prediction"] == " ".join(r["raw"].split()) for r in auto)
    assert all(r["prediction"] == parse_definition(r["raw"], r["term"]) for r in always)
    summaries = [json.loads((tmp_path / m / "summary.json").read_text()) for m in ("auto", "always")]
    assert summaries[0]["parser_changed"] == 0 and summaries[0]["parse_answer"] is False
    assert summaries[1]["parser_changed"] == sum(a["prediction"] != b["prediction"] for a, b in zip(auto, always))


def test_validation_and_evaluation_read_the_same_text(local, smol_backend, urban_rows, tmp_path):
    """Training-time validation BLEU and `infer` + `evaluate` score the same text for the same model output
    (validation decodes greedily without a repetition penalty: so does this run)."""
    from prompts.parse import parse_definition
    from training.sft.validation import generate_definitions

    records = load_records(urban_rows)
    assert local(urban_rows, tmp_path, "--greedy", "--repetition-penalty", "1.0") == 0
    preds = {r["id"]: r["prediction"] for r in read_rows(tmp_path / "predictions.jsonl")[0]}
    valid = generate_definitions(smol_backend.model, smol_backend.tokenizer, records, batch_size=1, max_new_tokens=8)
    assert valid == [preds[r.id] for r in records]
    # ... and the chatty-answer parser would have changed some of them.
    assert any(parse_definition(text, r.term) != text for text, r in zip(valid, records))


def test_stop_cuts_the_prediction_and_raw_keeps_what_the_model_wrote(local, urban_rows, tmp_path):
    """--stop . --stop ';': each prediction is the text before the first stop; `raw` keeps the model's text
    and summary.json counts the cut rows. SmolLM2 numbers its answers ("2. A person ..."): "2" is kept."""
    assert local(urban_rows, tmp_path / "full", "--greedy", "--max-new-tokens", 12) == 0
    assert local(urban_rows, tmp_path, "--greedy", "--stop", ".", "--stop", ";", "--max-new-tokens", 12) == 0
    full, _ = read_rows(tmp_path / "full" / "predictions.jsonl")
    preds, _ = read_rows(tmp_path / "predictions.jsonl")
    summary = json.loads((tmp_path / "summary.json").read_text())
    cut = 0
    for whole, row in zip(full, preds, strict=True):
        raw = row["raw"]
        assert whole["raw"].startswith(raw)
        before = raw[: min([i for i in (raw.find("."), raw.find(";")) if i >= 0], default=len(raw))]
        cut += before != raw
        if " ".join(before.split()):
            assert row["prediction"] == " ".join(before.split()) and row["error"] is None
        else:  # nothing before the stop: an error row that keeps the raw text, counted as failed
            assert row["prediction"] is None and row["error"].startswith("no answer in the output")
    assert cut >= 2 and summary["stop_cut"] == cut and summary["parser_changed"] == 0


def test_block_term_and_beams_through_the_cli(local, urban_rows, tmp_path):
    """--block-term keeps every term (as written, lower-cased, capitalised) out of its greedy definition;
    --num-beams 2 rows keep a log-prob."""
    from inference.decoding import term_variants

    written = lambda row: [v for v in term_variants(row["term"]) if v in row["raw"]]
    assert local(urban_rows, tmp_path / "plain", "--greedy", "--max-new-tokens", 20) == 0
    assert local(urban_rows, tmp_path / "blocked", "--greedy", "--block-term", "--max-new-tokens", 20) == 0
    plain, _ = read_rows(tmp_path / "plain" / "predictions.jsonl")
    blocked, _ = read_rows(tmp_path / "blocked" / "predictions.jsonl")
    assert any(written(r) for r in plain)  # the filter has something to do
    assert not any(written(r) for r in blocked)
    args = ("--greedy", "--num-beams", 2, "--length-penalty", 0.8, "--max-new-tokens", 6)
    assert local(urban_rows, tmp_path / "beams", *args) == 0
    beams, _ = read_rows(tmp_path / "beams" / "predictions.jsonl")
    assert len(beams) == 6 and all(r["logprob"] < 0 for r in beams)
    config = json.loads((tmp_path / "beams" / "config.json").read_text())
    assert (config["num_beams"], config["length_penalty"]) == (2, 0.8)


@pytest.mark.parametrize("utility", ["bleu", "bertscore"])
def test_best_of_n_mbr_picks_the_sample_the_others_agree_with(local, urban_rows, tmp_path, utility, minilm_dir):
    """--selection mbr: the chosen sample has the highest mean utility against the input's other samples
    (BLEU: evaluation's Moses BLEU; BERTScore F1 on MiniLM layer 6, recomputed with bert-score here)."""
    args = ("--n-samples", 3, "--selection", "mbr", "--mbr-utility", utility, "--seed", 5, "--device", "cpu")
    assert local(urban_rows, tmp_path, *args) == 0
    samples, _ = read_rows(tmp_path / "samples.jsonl")
    preds, _ = read_rows(tmp_path / "predictions.jsonl")
    if utility == "bleu":
        from evaluation.bleu import moses_sentence_bleu

        pair = lambda h, r: moses_sentence_bleu(h, [r])
    else:
        from bert_score import BERTScorer

        scorer = BERTScorer(model_type=str(minilm_dir), num_layers=6, lang="en", device="cpu")
        pair = lambda h, r: scorer.score([h], [r])[2].item()
    assert json.loads((tmp_path / "summary.json").read_text())["selection"] == "mbr"
    differs = 0
    for pred in preds:
        mine = sorted(
            (s for s in samples if s["id"] == pred["id"] and s["error"] is None), key=lambda s: s["sample_idx"]
        )
        means = [
            sum(pair(a["prediction"], b["prediction"]) for b in mine if b is not a) / (len(mine) - 1) for a in mine
        ]
        best = max(range(len(mine)), key=lambda i: (round(means[i], 6), -i))
        assert pred["sample_idx"] == mine[best]["sample_idx"]
        differs += best != 0
    assert differs  # MBR is not the first sample everywhere
