"""The GPU check's steps: each builds what it needs (idempotently, in the run's work folder) and returns its lines.

Models have SmolLM2-135M's (or all-MiniLM-L6-v2's) shape, built from the carried config and tokenizer with
random weights: speed does not depend on the weights' values. A dry run (CPU) shrinks every model to 2
layers and every workload to a few items, to prove each code path imports and runs. A line reads
`step=<name> ratio=<x> goal=<y> (...)` or `step=<name> skipped: <reason>`; the raw numbers of a step also go
to `<work>/results/<step>.json`. Goals: 0.9 for domain routing vs dense is the issue's; the others are this
check's own thresholds for "works as it should" (top-2 0.5, bf16 1.5, ZeRO-3 0.5, metrics 3, gpu tests
all passed, vLLM 2).
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scripts.gpu_payload import REPO_ROOT

TINY_LM = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}
TINY_LM_KV = {"num_key_value_heads": 2, "head_dim": 16}
TINY_MINILM = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
NUM_EXPERTS = 4
VLLM_LINES = ("vllm_dense_vs_hf", "vllm_moe_vs_hf")


@dataclass(frozen=True)
class Env:
    """Where a step reads the payload and writes, on which device, and whether at dry-run sizes."""

    payload: Path
    work: Path
    device: str
    dry_run: bool

    def size(self, full: int, tiny: int) -> int:
        return tiny if self.dry_run else full


def line(name: str, ratio: float, goal: float, detail: str) -> str:
    """One result line; `below goal` when the ratio misses it."""
    mark = "" if ratio >= goal else " below goal"
    return f"step={name} ratio={ratio:.2f} goal={goal}{mark} ({detail})"


def save_result(env: Env, step: str, data: dict) -> None:
    from run_config.runtime import write_json

    write_json(env.work / "results" / f"{step}.json", data)


def synced(env: Env, fn: Callable[[], object]) -> float:
    """Seconds `fn()` takes, the device's queue drained before and after."""
    import torch

    if env.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if env.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


# Builders (each returns at once when its folder is already there) ---------------------------------------
def _copy_except(src: Path, dest: Path, skip: tuple[str, ...]) -> None:
    for f in src.rglob("*"):
        if f.is_file() and f.relative_to(src).as_posix() not in skip:
            (dest / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / f.relative_to(src))


