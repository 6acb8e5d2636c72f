"""Oracle routing and router regret (`infer --routing oracle`): every expert of a routed MoE answers every input.

Each expert e runs alone on all inputs (N x the routed run's cost) into `experts/expert_<e>.jsonl` (resumable
rows, `expert` = e). Scored with the toolkit's own metrics (evaluation.api, `max` protocol, the input file as
the references), the best expert per input by `oracle_metric` is the oracle router; the report gives the
oracle's and the routed model's scores, the regret (oracle - routed) and how often the router's top expert
was not a best one, overall and per cluster (the input's nearest centroid), and the expert x cluster score
matrix. Files: `oracle_predictions.jsonl` (the best expert's row per input), `oracle_report.json`,
`oracle_report.md`, `expert_cluster.png` and, for an ensemble or hybrid MoE, `hybrid_curve.png` (score vs mean
experts per input for tau over a grid: an input below tau takes the routed ensemble's answer, above it its top
expert's, which is exactly what hybrid at that tau generates since every row's sample is batch-independent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dataset.predictions import ResumableJsonl, read_rows, top_expert, write_rows
from dataset.records import Record
from inference.tasks import Item
from run_config.runtime import atomic_open, write_json
from training.moe.checkpoint import read_routing

EXPERTS_DIR, ORACLE_PREDICTIONS = "experts", "oracle_predictions.jsonl"
REPORT_JSON, REPORT_MD = "oracle_report.json", "oracle_report.md"
HEATMAP, CURVE = "expert_cluster.png", "hybrid_curve.png"
METRICS = ("bleu", "rougeL")


def expert_rows(cfg: Any, items: list[Item], out: Path, backend_factory: Any, run_expert: Any) -> list[dict[str, dict]]:
    """Generate (or resume) every expert's row for every item with `run_expert(backend, pending, store, e)`;
    return expert -> id -> row."""
    backend, result = None, []
    for e in range(int(read_routing(cfg.model)["num_experts"])):
        path = out / EXPERTS_DIR / f"expert_{e}.jsonl"
        with ResumableJsonl(path) as store:
            pending = [(item, (0,)) for item in items if (item.id, 0) not in store.done]
            if pending:
                backend = backend or backend_factory()
                run_expert(backend, pending, store, e)
        rows, _ = read_rows(path)
        result.append({r["id"]: r for r in rows})
    return result


def _scores(texts: list[list[str]], items: list[Item], records: list[Record]) -> dict[str, np.ndarray]:
    """Per-sample scores [items, samples] of each metric (failed rows score 0 as empty predictions)."""
    from evaluation.api import score_records

    by_id = {r.id: r for r in records}
    scored = score_records(texts, [by_id[i.id] for i in items], ("bleu", "rouge"), "max", pool=records)
    return {m: v.reshape(len(items), -1) for m, v in scored.per_sample.items()}


def _stats(best: np.ndarray, scores: dict[str, np.ndarray], routed: dict[str, np.ndarray], picked, metric) -> dict:
    n = len(picked)
    oracle = {m: float(scores[m][np.arange(n), best].mean()) if n else 0.0 for m in METRICS}
    mean_routed = {m: float(routed[m].mean()) if n else 0.0 for m in METRICS}
    top = scores[metric].max(axis=1)
    non_best = [p is None or scores[metric][i, p] < top[i] for i, p in enumerate(picked)]
    return {
        "inputs": n,
        "oracle": oracle,
        "routed": mean_routed,
        "regret": {m: oracle[m] - mean_routed[m] for m in METRICS},
        "non_best_share": float(np.mean(non_best)) if n else 0.0,
    }


def oracle_report(
    cfg: Any,
    items: list[Item],
    records: list[Record],
    routed_rows: dict[str, dict],
    out: Path,
    backend_factory: Any,
    run_expert: Any,
) -> dict[str, Any]:
    """Run every expert, score them and the routed rows, write the report files; return the report."""
    from training.moe.routing import load_routed_moe

    per_expert = expert_rows(cfg, items, out, backend_factory, run_expert)
    moe = load_routed_moe(cfg.model, device="cpu")
    pairs = [(i.term, i.context) for i in items]
    to_expert = moe.routing["cluster_to_expert"]
    clusters = [int(c) for c in moe._cluster_assigner().assign(pairs)]
    num = len(per_expert)
    texts = [[per_expert[e][i.id]["prediction"] or "" for e in range(num)] for i in items]
    texts = [t + [routed_rows[i.id]["prediction"] or ""] for t, i in zip(texts, items)]
    scored = _scores(texts, items, records)
    scores = {m: v[:, :num] for m, v in scored.items()}
    routed = {m: v[:, num] for m, v in scored.items()}
    best = scores[cfg.oracle_metric].argmax(axis=1)  # ties: the lowest expert id
    picked = [top_expert(routed_rows[i.id].get("expert")) for i in items]
    report: dict[str, Any] = {
        "metric": cfg.oracle_metric,
        "protocol": "max",
        "policy": moe.policy,
        "num_experts": num,
        **_stats(best, scores, routed, picked, cfg.oracle_metric),
        "per_cluster": {},
        "oracle_choice": dict(sorted((int(e), int(n)) for e, n in zip(*np.unique(best, return_counts=True)))),
    }
    matrix = np.full((num, moe._cluster_assigner().num_clusters), np.nan)
    for c in sorted(set(clusters)):
        rows = np.array([k for k, ci in enumerate(clusters) if ci == c])
        sub = {m: v[rows] for m, v in scores.items()}
        report["per_cluster"][str(c)] = {
            "expert": to_expert[c],
            **_stats(
                best[rows], sub, {m: v[rows] for m, v in routed.items()}, [picked[k] for k in rows], cfg.oracle_metric
            ),
        }
        matrix[:, c] = sub[cfg.oracle_metric].mean(axis=0)
    report["expert_cluster"] = [[None if np.isnan(x) else float(x) for x in row] for row in matrix]
    write_rows(out / ORACLE_PREDICTIONS, (per_expert[int(b)][i.id] for i, b in zip(items, best)))
    heatmap(matrix, cfg.oracle_metric, out / HEATMAP)
    if moe.policy in ("ensemble", "hybrid"):
        report["hybrid_curve"] = hybrid_curve(moe, pairs, scores[cfg.oracle_metric], routed[cfg.oracle_metric], out)
    write_json(out / REPORT_JSON, report)
    with atomic_open(out / REPORT_MD) as f:
        f.write(markdown(report))
    return report


def hybrid_curve(moe: Any, pairs, single: np.ndarray, routed: np.ndarray, out: Path) -> list[dict[str, float]]:
    """Score and mean experts per input of hybrid at tau over the margins' grid (up to the routed tau)."""
    routes = moe.routes(pairs)
    margins = np.array([r.margin for r in routes])
    mixed = np.array([len(r.experts) > 1 for r in routes])
    top = np.array([r.experts[0] for r in routes])
    one = single[np.arange(len(routes)), top]
    cap = np.inf if moe.policy == "ensemble" else moe.hybrid_tau
    grid = sorted({0.0, *np.quantile(margins, np.linspace(0, 1, 11)).tolist(), float(margins.max()) + 1e-9})
    curve = []
    for tau in (t for t in grid if t <= cap):
        use_mix = (margins < tau) & mixed
        curve.append(
            {
                "tau": float(tau),
                "mean_experts": float(1 + (moe.ensemble_k - 1) * use_mix.mean()),
                "mixed_share": float(use_mix.mean()),
                "score": float(np.where(use_mix, routed, one).mean()),
            }
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot([p["mean_experts"] for p in curve], [p["score"] for p in curve], marker="o")
    ax.set_xlabel("mean experts per input")
    ax.set_ylabel("score")
    ax.set_title(f"hybrid, tau over a grid (k={moe.ensemble_k})")
    fig.tight_layout()
    _save(fig, out / CURVE)
    return curve


def heatmap(matrix: np.ndarray, metric: str, path: Path) -> None:
    """Expert x cluster mean score as a PNG heat map (specialised experts: a dominant diagonal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * matrix.shape[1], 1.0 + 0.7 * matrix.shape[0]))
    image = ax.imshow(matrix, cmap="viridis")
    for (e, c), value in np.ndenumerate(matrix):
        if not np.isnan(value):
            ax.text(c, e, f"{value:.1f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xlabel("cluster of the input")
    ax.set_ylabel("expert")
    ax.set_xticks(range(matrix.shape[1]))
    ax.set_yticks(range(matrix.shape[0]))
    fig.colorbar(image, ax=ax, label=metric)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: one row overall, one per cluster, then the expert x cluster matrix."""
    m = report["metric"]
    lines = [
        f"Oracle routing ({report['num_experts']} experts, policy {report['policy']}, best expert by {m}, "
        f"{report['protocol']} protocol)",
        "",
        "| inputs | cluster | oracle BLEU | routed BLEU | regret BLEU | oracle ROUGE | routed ROUGE | non-best |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(label: str, s: dict) -> str:
        o, r, g = s["oracle"], s["routed"], s["regret"]
        return (
            f"| {s['inputs']} | {label} | {o['bleu']:.2f} | {r['bleu']:.2f} | {g['bleu']:.2f} | "
            f"{o['rougeL']:.2f} | {r['rougeL']:.2f} | {100 * s['non_best_share']:.1f}% |"
        )

    lines.append(row("all", report))
    lines += [row(c, s) for c, s in report["per_cluster"].items()]
    clusters = range(len(report["expert_cluster"][0]))
    lines += ["", f"Expert x cluster {m}:", "", "| expert | " + " | ".join(f"cluster {c}" for c in clusters) + " |"]
    lines.append("|---|" + "---|" * len(clusters))
    for e, values in enumerate(report["expert_cluster"]):
        lines.append(f"| {e} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines) + "\n"
