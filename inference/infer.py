"""Inference stage: generate definitions (or the other tasks) with a local model, a routed MoE, vLLM or an API.

Writes into `output_dir`: `config.json` (resolved config, first), `samples.jsonl` (every sample,
appended and flushed as it arrives; a rerun skips finished (id, sample_idx) pairs and retries failed
ones), `predictions.jsonl` (one selected row per input: the file `evaluate` reads), `summary.json`,
then `manifest.json`. With `routing: oracle` every expert of a routed MoE also answers every input and
the oracle-routing report is written beside them (inference.oracle_routing).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dataset.predictions import ResumableJsonl, make_row, read_rows, top_expert, write_rows
from evaluation.references import term_references
from inference.backend import Backend, Request
from inference.best_of_n import RewardFn, UtilityFn, bleu_utility, select_all
from inference.config import API_BACKENDS, RESUME_NEUTRAL, InferConfig
from inference.decoding import cut_at_stop
from inference.oracle_routing import EXPERTS_DIR, oracle_report
from inference.tasks import Item, build_items, item_prompt, load_inputs, parse_answer, subset_items
from run_config.cli import config_from_args, run_main, stage_parser
from run_config.devices import resolve_device, resolve_dtype
from run_config.errors import ConfigError, DataError, LexiconError
from run_config.loader import read_json_config
from run_config.runtime import inputs_fingerprint, set_seed, write_json, write_manifest

log = logging.getLogger(__name__)
SAMPLES, PREDICTIONS, SUMMARY, CONFIG = "samples.jsonl", "predictions.jsonl", "summary.json", "config.json"
INPUTS = "inputs.json"
MINILM_LAYERS = 6  # all-MiniLM-L6-v2, MBR's default BERTScore model: its last layer


def vllm_router_device(device: str) -> str:
    """Where vllm's domain router runs: as told, and on the CPU for auto (vLLM's engines hold the GPUs)."""
    return "cpu" if device == "auto" else device


def check_devices(cfg: InferConfig) -> None:
    """Refuse a device this machine lacks, before any input is read, where a model of this run uses it."""
    if cfg.backend not in API_BACKENDS or cfg.icl_mode == "retrieval" or cfg.selection == "orm":
        resolve_device(vllm_router_device(cfg.device) if cfg.backend == "vllm" else cfg.device)


def build_backend(cfg: InferConfig) -> Backend:
    """Instantiate the configured backend (heavy imports happen here, lazily)."""
    if cfg.backend in API_BACKENDS:
        from inference.api import ApiBackend, RetryPolicy, api_key_from_env
        from inference.response_cache import ResponseCache, default_cache_dir
        from prompts.builder import load_template

        cache = ResponseCache(cfg.api_cache_dir or default_cache_dir()) if cfg.api_cache else None
        backend_class, batch = ApiBackend, {}
        if cfg.api_batch:
            from inference.api_batch import BatchApiBackend

            backend_class, batch = (
                BatchApiBackend,
                {
                    "folder": cfg.output_dir,
                    "batch_size": cfg.api_batch_size,
                    "poll_s": cfg.api_batch_poll_s,
                    "retry_failed": cfg.api_batch_retry,
                },
            )
        return backend_class(
            cfg.backend,
            cfg.model,
            api_key="" if cfg.dry_run else api_key_from_env(cfg.backend, cfg.api_key_env),
            base_url=cfg.base_url,
            system_prompt=load_template("api_system") if cfg.system_prompt else None,
            concurrency=cfg.concurrency,
            requests_per_second=cfg.requests_per_second,
            retry=RetryPolicy(cfg.max_retries, cfg.retry_base_delay_s, cfg.retry_max_delay_s),
            timeout_s=cfg.timeout_s,
            send_sampling=cfg.send_sampling,
            cache=cache,
            max_requests=cfg.max_requests,
            **batch,
        )
    if cfg.backend == "vllm":
        from inference.vllm_backend import VllmBackend

        return VllmBackend(
            cfg.model,
            domain_exports=cfg.domain_exports,
            dtype=cfg.dtype,
            device=vllm_router_device(cfg.device),
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            tensor_parallel_size=cfg.tensor_parallel_size,
            seed=cfg.seed,
        )
    from inference.local import LocalBackend

    return LocalBackend.from_path(cfg.model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size)


def has_samples(out: Path) -> bool:
    """True when `out` holds a generated sample: a run that failed to start, or whose every request failed
    (rows that a rerun redoes anyway), leaves none."""
    path = out / SAMPLES
    if not path.is_file():
        return False
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("error") is None:
                return True
    return False


def check_resumable(cfg: InferConfig, out: Path) -> None:
    """Refuse to mix samples of a different generation setup into an existing output folder."""
    path = out / CONFIG
    if cfg.force or not path.is_file() or not has_samples(out):
        return
    old, _ = read_json_config(path)
    new = cfg.model_dump(mode="json")
    changed = sorted(k for k in new if k not in RESUME_NEUTRAL and old.get(k) != new[k])
    if changed:
        raise ConfigError(
            f"{path}: {out} holds samples of another setup ({', '.join(changed)} differ); "
            "use another output_dir or --force to start over"
        )


def _prompt_limit(cfg: InferConfig, backend: Any) -> int | None:
    if cfg.max_prompt_tokens is not None:
        return cfg.max_prompt_tokens
    return backend.max_prompt_tokens(cfg.max_new_tokens) if hasattr(backend, "max_prompt_tokens") else None


def build_requests(
    cfg: InferConfig, backend: Any, pending: list[tuple[Item, tuple[int, ...]]], store: ResumableJsonl | None
) -> tuple[list[Request], int]:
    """Prompts of the pending items; over-long prompts raise or become error rows. Returns (requests, skipped)."""
    demos: dict[str, list] = {}
    if cfg.icl_mode != "none":
        from inference.icl import select_demos

        demos = select_demos(
            cfg.icl_mode,
            [item for item, _ in pending],
            cfg.icl_examples,
            cfg.icl_k,
            cfg.seed,
            cfg.embedder,
            cfg.device,
            cfg.icl_cache_dir,
        )
    prompts = [item_prompt(cfg.task, item, backend.bos_token, demos.get(item.id, ())) for item, _ in pending]
    limit = _prompt_limit(cfg, backend)
    lengths = backend.count_tokens(prompts) if limit is not None and hasattr(backend, "count_tokens") else None
    requests, skipped = [], 0
    for i, ((item, indices), prompt) in enumerate(zip(pending, prompts)):
        if lengths is not None and lengths[i] > limit:
            message = f"prompt has {lengths[i]} tokens, more than max_prompt_tokens {limit} (never truncated)"
            if cfg.on_long_prompt == "error":
                raise DataError(cfg.input, item.line, "context", message + "; on_long_prompt skip writes an error row")
            skipped += 1
            for idx in indices:
                store.append(
                    make_row(
                        item.id,
                        item.term,
                        item.context,
                        prediction=None,
                        model=cfg.model,
                        seed=cfg.seed,
                        sample_idx=idx,
                        latency_s=0.0,
                        error=message,
                    )
                )
            continue
        requests.append(Request(item.id, item.term, item.context, prompt, indices))
    return requests, skipped


def pending_samples(cfg: InferConfig, items: list[Item], done: set) -> list[tuple[Item, tuple[int, ...]]]:
    """Each item with the sample indices not in `done`."""
    return [
        (item, idx) for item in items if (idx := tuple(i for i in range(cfg.n_samples) if (item.id, i) not in done))
    ]


def dry_run(cfg: InferConfig, items: list[Item]) -> dict[str, Any]:
    """What the run would send (API backends), read from the inputs, `output_dir` and the cache only."""
    out = Path(cfg.output_dir)
    done = set()
    if (out / SAMPLES).is_file() and not cfg.force and not inputs_changed(cfg, out):
        done = {(r["id"], r["sample_idx"]) for r in read_rows(out / SAMPLES)[0] if r.get("error") is None}
    backend = build_backend(cfg)
    requests, _ = build_requests(cfg, backend, pending_samples(cfg, items, done), None)
    return {
        "items": len(items),
        "done_samples": len(done),
        **backend.plan(requests, cfg.sampling(cfg.seed, cfg.greedy)),
    }


def generation_row(cfg: InferConfig, item: Item, gen: Any, model: str | None = None) -> dict[str, Any]:
    """The row of one generation: the parsed answer (the text cut before its first stop sequence; `raw` keeps
    what the model wrote), or an error row when there is none."""
    prediction, error = None, gen.error
    if error is None:
        prediction = parse_answer(cfg.task, item, cut_at_stop(gen.text or "", cfg.stop), cfg.parses_answers)
        if not prediction:
            prediction, error = None, f"no answer in the output: {(gen.text or '')[:200]!r}"
    return make_row(
        item.id,
        item.term,
        item.context,
        prediction=prediction,
        model=model or cfg.model,
        seed=cfg.seed,
        sample_idx=gen.sample_idx,
        latency_s=gen.latency_s,
        error=error,
        logprob=gen.logprob,
        raw=gen.text,
        expert=gen.expert,
        router_margin=gen.router_margin,
    )


def generate_missing(cfg: InferConfig, items: list[Item], store: ResumableJsonl) -> dict[str, int]:
    """Generate every (item, sample) not yet in `store`; rows are appended as they arrive."""
    pending = pending_samples(cfg, items, store.done)
    counts = Counter(pending_samples=sum(len(idx) for _, idx in pending))
    if not pending:
        return dict(counts)
    backend = build_backend(cfg)
    requests, counts["long_prompts_skipped"] = build_requests(cfg, backend, pending, store)
    by_id = {item.id: item for item, _ in pending}
    total = sum(len(r.sample_indices) for r in requests)
    for gen in tqdm(
        backend.generate(requests, cfg.sampling(cfg.seed, cfg.greedy)),
        total=total,
        desc="infer",
        unit=" samples",
        mininterval=2.0,
        disable=None,
    ):
        item = by_id[gen.item_id]
        row = generation_row(cfg, item, gen)
        store.append(row)
        counts["generated" if row["error"] is None else "failed"] += 1
    counts.update(getattr(backend, "stats", {}))
    return dict(counts)


def routing_counts(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How a routed MoE's rows were routed: inputs per top expert, the share that mixed several experts (hybrid's
    inputs that needed k) and the mean number of experts per input; None when no row names an expert."""
    routed = [r["expert"] for r in rows if r.get("expert") is not None]
    if not routed:
        return None
    sizes = [1 if isinstance(e, int) else len(e) for e in routed]
    return {
        "inputs": len(routed),
        "per_expert": dict(sorted(Counter(top_expert(e) for e in routed).items())),
        "mixed_share": sum(s > 1 for s in sizes) / len(sizes),
        "mean_experts": sum(sizes) / len(sizes),
    }


