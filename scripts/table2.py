"""Table 2 of the paper (main results): dense and MoE zero-shot, Best-of-N and ICL baselines beside the paper's numbers.

Rows: LM-Lexicon-Dense and -MoE (zero-shot, BoN-Oracle, BoN-ORM) and the Random-/Retrieval-ICL baselines;
columns: BLEU / ROUGE-L per dataset and their average.

Paper setting (run_config/paper_full.json): Llama-3-8B dense model and the 4x8B domain-routed MoE, seeds 21/42/84,
decoding T 0.6 / top-k 50 / top-p 0.9 / repetition penalty 1.05; Best-of-N over N samples per input picked by the
oracle (max BLEU against the references) or by an outcome reward model trained on that system's samples; 32-shot
ICL with GPT-4-Turbo, Claude-3-Opus and Gemini-1.5-Pro (keys from OPENAI_API_KEY, ANTHROPIC_API_KEY,
GEMINI_API_KEY). `--toy` runs the same chain on CPU with the ICL rows on the local base model. The paper's
prior-work rows (Rerank-T5 ... LlamaDict) are printed for reference only.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from dataset.lexicon import resolve_asset
from inference.config import KeyEnvName
from run_config.cli import run_main
from run_config.errors import ConfigError
from run_config.loader import StageConfig
from run_config.runtime import atomic_open
from scripts.experiment import (
    TABLE_METRICS,
    Experiment,
    ExperimentConfig,
    fmt,
    seed_scores,
    table_config,
    table_parser,
    table_settings,
    write_table,
)
from scripts.paper_numbers import ICL_SHOTS, TABLE2

SYSTEM_NAMES = {"dense": "LM-Lexicon-Dense", "moe": "LM-Lexicon-MoE"}
METHOD_SUFFIX = {"zero-shot": "", "bon-oracle": " + BoN-Oracle", "bon-orm": " + BoN-ORM"}
ICL_SUFFIX = {"random": "Random-ICL", "retrieval": "Retrieval-ICL"}
PRIOR_WORK = [m for m in TABLE2 if m.endswith(")")]  # "Rerank-T5 (2021)" ... "LlamaDict (2024)"
SHOWN = ("bleu", "rougeL")
SUMMARISED = (*TABLE_METRICS, "sacrebleu")


class IclModel(StageConfig):
    """One model of the ICL baseline rows."""

    name: str = Field(description="row label; the paper's are GPT-4-Turbo, Claude-3-Opus, Gemini-1.5-Pro")
    backend: Literal["local", "vllm", "openai", "anthropic", "gemini"] = Field(description="infer backend")
    model: str = Field(description="API model name, or HF folder / asset:smollm2 for local and vllm")
    api_key_env: KeyEnvName = Field(
        None, description="env var of the API key (default: the vendor's, e.g. OPENAI_API_KEY)"
    )
    base_url: str | None = Field(None, description="API base URL (null: the vendor's)")


PAPER_ICL_MODELS = [
    {"name": "GPT-4-Turbo", "backend": "openai", "model": "gpt-4-turbo-2024-04-09"},
    {"name": "Claude-3-Opus", "backend": "anthropic", "model": "claude-3-opus-20240229"},
    {"name": "Gemini-1.5-Pro", "backend": "gemini", "model": "gemini-1.5-pro"},
]


class Table2Settings(StageConfig):
    """Which rows of Table 2 to run (`tables.table2` of the experiment config); defaults = the paper's."""

    systems: list[Literal["dense", "moe"]] = Field(
        default_factory=lambda: ["dense", "moe"],
        description="LM-Lexicon systems (MoE: domain routing, N = num_clusters)",
    )
    methods: list[Literal["zero-shot", "bon-oracle", "bon-orm"]] = Field(
        default_factory=lambda: ["zero-shot", "bon-oracle", "bon-orm"],
        description="decoding of each system: one sample, or Best-of-N picked by the oracle / the reward model",
    )
    bon_samples: int = Field(
        32,
        ge=2,
        description="N of Best-of-N (the paper gives no N for Table 2; 32 = its "
        "1:32 ORM sampling ratio); oracle and ORM pick from the same samples",
    )
    icl_modes: list[Literal["random", "retrieval"]] = Field(
        default_factory=lambda: ["random", "retrieval"], description="ICL baseline rows per model"
    )
    icl_k: int = Field(ICL_SHOTS, ge=1, le=128, description="demos per input (paper: 32), drawn from the train split")
    icl_models: list[IclModel] = Field(
        default_factory=lambda: [IclModel(**m) for m in PAPER_ICL_MODELS], description="ICL models (empty: no ICL rows)"
    )
    icl_max_items: int | None = Field(
        100,
        ge=1,
        description="ICL test inputs per dataset, at most eval_items (original: 100 random items; null: eval_items)",
    )
    prior_work: bool = Field(True, description="also print the paper's prior-work rows (paper numbers only)")
    report_sacrebleu: bool = Field(
        False,
        description="add a standard corpus sacreBLEU column after the paper's "
        "BLEU (needs sacrebleu in the experiment's metrics)",
    )
    report_ci: bool = Field(
        False,
        description="ours: ± half the width of the bootstrap 95% CI over test inputs (scores.json ci95) "
        "instead of the std over seeds (also --report-ci)",
    )


