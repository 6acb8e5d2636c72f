"""The original LM-Lexicon command lines, run as this toolkit's stages (docs/original_commands.md).

`python main.py --task ...` and `python inference/main.py ...` take the original's inference flags and
run `infer`, then `evaluate` with `--evaluate`; `python training/finetune.py --model_config ...` (also
under the `deepspeed` launcher) runs `train`. The equivalent new command is printed once on stderr
before it runs. A flag that cannot be honoured is refused before any work starts (exit 2).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from inference.api import DEFAULT_KEY_ENV
from inference.config import ICL_ALIASES, TASK_ALIASES
from prompts.builder import TASK_TEMPLATES
from run_config.cli import run_main
from run_config.errors import ConfigError

# The original's prompt file of each task; the toolkit builds that prompt itself (prompts/<template>.txt).
ORIGINAL_PROMPTS = {
    "word_interpretation": "word-interpretation.txt",
    "context_synthesis": "synthesize_context_zeroshot.txt",
    "definition_synthesis": "synthesize_definition_zeroshot.txt",
    "wsd": "word-sense-disambiguation.txt",
}
# Flags the original parsed and never used (or used only with --with_vllm, refused here): default values.
WITHOUT_EFFECT = {
    "taxonomy_path": None,
    "oracle_prompt": False,
    "min_tokens": 0,
    "min_p": 0.0,
    "top_k": 1.0,
    "skip_special_tokens": False,
    "spaces_between_special_tokens": False,
    "ignore_eos": False,
    "use_beam_search": False,
    "early_stopping": False,
    "length_penalty": 1.0,
    "verbal": False,
    "debug": False,
}
# The original's DeepSpeed files -> the shipped file doing the same ZeRO setup (without its scheduler block).
ORIGINAL_DEEPSPEED = {
    "deepspeed_config_zero2.json": "ds_zero2_offload.json",
    "deepspeed_config_zero3_with_offload.json": "ds_zero3_offload.json",
    "deepspeed_config_zero3_without_offload.json": "ds_zero3.json",
}
DOCS = "docs/original_commands.md"


@dataclass
class Translation:
    """The stages to run, as (stage, argv), and what the user should know about the mapping."""

    commands: list[tuple[str, list[str]]]
    notes: list[str] = field(default_factory=list)
    launcher: str = "python main.py"

    def lines(self) -> list[str]:
        return [f"{self.launcher} {stage} {shlex.join(argv)}" for stage, argv in self.commands]


class OriginalParser(argparse.ArgumentParser):
    """A parser of the original's flags whose unknown-flag error names only the flags (never a value,
    which may be a key) and points at the mapping's documentation."""

    def __init__(self, *args, original: str, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)  # a prefix of a flag is not that flag
        self.original = original

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, unknown = super().parse_known_args(args, namespace)
        unknown = [a for a in unknown if not a.startswith(("--local_rank", "--local-rank"))]
        if unknown:
            flags = [a.split("=", 1)[0] for a in unknown if a.startswith("-")] or ["(a stray value)"]
            self.error(f"{', '.join(flags)}: not a flag of the original {self.original} (the mapping: {DOCS})")
        return parsed, []


def inference_parser(prog: str) -> argparse.ArgumentParser:
    """The original inference/main.py flags, with its types, defaults and required flags."""
    p = OriginalParser(prog=prog, original="inference/main.py", description="the original's flags -> infer, evaluate")
    p.add_argument("--task", required=True, choices=list(TASK_ALIASES))
    p.add_argument("--model", required=True, help="local HF folder / hub id, or an API model name")
    p.add_argument("--prompt_path", required=True, help="the original's prompt file of the task")
    p.add_argument("--input_path", required=True, help="preprocessed JSONL to generate for")
    p.add_argument("--shot_num", type=int, required=True, help="demos per input, from the train split beside it")
    p.add_argument("--api_key", help="refused: put the key in the environment variable named in the error")
    p.add_argument("--base_url")
    p.add_argument("--proxy", help="refused: set HTTPS_PROXY in the environment")
    p.add_argument("--example_path", help="JSONL of demos (default: train.jsonl beside --input_path)")
    p.add_argument("--output_format", default="json")
    p.add_argument("--retrieval_policy", default="random", choices=["random", "sequencial", "topk"])
    p.add_argument("--max_query", type=int, default=100)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--max_tokens", type=int, default=2048)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--presence_penalty", type=float, default=0.0)
    p.add_argument("--frequency_penalty", type=float, default=0.0)
    p.add_argument("--repetition_penalty", type=float, default=1.0)
    p.add_argument("--num_return_sequences", type=int, default=1)
    p.add_argument("--run_local_model", action="store_true")
    p.add_argument("--with_vllm", action="store_true")
    p.add_argument("--evaluate", action="store_true")
    for name, default in WITHOUT_EFFECT.items():
        if isinstance(default, bool):
            p.add_argument(f"--{name}", action="store_true", help="no effect")
        else:
            p.add_argument(f"--{name}", type=type(default) if default is not None else str, default=default)
    return p