def run_expert(
    cfg: InferConfig, backend: Any, pending: list[tuple[Item, tuple[int, ...]]], store: ResumableJsonl, expert: int
) -> None:
    """Generate the pending items on MoE expert `expert` alone into `store` (oracle routing)."""
    requests, _ = build_requests(cfg, backend, pending, store)
    by_id = {item.id: item for item, _ in pending}
    for gen in backend.generate_with_expert(requests, cfg.sampling(cfg.seed, cfg.greedy), expert):
        store.append(generation_row(cfg, by_id[gen.item_id], gen, model=f"{cfg.model} [expert {expert}]"))


def check_oracle(cfg: InferConfig) -> None:
    """Oracle routing needs a merged MoE folder with centroids (the clusters of the report), before any work."""
    from training.moe.checkpoint import cluster_dir, is_moe_folder, read_routing

    if not is_moe_folder(cfg.model):
        raise ConfigError(f"routing oracle: {cfg.model} is not a merged MoE folder (no routing.json)")
    cluster_dir(cfg.model, read_routing(cfg.model))


def load_reward(cfg: InferConfig) -> RewardFn | None:
    if cfg.selection != "orm":
        return None
    from inference.reward.model import RewardScorer

    device = resolve_device(cfg.device)
    scorer = RewardScorer.load(cfg.reward_model, device=device, dtype=resolve_dtype(cfg.dtype, device))
    return lambda term, context, candidates: scorer.score([(term, context, c) for c in candidates])