def check_api_keys(settings: Table2Settings, source: str) -> None:
    """Fail before any work when an API row's key is not in the environment."""
    from inference.api import api_key_from_env
    from inference.config import API_BACKENDS

    problems = []
    for i, m in enumerate(settings.icl_models):
        if m.backend in API_BACKENDS:
            try:
                api_key_from_env(m.backend, m.api_key_env)
            except ConfigError as e:
                problems.append(f"{source}: tables.table2.icl_models.{i} ({m.name}): {e}")
    if problems:
        raise ConfigError(problems + ["or drop those models from tables.table2.icl_models"])


def check_sacrebleu(cfg: ExperimentConfig, settings: Table2Settings, source: str) -> None:
    """Fail before any work when the sacreBLEU column is asked for but never computed."""
    if settings.report_sacrebleu and "sacrebleu" not in cfg.metrics:
        raise ConfigError(
            f'{source}: tables.table2.report_sacrebleu: needs "sacrebleu" in metrics (now {", ".join(cfg.metrics)})'
        )


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-").lower()


def run_rows(exp: Experiment, settings: Table2Settings) -> dict[str, dict[str, dict[str, Any]]]:
    """Run every requested row; returns {row label: {dataset: scores.json}} in the paper's row order."""
    cfg, n = exp.cfg, settings.bon_samples
    icl_seed = cfg.seeds[0]
    limits = [x for x in (cfg.eval_items, settings.icl_max_items) if x is not None]
    icl_items = min(limits) if limits else None
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for m in settings.icl_models:
        model = resolve_asset(m.model) if m.backend in ("local", "vllm") else m.model
        extra = {k: v for k, v in (("api_key_env", m.api_key_env), ("base_url", m.base_url)) if v}
        for mode in settings.icl_modes:
            system = f"icl-{mode}-k{settings.icl_k}-{_slug(m.name)}"
            rows[f"{m.name} {ICL_SUFFIX[mode]}"] = exp.system(
                system,
                {icl_seed: model},
                backend=m.backend,
                icl_mode=mode,
                icl_k=settings.icl_k,
                icl_examples=str(exp.data / "train.jsonl"),
                max_items=icl_items,
                **extra,
            )
    for system in settings.systems:
        models = {seed: exp.dense(seed) if system == "dense" else exp.moe(seed=seed) for seed in cfg.seeds}
        label = SYSTEM_NAMES[system]
        if "zero-shot" in settings.methods:
            rows[label] = exp.system(system, models)
        # Oracle and ORM pick from the same N samples (one generation, folder `<system>-bon<N>`): a paired
        # comparison of the two verifiers at half the cost. Each selection is scored before the next rewrites
        # the folder's predictions.
        for method in ("bon-oracle", "bon-orm"):
            if method not in settings.methods:
                continue
            verifier = method.removeprefix("bon-")
            rewards = {
                seed: str(exp.reward_model(system, model, seed)) for seed, model in models.items() if verifier == "orm"
            }
            per_dataset = {}
            for dataset in exp.test_sets:
                runs = {
                    seed: exp.predict(
                        f"{system}-bon{n}",
                        model,
                        dataset,
                        seed,
                        n_samples=n,
                        selection=verifier,
                        **({"reward_model": rewards[seed]} if rewards else {}),
                    )
                    for seed, model in models.items()
                }
                per_dataset[dataset] = exp.score(f"{system}-bon{n}-{verifier}", dataset, runs)
            rows[label + METHOD_SUFFIX[method]] = per_dataset
    return rows