def random_lm(env: Env, seed: int) -> Path:
    """A SmolLM2-shaped causal LM with random weights (seed) and the real tokenizer. Seed 0 is saved where
    `run_config.assets.smollm2_path()` looks under the check's LMLEXICON_CACHE (`<work>/cache`)."""
    out = env.work / ("cache/models/smollm2-135m-instruct" if seed == 0 else f"experts/expert-{seed}")
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from run_config.runtime import staged_dir

    config = AutoConfig.from_pretrained(env.payload / "smollm2")
    if env.dry_run:
        config.update({**TINY_LM, **TINY_LM_KV})
    torch.manual_seed(seed)
    with torch.device(env.device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with staged_dir(out) as tmp:
        model.save_pretrained(tmp)
        _copy_except(env.payload / "smollm2", tmp, ("config.json", "generation_config.json"))
    return out


def random_minilm(env: Env) -> Path:
    """An all-MiniLM-L6-v2-shaped sentence-transformers folder with random weights and the real tokenizer."""
    out = env.work / "minilm"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModel

    from run_config.runtime import staged_dir

    config = AutoConfig.from_pretrained(env.payload / "minilm")
    if env.dry_run:
        config.update(TINY_MINILM)
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    with staged_dir(out) as tmp:
        model.save_pretrained(tmp)
        _copy_except(env.payload / "minilm", tmp, ("config.json",))
    return out


def clusters(env: Env) -> Path:
    """The cluster stage (semantic, balanced k-means, NUM_EXPERTS clusters) on the carried WordNet rows."""
    from clustering.cluster import cluster, is_up_to_date
    from clustering.config import ClusterConfig

    cfg = ClusterConfig(
        input=str(env.payload / "data" / "all.jsonl"),
        output_dir=str(env.work / "cluster"),
        num_clusters=NUM_EXPERTS,
        embedder=str(random_minilm(env)),
        device=env.device,
        plot=False,
        seed=0,
    )
    if not is_up_to_date(cfg):
        cluster(cfg)
    return Path(cfg.output_dir)


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def merged_moe(env: Env) -> Path:
    """The merge stage: NUM_EXPERTS random experts -> one bf16 Mixtral folder routed by domain (clusters above);
    with vLLM importable, also the per-domain dense exports it serves."""
    from training.moe.config import MergeConfig
    from training.moe.merge import is_up_to_date, merge

    cfg = MergeConfig(
        experts=[str(random_lm(env, seed)) for seed in range(NUM_EXPERTS)],
        output_dir=str(env.work / "moe"),
        cluster_dir=str(clusters(env)),
        policy="domain",
        top_k=2,
        dtype="bfloat16",
        dense_export_dir=str(env.work / "moe-exports") if vllm_importable() else None,
    )
    if not is_up_to_date(cfg):
        merge(cfg)
    return Path(cfg.output_dir)


def test_records(env: Env, n: int) -> list:
    from dataset.records import load_records

    return load_records(env.payload / "data" / "test.jsonl")[:n]


def requests_for(backend, records: list) -> list:
    """word_interpretation requests of `records`, as the infer stage builds them."""
    from inference.backend import Request
    from inference.tasks import build_items, item_prompt

    items = build_items("word_interpretation", records, list(range(1, len(records) + 1)), 42)
    return [Request(i.id, i.term, i.context, item_prompt("word_interpretation", i, backend.bos_token)) for i in items]


def generate_all(backend, requests: list, sampling) -> None:
    """Generate every request; a missing or failed generation is an error, not a faster run."""
    out = list(backend.generate(requests, sampling))
    failed = [g.item_id for g in out if g.error is not None or g.text is None]
    if len(out) != len(requests) or failed:
        raise RuntimeError(f"{backend.name}: {len(out)} generations for {len(requests)} requests, failed {failed[:3]}")


# Steps --------------------------------------------------------------------------------------------------
def step_moe(env: Env) -> list[str]:
    """Batched greedy generation (inference.local, bf16): dense expert vs the MoE under domain routing (one expert
    per sequence) and under token top-2, same prompts, rounds in rotating order after one warm-up batch each."""
    from inference.backend import Sampling
    from inference.local import LocalBackend

    n, batch, new = env.size(512, 8), env.size(128, 4), env.size(32, 4)
    dense = LocalBackend.from_path(str(random_lm(env, 0)), device=env.device, dtype="bfloat16", batch_size=batch)
    routed = LocalBackend.from_path(str(merged_moe(env)), device=env.device, dtype="bfloat16", batch_size=batch)
    requests = requests_for(dense, test_records(env, n))
    sampling = Sampling(greedy=True, max_new_tokens=new)
    runs = {"dense": (dense, None), "domain": (routed, "domain"), "token-top2": (routed, "token")}

    def run(name: str, reqs: list) -> float:
        backend, policy = runs[name]
        if policy:
            backend.moe.set_policy(policy)
        return synced(env, lambda: generate_all(backend, reqs, sampling))

    for name in runs:
        run(name, requests[:batch])  # warm-up
    seconds = dict.fromkeys(runs, 0.0)
    names = list(runs)
    for r in range(2):
        for name in names[r:] + names[:r]:
            seconds[name] += run(name, requests)
    per_s = {k: 2 * n / v for k, v in seconds.items()}
    save_result(env, "moe", {"prompts_per_s": per_s, "prompts": n, "batch": batch, "new_tokens": new})
    detail = f"{n} prompts x {new} new tokens, batch {batch}, bf16: " + ", ".join(
        f"{k} {v:.1f} prompts/s" for k, v in per_s.items()
    )
    return [
        line("moe_domain_vs_dense", per_s["domain"] / per_s["dense"], 0.9, detail),
        line("moe_token_top2_vs_dense", per_s["token-top2"] / per_s["dense"], 0.5, detail),
    ]


def _train_runtime(out: Path) -> float:
    from training.sft.trainer import LOG_FILE

    rows = [json.loads(s) for s in (out / LOG_FILE).read_text(encoding="utf-8").splitlines() if s.strip()]
    return float(next(r["train_runtime"] for r in rows if "train_runtime" in r))


def train_tokens_per_s(env: Env, tag: str, precision: str, deepspeed: str | None = None) -> dict:
    """Tokens/s of the train stage (training.sft.trainer.train) on the random SmolLM2: two runs of S and L
    steps, (L - S) steps' tokens over the difference of their train_runtime, so that fixed costs (first-step
    warm-up, the final checkpoint save) cancel."""
    from transformers import AutoTokenizer

    from dataset.records import load_records
    from training.data import encode_records
    from training.sft.config import TrainConfig
    from training.sft.trainer import train

    model, data = random_lm(env, 0), env.payload / "data" / "train.jsonl"
    batch, cutoff = env.size(64, 4), env.size(128, 64)
    short, long = env.size(5, 1), env.size(25, 6)
    runtimes = {}
    for steps in (short, long):
        out = env.work / f"train-{tag}-{steps}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = TrainConfig(
            model_name_or_path=str(model),
            train_file=str(data),
            output_dir=str(out),
            precision=precision,
            max_steps=steps,
            per_device_train_batch_size=batch,
            cutoff_len=cutoff,
            learning_rate=1e-5,
            do_validation=False,
            eval_times=1,
            logging_steps=steps,
            dropout=0.0,
            seed=0,
            deepspeed=deepspeed,
        )
        summary = train(cfg)
        if summary["global_step"] != steps:
            raise RuntimeError(f"{out}: {summary['global_step']} steps trained, asked for {steps}")
        runtimes[steps] = _train_runtime(out)
    enc = encode_records(AutoTokenizer.from_pretrained(model), load_records(data), cutoff)
    mean_tokens = sum(len(e["input_ids"]) for e in enc.examples) / len(enc.examples)
    steps, seconds = long - short, runtimes[long] - runtimes[short]
    if seconds <= 0:
        if not env.dry_run:
            raise RuntimeError(f"{tag}: {long} steps took no longer than {short} ({runtimes})")
        steps, seconds = long, runtimes[long]  # tiny CPU steps drown in noise: the long run alone
    return {"tokens_per_s": steps * batch * mean_tokens / seconds, "runtimes": runtimes, "batch": batch}


