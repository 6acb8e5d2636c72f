"""End-to-end pipeline: preprocess -> sample -> cluster -> experts (+ dense baseline) -> merge ->
router finetuning -> infer -> evaluate -> Table-2-style report.

Each stage runs through its own CLI with a config written to `<work_dir>/configs/<step>.json`, so every
step can be rerun by hand; every stage skips work that is already done, so a rerun takes seconds.
"""
from __future__ import annotations

import argparse
import difflib
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataset.records import SPLITS, load_records  # noqa: E402
from run_config.assets import resolve_asset  # noqa: E402
from run_config.cli import config_from_args, run_main, stage_parser  # noqa: E402
from run_config.errors import ConfigError, LexiconError  # noqa: E402
from run_config.loader import StageConfig, load_config  # noqa: E402
from run_config.runtime import AtomicFileSet, read_manifest, write_json, write_manifest  # noqa: E402

REPORT_METRICS = ("bleu", "rougeL", "meteor", "bertscore", "moverscore", "mauve")
SYSTEMS = {"dense": "LM-Lexicon-Dense", "moe": "LM-Lexicon-MoE (domain routing)",
           "moe_learned": "LM-Lexicon-MoE (learned domain router)"}


class PipelineConfig(StageConfig):
    """The whole method on one dataset; per-stage sections hold extra keys of that stage's config."""

    work_dir: str = Field(description="folder for every artefact of the run")
    seed: int = Field(42, description="seed of sampling, clustering, training and decoding")
    builtin: Literal["wordnet"] | None = Field("wordnet", description="embedded lexicon (null: use input)")
    input: list[str] = Field(default_factory=list, description="your own data files (preprocess formats)")
    base_model: str = Field("asset:smollm2", description="dense base model (asset:smollm2 = offline SmolLM2-135M)")
    embedder: str = Field("minilm", description="clustering embedder preset or sentence-transformers path")
    num_clusters: int = Field(4, ge=1, description="number of experts N")
    train_records: int | None = Field(None, ge=1, description="seeded sample of the train split (null: all)")
    valid_records: int | None = Field(None, ge=1, description="seeded sample of the valid split (null: all)")
    eval_items: int | None = Field(None, ge=1, description="test inputs generated and scored (null: all)")
    dense_baseline: bool = Field(True, description="also train one dense model on all training data")
    learned_router: bool = Field(True, description="also finetune and evaluate the learned domain router")
    metrics: list[str] = Field(default_factory=lambda: ["bleu", "rouge", "meteor", "nist", "bertscore",
                                                         "moverscore", "mauve"], description="evaluate metrics")
    metric_encoder: str = Field("asset:minilm", description="encoder of BERTScore/MoverScore/MAUVE")
    metric_encoder_layers: int = Field(6, ge=1, description="BERTScore layer of the metric encoder")
    cluster: dict[str, Any] = Field(default_factory=dict, description="extra cluster keys")
    train: dict[str, Any] = Field(default_factory=dict, description="extra train keys (experts and dense)")
    merge: dict[str, Any] = Field(default_factory=dict, description="extra merge keys")
    finetune_router: dict[str, Any] = Field(default_factory=dict, description="extra finetune-router keys")
    infer: dict[str, Any] = Field(default_factory=dict, description="extra infer keys")
    evaluate: dict[str, Any] = Field(default_factory=dict, description="extra evaluate keys")

    @model_validator(mode="after")
    def _one_data_source(self) -> PipelineConfig:
        if bool(self.input) == bool(self.builtin):
            raise ValueError("give either input files or builtin, not both or neither")
        return self


def _stage(cfg_path: Path, model: type[StageConfig], data: dict[str, Any], section: str,
           source: str) -> Path:
    """Validate one stage's config (errors name the pipeline section) and write it to `cfg_path`."""
    try:
        load_config(None, model, data)
    except ConfigError as e:
        raise ConfigError([f"{source}: {section}.{p.split(': ', 1)[1]}" for p in e.problems]) from None
    write_json(cfg_path, data)
    return cfg_path


