"""The original README's command lines, typed as they were, run as the stages on pico models and real rows."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import main
from dataset.records import load_records
from inference.stub_server import StubServer
from run_config.cli import config_from_args
from run_config.loader import load_config
from scripts import original_commands as oc
from tests.conftest import REPO_ROOT
from tests.helpers.train import write_split
from training.deepspeed_config import free_port
from training.sft.config import TrainConfig

DEEPSPEED = Path(sys.executable).parent / "deepspeed"
TEST = "dataset/3D-EX/test.jsonl"  # the README's input path, relative to the folder the command runs in
PROMPT = "prompts/word-interpretation.txt"
KEY = "-".join(("test", "key", "from", "env"))  # built at run time: no key-shaped literal in the repo


@pytest.fixture(scope="module")
def layout(urban_splits, tmp_path_factory) -> Path:
    """A working folder laid out as the original's README expects: dataset/3D-EX/{train,test}.jsonl."""
    train, valid = urban_splits
    root = tmp_path_factory.mktemp("orig")
    write_split(root / "dataset/3D-EX/train.jsonl", load_records(train), "train")
    write_split(root / TEST, load_records(valid)[:8], "test")
    return root


@pytest.fixture
def work(layout, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the layout, made the current folder (where the commands write results/)."""
    shutil.copytree(layout / "dataset", tmp_path / "dataset")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def readme_local(model: Path) -> list[str]:
    return [
        "--task", "word-interpretation", "--model", str(model), "--prompt_path", PROMPT, "--input_path", TEST,
        "--shot_num", "0", "--max_tokens", "64", "--run_local_model", "--evaluate",
    ]  # fmt: skip


def readme_api(*extra: str) -> list[str]:
    return [
        "--task", "word-interpretation", "--model", "gpt-4-turbo", *extra, "--prompt_path", PROMPT,
        "--input_path", TEST, "--shot_num", "3", "--evaluate",
    ]  # fmt: skip


def announced(err: str, prog: str) -> list[tuple[str, list[str]]]:
    """The equivalent commands printed on stderr, as (stage, argv); asserts they are printed once."""
    head = f"{prog}: the original LM-Lexicon command line; its equivalent here (running it now):"
    assert err.count(head) == 1, err
    lines = itertools.takewhile(lambda line: line.startswith("  "), err.split(head, 1)[1].splitlines()[1:])
    return [(parts[2], parts[3:]) for parts in map(shlex.split, lines)]


def infer_argv_matches_config(argv: list[str], out: Path) -> None:
    """The printed infer command resolves to exactly the config the run wrote."""
    from inference import infer
    from inference.config import InferConfig

    cfg = config_from_args(infer.build_parser().parse_args(argv), InferConfig)
    assert cfg.model_dump(mode="json") == json.loads((out / "config.json").read_text())


def test_readme_local_inference_with_evaluate(work, tiny_llama, capsys):
    assert main.main(readme_local(tiny_llama)) == 0
    (infer, infer_argv), (evaluate, eval_argv) = announced(capsys.readouterr().err, "main.py")
    assert infer == "infer" and evaluate == "evaluate"
    out = Path("results/3D-EX") / f"word-interpretation-{str(tiny_llama).strip('/').replace('/', '-')}.test"
    assert infer_argv[infer_argv.index("--output-dir") + 1] == str(out)
    for flag, value in [("--backend", "local"), ("--max-new-tokens", "64"), ("--max-items", "100")]:
        assert infer_argv[infer_argv.index(flag) + 1] == value
    assert "--icl-mode" not in infer_argv  # --shot_num 0
    infer_argv_matches_config(infer_argv, out)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r.id for r in load_records(TEST)]  # all 8 (< max_query 100), in order
    assert eval_argv == ["--predictions", str(out / "predictions.jsonl"), "--references", TEST, "--output-dir",
                         str(out / "eval")]  # fmt: skip
    scores = json.loads((out / "eval/scores.json").read_text())
    assert set(scores["systems"][str(tiny_llama)]["mean"]) >= {"bleu", "rougeL"}


def test_readme_api_inference_key_from_env_shots_from_train_split(work, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with StubServer("openai") as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)  # the vendor's default URL, pointed at the stub
        assert main.main(readme_api()) == 0
    (_, infer_argv), (_, _) = announced(capsys.readouterr().err, "main.py")
    assert infer_argv[infer_argv.index("--backend") + 1] == "openai"
    assert infer_argv[infer_argv.index("--icl-examples") + 1] == "dataset/3D-EX/train.jsonl"
    train_terms = {r.term for r in load_records("dataset/3D-EX/train.jsonl")}
    test = load_records(TEST)
    assert len(stub.requests) == len(test)
    for req in stub.requests:
        assert req["body"]["model"] == "gpt-4-turbo"
        user = next(m["content"] for m in req["body"]["messages"] if m["role"] == "user")
        asked = oc_terms(user)
        assert len(asked) == 4 and set(asked[:3]) <= train_terms  # 3 demos from the train split, then the input
    out = Path("results/3D-EX/word-interpretation-gpt-4-turbo.test")
    rows = {json.loads(line)["term"]: json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()}
    assert {r.term for r in test} == set(rows)
    assert all(row["prediction"] == f"a definition of {term}" for term, row in rows.items())  # parsed answers
    assert "gpt-4-turbo" in json.loads((out / "eval/scores.json").read_text())["systems"]


def oc_terms(prompt: str) -> list[str]:
    from inference.stub_server import TERM

    return TERM.findall(prompt)


def test_api_key_on_the_command_line_is_refused_naming_the_variable(work, capsys):
    assert main.main(readme_api("--api_key", KEY)) == 2
    err = capsys.readouterr().err
    assert "--api_key" in err and "set OPENAI_API_KEY" in err and KEY not in err
    assert "its equivalent here" not in err and not Path("results").exists()  # refused before any work


def test_unknown_original_flag_is_a_clear_error(work, capsys):
    with pytest.raises(SystemExit) as exc:
        main.main(readme_api("--api-key", KEY))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--api-key: not a flag of the original inference/main.py" in err and KEY not in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--proxy", "http://127.0.0.1:1"], "--proxy: set HTTPS_PROXY"),
        (["--with_vllm"], "--with_vllm: use `python main.py infer --backend vllm`"),
        (["--presence_penalty", "0.5"], "--presence_penalty: not supported"),
        (["--retrieval_policy", "sequencial"], "--retrieval_policy sequencial: use random or topk"),
        (["--num_return_sequences", "4"], "--num_return_sequences: the original sent one request"),
        (["--output_format", "csv"], "--output_format csv"),
        (["--example_path", "nowhere.jsonl"], "demos come from nowhere.jsonl: no such file"),
    ],
)
def test_original_flags_that_cannot_work_are_refused(work, extra, message):
    with pytest.raises(oc.ConfigError, match=message.replace("(", r"\(")):
        oc.translate_inference(oc.inference_parser("main.py").parse_args(readme_api(*extra)))


def test_a_custom_prompt_file_is_refused(work):
    argv = readme_api()
    argv[argv.index(PROMPT)] = "prompts/word-interpretation-new.txt"
    with pytest.raises(oc.ConfigError, match="a custom prompt file cannot be used"):
        oc.translate_inference(oc.inference_parser("main.py").parse_args(argv))


@pytest.mark.parametrize(
    "model, extra, backend",
    [
        ("claude-3-opus-20240229", [], "anthropic"),
        ("gemini-1.5-pro", [], "gemini"),
        ("claude-3-opus-20240229", ["--base_url", "http://127.0.0.1:8888/v1"], "openai"),  # via an OpenAI proxy
        ("my-vllm-served-model", ["--base_url", "http://127.0.0.1:8888/v1"], "openai"),
    ],
)
def test_api_models_by_name_go_to_the_matching_backend(work, model, extra, backend):
    argv = readme_api(*extra, "--temperature", "0", "--top_k", "40")
    argv[argv.index("gpt-4-turbo")] = model
    t = oc.translate_inference(oc.inference_parser("main.py").parse_args(argv))
    infer_argv = t.commands[0][1]
    assert infer_argv[infer_argv.index("--backend") + 1] == backend
    assert "--greedy" in infer_argv and "--temperature" not in infer_argv  # the original's temperature 0
    assert t.notes == ["without effect, as in the original (which never used them here): --top_k"]


def test_inference_main_py_as_a_file(work):
    """`python inference/main.py` with the toolkit importable (PYTHONPATH here, `pip install -e .` for users)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OPENAI_API_KEY": KEY}
    with StubServer("openai") as stub:
        env["OPENAI_BASE_URL"] = stub.base_url
        cmd = [sys.executable, str(REPO_ROOT / "inference/main.py"), *readme_api("--max_query", "5")]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [(_, infer_argv), _] = announced(proc.stderr, "inference/main.py")
    assert infer_argv[infer_argv.index("--max-items") + 1] == "5" and len(stub.requests) == 5
    out = work / "results/3D-EX/word-interpretation-gpt-4-turbo.test"
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 5
    assert (out / "eval/scores.json").is_file()


def original_train_config(path: Path, model: Path, train: Path, valid: Path, out: Path) -> Path:
    """A training config in the original's format (its README keys), plus keys of ours that keep it short."""
    cfg = {
        "model_type": "llama-3", "model_name_or_path": str(model), "do_train": "True", "do_eval": "True",
        "do_predict": "True", "data_path_train": str(train), "data_path_valid": str(valid),
        "data_path_test": str(valid), "output_dir": str(out), "batch_size": 8, "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4, "num_epochs": 1, "learning_rate": 1e-3, "cutoff_len": 64,
        "max_steps": 2, "eval_times": 1, "eval_samples": 4, "eval_max_new_tokens": 4, "precision": "fp32",
    }  # fmt: skip
    path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return path


def test_shipped_llama_config_is_the_original_format():
    data = json.loads((REPO_ROOT / "run_config/llama_config.json").read_text())
    assert {"model_type", "data_path_train", "num_epochs", "batch_size", "do_train"} <= set(data)
    cfg = load_config(REPO_ROOT / "run_config/llama_config.json", TrainConfig)
    assert (cfg.model_name_or_path, cfg.train_file, cfg.valid_file) == (
        "meta-llama/Meta-Llama-3-8B",
        "dataset/3D-EX/train.jsonl",
        "dataset/3D-EX/valid.jsonl",
    )
    assert (cfg.global_batch_size, cfg.per_device_train_batch_size, cfg.num_train_epochs) == (32, 2, 3.0)


def test_readme_deepspeed_and_lora_flags_map_onto_train(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    argv = ["--model_config", "run_config/llama_config.json", "--deepspeed", "run_config/deepspeed_config_zero2.json"]
    t = oc.translate_finetune(oc.finetune_parser("finetune.py").parse_args([*argv, "--use_lora"]), {"WORLD_SIZE": "4"})
    assert t.lines() == [
        "deepspeed --num_gpus=4 main.py train --config run_config/llama_config.json "
        "--deepspeed run_config/ds_zero2_offload.json --use-lora"
    ]
    assert "deepspeed_config_zero2.json: not shipped" in t.notes[0]


def test_readme_finetune_py_as_a_file(tiny_llama, urban_splits, tmp_path):
    train, valid = urban_splits
    cfg = original_train_config(tmp_path / "llama_config.json", tiny_llama, train, valid, tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "training/finetune.py", "--model_config", str(cfg)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert announced(proc.stderr, "training/finetune.py") == [("train", ["--config", str(cfg)])]
    summary = json.loads((tmp_path / "out/train_summary.json").read_text())
    assert summary["global_step"] == 2 and (tmp_path / "out/model.safetensors").is_file()


def test_readme_finetune_use_lora(tiny_llama, urban_splits, tmp_path, capsys):
    train, valid = urban_splits
    cfg = original_train_config(tmp_path / "llama_config.json", tiny_llama, train, valid, tmp_path / "out")
    assert oc.finetune_main(["--model_config", str(cfg), "--use_lora"]) == 0
    assert announced(capsys.readouterr().err, "training/finetune.py") == [
        ("train", ["--config", str(cfg), "--use-lora"])
    ]
    assert (tmp_path / "out/adapter/adapter_config.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not DEEPSPEED.is_file(), reason="deepspeed launcher not installed")
def test_readme_finetune_under_the_deepspeed_launcher(tiny_llama, urban_splits, tmp_path):
    train, valid = urban_splits
    cfg = original_train_config(tmp_path / "llama_config.json", tiny_llama, train, valid, tmp_path / "out")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    env["PATH"] = f"{DEEPSPEED.parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(DEEPSPEED), "--num_gpus=2", "--master_port", str(free_port()), "training/finetune.py"]
    cmd += ["--model_config", str(cfg), "--deepspeed", "run_config/ds_zero2.json"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    head = "training/finetune.py: the original LM-Lexicon command line; its equivalent here (running it now):"
    out = proc.stdout + proc.stderr
    assert out.count(head) == 1  # rank 0 only
    assert f"deepspeed --num_gpus=2 main.py train --config {cfg} --deepspeed run_config/ds_zero2.json" in out
    summary = json.loads((tmp_path / "out/train_summary.json").read_text())
    assert summary["plan"]["world_size"] == 2 and summary["global_step"] == 2