def summarise(rows: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{row: {dataset: {metric: {mean, std, seeds, ci95}}}} from the scores.json of each row (ci95: the bootstrap
    95% CI over test inputs; none for MAUVE)."""
    from evaluation.report import mean_std

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for label, per_dataset in rows.items():
        for dataset, scores in per_dataset.items():
            per_seed = seed_scores(scores, SUMMARISED)
            intervals = next(iter(scores.get("ci95", {}).get("systems", {}).values()), {})
            cell = out.setdefault(label, {}).setdefault(dataset, {})
            for metric in SUMMARISED:
                values = [s[metric] for s in per_seed if metric in s]
                if values:
                    mean, std = mean_std(values)
                    cell[metric] = {"mean": mean, "std": std, "seeds": values}
                    if metric in intervals:
                        cell[metric]["ci95"] = intervals[metric]
    return out


def paper_cell(label: str, dataset: str, metric: str) -> tuple[float | None, float | None]:
    """The paper's (mean, std) for a row and dataset, (None, None) where it has none."""
    return TABLE2.get(label, {}).get(dataset, {}).get(metric, (None, None))


def _avg(values: Sequence[float | None]) -> float | None:
    return sum(values) / len(values) if values and None not in values else None


def build_table(
    ours: Mapping[str, Mapping[str, Mapping[str, Any]]],
    datasets: Sequence[str],
    prior_work: bool,
    report_sacrebleu: bool = False,
    report_ci: bool = False,
) -> Any:
    """One `ours` and one `paper` line per row (BLEU / ROUGE-L per dataset, then, with two datasets or more,
    their mean over the datasets shown; with `report_sacrebleu`, standard sacreBLEU after BLEU, which the paper
    never reports; with `report_ci`, ours ± half the bootstrap 95% CI width instead of the std over seeds, none
    where a metric has no CI), prior-work rows as `paper` lines only."""
    from evaluation.report import LABELS, Table, half_width, shown_metrics

    shown = shown_metrics(SHOWN, report_sacrebleu)
    averaged = shown if len(datasets) > 1 else []
    header = ["Method", "Run"] + [f"{d} {LABELS[m]}" for d in datasets for m in shown]
    header += [f"Avg. {LABELS[m]}" for m in averaged]

    def line(label: str, run: str, cell: Any) -> list[str]:
        cells = [fmt(*cell(d, m)) for d in datasets for m in shown]
        return [label, run] + cells + [fmt(_avg([cell(d, m)[0] for d in datasets])) for m in averaged]

    table_rows = []
    if prior_work:
        table_rows += [line(label, "paper", lambda d, m, lb=label: paper_cell(lb, d, m)) for label in PRIOR_WORK]
    for label, per_dataset in ours.items():

        def mine(d: str, m: str, per: Mapping[str, Any] = per_dataset) -> tuple[float | None, float | None]:
            value = per.get(d, {}).get(m)
            if not value:
                return None, None
            if report_ci:
                return value["mean"], half_width(value["ci95"]) if "ci95" in value else None
            return value["mean"], value["std"]

        table_rows.append(line(label, "ours", mine))
        table_rows.append(line(label, "paper", lambda d, m, lb=label: paper_cell(lb, d, m)))
    return Table(header, table_rows)


def metrics_csv(ours: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Every metric of every row and dataset, one line each, with the paper's value where it has one."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "dataset", "metric", "mean", "std", "seeds", "paper"])
    for label, per_dataset in ours.items():
        for dataset, per_metric in per_dataset.items():
            for metric, v in per_metric.items():
                paper = paper_cell(label, dataset, metric)[0]
                writer.writerow(
                    [
                        label,
                        dataset,
                        metric,
                        f"{v['mean']:.4f}",
                        f"{v['std']:.4f}",
                        len(v["seeds"]),
                        "" if paper is None else paper,
                    ]
                )
    return buf.getvalue()


def title(cfg: ExperimentConfig, datasets: Sequence[str], settings: Table2Settings) -> str:
    """What was run, from the config (never a claim the config does not make)."""
    data = cfg.builtin and f"the embedded {cfg.builtin} lexicon" or ", ".join(cfg.input)
    seeds = ", ".join(map(str, cfg.seeds))
    return (
        f"Table 2 (ours: {cfg.base_model} on {data}; datasets {', '.join(datasets)}; seeds {seeds}; "
        f"MoE N={cfg.num_clusters}; BoN N="
        f"{settings.bon_samples}; ICL k={settings.icl_k}). Paper: Llama-3-8B on 3D-EX and its four sources, "
        "seeds 21/42/84."
        + (" Avg. = mean over the datasets shown, for ours and the paper alike." if len(datasets) > 1 else "")
        + (
            " sacreBLEU: standard corpus BLEU (13a tokens, exp smoothing), lower than the paper's BLEU "
            "(Moses sentence BLEU+1, max over references; docs/metrics.md)."
            if settings.report_sacrebleu
            else ""
        )
        + (
            " Ours ±: half the width of the bootstrap 95% CI over test inputs (not the std over seeds)."
            if settings.report_ci
            else ""
        )
    )


def _run(args: argparse.Namespace) -> int:
    cfg, source = table_config(args)
    settings = table_settings(cfg, "table2", Table2Settings, source)
    if args.report_ci:
        settings = settings.model_copy(update={"report_ci": True})
    check_api_keys(settings, source)
    check_sacrebleu(cfg, settings, source)
    exp = Experiment(cfg, source)
    ours = summarise(run_rows(exp, settings))
    datasets = list(exp.test_sets)
    out = Path(cfg.work_dir) / "tables"
    with atomic_open(out / "table2_metrics.csv") as f:
        f.write(metrics_csv(ours))
    print(title(cfg, datasets, settings))
    paper = {
        label: {d: {m: paper_cell(label, d, m) for m in SHOWN} for d in datasets}
        for label in [*(PRIOR_WORK if settings.prior_work else []), *ours]
    }
    write_table(
        build_table(ours, datasets, settings.prior_work, settings.report_sacrebleu, settings.report_ci),
        out,
        "table2",
        {
            "title": title(cfg, datasets, settings),
            "settings": settings.model_dump(mode="json"),
            "datasets": datasets,
            "ours": ours,
            "paper": paper,
        },
    )
    print(f"table2: wrote {out}/table2.{{md,csv,tex,json}} and table2_metrics.csv (every metric)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = table_parser("table2", __doc__)
    parser.add_argument("--report-ci", action="store_true", help="set tables.table2.report_ci (± bootstrap 95%% CI)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
