"""The shared engine of `pipeline` and the paper-table scripts: each step of the method is one method of
`Experiment` whose outputs live under `work_dir` in a folder named for its variant, so tables reuse
each other's artefacts (the semantic N=4 MoE of Table 2 is Table 3's semantic row, Table 4's domain
row and Fig. 5's N=4 point) and a rerun skips every finished step.

Every step runs its stage's own CLI with a config written to `work_dir/configs/<step>.json`, so any step
can be rerun by hand. Layout of `work_dir`:

    data/  sample/  clusters/<partition>-N<n>/  experts/<partition>-N<n>/seed<s>/expert-<k>/
    dense/seed<s>/  moe/<partition>-N<n>/seed<s>/  routers/<partition>-N<n>/<policy>/seed<s>/
    orm/<system>/seed<s>/  infer/<system>/<dataset>/seed<s>/  eval/<system>/<dataset>/  tables/
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from functools import cached_property, wraps
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from dataset.lexicon import resolve_asset
from dataset.records import SPLITS, load_records
from run_config.cli import config_from_args, stage_parser
from run_config.errors import ConfigError, DataError, LexiconError
from run_config.loader import StageConfig, load_config, section_problems
from run_config.runtime import AtomicFileSet, atomic_open, read_manifest, write_json, write_manifest

ROOT = Path(__file__).resolve().parent.parent
TABLE_METRICS = ("bleu", "rougeL", "meteor", "bertscore", "moverscore", "mauve")
TABLE_SCRIPTS = ("table2", "table3", "table4", "fig4", "fig5", "table7_8")
# Wall seconds of each step run in this process (the rehearsal's measured costs, scripts/rehearsal.py).
STEP_SECONDS: dict[str, float] = {}
FULL_CONFIG = ROOT / "run_config" / "paper_full.json"
TOY_CONFIG = ROOT / "run_config" / "paper_toy.json"


class ExperimentConfig(StageConfig):
    """Data, models and per-stage settings shared by every experiment of the paper."""

    SECTIONS: ClassVar[tuple[str, ...]] = (
        "cluster",
        "train",
        "merge",
        "finetune_router",
        "reward",
        "infer",
        "evaluate",
    )

    work_dir: str = Field(description="folder for every artefact of the run")
    seed: int = Field(42, ge=0, description="seed of data sampling and clustering (paper: 42)")
    seeds: list[int] = Field(
        default_factory=lambda: [42],
        min_length=1,
        description="training and decoding seeds, one run each (paper: 21, 42, 84)",
    )
    builtin: Literal["wordnet"] | None = Field("wordnet", description="embedded lexicon (null: use input)")
    input: list[str] = Field(default_factory=list, description="your own data files (preprocess formats)")
    datasets: list[str] | None = Field(
        None, description="test sources reported, in this order (null: every source of the test split)"
    )
    base_model: str = Field(
        "asset:smollm2", description="base model of experts and dense baseline (asset:smollm2 = offline SmolLM2-135M)"
    )
    embedder: str = Field("minilm", description="clustering embedder preset or sentence-transformers path")
    num_clusters: int = Field(4, ge=1, description="number of experts N")
    train_records: int | None = Field(None, ge=1, description="seeded sample of the train split (null: all)")
    valid_records: int | None = Field(None, ge=1, description="seeded sample of the valid split (null: all)")
    eval_items: int | None = Field(None, ge=1, description="test inputs per dataset generated and scored (null: all)")
    metrics: list[str] = Field(
        default_factory=lambda: ["bleu", "rouge", "meteor", "nist", "bertscore", "moverscore", "mauve"],
        description="evaluate metrics",
    )
    metric_encoder: str | None = Field(
        "asset:minilm",
        description="one encoder for BERTScore/MoverScore/MAUVE/sense (null: evaluate's defaults, the paper's)",
    )
    metric_encoder_layers: int = Field(6, ge=1, description="BERTScore layer of metric_encoder")
    launcher: Literal["none", "deepspeed"] = Field(
        "none", description="train and finetune routers in this process, or through `deepspeed --num_gpus`"
    )
    num_gpus: int = Field(8, ge=1, description="GPUs per training run (per node) with launcher deepspeed")
    hostfile: str | None = Field(
        None, description="DeepSpeed hostfile (`HOST slots=N` lines) for multi-node runs with launcher deepspeed"
    )
    num_nodes: int = Field(1, ge=1, description="nodes of hostfile per training run (multi-node ZeRO-3)")
    cluster: dict[str, Any] = Field(default_factory=dict, description="extra cluster keys")
    train: dict[str, Any] = Field(default_factory=dict, description="extra train keys (experts and dense)")
    merge: dict[str, Any] = Field(default_factory=dict, description="extra merge keys")
    finetune_router: dict[str, Any] = Field(default_factory=dict, description="extra finetune-router keys")
    reward: dict[str, Any] = Field(default_factory=dict, description="extra train-reward keys")
    infer: dict[str, Any] = Field(default_factory=dict, description="extra infer keys")
    evaluate: dict[str, Any] = Field(default_factory=dict, description="extra evaluate keys")
    whole_test_as: str | None = Field(
        None,
        description="also report the whole test split under this name (the paper's 3D-EX column; null: no such row)",
    )
    tables: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="settings of each paper script by name (table2, table3, table4, fig4, fig5, table7_8)",
    )

    @model_validator(mode="after")
    def _one_data_source(self) -> ExperimentConfig:
        if bool(self.input) == bool(self.builtin):
            raise ValueError("give either input files or builtin, not both or neither")
        if (self.hostfile or self.num_nodes > 1) and self.launcher != "deepspeed":
            raise ValueError("hostfile and num_nodes need launcher deepspeed")
        if self.num_nodes > 1 and not self.hostfile:
            raise ValueError(f"num_nodes {self.num_nodes} needs a hostfile (the hosts to run on)")
        return self


def stage_models() -> dict[str, type[StageConfig]]:
    """Each config section's stage config model (imported late: they pull in torch)."""
    from clustering.config import ClusterConfig
    from evaluation.config import EvaluateConfig
    from inference.config import InferConfig
    from inference.reward.config import RewardConfig
    from training.moe.config import FinetuneRouterConfig, MergeConfig
    from training.sft.config import TrainConfig

    return {
        "cluster": ClusterConfig,
        "train": TrainConfig,
        "merge": MergeConfig,
        "finetune_router": FinetuneRouterConfig,
        "reward": RewardConfig,
        "infer": InferConfig,
        "evaluate": EvaluateConfig,
    }


