"""Fig. 4: Best-of-N with the oracle verifier, BLEU vs N samples (paper: 64 test inputs per dataset, N = 1 ... 128).

The dense and MoE models draw `max_samples` samples per input once (infer n_samples, every sample kept in
samples.jsonl); the oracle BLEU at N is the mean over inputs of the best of each input's first N samples,
scored by evaluation.api under the one-to-many protocol (`max`: every definition of the term in the test
split). Every input counts: a failed sample is an empty one (BLEU 0), so an input whose samples all failed
scores 0 at every N; the table prints N inputs and how many of them failed. Writes
tables/fig4.{png,md,csv,tex,json}: one curve per system x dataset on a log2 N axis. The paper prints no
numbers for Fig. 4, only its finding (consistent gains up to 128 samples on all five benchmarks), which is
printed beside ours together with whether each of our curves is monotone.

Beside the oracle, each deployable selector (`selectors`: first, likelihood, ORM, MBR; infer's `selection`)
picks one of the same N = `max_samples` samples per input without the references; its BLEU gets a line with
the share of the oracle's gain it recovers, (selector - oracle at N=1) / (oracle at N - oracle at N=1).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from run_config.cli import run_main
from run_config.errors import ConfigError, DataError
from run_config.loader import StageConfig
from scripts.experiment import (
    Experiment,
    ExperimentConfig,
    table_config,
    table_parser,
    table_settings,
    write_table,
)
from scripts.paper_numbers import FIG4_MAX_SAMPLES

PAPER_FINDING = (
    f"paper (Fig. 4): the oracle verifier gives consistent BLEU gains up to {FIG4_MAX_SAMPLES} "
    "samples on all five benchmarks (64 test inputs each; no numbers printed)"
)
LABELS = {"dense": "LM-Lexicon-Dense", "moe": "LM-Lexicon-MoE"}
SELECTOR_LABELS = {"first": "first", "likelihood": "likelihood", "orm": "ORM", "mbr": "MBR"}
Selector = Literal["first", "likelihood", "orm", "mbr"]


class Fig4Settings(StageConfig):
    """Settings of `tables.fig4`: systems, samples per input, inputs per dataset."""

    systems: list[Literal["dense", "moe"]] = Field(
        default_factory=lambda: ["dense", "moe"],
        min_length=1,
        description="curves: dense baseline and/or the semantic MoE",
    )
    max_samples: int = Field(FIG4_MAX_SAMPLES, ge=1, description="samples per input; N = 1, 2, 4, ... up to it")
    items: int = Field(64, ge=1, description="test inputs per dataset (seeded subset; paper: 64)")
    datasets: list[str] | None = Field(None, description="datasets (null: every reported one)")
    selectors: list[Selector] = Field(
        default_factory=lambda: ["first", "likelihood", "orm", "mbr"],
        description="deployable selectors scored on the same samples, each with the share of the oracle's gain "
        "it recovers (orm trains a reward model per system)",
    )


def sample_counts(max_samples: int) -> list[int]:
    """1, 2, 4, ... below `max_samples`, then `max_samples` itself."""
    counts = [1]
    while counts[-1] * 2 < max_samples:
        counts.append(counts[-1] * 2)
    return counts + ([max_samples] if max_samples > 1 else [])


def read_samples(path: Path, max_samples: int) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Each input's first `max_samples` samples in sample_idx order, a failed or missing one as "" (BLEU 0),
    and the counts: inputs, failed samples, inputs whose samples all failed."""
    from dataset.predictions import read_rows

    rows, _ = read_rows(path)
    by_id: dict[str, dict[int, str | None]] = {}
    for row in rows:
        if row["sample_idx"] < max_samples:
            slots = by_id.setdefault(row["id"], {})
            if row.get("error") is None or row["sample_idx"] not in slots:
                slots[row["sample_idx"]] = row["prediction"] if row.get("error") is None else None
    if not by_id:
        raise DataError(str(path), None, "id", "no samples")
    samples = {i: [slots.get(k) for k in range(max_samples)] for i, slots in by_id.items()}
    counts = {
        "inputs": len(samples),
        "failed_samples": sum(s is None for ss in samples.values() for s in ss),
        "failed_inputs": sum(all(s is None for s in ss) for ss in samples.values()),
    }
    return {i: [s or "" for s in ss] for i, ss in samples.items()}, counts


