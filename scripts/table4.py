"""Table 4: routing policy ablation of the semantic N-expert MoE (paper: 3D-EX, 4x Llama-3-8B, seeds 21/42/84).

Domain-level routing (the merged MoE as is: each input's nearest cluster centroid picks one expert) against
top-1 and top-2 token-level routing and sequence-level routing, each with the MoE's router finetuned for that
policy (finetune-router, Table 12's MoE column). Every row is generated and scored on one dataset (default:
the last reported one, 3D-EX in the paper's setting); p-values are paired t-tests of each policy's per-input
BLEU against domain routing (the paired bootstrap's p is in the JSON). The paper's "sequence-level" row does
not say soft or hard (its appendix lists both): `hard-sequence` (one expert per sequence, chosen by the
learned router, the same compute as domain routing) is the default; `soft-sequence` can be added.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from run_config.cli import run_main
from run_config.errors import ConfigError, LexiconError
from run_config.loader import StageConfig
from scripts.experiment import (
    Experiment,
    ExperimentConfig,
    fmt,
    table_config,
    table_parser,
    table_settings,
    write_table,
)
from scripts.paper_numbers import TABLE4

PolicyRow = Literal["domain", "token-top1", "token-top2", "hard-sequence", "soft-sequence"]
# row -> (label, finetune-router policy or None for the merged MoE, top_k, key of TABLE4)
ROWS: dict[str, tuple[str, str | None, int | None, str]] = {
    "domain": ("domain-level (LM-Lexicon)", None, None, "domain"),
    "token-top1": ("top-1 token-level", "token", 1, "token-top1"),
    "token-top2": ("top-2 token-level", "token", 2, "token-top2"),
    "hard-sequence": ("sequence-level (hard)", "hard-sequence", None, "sequence"),
    "soft-sequence": ("sequence-level (soft)", "soft-sequence", None, "sequence"),
}
HEADER = ["Setting", "BLEU (ours)", "BLEU (paper)", "ROUGE-L (ours)", "ROUGE-L (paper)", "p (ours)", "p (paper)"]


class Table4Settings(StageConfig):
    """Settings of `tables.table4`: which routing policies (rows) and which dataset."""

    policies: list[PolicyRow] = Field(
        default_factory=lambda: ["domain", "token-top1", "token-top2", "hard-sequence"],
        description="rows: domain (the baseline of the p-values, required), "
        "token-top1, token-top2, hard-sequence, soft-sequence",
    )
    dataset: str | None = Field(None, description="dataset scored (null: the last reported one; paper: 3D-EX)")

    @model_validator(mode="after")
    def _domain_included(self) -> Table4Settings:
        if "domain" not in self.policies:
            raise ValueError("policies must include domain (the p-values compare every policy with it)")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"policies lists a policy twice: {self.policies}")
        return self

    def rows(self) -> list[str]:
        """The policies with domain first (every other row is compared with it)."""
        return ["domain"] + [p for p in self.policies if p != "domain"]


def setting_label(cfg: ExperimentConfig, dataset: str) -> str:
    """What our numbers are (from the config), e.g. 'ours: 4 experts of SmolLM2 ..., WordNet, seeds 42'."""
    data = f"builtin {cfg.builtin}" if cfg.builtin else "your input files"
    items = f"{cfg.eval_items} test inputs" if cfg.eval_items else "all test inputs"
    return (
        f"ours: {cfg.num_clusters} semantic experts of {cfg.base_model} ({data}), {dataset}, {items}, "
        f"seeds {'/'.join(map(str, cfg.seeds))}; paper: 4 experts of Llama-3-8B, 3D-EX, seeds 21/42/84"
    )


def p_cell(p: float | None) -> str:
    """A p-value as the paper prints it (2.7e-3); a dash for the baseline row."""
    if p is None:
        return "–"
    mantissa, exponent = f"{p:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def policy_model(exp: Experiment, row: str, seed: int) -> Path:
    """The checkpoint of one row: the merged MoE (domain) or its router finetuned for the row's policy;
    its routing.json must name the policy it will be run with."""
    from training.moe.checkpoint import read_routing

    _, policy, top_k, _ = ROWS[row]
    model = exp.moe(seed=seed) if policy is None else exp.router(policy, top_k=top_k, seed=seed)
    routing = read_routing(model)
    want = policy or "domain"
    if routing["policy"] != want or (top_k and routing.get("top_k") != top_k):
        raise LexiconError(
            f"{model}: routing.json has policy {routing['policy']} top_k {routing.get('top_k')}, "
            f"expected {want}" + (f" top_k {top_k}" if top_k else "")
        )
    return model


def run_table4(cfg: ExperimentConfig, settings: Table4Settings, source: str) -> dict[str, Any]:
    """Build every row's model, generate, score against domain routing; write tables/table4.*."""
    exp = Experiment(cfg, source)
    datasets = list(exp.test_sets)
    dataset = settings.dataset or datasets[-1]
    if dataset not in exp.test_sets:
        raise ConfigError(
            [f"{source}: tables.table4.dataset: {dataset!r} is not a reported dataset ({', '.join(datasets)})"]
        )
    rows, table = [], []
    for row in settings.rows():
        label, _, _, paper_key = ROWS[row]
        system = "moe" if row == "domain" else f"moe_{row}"
        models = {seed: policy_model(exp, row, seed) for seed in cfg.seeds}
        runs = {seed: exp.predict(system, model, dataset, seed) for seed, model in models.items()}
        scores = exp.score(system, dataset, runs, compare_to=None if row == "domain" else "moe")
        std = scores.get("std", {})
        tests = (scores.get("significance") or {}).get("metrics", {}).get("bleu")
        p = tests["ttest"]["p_value"] if tests else None
        paper_bleu, paper_rouge, paper_p = TABLE4[paper_key]
        table.append(
            [
                label,
                fmt(scores["bleu"], std.get("bleu")),
                fmt(*paper_bleu),
                fmt(scores["rougeL"], std.get("rougeL")),
                fmt(*paper_rouge),
                p_cell(p),
                p_cell(paper_p),
            ]
        )
        rows.append(
            {
                "policy": row,
                "system": system,
                "models": {str(s): str(m) for s, m in models.items()},
                "bleu": scores["bleu"],
                "rougeL": scores["rougeL"],
                "std": std,
                "p_ttest": p,
                "p_bootstrap": tests["bootstrap"]["p_value"] if tests else None,
                "paper": {"bleu": paper_bleu, "rougeL": paper_rouge, "p": paper_p},
            }
        )
    from evaluation.report import Table

    label = setting_label(cfg, dataset)
    print(f"\nTable 4 — routing policy ablation ({label})")
    result = {"setting": label, "dataset": dataset, "rows": rows}
    write_table(Table(HEADER, table), Path(cfg.work_dir) / "tables", "table4", result)
    return result


def build_parser() -> argparse.ArgumentParser:
    return table_parser("table4", __doc__)


def _run(args: argparse.Namespace) -> int:
    cfg, source = table_config(args)
    run_table4(cfg, table_settings(cfg, "table4", Table4Settings, source), source)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