def load_utility(cfg: InferConfig) -> UtilityFn:
    """MBR's utility between two samples: Moses sentence BLEU, or BERTScore F1 (0..1) on `mbr_bertscore_model`."""
    if cfg.selection != "mbr" or cfg.mbr_utility == "bleu":
        return bleu_utility
    from evaluation.metrics.bertscore import BertScore
    from evaluation.metrics.settings import MetricSettings
    from run_config.assets import minilm_path

    model = cfg.mbr_bertscore_model or str(minilm_path())
    layers = cfg.mbr_bertscore_num_layers or (None if cfg.mbr_bertscore_model else MINILM_LAYERS)
    settings = MetricSettings(bertscore_model=model, bertscore_num_layers=layers, device=cfg.device, dtype=cfg.dtype)
    metric = BertScore(settings)
    return lambda hyps, refs: (metric.sentence_scores(hyps, [[r] for r in refs]) / 100.0).tolist()


def inputs_changed(cfg: InferConfig, out: Path) -> bool:
    """True when the samples in `out` came from another version of the input file, model or ICL pool
    (a retrained model in the same folder, say): they are stale and generation starts over."""
    path = out / INPUTS
    return path.is_file() and json.loads(path.read_text(encoding="utf-8")) != inputs_fingerprint(cfg)