def api_backend(model: str, base_url: str | None) -> str:
    """The backend the original's model routing amounts to: an OpenAI-compatible endpoint (its one client),
    or the vendor's own API for a Claude / Gemini model name when no --base_url (proxy) is given."""
    name = model.lower()
    if base_url is None and "claude" in name:
        return "anthropic"
    if base_url is None and "gemini" in name:
        return "gemini"
    return "openai"


def output_dir(task: str, model: str, input_path: str) -> str:
    """The original's results file, as a folder: results/<dataset folder>/<task>-<model>[.train|.test]."""
    split = next((s for s in ("train", "test") if s in input_path), None)
    name = f"{task}-{model.strip('/').replace('/', '-')}" + (f".{split}" if split else "")
    return str(Path("results") / (Path(input_path).parent.name or "input") / name)


def _num(x: float) -> str:
    return f"{x:g}"


def translate_inference(args: argparse.Namespace) -> Translation:
    """Map parsed original inference flags onto `infer` (+ `evaluate`); every refusal at once."""
    task = TASK_ALIASES[args.task]
    backend = "local" if args.run_local_model else api_backend(args.model, args.base_url)
    problems, notes = [], []
    if args.api_key is not None:
        where = (
            "a local model needs none: drop --api_key"
            if backend == "local"
            else f"set {DEFAULT_KEY_ENV[backend]} and drop --api_key"
        )
        problems.append(f"--api_key: API keys are read from the environment only, never the command line; {where}")
    if args.proxy is not None:
        problems.append("--proxy: set HTTPS_PROXY (and HTTP_PROXY) in the environment: the API clients read them")
    if args.with_vllm:
        problems.append(
            "--with_vllm: use `python main.py infer --backend vllm` (in-process vLLM), or drop it and give "
            "--base_url of the vLLM server (its OpenAI-compatible API)"
        )
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(args, name) != 0:
            problems.append(f"--{name}: not supported by this toolkit's API clients (only 0, the default)")
    if "json" not in args.output_format:
        problems.append(f"--output_format {args.output_format}: outputs are JSONL here (the original wrote no file)")
    prompt = Path(args.prompt_path).name
    if prompt not in (ORIGINAL_PROMPTS[task], f"{TASK_TEMPLATES[task]}.txt"):
        problems.append(
            f"--prompt_path {args.prompt_path}: a custom prompt file cannot be used; the {args.task} prompt is "
            f"prompts/{TASK_TEMPLATES[task]}.txt (the one training uses), pass --prompt_path {ORIGINAL_PROMPTS[task]}"
        )
    infer = ["--task", task, "--backend", backend, "--model", args.model, "--input", args.input_path]
    out = output_dir(args.task, args.model, args.input_path)
    infer += ["--output-dir", out, "--max-items", str(args.max_query), "--max-new-tokens", str(args.max_tokens)]
    infer += ["--greedy"] if args.temperature == 0 else ["--temperature", _num(args.temperature)]
    infer += ["--top-p", _num(args.top_p), "--repetition-penalty", _num(args.repetition_penalty)]
    if args.base_url is not None:
        infer += ["--base-url", args.base_url]
    if args.shot_num < 0:
        problems.append(f"--shot_num {args.shot_num}: must be 0 or more")
    elif args.shot_num > 0:
        mode = ICL_ALIASES.get(args.retrieval_policy, args.retrieval_policy)
        if mode not in ("random", "retrieval"):
            problems.append(f"--retrieval_policy {args.retrieval_policy}: use random or topk (MiniLM retrieval)")
        examples = args.example_path or str(Path(args.input_path).parent / "train.jsonl")
        if not Path(examples).is_file():
            problems.append(
                f"--shot_num {args.shot_num}: demos come from {examples}: no such file "
                "(the train split beside --input_path); give --example_path"
            )
        infer += ["--icl-mode", mode, "--icl-k", str(args.shot_num), "--icl-examples", examples]
    if args.num_return_sequences > 1:
        if backend != "local":
            problems.append(
                "--num_return_sequences: the original sent one request per input to an API (the flag had no "
                "effect there); drop it, or use `python main.py infer --n-samples N`"
            )
        infer += ["--n-samples", str(args.num_return_sequences)]
        if args.evaluate:  # the original scored the best of the N samples
            infer += ["--selection", "oracle"]
    elif args.num_return_sequences < 1:
        problems.append(f"--num_return_sequences {args.num_return_sequences}: must be 1 or more")
    if problems:
        raise ConfigError(problems)
    commands = [("infer", infer)]
    if args.evaluate and task == "word_interpretation":
        preds = str(Path(out) / "predictions.jsonl")
        evaluate = ["--predictions", preds, "--references", args.input_path, "--output-dir", str(Path(out) / "eval")]
        commands.append(("evaluate", evaluate))
    elif args.evaluate:
        notes.append(f"--evaluate: the original scored word-interpretation only; nothing to score for {args.task}")
    if args.max_length != 128:
        notes.append("--max_length: no effect: prompts are never truncated here (the original cut them)")
    unused = [f"--{k}" for k, default in WITHOUT_EFFECT.items() if getattr(args, k) != default]
    if unused:
        notes.append(f"without effect, as in the original (which never used them here): {', '.join(unused)}")
    return Translation(commands, notes)


