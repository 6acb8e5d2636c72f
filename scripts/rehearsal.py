"""Paper-scale rehearsal on CPU (`python main.py pipeline --config run_config/paper_full.json --rehearse`).

The paper's resolved config is transformed, not rewritten: every model becomes a pico model of its architecture
family (untied embeddings, GQA, the SmolLM2 tokenizer) or an offline stand-in on the same code path, devices
become the CPU (the deepspeed launcher with 2 CPU ranks and ZeRO-3 stay), sizes shrink to a few hundred real
rows, and everything else (seeds, metrics, tables, schedules) is the paper's. After the run each stage's
measured cost is printed with a projection for the paper scale (formulas in docs/pipeline.md).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run_config.errors import DataError
from run_config.runtime import atomic_open, staged_dir

REHEARSAL_DIR = "runs/rehearsal"
REHEARSAL_ROWS = 300
CPU_RANKS = 2
# The stand-ins of models that need a GPU or the hub: the offline MiniLM (embedders, metric encoders).
EMBEDDER_STANDINS = {"nv-embed-v2": "minilm"}
METRIC_STANDIN = "asset:minilm"
# Sizes shrunk to seconds per step (each replaces the paper's value; every other key is kept as it is).
SHRINK: dict[str, dict[str, Any]] = {
    "train": {
        "num_train_epochs": 1,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "global_batch_size": 8,
        "eval_times": 1,
        "eval_samples": 4,
        "eval_max_new_tokens": 8,
        "logging_steps": 1,
        "report_to": "none",
        "dataloader_num_workers": 0,
    },
    "cluster": {"batch_size": 16, "plot": False},
    "finetune_router": {"max_records": 32, "classifier_epochs": 2, "batch_size": 4},
    "reward": {
        "samples_per_prompt": 2,
        "negatives_per_prompt": 1,
        "max_train_prompts": 8,
        "max_valid_prompts": 4,
        "batch_size": 4,
        "generate_batch_size": 4,
        "max_new_tokens": 8,
    },
    "infer": {"batch_size": 4, "max_new_tokens": 8},
    "evaluate": {"workers": 1, "mauve_num_buckets": 2},
}
SHRINK_TOP = {"eval_items": 4, "train_records": None, "valid_records": None}
SHRINK_TABLES: dict[str, dict[str, Any]] = {
    "table2": {"bon_samples": 2, "icl_k": 2, "icl_max_items": 2},
    "fig4": {"max_samples": 2, "items": 4},
}
# Paper scale (Table 1 of the paper: 3D-EX's train / valid / test sizes) and the accelerator of the projection.
PAPER_ROWS = {"train": 1_309_312, "valid": 513_789, "test": 450_078}
H100_BF16_FLOPS = 989e12  # dense bf16 peak of one H100 SXM
H100_MEMORY_GIB = 80
MFU = 0.4  # assumed model-FLOPs utilisation on 8xH100
GIB = 2**30


@dataclass(frozen=True)
class Shape:
    """The size of one paper model (what the projection needs)."""

    params: float
    layers: int
    hidden: int
    kv_heads: int = 0
    head_dim: int = 0
    vocab: int = 0
    mlp_params: float = 0.0  # one expert's MLP parameters (all layers): what an MoE multiplies


PAPER_MODELS = {
    "meta-llama/Meta-Llama-3-8B": Shape(8.03e9, 32, 4096, 8, 128, 128_256, 32 * 3 * 4096 * 14_336),
    "nv-embed-v2": Shape(7.85e9, 32, 4096),
    "roberta-large": Shape(355e6, 24, 1024),
    "distilbert-base-uncased": Shape(66e6, 6, 768),
    "gpt2-large": Shape(774e6, 36, 1280),
}
METRIC_MODELS = ("roberta-large", "distilbert-base-uncased", "gpt2-large")  # BERTScore, MoverScore, MAUVE


def cpu_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build_pico(out: Path, tokenizer_dir: str | Path, seed: int = 0) -> Path:
    """Save a randomly initialised pico Llama (the paper experts' family: untied embeddings, GQA 4 heads / 2 KV
    heads, 2 layers, hidden 64) with the SmolLM2 tokenizer into `out` (once)."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    with staged_dir(out) as tmp:
        LlamaForCausalLM(config).save_pretrained(tmp)
        tok.save_pretrained(str(tmp))
    return out


