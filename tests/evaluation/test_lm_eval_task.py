"""The lm-evaluation-harness task (evaluation/lm_eval_tasks) through lm-eval's own loader, on real Urban rows:
the toolkit's prompt, the `max` protocol's references, and scores equal to the evaluate stage's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dataset.records import load_records, normalize_space
from evaluation.api import score
from evaluation.config import EvaluateConfig
from evaluation.evaluate import evaluate
from evaluation.lm_eval_tasks import definition_modeling as task_module
from evaluation.protocols import get_protocol, reference_lists
from prompts.builder import build_prompt
from tests.conftest import REPO_ROOT

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.tasks import TaskManager  # noqa: E402

TASKS = REPO_ROOT / "evaluation" / "lm_eval_tasks"
TASK = "definition_modeling"


@pytest.fixture(scope="module")
def data_dir(urban_jsonl, tmp_path_factory) -> Path:
    """preprocess's output folder for the Urban test split, with five other real rows as the few-shot pool."""
    out = tmp_path_factory.mktemp("lm_eval_data")
    shutil.copy(urban_jsonl.parent / "test.jsonl", out / "test.jsonl")
    lines = (urban_jsonl.parent / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "train.jsonl").write_text("".join(lines[100:105]), encoding="utf-8")
    return out


def load_task(data_dir: Path):
    manager = TaskManager(include_path=str(TASKS), include_defaults=False, metadata={"data_dir": str(data_dir)})
    return manager.load([TASK])["tasks"][TASK]


def test_the_task_loads_and_builds_the_toolkit_prompt_and_references_for_real_rows(data_dir):
    task = load_task(data_dir)
    records = load_records(data_dir / "test.jsonl")
    assert len(task.test_docs()) == len(records) == 15375
    task.build_all_requests(limit=3, rank=0, world_size=1)
    refs = reference_lists(records[:3], records, get_protocol("max"))
    assert len(task.instances) == 3
    for inst, record, expected in zip(task.instances, records, refs):
        prompt, gen = inst.arguments
        assert inst.doc["id"] == record.id
        assert prompt == build_prompt(record.term, record.context)
        assert gen["until"] == ["\n\n"] and gen["do_sample"] is False and gen["max_gen_toks"] == 64
        assert inst.doc["references"] == expected and len(expected) > 1  # "betty crocker": one-to-many


def test_few_shot_prompts_are_the_toolkit_demos(data_dir):
    task = load_task(data_dir)
    pool = load_records(data_dir / "train.jsonl")
    doc = task.test_docs()[0]
    prompt = task.fewshot_context(doc, num_fewshot=1)
    demos = [build_prompt(doc["term"], doc["context"], demos=[(r.term, r.context, r.definition)]) for r in pool]
    assert prompt in demos


def test_process_results_is_the_max_protocol_score_of_the_toolkit(data_dir):
    task = load_task(data_dir)
    docs = task.test_docs()
    records = load_records(data_dir / "test.jsonl")
    # the gold of another context of the same term: 100 under `max` (every definition of the term is a reference)
    other = docs[1]["definition"]
    assert other != docs[0]["definition"]
    got = task.process_results(docs[0], [other])
    assert got == {"bleu": 100.0, "rougeL": 100.0, "empty": 0.0}
    for i, prediction in [(0, "a woman who bakes cakes"), (2, "a kind of drink"), (3, "")]:
        got = task.process_results(docs[i], [prediction])
        want = score([prediction], [records[i]], pool=records)
        assert got == {"bleu": want["bleu"], "rougeL": want["rougeL"], "empty": float(want["n_empty"])}


def test_a_missing_data_folder_is_refused_naming_the_file_and_the_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(task_module.DATA_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=r"empty/test\.jsonl.*data_dir.*LMLEXICON_LM_EVAL_DATA"):
        load_task(tmp_path / "empty")


def test_the_data_folder_comes_from_the_environment_without_metadata(data_dir, monkeypatch):
    monkeypatch.setenv(task_module.DATA_ENV, str(data_dir))
    assert task_module.data_folder() == data_dir
    with pytest.raises(FileNotFoundError, match="lm_eval_tasks"):  # --metadata's data_dir wins over the variable
        task_module.data_folder(str(TASKS))


@pytest.mark.slow
def test_simple_evaluate_with_smollm2_answers_as_infer_and_scores_as_evaluate(data_dir, smollm2_dir, tmp_path):
    """Greedy SmolLM2-135M answers from lm-eval's HF backend are `infer`'s (cut at the stop line), and the task's
    BLEU and ROUGE-L are those `evaluate` gives the same answers as a predictions file."""
    import torch

    from inference.infer import main as infer

    torch.set_num_threads(2)
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={smollm2_dir},add_bos_token=True,dtype=float32",
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False, metadata={"data_dir": str(data_dir)}),
        gen_kwargs={"max_gen_toks": 16},
        limit=3,
        batch_size=1,
        device="cpu",
        log_samples=True,
        bootstrap_iters=0,
    )
    samples = out["samples"][TASK]
    assert len(samples) == 3 and all(s["filtered_resps"][0].strip() for s in samples)
    inputs = tmp_path / "input.jsonl"
    inputs.write_text("".join(r.to_json() + "\n" for r in load_records(data_dir / "test.jsonl")[:3]), encoding="utf-8")
    args = ["--input", inputs, "--output-dir", tmp_path / "infer", "--model", smollm2_dir, "--greedy"]
    assert infer([str(a) for a in [*args, "--max-new-tokens", 16, "--batch-size", 1, "--device", "cpu"]]) == 0
    rows = [json.loads(line) for line in (tmp_path / "infer" / "predictions.jsonl").read_text().splitlines()]
    raw = {r["id"]: r["raw"] for r in rows}
    assert [s["filtered_resps"][0] for s in samples] == [
        normalize_space(raw[s["doc"]["id"]].split("\n\n")[0]) for s in samples
    ]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        "".join(json.dumps({"id": s["doc"]["id"], "prediction": s["filtered_resps"][0]}) + "\n" for s in samples),
        encoding="utf-8",
    )
    cfg = EvaluateConfig(
        predictions=[str(predictions)],
        references=str(data_dir / "test.jsonl"),
        metrics=["bleu", "rouge"],
        protocol="max",
        output_dir=str(tmp_path / "scores"),
    )
    toolkit = evaluate(cfg)
    results = out["results"][TASK]
    assert toolkit["counts"]["predictions"] == 3
    assert results["bleu,definition"] == pytest.approx(toolkit["bleu"], abs=1e-9)
    assert results["rougeL,definition"] == pytest.approx(toolkit["rougeL"], abs=1e-9)
    assert results["empty,definition"] == 0.0