def oracle_curve(samples: dict[str, list[str]], test_file: Path, counts: Sequence[int], protocol: str) -> list[float]:
    """Oracle BLEU (best of the first N samples per input, mean over inputs) for each N of `counts`."""
    from dataset.records import load_records
    from evaluation.api import score

    pool = load_records(test_file)
    by_id = {r.id: r for r in pool}
    missing = sorted(set(samples) - set(by_id))
    if missing:
        raise DataError(str(test_file), None, "id", f"no test record for sampled id {missing[0]}")
    ids = sorted(samples)
    refs = [by_id[i] for i in ids]
    curve = []
    for n in counts:
        result = score([samples[i][:n] for i in ids], refs, ("bleu",), protocol, pool=pool)
        curve.append(result.get("oracle", result)["bleu"])
    return curve


def gain_share(score: float, curve: Sequence[float]) -> float | None:
    """The share of the oracle's gain (N=1 -> N) that a selector scoring `score` recovers; None without a gain."""
    gain = curve[-1] - curve[0]
    return (score - curve[0]) / gain if gain > 0 else None


def share_text(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def selected_predictions(path: Path) -> dict[str, str]:
    """Each input's selected prediction in infer's predictions.jsonl, a failed one as "" (BLEU 0)."""
    from dataset.predictions import read_rows

    rows, _ = read_rows(path)
    return {r["id"]: (r["prediction"] or "") if r.get("error") is None else "" for r in rows}


def setting_label(cfg: ExperimentConfig, settings: Fig4Settings, seed: int) -> str:
    """What our curves are (from the config) next to the paper's setting."""
    data = f"builtin {cfg.builtin}" if cfg.builtin else "your input files"
    return (
        f"ours: {cfg.base_model} dense / {cfg.num_clusters}-expert MoE ({data}), {settings.items} inputs per "
        f"dataset, {settings.max_samples} samples, seed {seed}; paper: Llama-3-8B, 64 inputs, 128 samples"
    )


def plot(curves: dict[str, list[float]], counts: Sequence[int], title: str, path: Path) -> None:
    """BLEU vs N on a log2 axis, one line per curve (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from run_config.runtime import atomic_open

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, values in curves.items():
        ax.plot(counts, values, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(counts), [str(n) for n in counts])
    ax.set_xlabel("samples per input N")
    ax.set_ylabel("oracle BLEU (best of N)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def run_fig4(cfg: ExperimentConfig, settings: Fig4Settings, source: str) -> dict[str, Any]:
    """Sample once per system and dataset, compute the oracle curves, write the table and the PNG."""
    exp = Experiment(cfg, source)
    datasets = settings.datasets or list(exp.test_sets)
    unknown = [d for d in datasets if d not in exp.test_sets]
    if unknown:
        raise ConfigError(
            [
                f"{source}: tables.fig4.datasets: {d!r} is not a reported dataset ({', '.join(exp.test_sets)})"
                for d in unknown
            ]
        )
    seed = cfg.seeds[0]
    counts = sample_counts(settings.max_samples)
    protocol = cfg.evaluate.get("protocol", "max")
    # infer's batch_size counts prompts; each brings max_samples sequences: keep sequences per call as configured
    prompts_per_call = max(1, int(cfg.infer.get("batch_size", 16)) // settings.max_samples)
    curves: dict[str, list[float]] = {}
    inputs: dict[str, dict[str, int]] = {}
    selected: dict[str, dict[str, float]] = {}
    for system in settings.systems:
        model = exp.dense(seed) if system == "dense" else exp.moe(seed=seed)
        for dataset in datasets:
            name = f"{LABELS[system]} / {dataset}"
            predict = partial(
                exp.predict,
                f"{system}_bon{settings.max_samples}",
                model,
                dataset,
                seed,
                n_samples=settings.max_samples,
                max_items=settings.items,
                batch_size=prompts_per_call,
            )
            preds = predict()
            samples, inputs[name] = read_samples(preds.parent / "samples.jsonl", settings.max_samples)
            curves[name] = oracle_curve(samples, exp.test_sets[dataset], counts, protocol)
            selected[name] = {}
            for selector in settings.selectors:  # infer re-selects from the same samples (selection is resume-neutral)
                reward = {"reward_model": str(exp.reward_model(system, model, seed))} if selector == "orm" else {}
                chosen = selected_predictions(predict(selection=selector, **reward))
                picks = {i: [chosen.get(i, "")] for i in samples}
                selected[name][selector] = oracle_curve(picks, exp.test_sets[dataset], [1], protocol)[0]
    monotone = {name: all(b >= a for a, b in zip(values, values[1:])) for name, values in curves.items()}
    from evaluation.report import Table

    rows = [[str(n)] + [f"{values[k]:.2f}" for values in curves.values()] for k, n in enumerate(counts)]
    rows.append([f"gain N=1→{counts[-1]}"] + [f"{values[-1] - values[0]:+.2f}" for values in curves.values()])
    shares = {name: {k: gain_share(v, curves[name]) for k, v in picks.items()} for name, picks in selected.items()}
    for selector in settings.selectors:
        rows.append(
            [f"{SELECTOR_LABELS[selector]} at N={counts[-1]} (share of oracle gain)"]
            + [f"{selected[name][selector]:.2f} ({share_text(shares[name][selector])})" for name in curves]
        )
    rows.append(["monotone"] + ["yes" if monotone[name] else "no" for name in curves])
    rows.append(
        ["inputs (all samples failed)"]
        + [f"{inputs[name]['inputs']} ({inputs[name]['failed_inputs']})" for name in curves]
    )
    label = setting_label(cfg, settings, seed)
    out = Path(cfg.work_dir) / "tables"
    plot(curves, counts, "Fig. 4 — Best-of-N, oracle verifier\n" + textwrap.fill(label, 100), out / "fig4.png")
    print(f"\nFig. 4 — Best-of-N with the oracle verifier, oracle BLEU by N ({label})")
    result = {
        "setting": label,
        "counts": counts,
        "curves": curves,
        "monotone": monotone,
        "inputs": inputs,
        "selectors": {
            name: {k: {"bleu": v, "oracle_gain_share": shares[name][k]} for k, v in picks.items()}
            for name, picks in selected.items()
        },
        "paper": PAPER_FINDING,
        "png": str(out / "fig4.png"),
    }
    write_table(Table(["N"] + list(curves), rows), out, "fig4", result)
    for name, n in inputs.items():
        print(
            f"{name}: N = {n['inputs']} inputs, {n['failed_inputs']} with every sample failed, "
            f"{n['failed_samples']} of {n['inputs'] * settings.max_samples} samples failed (failed = BLEU 0)"
        )
    for name, picks in selected.items():
        for selector, bleu in picks.items():
            share = shares[name][selector]
            recovered = f"recovers {share_text(share)} of the oracle's gain" if share is not None else "no oracle gain"
            print(
                f"{name}: {SELECTOR_LABELS[selector]} BLEU {bleu:.2f} at N={counts[-1]}, {recovered} "
                f"(oracle {curves[name][0]:.2f} at N=1 -> {curves[name][-1]:.2f} at N={counts[-1]})"
            )
    print(PAPER_FINDING)
    print(
        f"ours: {'monotone' if all(monotone.values()) else 'NOT monotone'} on "
        f"{sum(monotone.values())} of {len(monotone)} curves up to {counts[-1]} samples; plot in {out / 'fig4.png'}"
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    return table_parser("fig4", __doc__)


def _run(args: argparse.Namespace) -> int:
    cfg, source = table_config(args)
    run_fig4(cfg, table_settings(cfg, "fig4", Fig4Settings, source), source)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