def run(cfg: InferConfig) -> dict[str, Any]:
    """Run the stage; return the summary."""
    check_devices(cfg)
    set_seed(cfg.seed)
    if cfg.selection == "orm" and not Path(cfg.reward_model).is_dir():  # checked before hours of sampling
        raise ConfigError(f"reward_model: {cfg.reward_model}: no such folder (a train-reward output)")
    if cfg.routing == "oracle":
        check_oracle(cfg)
    out = Path(cfg.output_dir)
    stale = has_samples(out) and inputs_changed(cfg, out)
    if stale:
        log.warning("%s: the input, model or ICL examples changed since these samples were made: starting over", out)
    if (cfg.force or stale) and not cfg.dry_run:
        from inference.api_batch import LEDGER  # the ledger of submitted batches

        for name in (SAMPLES, PREDICTIONS, SUMMARY, CONFIG, INPUTS, "manifest.json", LEDGER):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / EXPERTS_DIR, ignore_errors=True)
    check_resumable(cfg, out)
    records, lines = load_inputs(cfg.input)
    items = subset_items(build_items(cfg.task, records, lines, cfg.seed), cfg.max_items, cfg.seed)
    if cfg.dry_run:
        return dry_run(cfg, items)
    write_json(out / CONFIG, cfg.model_dump(mode="json"))
    write_json(out / INPUTS, inputs_fingerprint(cfg))
    with ResumableJsonl(out / SAMPLES) as store:
        resumed = len(store.done)
        counts = generate_missing(cfg, items, store)
    rows, _ = read_rows(out / SAMPLES)
    wanted = {item.id for item in items}
    grouped: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["id"] in wanted and row["sample_idx"] < cfg.n_samples:
            grouped[row["id"]].append(row)
    references = term_references(records) if cfg.selection == "oracle" else None
    selected = select_all(
        grouped, cfg.selection, references=references, reward=load_reward(cfg), utility=load_utility(cfg)
    )
    write_rows(out / PREDICTIONS, (selected[item.id] for item in items if item.id in selected))
    failed = [r for r in selected.values() if r["error"] is not None]
    by_id = {item.id: item for item in items}
    changed = sum(
        (r["prediction"] or "") != parse_answer(cfg.task, by_id[i], cut_at_stop(r["raw"], cfg.stop), chatty=False)
        for i, r in selected.items()
        if r.get("raw") is not None
    )  # incl. answers parsed to nothing
    stop_cut = sum(r.get("raw") is not None and cut_at_stop(r["raw"], cfg.stop) != r["raw"] for r in selected.values())
    summary: dict[str, Any] = {
        "items": len(items),
        "n_samples": cfg.n_samples,
        "selection": cfg.selection,
        "samples_ok": sum(1 for r in rows if r["id"] in wanted and r["error"] is None),
        "samples_failed": sum(1 for r in rows if r["id"] in wanted and r["error"] is not None),
        "resumed_samples": resumed,
        **counts,
        "predictions": len(selected),
        "failed_predictions": len(failed),
        "parse_answer": cfg.parses_answers,
        "parser_changed": changed,
        "stop_cut": stop_cut,
        "failure_reasons": dict(Counter(r["error"].split(":")[0] for r in failed).most_common(10)),
    }
    if (routing := routing_counts(list(selected.values()))) is not None:
        summary["routing"] = routing
    if cfg.routing == "oracle":
        report = oracle_report(cfg, items, records, selected, out, lambda: build_backend(cfg), partial(run_expert, cfg))
        summary["oracle"] = {k: report[k] for k in ("oracle", "routed", "regret", "non_best_share")}
    if cfg.task == "wsd":
        gold = {item.id: item.definition for item in items}
        summary["wsd_accuracy"] = sum(
            selected[i]["prediction"] == gold[i] for i in selected if selected[i]["error"] is None
        ) / len(items)
    write_json(out / SUMMARY, summary)
    write_manifest(out, "infer", cfg, input=str(cfg.input), summary=summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("infer", __doc__, InferConfig)
    return parser


def _run(args: argparse.Namespace) -> int:
    for noisy in ("httpx", "httpx2", "openai", "anthropic", "google_genai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = config_from_args(args, InferConfig)
    summary = run(cfg)
    out = Path(cfg.output_dir)
    if cfg.dry_run:
        print(
            f"infer: dry run, nothing sent: {summary['requests']} requests to send ({summary['samples']} samples "
            f"to generate, {summary['cache_hits']} cache hits, {summary['done_samples']} samples done, "
            f"{summary['awaited']} awaited from open batches, "
            f"{summary['not_sent']} over max_requests); {summary['prompt_tokens']} prompt tokens "
            f"({summary['prompt_tokens_counted_with']}), at most {summary['max_completion_tokens']} completion tokens"
        )
        return 0
    print(
        f"infer: {summary['predictions']} predictions ({summary['failed_predictions']} failed) -> "
        f"{out / PREDICTIONS}; samples in {out / SAMPLES}"
        + (
            f"; {summary['api_requests_sent']} requests sent, {summary['api_cache_hits']} cache hits"
            if "api_requests_sent" in summary
            else ""
        )
    )
    reasons = json.dumps(summary["failure_reasons"])
    if summary["predictions"] and summary["failed_predictions"] == summary["predictions"]:
        raise LexiconError(
            f"every one of the {summary['predictions']} inputs failed ({reasons}); error rows in "
            f"{out / PREDICTIONS}, counts in {out / SUMMARY}"
        )
    if summary["failed_predictions"]:
        print(
            f"infer: {summary['failed_predictions']} inputs failed ({reasons}); "
            "rerun the same command to retry only those",
            file=sys.stderr,
        )
    if summary.get("api_not_sent"):
        print(
            f"infer: {summary['api_not_sent']} samples not sent: max_requests {cfg.max_requests} reached "
            "(NotSent error rows; rerun to send them)",
            file=sys.stderr,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