def check_sections(cfg: ExperimentConfig, source: str) -> None:
    """Fail before any work when a stage section names a key its stage does not have or gives a key a value
    it rejects (a wrong type, say); the keys each step adds (input, output_dir) are its own to check."""
    problems = [
        f"{source}: {section}.{p.split(': ', 1)[1]}"
        for section, model in stage_models().items()
        for p in section_problems(model, getattr(cfg, section), source)
    ]
    if problems:
        raise ConfigError(problems)


def table_settings(cfg: ExperimentConfig, name: str, model: type[StageConfig], source: str) -> Any:
    """Validate the `tables.<name>` settings of one paper script (errors name that section)."""
    unknown = sorted(set(cfg.tables) - set(TABLE_SCRIPTS))
    if unknown:
        raise ConfigError(
            [f"{source}: tables.{k}: unknown script (one of {', '.join(TABLE_SCRIPTS)})" for k in unknown]
        )
    try:
        return load_config(None, model, cfg.tables.get(name, {}))
    except ConfigError as e:
        raise ConfigError([f"{source}: tables.{name}.{p.split(': ', 1)[1]}" for p in e.problems]) from None


def table_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of a paper script: the experiment flags plus `--toy`."""
    parser = stage_parser(prog, doc, ExperimentConfig)
    parser.add_argument(
        "--toy",
        action="store_true",
        help=f"run on CPU with small models ({TOY_CONFIG.relative_to(ROOT)}) instead of the "
        f"full-scale setting ({FULL_CONFIG.relative_to(ROOT)})",
    )
    return parser


def table_config(args: argparse.Namespace) -> tuple[ExperimentConfig, str]:
    """The experiment config of a paper script: --config, else the --toy or the full-scale file."""
    if args.toy and args.config:
        raise ConfigError([f"--toy and --config: give one (--toy means --config {TOY_CONFIG.relative_to(ROOT)})"])
    args.config = args.config or str(TOY_CONFIG if args.toy else FULL_CONFIG)
    return config_from_args(args, ExperimentConfig), args.config


def sample_splits(data_dir: Path, out: Path, seed: int, sizes: dict[str, int | None]) -> Path:
    """Write a seeded sample of the splits (None: keep the split whole) plus `cluster.jsonl` = train + valid:
    the clustering input (test inputs are routed by the MoE at inference, never embedded beforehand)."""
    want = {"seed": seed, "sizes": sizes, "source": read_manifest(data_dir), "cluster_input": ["train", "valid"]}
    if (manifest := read_manifest(out)) and manifest.get("config") == want:
        return out
    with AtomicFileSet() as files:
        cluster_file = files.get(out / "cluster.jsonl")
        for split in SPLITS:
            path = data_dir / f"{split}.jsonl"
            records = load_records(path) if path.is_file() else []
            n = sizes.get(split)
            if n is not None and n < len(records):
                records = sorted(random.Random(seed).sample(records, n), key=lambda r: r.id)
            split_file = files.get(out / f"{split}.jsonl")
            for r in records:
                line = r.to_json() + "\n"
                split_file.write(line)
                if split != "test":
                    cluster_file.write(line)
    write_manifest(out, "sample", want)
    return out


def split_by_source(test_file: Path, out: Path, wanted: list[str] | None, whole: str | None) -> dict[str, Path]:
    """Write one test file per record source (`out/test.<source>.jsonl`), `wanted` in its order, plus the
    whole split under the name `whole` (when given)."""
    groups: dict[str, list[str]] = {}
    for r in load_records(test_file):
        line = r.to_json() + "\n"
        groups.setdefault(r.source or "test", []).append(line)
        if whole:
            groups.setdefault(whole, []).append(line)
    names = wanted if wanted is not None else sorted(set(groups) - {whole}) + ([whole] if whole else [])
    missing = [n for n in names if n not in groups]
    if missing:
        raise DataError(
            str(test_file),
            None,
            "source",
            f"no test records of {', '.join(missing)} (sources present: {', '.join(sorted(groups))})",
        )
    files = {}
    for name in names:
        path = out / f"test.{name.replace('/', '_')}.jsonl"
        text = "".join(groups[name])
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            with atomic_open(path) as f:
                f.write(text)
        files[name] = path
    return files


def combine_seeds(system: str, runs: Mapping[int, Path], out: Path) -> Path:
    """One predictions file holding every seed's run under the model name `system` (rewritten only
    when its content changes, so evaluate's up-to-date check holds)."""
    lines = []
    for seed, path in sorted(runs.items()):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                row.update(model=system, seed=seed)
                lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    text = "".join(lines)
    if not out.is_file() or out.read_text(encoding="utf-8") != text:
        with atomic_open(out) as f:
            f.write(text)
    return out