def _lexical_split(term: str) -> str:
    """train / valid / test (80/10/10) by a hash of the term, so no term crosses splits (the word-level split)."""
    h = int(hashlib.sha256(term.lower().encode("utf-8")).hexdigest(), 16) % 10
    return "test" if h == 0 else "valid" if h == 1 else "train"


def rehearsal_rows(files: Sequence[str], out: Path, n: int = REHEARSAL_ROWS, seed: int = 42) -> tuple[Path, list[str]]:
    """A seeded sample of `n` real rows of `files` (any preprocess format) as one JSONL; rows keep their split
    when the sample holds all three, else they are split by term. Returns the file and its sources."""
    import dataclasses

    from dataset.preprocess import iter_input
    from dataset.records import Record

    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise DataError(missing[0], None, None, "no such file (give real 3D-EX files with --rehearse-input)")
    records = [it for f in files for _, it in iter_input(Path(f), "auto", None, ()) if isinstance(it, Record)]
    if not records:
        raise DataError(files[0], None, None, "no usable rows (term, context and definition) to rehearse on")
    sample = random.Random(seed).sample(records, min(n, len(records)))
    if {r.split for r in sample} != {"train", "valid", "test"}:
        sample = [dataclasses.replace(r, split=_lexical_split(r.term)) for r in sample]
    text = "".join(r.to_json() + "\n" for r in sorted(sample, key=lambda r: r.id))
    if not out.is_file() or out.read_text(encoding="utf-8") != text:  # unchanged: later steps stay up to date
        with atomic_open(out) as f:
            f.write(text)
    return out, sorted({r.source for r in sample})


def rehearsal_config(
    paper: Mapping[str, Any], *, work_dir: str, seeds: int | None, base_model: str, rows: str, sources: list[str]
) -> dict[str, Any]:
    """The paper's resolved experiment config, transformed for the CPU (see the module docstring)."""
    cfg = copy.deepcopy(dict(paper))
    dtype = "bfloat16" if cpu_bf16() else "float32"
    cfg.update(
        work_dir=work_dir,
        seeds=cfg["seeds"][:seeds] if seeds else cfg["seeds"],
        base_model=base_model,
        builtin=None,
        input=[rows],
        embedder=EMBEDDER_STANDINS.get(cfg["embedder"], cfg["embedder"]),
        metric_encoder=cfg.get("metric_encoder") or METRIC_STANDIN,
        datasets=[d for d in cfg["datasets"] if d in sources or d == cfg.get("whole_test_as")]
        if cfg.get("datasets")
        else None,
        **SHRINK_TOP,
    )
    if cfg.get("launcher") == "deepspeed":
        cfg.update(num_gpus=CPU_RANKS, hostfile=None, num_nodes=1)
    for section in SHRINK:
        values = dict(cfg.get(section) or {})
        for key, value in values.items():
            if key == "device" and value != "cpu":
                values[key] = "cpu"
            elif key in ("dtype", "model_dtype") and value in ("bfloat16", "float16"):
                # train's mixed precision is GPU-only (fp32 on the CPU), so its weights load in fp32 there
                values[key] = "float32" if section == "train" else dtype
        cfg[section] = {**values, **SHRINK[section]}
    tables = {name: dict(settings) for name, settings in (cfg.get("tables") or {}).items()}
    for name, settings in SHRINK_TABLES.items():
        tables[name] = {**tables.get(name, {}), **settings}
    icl = tables["table2"].get("icl_models")
    if icl is None or any(m.get("backend") != "local" for m in icl):
        # The API models of the ICL rows: the pico model through the local backend (same prompts, same rows).
        tables["table2"]["icl_models"] = [{"name": "ICL (rehearsal: pico)", "backend": "local", "model": base_model}]
    cfg["tables"] = tables
    return cfg


def rehearse_environment() -> None:
    """DeepSpeed on the CPU accelerator (gloo), one thread per rank, the launcher of this interpreter on PATH, and
    DeepSpeed's CPU communication op built once into the asset cache (a torch extensions folder shared with other
    checkouts is rebuilt whenever their paths differ: minutes per launch)."""
    from run_config.assets import cache_dir

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))
    bindir = str(Path(sys.executable).parent)
    if shutil.which("deepspeed") is None and (Path(bindir) / "deepspeed").is_file():
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


# ----- projection ---------------------------------------------------------------------------------------------