def check_sections(cfg: PipelineConfig, models: dict[str, type[StageConfig]], source: str) -> None:
    """Fail before any work when a stage section names a key its stage does not have."""
    problems = []
    for section, model in models.items():
        valid = set(model.model_fields) | set(model.legacy_keys)
        for key in getattr(cfg, section):
            if key not in valid:
                close = difflib.get_close_matches(key, sorted(valid), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"{source}: {section}.{key}: unknown key{hint}")
    if problems:
        raise ConfigError(problems)


def _call(step: str, main: Callable[[list[str]], int], argv: list[str]) -> None:
    print(f"[pipeline] {step}: {' '.join(argv)}", flush=True)
    code = main(argv)
    if code != 0:
        raise LexiconError(f"step {step} failed with exit code {code}; its arguments: {' '.join(argv)}")


def sample_splits(data_dir: Path, out: Path, seed: int, sizes: dict[str, int | None]) -> Path:
    """Write a seeded sample of train/valid (the test split is kept whole: it is the reference pool)."""
    want = {"seed": seed, "sizes": sizes, "source": read_manifest(data_dir)}
    if (manifest := read_manifest(out)) and manifest.get("config") == want:
        return out
    with AtomicFileSet() as files:
        all_file = files.get(out / "all.jsonl")
        for split in SPLITS:
            records = load_records(data_dir / f"{split}.jsonl") if (data_dir / f"{split}.jsonl").is_file() else []
            n = sizes.get(split)
            if n is not None and n < len(records):
                records = sorted(random.Random(seed).sample(records, n), key=lambda r: r.id)
            split_file = files.get(out / f"{split}.jsonl")
            for r in records:
                line = r.to_json() + "\n"
                split_file.write(line)
                all_file.write(line)
    write_manifest(out, "sample", want)
    return out