def variant_name(name: str, extra: Mapping[str, Any], base: Mapping[str, Any]) -> str:
    """`name` plus `-key=value` for each `extra` key whose value differs from `base` (sorted; `/` -> `_`)."""
    changed = sorted((k, v) for k, v in extra.items() if k not in base or base[k] != v)
    return name + "".join(f"-{k}={str(v).replace('/', '_')}" for k, v in changed)


def _timed(step: str, run: Callable[[], int]) -> int:
    """`run()`, its wall seconds added to STEP_SECONDS[step]."""
    start = time.perf_counter()
    code = run()
    STEP_SECONDS[step] = STEP_SECONDS.get(step, 0.0) + time.perf_counter() - start
    return code


def _call(step: str, main: Callable[[list[str]], int], argv: list[str]) -> None:
    print(f"[experiment] {step}: {' '.join(argv)}", flush=True)
    code = _timed(step, lambda: main(argv))
    if code != 0:
        raise LexiconError(f"step {step} failed with exit code {code}; its arguments: {' '.join(argv)}")


def _launch(step: str, argv: list[str]) -> None:
    """Run a launcher command from the current folder (relative paths in configs keep their meaning); the
    launcher finds the train stage as a module of the installed package (docs/install.md)."""
    print(f"[experiment] {step}: {shlex.join(argv)}", flush=True)
    code = _timed(step, lambda: subprocess.run(argv).returncode)
    if code != 0:
        raise LexiconError(f"step {step} failed with exit code {code}: {shlex.join(argv)}")