def zero3_state_bytes(params: float, gpus: int) -> float:
    """Weights (bf16, 2 B) + gradients (bf16, 2 B) + Adam (fp32 master, m, v: 12 B) per parameter, over `gpus`."""
    return 16 * params / gpus


def activation_bytes(shape: Shape, seq: int, micro_batch: int, checkpointing: bool) -> float:
    """bf16 activations of one micro-batch: with checkpointing one [seq, batch, hidden] input per layer plus one
    layer recomputed (34·s·b·h bytes, Korthikanti et al. 2022), else 34·s·b·h per layer; plus the logits
    (bf16 and their fp32 copy for the loss: 6·s·b·vocab)."""
    sbh = seq * micro_batch * shape.hidden
    layers = 2 * sbh * shape.layers + 34 * sbh if checkpointing else 34 * sbh * shape.layers
    return layers + 6 * seq * micro_batch * shape.vocab


def kv_cache_bytes(shape: Shape, seq: int, batch: int) -> float:
    """bf16 keys and values of `batch` sequences of `seq` tokens."""
    return 2 * 2 * shape.layers * shape.kv_heads * shape.head_dim * seq * batch


def gpu_hours(flops: float, gpus: int = 8, mfu: float = MFU) -> float:
    """Wall hours of `flops` on `gpus` H100s at model-FLOPs utilisation `mfu`."""
    return flops / (gpus * H100_BF16_FLOPS * mfu) / 3600


def moe_params(shape: Shape, experts: int) -> float:
    """Parameters of the merged MoE: the shared layers once, the MLP once per expert (routers are negligible)."""
    return shape.params + (experts - 1) * shape.mlp_params


@dataclass(frozen=True)
class Projection:
    """One stage at paper scale."""

    stage: str
    tokens: float
    flops: float
    memory: float  # bytes per GPU
    note: str

    def line(self, seconds: float, cpu_tokens: float) -> str:
        per = f"{seconds / cpu_tokens * 1e6:.0f} µs/token" if cpu_tokens else "no tokens"
        hours = f"{gpu_hours(self.flops):.2f} h on 8xH100 (MFU {MFU:.0%})" if self.flops else "no GPU FLOPs"
        over = f" > {H100_MEMORY_GIB} GiB: does not fit" if self.memory / GIB > H100_MEMORY_GIB else ""
        return (
            f"projection {self.stage}: rehearsal {seconds:.1f} s for {cpu_tokens:,.0f} tokens ({per}); paper "
            f"{self.tokens:.3g} tokens -> {hours}, {self.memory / GIB:.1f} GiB/GPU{over} ({self.note})"
        )


def project(paper: Mapping[str, Any], tokens_per_row: Mapping[str, float]) -> dict[str, Projection]:
    """Each stage of the paper's config at its scale; `tokens_per_row` = mean prompt / target tokens measured
    on the rehearsal's real rows (`prompt`, `target`)."""
    base = PAPER_MODELS[paper["base_model"]]
    embedder = PAPER_MODELS.get(paper["embedder"], PAPER_MODELS["nv-embed-v2"])
    n, gpus = paper["num_clusters"], paper.get("num_gpus", 8)
    train = paper.get("train", {})
    seq, micro = train.get("cutoff_len", 128), train.get("per_device_train_batch_size", 1)
    ckpt = bool(train.get("gradient_checkpointing", False))
    epochs = train.get("num_train_epochs", 1)
    prompt, target = tokens_per_row["prompt"], tokens_per_row["target"]
    row = min(prompt + target, seq)
    fit = PAPER_ROWS["train"] * row * epochs
    moe = moe_params(base, n)
    infer = paper.get("infer", {})
    gen = infer.get("max_new_tokens", 64)
    test = PAPER_ROWS["test"] * (prompt + gen)
    systems = 3  # dense, MoE (domain routing), MoE with the learned router
    router_rows = paper.get("finetune_router", {}).get("max_records") or PAPER_ROWS["train"]
    train_mem = zero3_state_bytes(base.params, gpus) + activation_bytes(base, seq, micro, ckpt)
    metric_flops = sum(2 * PAPER_MODELS[m].params for m in METRIC_MODELS) * 2 * PAPER_ROWS["test"] * target
    return {
        "cluster": Projection(
            "cluster",
            (PAPER_ROWS["train"] + PAPER_ROWS["valid"]) * prompt,
            2 * embedder.params * (PAPER_ROWS["train"] + PAPER_ROWS["valid"]) * prompt,
            2 * embedder.params,
            f"{embedder.params / 1e9:.2f}B embedder forward, 2·N·tokens",
        ),
        "train_experts": Projection(
            "train_experts",
            fit,
            6 * base.params * fit,
            train_mem,
            f"{n} experts of {base.params / 1e9:.2f}B together, 6·N·tokens; ZeRO-3 16 B/param / {gpus} + activations",
        ),
        "train_dense": Projection(
            "train_dense", fit, 6 * base.params * fit, train_mem, "the optimizer steps of all experts together"
        ),
        "merge": Projection(
            "merge", 0, 0, 0, f"streams {n}x{2 * base.params / 1e9:.0f} GB in, {2 * moe / 1e9:.0f} GB out: disk-bound"
        ),
        "router": Projection(
            "router",
            router_rows * row,
            6 * base.params * router_rows * row,
            2 * moe / gpus + activation_bytes(base, seq, micro, True),
            f"MoE {moe / 1e9:.1f}B, bf16 ZeRO-3 shards; routers only trainable",
        ),
        "infer": Projection(
            "infer",
            systems * test,
            2 * base.params * systems * test,
            2 * moe + kv_cache_bytes(base, prompt + gen, infer.get("batch_size", 1)),
            f"{systems} systems, a whole MoE replica per GPU + KV cache, 2·N_active·tokens",
        ),
        "evaluate": Projection(
            "evaluate",
            systems * 2 * PAPER_ROWS["test"] * target,
            systems * metric_flops,
            2 * PAPER_MODELS["gpt2-large"].params,
            "roberta-large, distilbert, gpt2-large on predictions and references",
        ),
    }


