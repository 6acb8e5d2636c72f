"""Ablation of the DSKD objective: CE only vs CE + KL vs full DSKD, same teacher, student, data and seeds.

Each student is the teacher's first `--student-layers` layers (the last `--trainable-layers` train), trained
for the same steps on the same records under each objective and each seed (the seed sets the batch order).
It is scored on held-out terms (the embedded lexicon's valid split shares no term with its train split):
the definitions' token perplexity and the Moses sentence BLEU (max over the term's references) of greedy
definitions. The table gives mean ± std over seeds; the paired tests compare the per-example scores
(averaged over seeds) with approximate randomization, Holm-corrected over every comparison. The margin γ is
calibrated from the teacher (`training.dskd.margin`) unless `--gamma` fixes it; the table reports the share
of antonym pairs inside the margin during training. Everything is written to `<output-dir>/results.json`.
The last line is `ratio=<full-DSKD perplexity / CE-only perplexity> goal=1` (<= 1 is good).

    python scripts/bench_dskd.py                      # 3 seeds x 150 steps, ~25 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataset.lexicon import resolve_asset
from dataset.records import Record, load_records
from evaluation.bleu import moses_max_single_bleu
from evaluation.references import term_references
from evaluation.significance import approximate_randomization, holm
from prompts.builder import build_prompt
from run_config.devices import resolve_device
from run_config.loader import load_config
from run_config.runtime import set_seed, write_json
from training.dskd.config import DSKDConfig, input_path
from training.dskd.examples import encode_records
from training.dskd.student import build_student, load_teacher
from training.dskd.trainer import example_nll, prepare_senses, resolve_margin, train_loop

OBJECTIVES = {"ce": "CE only", "kd": "CE + KL", "dskd": "full DSKD"}
COMPARISONS = (("dskd", "ce"), ("dskd", "kd"), ("kd", "ce"))


@torch.no_grad()
def generate_definitions(
    model: Any, tokenizer: Any, records: list[Record], max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy definitions for (term, context) prompts built by `prompts.builder.build_prompt`."""
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = []
    for i in range(0, len(records), batch_size):
        prompts = [
            tokenizer(build_prompt(r.term, r.context, bos_token=tokenizer.bos_token or ""), add_special_tokens=False)[
                "input_ids"
            ]
            for r in records[i : i + batch_size]
        ]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        out += [" ".join(tokenizer.decode(g[width:], skip_special_tokens=True).split()) for g in gen]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="asset:smollm2")
    p.add_argument("--train", default="asset:wordnet/train.jsonl")
    p.add_argument("--valid", default="asset:wordnet/valid.jsonl", help="held-out terms")
    p.add_argument("--train-samples", type=int, default=2000)
    p.add_argument("--valid-samples", type=int, default=96)
    p.add_argument("--sense-max-texts", type=int, default=4000, help="corpus texts (of --train) for the senses")
    p.add_argument("--student-layers", type=int, default=16)
    p.add_argument("--trainable-layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--gamma", type=float, default=None, help="fixed hinge margin (default: calibrated)")
    p.add_argument("--gamma-quantile", type=float, default=0.5)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    p.add_argument("--permutations", type=int, default=10000, help="approximate-randomization trials")
    p.add_argument("--output-dir", default="runs/bench-dskd", help="results.json; senses/ is reused across runs")
    p.add_argument("--device", default="auto")
    return p


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_tests(per_example: dict[str, dict[str, np.ndarray]], samples: int) -> list[dict[str, Any]]:
    """Every comparison on every metric (per-example scores averaged over seeds), Holm-adjusted together."""
    tests = []
    for a, b in COMPARISONS:
        if a in per_example and b in per_example:
            for metric in ("nll", "bleu"):
                ar = approximate_randomization(per_example[a][metric], per_example[b][metric], samples)
                tests.append({"a": a, "b": b, "metric": metric, "delta": ar["delta"], "p_value": ar["p_value"]})
    for test, adjusted in zip(tests, holm([t["p_value"] for t in tests])):
        test["p_holm"] = adjusted
    return tests


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the truncated student's "unexpected layers" load report, 9 times
    out = Path(args.output_dir)
    base = {
        "teacher_model": args.teacher,
        "data_path_train": args.train,
        "data_path_valid": args.valid,
        "output_dir": str(out),
        "sense_dir": str(out / "senses"),
        "student_layers": args.student_layers,
        "trainable_layers": args.trainable_layers,
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "gamma": args.gamma,
        "gamma_quantile": args.gamma_quantile,
        "sense_corpus": [args.train],
        "sense_max_texts": args.sense_max_texts,
        "max_train_samples": args.train_samples,
        "logging_steps": max(args.steps // 10, 1),
        "warmup_rate": 0.05,
        "cutoff_len": 96,
        "device": args.device,
    }
    cfg = load_config(None, DSKDConfig, base)
    device = torch.device(resolve_device(cfg.device))
    from transformers import AutoTokenizer

    start = time.perf_counter()
    teacher_path = resolve_asset(cfg.teacher_model)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    teacher = load_teacher(teacher_path, cfg.dtype, device)
    senses, bank = prepare_senses(cfg, teacher, tokenizer, cfg.teacher_model, device)
    train_records = load_records(input_path(cfg.data_path_train))[: args.train_samples]
    valid_all = load_records(input_path(cfg.data_path_valid))
    valid = valid_all[: args.valid_samples]
    refs = term_references(valid_all)
    sense_examples, _ = encode_records(train_records, tokenizer, cfg.cutoff_len, senses)
    plain_examples = [{k: e[k] for k in ("input_ids", "labels")} for e in sense_examples]
    valid_examples, dropped = encode_records(valid, tokenizer, cfg.cutoff_len)
    if dropped:
        raise SystemExit(f"{args.valid}: {dropped} of the first {len(valid)} records exceed cutoff_len")
    margin = resolve_margin(cfg, teacher, sense_examples, bank, pad_id)
    setup_s = time.perf_counter() - start
    print(
        f"teacher {cfg.teacher_model}, student = first {args.student_layers} layers "
        f"(last {args.trainable_layers} trainable), {args.steps} steps x {args.batch_size}, seeds {args.seeds}; "
        f"{len(train_records)} train records, {len(valid)} valid records of held-out terms, "
        f"{len(senses)} sense words; gamma {margin['gamma']:.4g} ({margin['source']}); setup {setup_s:.0f} s",
        flush=True,
    )

    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        for objective in OBJECTIVES:
            run_cfg = cfg.model_copy(update={"objective": objective, "seed": seed, "gamma": margin["gamma"]})
            set_seed(seed)
            began = time.perf_counter()
            student, projection = build_student(run_cfg, teacher_path, None, teacher, device)
            examples = sense_examples if objective == "dskd" else plain_examples
            history = train_loop(
                run_cfg, student, teacher, projection, bank if objective == "dskd" else None, examples, pad_id
            )
            nll = example_nll(student, valid_examples, cfg.per_device_eval_batch_size, pad_id)
            hyps = generate_definitions(student, tokenizer, valid, args.max_new_tokens, cfg.per_device_eval_batch_size)
            bleu = [100 * moses_max_single_bleu(h, refs[r.term]) for h, r in zip(hyps, valid)]
            active = [row["sem_push_active"] for row in history if "sem_push_active" in row]
            runs.append(
                {
                    "objective": objective,
                    "seed": seed,
                    "train_ce": history[-1]["ce"],
                    "perplexity": math.exp(sum(x for x, _ in nll) / sum(n for _, n in nll)),
                    "bleu": statistics.fmean(bleu),
                    "push_active": statistics.fmean(active) if active else None,
                    "seconds": time.perf_counter() - began,
                    "example_nll": [x / n for x, n in nll],
                    "example_bleu": bleu,
                    "example": {"term": valid[0].term, "definition": hyps[0]},
                    "history": history,
                }
            )
            r = runs[-1]
            print(
                f"[seed {seed} {OBJECTIVES[objective]}] train CE {r['train_ce']:.3f}, valid ppl {r['perplexity']:.2f}, "
                f"BLEU {r['bleu']:.2f}, {r['seconds']:.0f} s; {valid[0].term!r}: {hyps[0]!r}",
                flush=True,
            )
            del student

    per_example = {
        o: {m: np.mean([r[f"example_{m}"] for r in runs if r["objective"] == o], axis=0) for m in ("nll", "bleu")}
        for o in OBJECTIVES
    }
    tests = paired_tests(per_example, args.permutations)
    summary = {}
    print(f"\n{'objective':<11} {'train CE':>14} {'valid ppl':>16} {'BLEU':>14} {'push active':>12} {'time s':>7}")
    for objective, label in OBJECTIVES.items():
        mine = [r for r in runs if r["objective"] == objective]
        ce, ppl, bleu = (mean_std([r[k] for r in mine]) for k in ("train_ce", "perplexity", "bleu"))
        active = [r["push_active"] for r in mine if r["push_active"] is not None]
        summary[objective] = {"train_ce": ce, "perplexity": ppl, "bleu": bleu, "push_active": active}
        shown = f"{statistics.fmean(active):.3f}" if active else "-"
        secs = statistics.fmean(r["seconds"] for r in mine)
        print(
            f"{label:<11} {ce[0]:>7.3f} ± {ce[1]:<4.3f} {ppl[0]:>8.2f} ± {ppl[1]:<5.2f} "
            f"{bleu[0]:>6.2f} ± {bleu[1]:<5.2f} {shown:>12} {secs:>7.0f}"
        )
    print(f"\npaired approximate randomization ({args.permutations} trials) over {len(valid)} held-out examples,")
    print("per-example scores averaged over seeds, Holm over all tests (nll = mean token NLL of the example):")
    for t in tests:
        print(
            f"  {t['a']:>4} - {t['b']:<4} {t['metric']:<4} delta {t['delta']:+.4f}  p {t['p_value']:.4f}  "
            f"p_holm {t['p_holm']:.4f}"
        )
    write_json(
        out / "results.json",
        {"args": vars(args), "margin": margin, "summary": summary, "tests": tests, "runs": runs},
    )
    ratio = summary["dskd"]["perplexity"][0] / summary["ce"]["perplexity"][0]
    print(f"total {time.perf_counter() - start:.0f} s -> {out / 'results.json'}")
    print(f"ratio={ratio:.4f} goal=1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
