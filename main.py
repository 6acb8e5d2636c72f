"""LM-Lexicon toolkit: `lm-lexicon <stage> [options]` (= `python main.py <stage>`) runs a stage's own CLI."""

from __future__ import annotations

import importlib
import sys

# stage -> (module with main(argv) -> int, one-line description)
STAGES: dict[str, tuple[str, str]] = {
    "preprocess": ("dataset.preprocess", "3D-EX / JSONL / Ishiwatari files (or embedded WordNet) -> JSONL records"),
    "cluster": ("clustering.cluster", "embed training data, balanced k-means into N semantic domains"),
    "train": ("training.train", "finetune a causal LM, or one expert per cluster (HF Trainer + DeepSpeed)"),
    "distill": (
        "training.dskd.cli",
        "sense-knowledge distillation (DSKD) of a decoder student; = train --objective dskd",
    ),
    "merge": ("training.moe.merge", "merge dense experts into one domain-routed MoE checkpoint"),
    "convert": (
        "training.moe.mergoo",
        "convert the original code's MoE (mergoo layout) into this toolkit's MoE folder",
    ),
    "finetune-router": ("training.moe.finetune_router", "train only the router of a merged MoE"),
    "train-reward": ("inference.reward.train", "train the outcome reward model for Best-of-N"),
    "infer": ("inference.infer", "generate definitions (local, MoE, vLLM or API backends)"),
    "evaluate": ("evaluation.evaluate", "score predictions: BLEU, ROUGE-L, METEOR, NIST, BERTScore, MoverScore, MAUVE"),
    "pipeline": ("scripts.pipeline", "run every stage end to end from one config"),
}


def usage() -> str:
    width = max(map(len, STAGES))
    lines = [
        "usage: lm-lexicon <stage> [options]   (or python main.py <stage> ...; <stage> --help for a stage's options)",
        "",
        "stages:",
    ]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0].startswith("--") and any(a == "--task" or a.startswith("--task=") for a in argv):
        from scripts.original_commands import main as original_inference  # the original's inference flags

        return original_inference(argv)
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        import difflib

        close = difflib.get_close_matches(stage, STAGES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"main.py: unknown stage {stage!r}{hint}; choose from: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(STAGES[stage][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