def run_pipeline(cfg: PipelineConfig, source: str) -> Path:
    """Run every step; return the report folder."""
    from clustering.cluster import main as cluster_main
    from clustering.config import ClusterConfig
    from dataset.preprocess import main as preprocess_main
    from evaluation.config import EvaluateConfig
    from evaluation.evaluate import main as evaluate_main
    from inference.config import InferConfig
    from inference.infer import main as infer_main
    from training.config import TrainConfig
    from training.finetune_router import main as router_main
    from training.merge import main as merge_main
    from training.moe_config import FinetuneRouterConfig, MergeConfig
    from training.train import main as train_main

    check_sections(cfg, {"cluster": ClusterConfig, "train": TrainConfig, "merge": MergeConfig,
                         "finetune_router": FinetuneRouterConfig, "infer": InferConfig, "evaluate": EvaluateConfig},
                   source)
    w = Path(cfg.work_dir)
    configs = w / "configs"
    base = resolve_asset(cfg.base_model)
    encoder = resolve_asset(cfg.metric_encoder)

    pre = ["--output-dir", str(w / "data")]
    pre += ["--builtin", cfg.builtin] if cfg.builtin else ["--input", *cfg.input]
    _call("preprocess", preprocess_main, pre)
    data = sample_splits(w / "data", w / "sample", cfg.seed,
                         {"train": cfg.train_records, "valid": cfg.valid_records, "test": None})

    cluster = {"input": str(data / "all.jsonl"), "output_dir": str(w / "clusters"),
               "num_clusters": cfg.num_clusters, "embedder": cfg.embedder, "seed": cfg.seed, **cfg.cluster}
    _call("cluster", cluster_main, ["--config", str(_stage(configs / "cluster.json", ClusterConfig,
                                                           cluster, "cluster", source))])

    train = {"model_name_or_path": base, "output_dir": str(w / "experts"), "seed": cfg.seed, **cfg.train}
    _call("train experts", train_main, ["--config", str(_stage(configs / "train_experts.json", TrainConfig,
                                                                 train, "train", source)),
                                        "--experts", str(w / "clusters")])
    models = {}
    if cfg.dense_baseline:
        dense = {**train, "output_dir": str(w / "dense"), "train_file": str(data / "train.jsonl"),
                 "valid_file": str(data / "valid.jsonl")}
        if isinstance(train.get("max_steps"), int) and train["max_steps"] > 0:
            dense["max_steps"] = train["max_steps"] * cfg.num_clusters  # same compute as all experts together
        _call("train dense", train_main, ["--config", str(_stage(configs / "train_dense.json",
                                                                 TrainConfig, dense, "train", source))])
        models["dense"] = w / "dense"

    merge = {"experts": [str(w / "experts" / f"expert-{k}") for k in range(cfg.num_clusters)],
             "output_dir": str(w / "moe"), "cluster_dir": str(w / "clusters"), "seed": cfg.seed, **cfg.merge}
    _call("merge", merge_main, ["--config", str(_stage(configs / "merge.json", MergeConfig, merge,
                                                         "merge", source))])
    models["moe"] = w / "moe"
    if cfg.learned_router and cfg.num_clusters > 1:
        router = {"moe_dir": str(w / "moe"), "train_file": str(data / "train.jsonl"),
                  "valid_file": str(data / "valid.jsonl"), "output_dir": str(w / "moe_learned"),
                  "policy": "learned-domain", "seed": cfg.seed, **cfg.finetune_router}
        _call("finetune-router", router_main, ["--config", str(_stage(configs / "finetune_router.json", FinetuneRouterConfig, router, "finetune_router",
            source))])
        models["moe_learned"] = w / "moe_learned"

    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name, model_dir in models.items():
        infer = {"input": str(data / "test.jsonl"), "output_dir": str(w / "infer" / name), "model": str(model_dir),
                 "seed": cfg.seed, "max_items": cfg.eval_items, **cfg.infer}
        _call(f"infer {name}", infer_main, ["--config", str(_stage(configs / f"infer_{name}.json",
                                                                     InferConfig, infer, "infer", source))])
        evaluate = {"predictions": str(w / "infer" / name / "predictions.jsonl"),
                    "references": str(data / "test.jsonl"), "output_dir": str(w / "eval" / name),
                    "metrics": cfg.metrics, "bertscore_model": encoder, "bertscore_num_layers": cfg.metric_encoder_layers,
                    "moverscore_model": encoder, "mauve_model": encoder, "mauve_pooling": "mean", "seed": cfg.seed,
                    **cfg.evaluate}
        _call(f"evaluate {name}", evaluate_main, ["--config", str(_stage(configs / f"evaluate_{name}.json", EvaluateConfig, evaluate, "evaluate", source))])
        scores = json.loads((w / "eval" / name / "scores.json").read_text(encoding="utf-8"))
        dataset = scores.get("dataset") or "test"
        results[SYSTEMS[name]] = {dataset: [{m: scores[m] for m in REPORT_METRICS if m in scores}]}
    return write_report(results, w / "report", cfg)


def write_report(results: dict[str, dict[str, list[dict[str, float]]]], out: Path, cfg: PipelineConfig) -> Path:
    """Write the dense-vs-MoE table as Markdown/CSV/LaTeX plus report.json; print the Markdown."""
    from evaluation.report import table2

    metrics = [m for m in REPORT_METRICS if any(m in s for per in results.values() for ss in per.values() for s in ss)]
    table = table2(results, metrics=metrics)
    with AtomicFileSet() as files:
        table.write(out, "table2", files)
    write_json(out / "report.json", {"results": results, "metrics": metrics})
    write_manifest(out, "pipeline", cfg)
    print(table.markdown())
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("pipeline", __doc__, PipelineConfig)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, PipelineConfig)
    out = run_pipeline(cfg, args.config or "command line")
    print(f"pipeline: report in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