def once(step: Callable[..., Path]) -> Callable[..., Path]:
    """Run a step once per `Experiment` and set of arguments (defaults filled in, `n` None = num_clusters);
    later calls return its folder without asking the stage again."""
    signature = inspect.signature(step)

    @wraps(step)
    def wrapper(self: Experiment, *args: Any, **kwargs: Any) -> Path:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        if bound.arguments.get("n", 0) is None:
            bound.arguments["n"] = self.cfg.num_clusters
        key = (step.__name__, json.dumps(list(bound.arguments.items())[1:], default=str, sort_keys=True))
        if key not in self.done:
            self.done[key] = step(*bound.args, **bound.kwargs)
        return self.done[key]

    return wrapper


class Experiment:
    """The steps of the method on one configuration; each returns the folder or file it produced."""

    def __init__(self, cfg: ExperimentConfig, source: str):
        check_sections(cfg, source)
        if cfg.hostfile:
            from training.hostfile import check_hostfile

            check_hostfile(cfg.hostfile, cfg.num_nodes, cfg.num_gpus)
        self.cfg, self.source, self.w = cfg, source, Path(cfg.work_dir)
        self.done: dict[tuple, Path] = {}

    def _config(self, name: str, section: str, data: dict[str, Any]) -> Path:
        """Validate one stage config (errors name the section) and write it to configs/<name>.json."""
        try:
            load_config(None, stage_models()[section], data)
        except ConfigError as e:
            raise ConfigError([f"{self.source}: {section}.{p.split(': ', 1)[1]}" for p in e.problems]) from None
        path = self.w / "configs" / f"{name}.json"
        write_json(path, data)
        return path

    @cached_property
    def data(self) -> Path:
        """Preprocess, then the seeded sample of train/valid (test is kept whole: it is the reference pool)."""
        from dataset.preprocess import main as preprocess_main

        cfg = self.cfg
        argv = ["--output-dir", str(self.w / "data")]
        argv += ["--builtin", cfg.builtin] if cfg.builtin else ["--input", *cfg.input]
        _call("preprocess", preprocess_main, argv)
        return sample_splits(
            self.w / "data",
            self.w / "sample",
            cfg.seed,
            {"train": cfg.train_records, "valid": cfg.valid_records, "test": None},
        )

    @cached_property
    def test_sets(self) -> dict[str, Path]:
        """Test file of each reported dataset (record source)."""
        return split_by_source(self.data / "test.jsonl", self.w / "sample", self.cfg.datasets, self.cfg.whole_test_as)

    @once
    def clusters(self, partition: str = "semantic", n: int | None = None, **extra: Any) -> Path:
        """Cluster the training rows; `extra` cluster keys that change a setting name their own folder."""
        from clustering.cluster import main as cluster_main

        n = self.cfg.num_clusters if n is None else n
        base = {
            "num_clusters": n,
            "partition": partition,
            "embedder": self.cfg.embedder,
            "seed": self.cfg.seed,
            **self.cfg.cluster,
        }
        defaults = {k: f.default for k, f in stage_models()["cluster"].model_fields.items()}
        name = variant_name(f"{partition}-N{n}", extra, defaults | base)
        data = {
            "input": str(self.data / "cluster.jsonl"),
            "output_dir": str(self.w / "clusters" / name),
            **base,
            **extra,
        }
        _call(f"cluster {name}", cluster_main, ["--config", str(self._config(f"cluster_{name}", "cluster", data))])
        return Path(data["output_dir"])

    def _train(self, step: str, data: dict[str, Any], experts_from: Path | None = None) -> None:
        from training.train import main as train_main

        path = self._config(step, "train", data)
        if self.cfg.launcher == "none":
            _call(
                step, train_main, ["--config", str(path)] + (["--experts", str(experts_from)] if experts_from else [])
            )
            return
        from training.launcher import deepspeed_argv
        from training.sft.experts import launcher_commands

        nodes = (self.cfg.num_gpus, self.cfg.hostfile, self.cfg.num_nodes)
        if experts_from is None:
            _launch(step, [*deepspeed_argv(*nodes), "--config", str(path)])
            return
        from training.sft.config import TrainConfig

        for command in launcher_commands(load_config(path, TrainConfig), experts_from, str(path), *nodes):
            _launch(step, shlex.split(command))

    def _train_base(self, output_dir: Path, seed: int) -> dict[str, Any]:
        return {
            "model_name_or_path": resolve_asset(self.cfg.base_model),
            "output_dir": str(output_dir),
            "seed": seed,
            **self.cfg.train,
        }

    @once
    def experts(self, partition: str = "semantic", n: int | None = None, seed: int = 42) -> Path:
        """One expert per cluster (expert-<k>/ folders)."""
        clusters = self.clusters(partition, n)
        out = self.w / "experts" / clusters.name / f"seed{seed}"
        self._train(f"train_experts_{clusters.name}_seed{seed}", self._train_base(out, seed), clusters)
        return out

    @once
    def dense(self, seed: int = 42) -> Path:
        """One model on all training data with the optimizer steps of all N experts together."""
        data = {
            **self._train_base(self.w / "dense" / f"seed{seed}", seed),
            "train_file": str(self.data / "train.jsonl"),
            "valid_file": str(self.data / "valid.jsonl"),
        }
        if isinstance(data.get("max_steps"), int) and data["max_steps"] > 0:
            data["max_steps"] *= self.cfg.num_clusters
        self._train(f"train_dense_seed{seed}", data)
        return Path(data["output_dir"])

    @once
    def moe(self, partition: str = "semantic", n: int | None = None, seed: int = 42) -> Path:
        """The experts merged into a domain-routed MoE (N = 1: the single expert itself)."""
        from training.moe.merge import main as merge_main

        n = self.cfg.num_clusters if n is None else n
        experts = self.experts(partition, n, seed)
        if n == 1:
            return experts / "expert-0"
        variant = experts.parent.name
        data = {
            "experts": [str(experts / f"expert-{i}") for i in range(n)],
            "output_dir": str(self.w / "moe" / variant / f"seed{seed}"),
            "cluster_dir": str(self.w / "clusters" / variant),
            "seed": seed,
            **self.cfg.merge,
        }
        name = f"merge_{variant}_seed{seed}"
        _call(name, merge_main, ["--config", str(self._config(name, "merge", data))])
        return Path(data["output_dir"])

    @once
    def router(
        self, policy: str, top_k: int | None = None, partition: str = "semantic", n: int | None = None, seed: int = 42
    ) -> Path:
        """The merged MoE with its router finetuned for `policy` (token policies: `top_k` experts per token)."""
        from training.moe.finetune_router import main as router_main

        moe = self.moe(partition, n, seed)
        label = policy + (f"-top{top_k}" if top_k else "")
        data = {
            "moe_dir": str(moe),
            "train_file": str(self.data / "train.jsonl"),
            "valid_file": str(self.data / "valid.jsonl"),
            "policy": policy,
            "seed": seed,
            "output_dir": str(self.w / "routers" / moe.parent.name / label / f"seed{seed}"),
            **({"top_k": top_k} if top_k else {}),
            **self.cfg.finetune_router,
        }
        name = f"router_{moe.parent.name}_{label}_seed{seed}"
        path = self._config(name, "finetune_router", data)
        if self.cfg.launcher == "deepspeed" and policy != "learned-domain":  # learned-domain: one process
            from training.launcher import deepspeed_argv

            module = "training.moe.finetune_router"
            nodes = (self.cfg.num_gpus, self.cfg.hostfile, self.cfg.num_nodes)
            _launch(name, [*deepspeed_argv(*nodes, module=module), "--config", str(path)])
        else:
            _call(name, router_main, ["--config", str(path)])
        return Path(data["output_dir"])

    @once
    def reward_model(self, system: str, policy_model: Path, seed: int = 42) -> Path:
        """An outcome reward model: gold definitions preferred over `policy_model`'s samples."""
        from inference.reward.train import main as reward_main

        out = self.w / "orm" / system / f"seed{seed}"
        data = {
            "train": str(self.data / "train.jsonl"),
            "valid": str(self.data / "valid.jsonl"),
            "output_dir": str(out),
            "policy_model": str(policy_model),
            "seed": seed,
            **self.cfg.reward,
        }
        name = f"reward_{system}_seed{seed}"
        _call(name, reward_main, ["--config", str(self._config(name, "reward", data))])
        return out / "model"

    def predict(self, system: str, model: str | Path, dataset: str, seed: int = 42, **infer: Any) -> Path:
        """Generate for one dataset's test inputs; return predictions.jsonl."""
        from inference.infer import main as infer_main

        out = self.w / "infer" / system / dataset / f"seed{seed}"
        data = {
            "input": str(self.test_sets[dataset]),
            "output_dir": str(out),
            "model": str(model),
            "seed": seed,
            "max_items": self.cfg.eval_items,
            **self.cfg.infer,
            **infer,
        }
        name = f"infer_{system}_{dataset}_seed{seed}"
        _call(name, infer_main, ["--config", str(self._config(name, "infer", data))])
        return out / "predictions.jsonl"

    def score(
        self, system: str, dataset: str, runs: Mapping[int, Path], compare_to: str | None = None, **evaluate: Any
    ) -> dict[str, Any]:
        """Evaluate every seed's run of `system` on `dataset` (mean, and std over seeds); `compare_to`
        (another system's name, already scored) adds paired significance tests. Returns scores.json
        plus `significance` when compared."""
        from evaluation.evaluate import main as evaluate_main

        cfg = self.cfg
        preds = combine_seeds(system, runs, self.w / "infer" / system / dataset / "predictions.jsonl")
        out = self.w / "eval" / system / dataset
        encoder = resolve_asset(cfg.metric_encoder) if cfg.metric_encoder else None
        data: dict[str, Any] = {
            "predictions": str(preds),
            "references": str(self.test_sets[dataset]),
            "output_dir": str(out),
            "metrics": cfg.metrics,
            "dataset": dataset,
            "seed": cfg.seed,
        }
        if encoder:
            data.update(
                bertscore_model=encoder,
                bertscore_num_layers=cfg.metric_encoder_layers,
                moverscore_model=encoder,
                mauve_model=encoder,
                mauve_pooling="mean",
                sense_model=encoder,
            )
        if compare_to:
            data["compare_to"] = str(self.w / "infer" / compare_to / dataset / "predictions.jsonl")
        data.update({**cfg.evaluate, **evaluate})
        name = f"evaluate_{system}_{dataset}"
        _call(name, evaluate_main, ["--config", str(self._config(name, "evaluate", data))])
        result = json.loads((out / "scores.json").read_text(encoding="utf-8"))
        print(inputs_line(system, dataset, result), flush=True)
        if compare_to:
            result["significance"] = json.loads((out / "significance.json").read_text(encoding="utf-8"))
        return result

    def system(
        self,
        system: str,
        models: Mapping[int, Path | str],
        compare_to: str | None = None,
        group_by: list[str] | None = None,
        **infer: Any,
    ) -> dict[str, dict[str, Any]]:
        """Generate with each seed's model on every dataset and score (`group_by`: evaluate's group keys);
        returns {dataset: scores.json}."""
        return {
            dataset: self.score(
                system,
                dataset,
                {seed: self.predict(system, model, dataset, seed, **infer) for seed, model in models.items()},
                compare_to,
                **({"group_by": group_by} if group_by else {}),
            )
            for dataset in self.test_sets
        }