def finetune_parser(prog: str) -> argparse.ArgumentParser:
    """The original training/finetune.py flags."""
    p = OriginalParser(prog=prog, original="training/finetune.py", description="the original's flags -> train")
    p.add_argument("--model_config", required=True, help="the original's JSON (e.g. run_config/llama_config.json)")
    p.add_argument("--deepspeed", help="DeepSpeed JSON (the original's file names map to the shipped ones)")
    p.add_argument("--resume_from_checkpoint")
    p.add_argument("--use_lora", action="store_true")
    p.add_argument("--local_rank", type=int, default=-1, help="set by the deepspeed launcher")
    return p


def translate_finetune(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> Translation:
    """Map the original finetune.py flags onto `train` (its JSON loads through the legacy keys)."""
    train, notes = ["--config", args.model_config], []
    if args.deepspeed is not None:
        ds = Path(args.deepspeed)
        ours = ORIGINAL_DEEPSPEED.get(ds.name)
        if not ds.is_file() and ours and ds.with_name(ours).is_file():
            notes.append(f"--deepspeed {ds}: not shipped; {ds.with_name(ours)} is its ZeRO setup (no scheduler block)")
            ds = ds.with_name(ours)
        train += ["--deepspeed", str(ds)]
    if args.resume_from_checkpoint is not None:
        train += ["--resume-from-checkpoint", args.resume_from_checkpoint]
    if args.use_lora:
        train += ["--use-lora"]
    world = int(env.get("WORLD_SIZE", "1"))
    launcher = f"deepspeed --num_gpus={world} main.py" if world > 1 else "python main.py"
    return Translation([("train", train)], notes, launcher)


def announce(prog: str, t: Translation) -> None:
    """Print the equivalent new command(s) and the notes, once (rank 0 only under a launcher)."""
    if os.environ.get("RANK", "0") != "0":
        return
    lines = [f"{prog}: the original LM-Lexicon command line; its equivalent here (running it now):"]
    lines += [f"  {line}" for line in t.lines()] + [f"{prog}: note: {note}" for note in t.notes]
    print("\n".join(lines), file=sys.stderr, flush=True)


def run_translation(prog: str, t: Translation) -> int:
    """Announce the commands, then run each stage in turn; stop at the first that fails."""
    from evaluation import evaluate
    from inference import infer
    from training import train

    stages = {"infer": infer.main, "evaluate": evaluate.main, "train": train.main}
    announce(prog, t)
    for stage, argv in t.commands:
        code = stages[stage](argv)
        if code:
            return code
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "main.py") -> int:
    """The original inference/main.py command line."""
    parser = inference_parser(prog)
    return run_main(parser, lambda args: run_translation(prog, translate_inference(args)), argv)


def finetune_main(argv: Sequence[str] | None = None, prog: str = "training/finetune.py") -> int:
    """The original training/finetune.py command line."""
    parser = finetune_parser(prog)
    return run_main(parser, lambda args: run_translation(prog, translate_finetune(args)), argv)
