"""Every stage that loads a model takes `device` and `dtype`, refuses a device this machine lacks before any work,
and hands both to the loader of its models (checked on the CPU with float32 and bfloat16)."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import pytest
import torch

import main as toolkit_main
from clustering.config import AssignConfig, ClusterConfig
from evaluation.config import EvaluateConfig
from inference.config import InferConfig
from inference.reward.config import RewardConfig
from run_config.devices import DTYPE_NAMES
from run_config.errors import ConfigError
from run_config.loader import load_config, section_problems
from tests.helpers.pico import perturbed_copy, pico_llama, write_minilm_clusters
from training.dskd.config import DSKDConfig
from training.moe.config import FinetuneRouterConfig
from training.sft.config import TrainConfig
from training.trainer_args import precision_flags

# stage module -> its config: every stage that loads a model
STAGES = {
    "clustering.cluster": ClusterConfig,
    "clustering.assign": AssignConfig,
    "training.train": TrainConfig,
    "training.dskd.cli": DSKDConfig,
    "training.moe.finetune_router": FinetuneRouterConfig,
    "inference.reward.train": RewardConfig,
    "inference.infer": InferConfig,
    "evaluation.evaluate": EvaluateConfig,
}
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")


def spy(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[dict]:
    """Record the arguments (by parameter name) and the result of every call of `owner.name`, calling it."""
    original = getattr(owner, name)
    signature = inspect.signature(original)
    calls: list[dict] = []

    def recorded(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        result = original(*args, **kwargs)
        calls.append({**bound.arguments, "result": result})
        return result

    monkeypatch.setattr(owner, name, recorded)
    return calls


def from_pretrained_spy(monkeypatch: pytest.MonkeyPatch, auto_class: type) -> list[dict]:
    """Record the kwargs and the model of every `auto_class.from_pretrained` call."""
    original = auto_class.from_pretrained
    calls: list[dict] = []

    def recorded(*args, **kwargs):
        model = original(*args, **kwargs)
        calls.append({**kwargs, "path": str(args[0]), "model": model})
        return model

    monkeypatch.setattr(auto_class, "from_pretrained", recorded)
    return calls


def param(model: torch.nn.Module) -> torch.Tensor:
    return next(model.parameters())


@pytest.mark.parametrize("module", sorted(STAGES))
def test_each_stage_has_device_and_dtype_keys_and_flags(module):
    config = STAGES[module]
    assert {"device", "dtype"} <= set(config.model_fields)
    parser = importlib.import_module(module).build_parser()
    args, _ = parser.parse_known_args(["--device", "cpu", "--dtype", "bfloat16"])
    assert (args.device, args.dtype) == ("cpu", "bfloat16")
    problems = section_problems(config, {"device": "gpu", "dtype": "bf16"}, "run.json")
    assert any("device: value error, unknown device 'gpu'" in p for p in problems), problems
    assert any(p.startswith("run.json: dtype: input should be") for p in problems), problems


def test_dtype_names_have_one_owner():
    assert DTYPE_NAMES == ("float32", "bfloat16", "float16")
    for config in STAGES.values():
        names = set(config.model_fields["dtype"].annotation.__args__)
        assert names - {"auto"} == set(DTYPE_NAMES)


def test_train_keeps_model_dtype_as_the_original_name_of_dtype(tmp_path):
    base = {"model_name_or_path": "m", "train_file": "t", "output_dir": "o"}
    path = tmp_path / "train.json"
    path.write_text(json.dumps({**base, "model_dtype": "bfloat16"}), encoding="utf-8")
    assert load_config(path, TrainConfig).dtype == "bfloat16"
    path.write_text(json.dumps({**base, "model_dtype": "bfloat16", "dtype": "float32"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="'model_dtype' .* and 'dtype' both given"):
        load_config(path, TrainConfig)
    with pytest.raises(ConfigError, match="device cuda:1: training places rank r on cuda:r"):
        load_config(None, TrainConfig, {**base, "device": "cuda:1"})
    shipped = Path(__file__).resolve().parents[2] / "run_config" / "expert_llama3_8b.json"
    assert load_config(shipped, TrainConfig).dtype == "bfloat16"


@pytest.fixture(scope="module")
def predictions(urban_splits, tmp_path_factory) -> Path:
    """Real predictions file: each valid row's id with another row's real definition."""
    rows = [json.loads(line) for line in urban_splits[1].read_text(encoding="utf-8").splitlines()]
    path = tmp_path_factory.mktemp("preds") / "predictions.jsonl"
    shifted = rows[1:] + rows[:1]
    path.write_text(
        "".join(json.dumps({"id": r["id"], "prediction": s["definition"]}) + "\n" for r, s in zip(rows, shifted)),
        encoding="utf-8",
    )
    return path


@NO_GPU
@pytest.mark.parametrize(
    "stage",
    ["cluster", "train", "train-dskd", "distill", "finetune-router", "train-reward", "infer", "infer-vllm", "evaluate"],
)
def test_a_gpu_this_machine_lacks_is_refused_before_any_work(stage, tiny_llama, urban_splits, predictions, tmp_path):
    train, valid = map(str, urban_splits)
    out = tmp_path / "out" / "run"
    model = str(tiny_llama)
    argv = {
        "cluster": ["cluster", "--input", train, "--output-dir", str(out)],
        "train": ["train", "--model-name-or-path", model, "--train-file", train, "--valid-file", valid],
        "train-dskd": ["train", "--objective", "dskd", "--teacher-model", model, "--data-path-train", train],
        "distill": ["distill", "--objective", "ce", "--teacher-model", model, "--data-path-train", train],
        "finetune-router": ["finetune-router", "--moe-dir", model, "--train-file", train, "--policy", "token"],
        "train-reward": ["train-reward", "--train", train, "--valid", valid, "--policy-model", model],
        "infer": ["infer", "--input", valid, "--model", model],
        "infer-vllm": ["infer", "--backend", "vllm", "--input", valid, "--model", model],
        "evaluate": ["evaluate", "--predictions", str(predictions), "--references", valid, "--metrics", "bertscore"],
    }[stage]
    if "--output-dir" not in argv:
        argv += ["--output-dir", str(out)]
    if stage == "evaluate":
        argv += ["--bertscore-model", model, "--bertscore-num-layers", "1"]
    device = "cuda:0" if stage == "infer-vllm" else "cuda"  # vllm: auto keeps its router on the CPU
    code, err = _run_stage([*argv, "--device", device])
    prog = "distill" if stage == "train-dskd" else argv[0]  # train hands the dskd objective to distill
    assert code == 2 and err == [
        f"{prog}: error: device: {device} asked for, but torch sees no CUDA GPU (use auto or cpu)"
    ]
    assert not (tmp_path / "out").exists()


@NO_GPU
def test_evaluate_without_a_neural_metric_does_not_need_the_device(urban_splits, predictions, tmp_path):
    argv = ["evaluate", "--predictions", str(predictions), "--references", str(urban_splits[1])]
    code, err = _run_stage([*argv, "--output-dir", str(tmp_path / "ev"), "--metrics", "bleu", "--device", "cuda"])
    assert code == 0 and (tmp_path / "ev" / "scores.json").is_file()


def _run_stage(argv: list[str]) -> tuple[int, list[str]]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = toolkit_main.main(argv)
    return code, [line for line in err.getvalue().splitlines() if ": error: " in line]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cluster_embeds_on_the_device_in_the_dtype(dtype, minilm_dir, urban_splits, tmp_path, monkeypatch):
    import sentence_transformers

    calls = spy(monkeypatch, sentence_transformers, "SentenceTransformer")
    argv = ["cluster", "--input", str(urban_splits[0]), "--output-dir", str(tmp_path), "--num-clusters", "2"]
    argv += ["--embedder", str(minilm_dir), "--no-plot", "--device", "cpu", "--dtype", dtype]
    assert toolkit_main.main(argv) == 0
    (call,) = calls
    assert call["device"] == "cpu" and call["model_kwargs"] == {"dtype": getattr(torch, dtype)}
    assert param(call["result"]).dtype == getattr(torch, dtype)
    assert json.loads((tmp_path / "report.json").read_text())["sizes"] == [100, 100]


def test_train_loads_the_weights_in_the_dtype_and_trains_on_the_device(tiny_llama, urban_splits, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tests.helpers.train import tiny_args
    from training.sft import trainer

    loads = from_pretrained_spy(monkeypatch, AutoModelForCausalLM)
    built = spy(monkeypatch, trainer, "build_training_args")
    argv = tiny_args(tiny_llama, *urban_splits, tmp_path / "run", "--max-steps", "1", "--no-do-validation")
    assert toolkit_main.main(["train", *argv, "--device", "cpu", "--dtype", "bfloat16"]) == 0
    assert [c["dtype"] for c in loads] == [torch.bfloat16] and param(loads[0]["model"]).dtype == torch.bfloat16
    assert built[0]["result"].use_cpu is True
    cfg = load_config(None, TrainConfig, {"model_name_or_path": "m", "output_dir": "o", "precision": "bf16"})
    on_gpu = trainer.on_gpu(cfg.model_copy(update={"device": "cpu"}))
    assert precision_flags(cfg.precision, on_gpu) == {"bf16": False, "fp16": False}


def test_finetune_router_loads_the_moe_on_the_device_in_the_dtype(wordnet_lexicon, tmp_path, monkeypatch):
    from training.moe import finetune_router
    from training.moe.config import MergeConfig
    from training.moe.merge import merge
    from training.moe.safetensors_stream import CheckpointReader

    base = pico_llama(tmp_path / "base", seed=0)
    experts = [perturbed_copy(base, tmp_path / f"e{i}", seed=i, scale=0.05) for i in range(2)]
    merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(tmp_path / "moe"), policy="token"))
    loads = spy(monkeypatch, finetune_router, "load_routed_moe")
    argv = ["finetune-router", "--moe-dir", str(tmp_path / "moe"), "--train-file", str(wordnet_lexicon / "train.jsonl")]
    argv += ["--output-dir", str(tmp_path / "ft"), "--max-records", "4", "--batch-size", "2"]
    assert toolkit_main.main([*argv, "--device", "cpu", "--dtype", "bfloat16"]) == 0
    assert [(c["device"], c["dtype"]) for c in loads] == [("cpu", torch.bfloat16)]
    assert loads[0]["result"].model.dtype == torch.bfloat16
    reader = CheckpointReader(tmp_path / "ft")
    assert {reader.read(k).dtype for k in reader.info} == {torch.bfloat16}  # saved as loaded, routers included


@pytest.mark.parametrize("via", ["distill", "train"])
def test_dskd_loads_teacher_and_student_on_the_device_in_the_dtype(
    via, tiny_llama, urban_splits, tmp_path, monkeypatch
):
    from training.dskd import student

    loads = spy(monkeypatch, student, "load_causal_lm")
    objective = "ce" if via == "distill" else "dskd"  # train hands only its dskd objective to distill
    argv = [
        via,
        "--objective",
        objective,
        "--teacher-model",
        str(tiny_llama),
        "--data-path-train",
        str(urban_splits[0]),
    ]
    argv += ["--sense-max-texts", "8", "--sense-k", "2"]
    argv += ["--output-dir", str(tmp_path / "run"), "--student-layers", "1", "--trainable-layers", "1"]
    argv += ["--max-steps", "1", "--max-train-samples", "4", "--per-device-train-batch-size", "2"]
    assert toolkit_main.main([*argv, "--device", "cpu", "--dtype", "bfloat16"]) == 0
    assert [(c["dtype"], str(c["device"])) for c in loads] == [("bfloat16", "cpu")] * 2  # teacher, student
    assert all(param(c["result"]).dtype == torch.bfloat16 for c in loads)


def test_train_reward_loads_policy_and_reward_model_on_the_device_in_the_dtype(
    tiny_llama, urban_splits, tmp_path, monkeypatch
):
    from inference import local
    from inference.reward import train

    policy = spy(monkeypatch, local, "load_causal_lm")
    reward = spy(monkeypatch, train, "load_reward_model")
    argv = ["train-reward", "--train", str(urban_splits[0]), "--valid", str(urban_splits[1])]
    argv += ["--policy-model", str(tiny_llama), "--output-dir", str(tmp_path / "orm"), "--max-train-prompts", "2"]
    argv += ["--max-valid-prompts", "2", "--samples-per-prompt", "2", "--negatives-per-prompt", "1"]
    argv += ["--max-new-tokens", "4", "--batch-size", "2", "--device", "cpu", "--dtype", "bfloat16"]
    assert toolkit_main.main(argv) == 0
    assert [(c["device"], c["dtype"]) for c in policy] == [("cpu", "bfloat16")]
    assert [(c["device"], c["dtype"]) for c in reward] == [("cpu", torch.bfloat16)]
    assert param(policy[0]["result"][0]).dtype == param(reward[0]["result"][0]).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_infer_loads_a_dense_model_on_the_device_in_the_dtype(dtype, smollm2_dir, urban_splits, tmp_path, monkeypatch):
    from inference import local

    loads = spy(monkeypatch, local, "load_causal_lm")
    argv = ["infer", "--input", str(urban_splits[1]), "--model", str(smollm2_dir), "--output-dir", str(tmp_path)]
    argv += ["--max-items", "2", "--greedy", "--max-new-tokens", "6", "--device", "cpu", "--dtype", dtype]
    assert toolkit_main.main(argv) == 0
    assert [(c["device"], c["dtype"]) for c in loads] == [("cpu", dtype)]
    assert param(loads[0]["result"][0]).dtype == getattr(torch, dtype)


def test_infer_loads_a_merged_moe_on_the_device_in_the_dtype(urban_splits, tmp_path, monkeypatch):
    from training.moe import routing
    from training.moe.config import MergeConfig
    from training.moe.merge import merge

    base = pico_llama(tmp_path / "base", seed=0)
    experts = [perturbed_copy(base, tmp_path / f"e{i}", seed=i, scale=0.05) for i in range(2)]
    merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(tmp_path / "moe"), policy="token"))
    loads = spy(monkeypatch, routing, "load_routed_moe")
    argv = ["infer", "--input", str(urban_splits[1]), "--model", str(tmp_path / "moe"), "--output-dir"]
    argv += [str(tmp_path / "out"), "--max-items", "2", "--greedy", "--max-new-tokens", "3"]
    assert toolkit_main.main([*argv, "--device", "cpu", "--dtype", "bfloat16"]) == 0
    assert [(c["device"], c["dtype"]) for c in loads] == [("cpu", torch.bfloat16)]
    assert loads[0]["result"].model.dtype == torch.bfloat16 and loads[0]["result"].policy == "token"


def test_routed_moe_defaults_to_the_gpu_when_there_is_one(tmp_path):
    from training.moe.config import MergeConfig
    from training.moe.merge import merge
    from training.moe.routing import load_routed_moe

    base = pico_llama(tmp_path / "base", seed=0)
    merge(MergeConfig(experts=[str(base)] * 2, output_dir=str(tmp_path / "moe"), policy="token"))
    moe = load_routed_moe(tmp_path / "moe", dtype="bfloat16")
    assert param(moe.model).device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert moe.model.dtype == torch.bfloat16


def test_vllm_takes_the_dtype_and_routes_on_the_device_it_is_told(tmp_path, monkeypatch, data_3dex, minilm_dir):
    from inference import infer, vllm_backend
    from tests.helpers.train import urban_records
    from training.moe import routing
    from training.moe.config import MergeConfig
    from training.moe.export import export_all_dense
    from training.moe.merge import merge

    base = pico_llama(tmp_path / "base", seed=0)
    pairs = [(r.term, r.context) for r in urban_records(data_3dex, 16)]
    write_minilm_clusters(tmp_path / "clusters", pairs, 2, minilm_dir)
    merge(
        MergeConfig(
            experts=[str(base)] * 2,
            output_dir=str(tmp_path / "moe"),
            cluster_dir=str(tmp_path / "clusters"),
            policy="domain",
        )
    )
    exports = [str(p) for p in export_all_dense(tmp_path / "moe", tmp_path / "exports")]
    monkeypatch.setattr(vllm_backend, "import_vllm", lambda: "vllm")  # vllm is GPU-only: its engines never start here
    loads = spy(monkeypatch, routing, "load_routed_moe")
    cfg = load_config(
        None,
        InferConfig,
        {"input": "x", "model": str(tmp_path / "moe"), "output_dir": "o", "backend": "vllm", "dtype": "bfloat16"},
    )
    backend = infer.build_backend(cfg.model_copy(update={"domain_exports": exports}))
    assert backend.engine_args["dtype"] == "bfloat16"
    assert [(c["device"], c["dtype"]) for c in loads] == [("cpu", "bfloat16")]  # auto: the engines have the GPU
    assert infer.vllm_router_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_neural_metrics_encode_on_the_device_in_the_dtype(
    dtype, minilm_dir, urban_splits, predictions, tmp_path, monkeypatch
):
    import bert_score

    from evaluation import encoders

    encoders.load_encoder.cache_clear()
    loaded = spy(monkeypatch, encoders, "Encoder")
    scorers = spy(monkeypatch, bert_score, "BERTScorer")
    m = str(minilm_dir)
    argv = ["evaluate", "--predictions", str(predictions), "--references", str(urban_splits[1])]
    argv += ["--output-dir", str(tmp_path), "--metrics", "bertscore,moverscore,mauve", "--bertscore-model", m]
    argv += ["--bertscore-num-layers", "6", "--moverscore-model", m, "--mauve-model", m, "--mauve-num-buckets", "4"]
    try:
        assert toolkit_main.main([*argv, "--device", "cpu", "--dtype", dtype]) == 0
    finally:
        encoders.load_encoder.cache_clear()
    assert [(c["name"], c["device"], c["dtype"]) for c in loaded] == [(m, "cpu", dtype)]  # one for MoverScore and MAUVE
    assert all(param(c["result"].model).dtype == getattr(torch, dtype) for c in loaded)
    (scorer,) = scorers
    assert scorer["device"] == "cpu" and param(scorer["result"]._model).dtype == getattr(torch, dtype)
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert json.dumps(scores).count(f'"dtype": "{dtype}"') >= 3  # each neural metric's signature names it