def step_train(env: Env) -> list[str]:
    """bf16 mixed precision vs fp32 training throughput (the train stage, same data and steps)."""
    fp32 = train_tokens_per_s(env, "fp32", "fp32")
    bf16 = train_tokens_per_s(env, "bf16", "bf16")
    save_result(env, "train", {"fp32": fp32, "bf16": bf16})
    detail = (
        f"batch {bf16['batch']}: bf16 {bf16['tokens_per_s']:.0f} tokens/s, fp32 {fp32['tokens_per_s']:.0f} tokens/s"
    )
    if env.device == "cpu":
        detail += "; on the CPU the trainer runs bf16 as fp32"
    return [line("train_bf16_vs_fp32", bf16["tokens_per_s"] / fp32["tokens_per_s"], 1.5, detail)]


def step_zero3(env: Env) -> list[str]:
    """A ZeRO-3 run on one device (run_config/ds_zero3.json, single-process DeepSpeed init in the train stage);
    its output must be the consolidated full model. Ratio: its tokens/s over plain bf16's (the train step's,
    measured here when that step left none)."""
    import os

    from safetensors import safe_open

    os.environ.setdefault("DS_ACCELERATOR", "cuda" if env.device.startswith("cuda") else "cpu")
    zero3 = train_tokens_per_s(env, "zero3", "bf16", str(REPO_ROOT / "run_config" / "ds_zero3.json"))
    done = env.work / "results" / "train.json"
    bf16 = json.loads(done.read_text())["bf16"] if done.is_file() else train_tokens_per_s(env, "bf16", "bf16")

    def shapes(folder: Path) -> dict:
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), "pt") as st:
                out.update({k: tuple(st.get_slice(k).get_shape()) for k in st.keys()})
        return out

    written = max(env.work.glob("train-zero3-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    if shapes(written) != shapes(random_lm(env, 0)):
        raise RuntimeError(f"{written}: not the consolidated model (tensor names or shapes differ from the base)")
    save_result(env, "zero3", {"zero3": zero3, "bf16": bf16})
    detail = f"ZeRO-3 {zero3['tokens_per_s']:.0f} tokens/s, plain bf16 {bf16['tokens_per_s']:.0f}; output consolidated"
    return [line("zero3_vs_bf16", zero3["tokens_per_s"] / bf16["tokens_per_s"], 0.5, detail)]


def _metric_pairs(env: Env, n: int) -> tuple[list[str], list[list[str]]]:
    """Predictions = the gold definitions in a seeded shuffle; references = each row's own definition."""
    defs = [r.definition for r in test_records(env, n)]
    hyps = defs[:]
    random.Random(0).shuffle(hyps)
    return hyps, [[d] for d in defs]


def _devices(env: Env) -> tuple[str, str]:
    return env.device, "cpu"


def step_bertscore(env: Env) -> list[str]:
    """BERTScore (evaluation.metrics.bertscore) on the device vs the CPU, same pairs; scores must agree."""
    import numpy as np

    from evaluation.config import MetricSettings
    from evaluation.metrics.bertscore import BertScore

    model = random_minilm(env)
    layers = json.loads((model / "config.json").read_text())["num_hidden_layers"]
    hyps, refs = _metric_pairs(env, env.size(512, 16))
    seconds, scores = {}, {}
    for device in _devices(env):
        metric = BertScore(
            MetricSettings(bertscore_model=str(model), bertscore_num_layers=layers, device=device, batch_size=64)
        )
        metric.sentence_scores(hyps[:8], refs[:8])  # loads the model
        seconds[device] = synced(env, lambda m=metric, d=device: scores.__setitem__(d, m.sentence_scores(hyps, refs)))
    gpu, cpu = _devices(env)
    diff = float(np.max(np.abs(scores[gpu] - scores[cpu])))
    if diff > 0.1:
        raise RuntimeError(f"BERTScore differs by {diff:.3f} points between {gpu} and cpu")
    save_result(env, "bertscore", {"seconds": seconds, "pairs": len(hyps), "max_abs_diff": diff})
    detail = f"{len(hyps)} pairs: {gpu} {seconds[gpu]:.2f} s, cpu {seconds[cpu]:.2f} s, max |diff| {diff:.4f}"
    return [line("bertscore_gpu_vs_cpu", seconds[cpu] / seconds[gpu], 3.0, detail)]


def step_mauve(env: Env) -> list[str]:
    """MAUVE (evaluation.metrics.mauve: features of the random SmolLM2, then mauve-text) on the device vs the CPU."""
    import math

    from evaluation.config import MetricSettings
    from evaluation.encoders import load_encoder
    from evaluation.metrics.mauve import Mauve

    model = str(random_lm(env, 0))
    hyps, refs = _metric_pairs(env, env.size(256, 32))
    seconds, scores = {}, {}
    for device in _devices(env):
        load_encoder(model, device)  # loads the model once (the metric reuses it)
        metric = Mauve(MetricSettings(mauve_model=model, device=device, max_length=64, batch_size=64))
        seconds[device] = synced(
            env, lambda m=metric, d=device: scores.__setitem__(d, m.corpus_scores(hyps, refs)[0]["mauve"])
        )
    if not all(math.isfinite(s) and 0 <= s <= 100 for s in scores.values()):
        raise RuntimeError(f"MAUVE out of [0, 100]: {scores}")
    gpu, cpu = _devices(env)
    save_result(env, "mauve", {"seconds": seconds, "scores": scores, "texts": len(hyps)})
    detail = (
        f"{len(hyps)} vs {len(refs)} texts: {gpu} {seconds[gpu]:.2f} s (MAUVE {scores[gpu]:.2f}), "
        f"cpu {seconds[cpu]:.2f} s (MAUVE {scores[cpu]:.2f})"
    )
    return [line("mauve_gpu_vs_cpu", seconds[cpu] / seconds[gpu], 3.0, detail)]


def gpu_test_files() -> list[str]:
    """Test files holding a test marked `gpu`."""
    return sorted(
        str(p.relative_to(REPO_ROOT))
        for p in (REPO_ROOT / "tests").rglob("test_*.py")
        if "mark.gpu" in p.read_text(encoding="utf-8")
    )


def step_gpu_tests(env: Env) -> list[str]:
    """The toolkit's tests marked `gpu` (pytest -m gpu), SmolLM2 resolved to the random one of `<work>/cache`."""
    import os

    random_lm(env, 0)
    files = gpu_test_files()
    if not files:
        return ["step=gpu_tests skipped: no test is marked gpu"]
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", *files]
    env_vars = {**os.environ, "LMLEXICON_CACHE": str(env.work / "cache")}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env_vars, capture_output=True, text=True)
    print(proc.stdout[-4000:], proc.stderr[-2000:], file=sys.stderr)
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error")}
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    for num, what in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail):
        counts[what.rstrip("s") if what.startswith("error") else what] += int(num)
    ran = counts["passed"] + counts["failed"] + counts["error"]
    save_result(env, "gpu_tests", {"counts": counts, "files": files, "returncode": proc.returncode})
    if proc.returncode not in (0, 5) and not ran:
        raise RuntimeError(f"pytest exited {proc.returncode}: {tail or proc.stderr[-300:]}")
    if not ran:
        reasons = sorted(set(re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.+)", proc.stdout)))
        return [f"step=gpu_tests skipped: {counts['skipped']} gpu-marked tests skipped ({'; '.join(reasons)})"]
    detail = ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f" in {len(files)} files"
    return [line("gpu_tests", counts["passed"] / ran, 1.0, detail)]


def step_vllm(env: Env) -> list[str]:
    """vLLM (inference.vllm_backend) vs HF generation: the dense model, and the MoE through its domain exports."""
    if not vllm_importable():
        return [f"step={name} skipped: vllm not importable" for name in VLLM_LINES]
    from inference.backend import Sampling
    from inference.local import LocalBackend
    from inference.vllm_backend import VllmBackend

    n, new = env.size(512, 8), env.size(32, 4)
    moe = merged_moe(env)
    exports = [str(env.work / "moe-exports" / f"domain-{e}") for e in range(NUM_EXPERTS)]
    sampling = Sampling(greedy=True, max_new_tokens=new)
    out = []
    for name, path, kwargs in (
        ("vllm_dense_vs_hf", random_lm(env, 0), {}),
        ("vllm_moe_vs_hf", moe, {"domain_exports": exports}),
    ):
        hf = LocalBackend.from_path(str(path), device=env.device, dtype="bfloat16", batch_size=128)
        requests = requests_for(hf, test_records(env, n))
        generate_all(hf, requests[:8], sampling)
        t_hf = synced(env, lambda b=hf: generate_all(b, requests, sampling))
        del hf
        fast = VllmBackend(str(path), dtype="bfloat16", gpu_memory_utilization=0.3, **kwargs)
        generate_all(fast, requests[:8], sampling)
        t_vllm = synced(env, lambda b=fast: generate_all(b, requests, sampling))
        del fast
        out.append(line(name, t_hf / t_vllm, 2.0, f"{n} prompts x {new} tokens: HF {t_hf:.2f} s, vLLM {t_vllm:.2f} s"))
    return out


# name -> (function, seconds allowed on the GPU, seconds allowed in a dry run, the lines it prints)
STEPS: dict[str, tuple[Callable[[Env], list[str]], int, int, tuple[str, ...]]] = {
    "moe": (step_moe, 110, 45, ("moe_domain_vs_dense", "moe_token_top2_vs_dense")),
    "train": (step_train, 80, 30, ("train_bf16_vs_fp32",)),
    "zero3": (step_zero3, 90, 40, ("zero3_vs_bf16",)),
    "bertscore": (step_bertscore, 45, 20, ("bertscore_gpu_vs_cpu",)),
    "mauve": (step_mauve, 60, 20, ("mauve_gpu_vs_cpu",)),
    "gpu_tests": (step_gpu_tests, 60, 20, ("gpu_tests",)),
    "vllm": (step_vllm, 35, 10, VLLM_LINES),
}
