"""What a merged MoE folder says about itself: the resolved merge config and a README.md model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clustering.artifacts import REPORT_FILE
from run_config.errors import DataError
from run_config.runtime import atomic_open, write_json
from training.moe.checkpoint import CARD_FILE, MERGE_CONFIG_FILE
from training.moe.config import MergeConfig

CARD_EXAMPLE_TERMS = 5  # example terms shown per cluster
POLICY_TEXT = {
    "domain": "the prompt's nearest cluster centroid (the cluster stage's embedder, copied into `clustering/`) "
    "picks one expert per sequence; only that expert runs",
    "learned-domain": "a linear classifier on the model's own mean-pooled prompt hidden state picks one expert "
    "per sequence (trained by `finetune-router`)",
    "token": "the Mixtral top-k router of each layer picks k experts per token",
    "soft-sequence": "the router logits mean-pooled over the prompt weight every expert for the whole sequence",
    "hard-sequence": "the router logits mean-pooled over the prompt pick one expert for the whole sequence",
    "ensemble": "the k experts whose centroids are most similar to the prompt (`ensemble_k`) mix their next-token "
    "distributions with weights softmax(similarity / `ensemble_temperature`)",
    "hybrid": "one expert when the nearest centroid leads the next by >= `hybrid_tau`, else the ensemble",
}


def resolved_merge_config(cfg: MergeConfig) -> dict[str, Any]:
    """The merge config with every default filled in and the input paths made absolute: `merge --config` on
    it merges the same experts again."""
    data = cfg.model_dump(mode="json")
    absolute = lambda p: str(Path(p).resolve())  # noqa: E731
    data["experts"] = [absolute(p) for p in cfg.experts]
    data["router_prompt_files"] = [absolute(p) for p in cfg.router_prompt_files]
    for key in ("base_model", "cluster_dir"):
        data[key] = absolute(data[key]) if data[key] else None
    data["cluster_to_expert"] = cfg.cluster_to_expert or list(range(len(cfg.experts)))
    return data


def cluster_examples(cluster_dir: str | Path | None, num_clusters: int | None) -> list[list[str]] | None:
    """The typical terms of each of the `num_clusters` clusters from the cluster stage's report.json (None: no
    cluster_dir, or a report without examples)."""
    if cluster_dir is None or not (Path(cluster_dir) / REPORT_FILE).is_file():
        return None
    path = Path(cluster_dir) / REPORT_FILE
    try:
        examples = json.loads(path.read_text(encoding="utf-8")).get("examples")
    except (ValueError, AttributeError) as e:
        raise DataError(str(path), None, None, f"not a cluster report ({e})") from None
    if examples is None:
        return None
    if not (isinstance(examples, list) and all(isinstance(t, list) for t in examples)):
        raise DataError(str(path), None, "examples", "expected one list of terms per cluster")
    if len(examples) != num_clusters:
        raise DataError(str(path), None, "examples", f"{len(examples)} clusters for {num_clusters} centroids")
    return [[str(t) for t in terms] for terms in examples]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]


def model_card(
    config: dict[str, Any], examples: list[list[str]] | None, folder_name: str, architecture: str = "MixtralForCausalLM"
) -> str:
    """README.md of a merged MoE folder from its resolved merge config, the clusters' example terms and the
    stock class it loads as (Mixtral, Qwen3-MoE, Qwen2-MoE)."""
    family = architecture.removesuffix("ForCausalLM")
    experts, to_expert = config["experts"], config["cluster_to_expert"]
    has_clusters = config["cluster_dir"] is not None
    clusters_of = {e: [c for c, t in enumerate(to_expert) if t == e] for e in range(len(experts))}
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        f"tags: [lm-lexicon, mixture-of-experts, {family.lower()}, definition-modeling]",
        "---",
        "",
        f"# {folder_name}",
        "",
        f"A Mixture of Experts merged by the LM-Lexicon toolkit (`python main.py merge`) from {len(experts)} "
        "dense experts: per layer, expert *i*'s FFN (gate/up/down projections) is expert *i* of a stock "
        f"{family} checkpoint; the other tensors (attention, norms, embeddings, lm_head) are "
        + {
            "average": "the experts' mean.",
            "base": f"the base model's (`{config['base_model']}`).",
            "expert": f"expert {config['shared_expert']}'s.",
        }[config["shared_params"]],
        "",
        "## Experts",
        "",
        *_table(
            ["expert", "source", "clusters routed to it"],
            [
                [str(e), f"`{path}`", ", ".join(map(str, clusters_of[e])) if has_clusters else "-"]
                for e, path in enumerate(experts)
            ],
        ),
        "",
        "## Clusters",
        "",
    ]
    if not has_clusters:
        lines.append("Merged without a cluster folder: no centroids, so no domain routing by the embedder.")
    else:
        lines.append(f"From `{config['cluster_dir']}` (its centroids and embedder are copied into `clustering/`).")
        lines.append("")
        rows = [
            [str(c), str(e), ", ".join(examples[c][:CARD_EXAMPLE_TERMS]) if examples else "-"]
            for c, e in enumerate(to_expert)
        ]
        lines += _table(["cluster", "expert", "example terms"], rows)
        if not examples:
            lines += ["", f"(The cluster folder holds no example terms: its `{REPORT_FILE}` lists none.)"]
    policy = config["policy"]
    lines += [
        "",
        "## Routing",
        "",
        f"Default policy `{policy}` (`routing.json`): {POLICY_TEXT[policy]}. Token top-k: k = {config['top_k']}; "
        f"router init `{config['router_init']}`; load-balancing coefficient {config['router_aux_loss_coef']}.",
        f"Stock transformers runs the {family} token router; the domain policies need this toolkit's loader.",
        "",
        "## Loading",
        "",
        "With stock transformers (token top-k routing):",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{folder_name}")  # {architecture}',
        f'tokenizer = AutoTokenizer.from_pretrained("{folder_name}")',
        "```",
        "",
        "With the LM-Lexicon toolkit (the policy of `routing.json`, or any other):",
        "",
        "```python",
        "from prompts.builder import build_prompt",
        "from training.moe.routing import load_routed_moe",
        "",
        f'moe = load_routed_moe("{folder_name}", policy=None, device="cuda", dtype="bfloat16")',
        'pairs = [("serendipity", "Finding the book there was pure serendipity.")]',
        'batch = moe.tokenizer([build_prompt(t, c) for t, c in pairs], return_tensors="pt")',
        "batch = batch.to(moe.model.device)",
        "out = moe.generate(pairs=pairs, **batch, max_new_tokens=64)  # domain policies route each row",
        "```",
        "",
        f"or `python main.py infer --backend local --model {folder_name} --input test.jsonl --output-dir preds`.",
        "",
        "## Merge configuration",
        "",
        f"`{MERGE_CONFIG_FILE}` (every default filled in; `python main.py merge --config {MERGE_CONFIG_FILE}` "
        "merges the same experts again):",
        "",
        "```json",
        json.dumps(config, indent=2, ensure_ascii=False),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_card(
    folder: str | Path, cfg: MergeConfig, examples: list[list[str]] | None, architecture: str = "MixtralForCausalLM"
) -> None:
    """Write merge_config.json and README.md into the MoE folder being written at `folder`."""
    config = resolved_merge_config(cfg)
    write_json(Path(folder) / MERGE_CONFIG_FILE, config)
    with atomic_open(Path(folder) / CARD_FILE) as f:
        f.write(model_card(config, examples, Path(cfg.output_dir).name, architecture))