STAGE_PREFIXES = {
    "cluster": ("cluster ",),
    "train_experts": ("train_experts_",),
    "train_dense": ("train_dense_",),
    "merge": ("merge_",),
    "router": ("router_",),
    "infer": ("infer_",),
    "evaluate": ("evaluate_",),
}


def stage_seconds(step_seconds: Mapping[str, float]) -> dict[str, float]:
    """Measured wall seconds of each projected stage, summed over its steps."""
    return {
        stage: sum(s for step, s in step_seconds.items() if step.startswith(prefixes))
        for stage, prefixes in STAGE_PREFIXES.items()
    }


def measured_tokens(rows: Path, tokenizer_dir: str | Path, cfg: Mapping[str, Any]) -> dict[str, float]:
    """Mean prompt and target tokens of the rehearsal rows (the train stage's own encoding), and the tokens each
    stage processed in the rehearsal."""
    from transformers import AutoTokenizer

    from dataset.records import load_records
    from prompts.builder import render_question

    records = load_records(rows)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    prompt = sum(len(tok(render_question(r.term, r.context))["input_ids"]) for r in records) / len(records)
    target = sum(len(tok(" " + r.definition)["input_ids"]) for r in records) / len(records)
    train, infer = cfg["train"], cfg["infer"]
    row = min(prompt + target, train.get("cutoff_len", 128))
    fit_rows = train["max_steps"] * train["global_batch_size"]
    items = cfg["eval_items"] * (len(cfg["datasets"] or []) + bool(cfg.get("whole_test_as"))) * len(cfg["seeds"])
    return {
        "prompt": prompt,
        "target": target,
        "cluster": len([r for r in records if r.split != "test"]) * prompt,
        "train_experts": cfg["num_clusters"] * fit_rows * row,
        "train_dense": cfg["num_clusters"] * fit_rows * row,
        "merge": 0,
        "router": cfg["finetune_router"]["max_records"] * row,
        "infer": 3 * items * (prompt + infer["max_new_tokens"]),
        "evaluate": 3 * 2 * items * target,
    }


def projection_lines(
    paper: Mapping[str, Any], rehearsal: Mapping[str, Any], step_seconds: Mapping[str, float], tokens: Mapping
) -> list[str]:
    """One line per stage: measured seconds and tokens of the rehearsal, the paper-scale projection."""
    seconds = stage_seconds(step_seconds)
    projections = project(paper, tokens)
    return [p.line(seconds[stage], tokens[stage]) for stage, p in projections.items()]


def write_report(path: Path, lines: list[str], step_seconds: Mapping[str, float]) -> None:
    with atomic_open(path) as f:
        f.write(json.dumps({"projection": lines, "step_seconds": dict(step_seconds)}, indent=2) + "\n")
