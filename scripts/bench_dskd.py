"""Ablation of the DSKD objective: CE only vs CE + KL vs full DSKD, same teacher, student, data and seed.

Each student is a truncated copy of the teacher trained for the same steps; the table reports the
valid-split perplexity of the definitions and the Moses sentence BLEU (max over the term's references,
`evaluation.bleu.moses_max_single_bleu` + `evaluation.references.term_references`) of greedy
definitions. The last line is `ratio=<full-DSKD perplexity / CE-only perplexity> goal=1` (<= 1 is good).

    python scripts/bench_dskd.py --steps 60
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

import torch

from dataset.lexicon import resolve_asset
from dataset.records import Record, load_records
from evaluation.bleu import moses_max_single_bleu
from evaluation.references import term_references
from prompts.builder import build_prompt
from run_config.devices import resolve_device
from run_config.loader import load_config
from run_config.runtime import set_seed
from training.dskd.config import DSKDConfig, input_path
from training.dskd.student import build_student, load_teacher
from training.dskd.trainer import encode_records, evaluate_perplexity, prepare_senses, train_loop

OBJECTIVES = {"ce": "CE only", "kd": "CE + KL", "dskd": "full DSKD"}


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
    p.add_argument("--valid", default="asset:wordnet/valid.jsonl")
    p.add_argument("--train-samples", type=int, default=400)
    p.add_argument("--valid-samples", type=int, default=48)
    p.add_argument("--student-layers", type=int, default=16)
    p.add_argument("--trainable-layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--gamma", type=float, default=8.0, help="hinge margin (SmolLM2 hidden-state MSE scale)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--output-dir", default="runs/bench-dskd")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=42)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    base = {
        "teacher_model": args.teacher,
        "data_path_train": args.train,
        "data_path_valid": args.valid,
        "output_dir": args.output_dir,
        "student_layers": args.student_layers,
        "trainable_layers": args.trainable_layers,
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "gamma": args.gamma,
        "sense_corpus": [args.train],
        "sense_max_texts": 2 * args.train_samples,
        "max_train_samples": args.train_samples,
        "logging_steps": max(args.steps // 5, 1),
        "warmup_rate": 0.05,
        "cutoff_len": 96,
        "device": args.device,
        "seed": args.seed,
    }
    cfg = load_config(None, DSKDConfig, base)
    device = torch.device(resolve_device(cfg.device))
    from transformers import AutoTokenizer

    teacher_path = resolve_asset(cfg.teacher_model)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    teacher = load_teacher(teacher_path, cfg.dtype, device)
    senses, bank = prepare_senses(cfg, teacher, tokenizer, cfg.teacher_model, device)
    train_records = load_records(input_path(cfg.data_path_train))[: args.train_samples]
    valid_all = load_records(input_path(cfg.data_path_valid))
    valid = valid_all[: args.valid_samples]
    refs = term_references(valid_all)
    valid_examples, _ = encode_records(valid, tokenizer, cfg.cutoff_len)

    rows = []
    for objective, label in OBJECTIVES.items():
        run_cfg = cfg.model_copy(update={"objective": objective})
        set_seed(cfg.seed)
        start = time.perf_counter()
        student, projection = build_student(run_cfg, teacher_path, None, teacher, device)
        examples, _ = encode_records(train_records, tokenizer, cfg.cutoff_len, senses if objective == "dskd" else None)
        history = train_loop(
            run_cfg, student, teacher, projection, bank if objective == "dskd" else None, examples, pad_id
        )
        ppl = evaluate_perplexity(student, valid_examples, cfg.per_device_eval_batch_size, pad_id)["perplexity"]
        hyps = generate_definitions(student, tokenizer, valid, args.max_new_tokens, cfg.per_device_eval_batch_size)
        bleu = 100 * sum(moses_max_single_bleu(h, refs[r.term]) for h, r in zip(hyps, valid)) / len(valid)
        rows.append((label, history[-1]["ce"], ppl, bleu, time.perf_counter() - start))
        print(f"[{label}] e.g. {valid[0].term!r}: {hyps[0]!r}", flush=True)
        del student

    print(
        f"\nteacher {cfg.teacher_model}, student = first {args.student_layers} layers "
        f"(last {args.trainable_layers} trainable), {args.steps} steps x {args.batch_size}, "
        f"{len(train_records)} train / {len(valid)} valid records, {len(senses)} sense words"
    )
    print(f"{'objective':<11} {'train CE':>9} {'valid ppl':>11} {'BLEU':>7} {'time s':>8}")
    for label, ce, ppl, bleu, secs in rows:
        print(f"{label:<11} {ce:>9.3f} {ppl:>11.2f} {bleu:>7.2f} {secs:>8.1f}")
    print(f"ratio={rows[2][2] / rows[0][2]:.4f} goal=1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