def inputs_line(system: str, dataset: str, scores: Mapping[str, Any]) -> str:
    """N scored inputs of one evaluation and its failed or empty predictions (scored 0, never dropped)."""
    counts = scores["counts"]
    n = "/".join(str(k) for k in sorted({run["ids"] for run in counts["runs"]}))
    failed, empty = counts["failed_predictions"], counts["empty_predictions"]
    return (
        f"{system} / {dataset}: N = {n} inputs per seed; {failed} failed and {empty - failed} empty "
        "predictions, each scored 0"
    )


def seed_scores(scores: Mapping[str, Any], metrics: tuple[str, ...] = TABLE_METRICS) -> list[dict[str, float]]:
    """Per-seed metric values of one scores.json (the input of `evaluation.report.table2`)."""
    (info,) = scores["systems"].values()
    return [{m: run["scores"][m] for m in metrics if m in run["scores"]} for run in info["seeds"]]


def write_table(table: Any, out: Path, stem: str, extra: dict[str, Any] | None = None) -> None:
    """Write `table` (evaluation.report.Table) as Markdown/CSV/LaTeX (+ `<stem>.json` with `extra`) and print it."""
    with AtomicFileSet() as files:
        table.write(out, stem, files)
        if extra is not None:
            files.get(out / f"{stem}.json").write(json.dumps(extra, indent=2, ensure_ascii=False) + "\n")
    print(table.markdown(), flush=True)


def fmt(mean: float | None, std: float | None = None) -> str:
    """A table cell as the paper prints it: 45.69, or 45.69±0.30; a dash when missing."""
    if mean is None:
        return "–"
    return f"{mean:.2f}" + (f"±{std:.2f}" if std else "")
