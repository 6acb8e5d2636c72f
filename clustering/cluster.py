"""Cluster stage: embed the training rows, split them into N balanced semantic domains, route valid/test.

Writes into `output_dir`: `assignments.jsonl` ({"id", "cluster"} per training row), `centroids.npy`,
`embedder.json` (how to embed a new input), `report.json` (sizes, cohesion, separation, ...),
`clusters.png`, `clusters/cluster-{k}/{train,valid,test}.jsonl` (valid/test routed by term + context,
as at test time) and `manifest.json` last.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clustering.artifacts import (
    ASSIGNMENTS_FILE,
    CENTROIDS_FILE,
    EMBEDDER_FILE,
    PLOT_FILE,
    REPORT_FILE,
    TFIDF_FILE,
    cluster_split_file,
)
from clustering.assign import DomainAssigner
from clustering.config import ClusterConfig
from clustering.embed import EmbedderSpec, TfidfEncoder, build_text, embed_cached, make_spec
from clustering.kmeans import Matrix, spherical_kmeans
from clustering.report import cluster_quality, example_terms, plot_scatter, silhouette
from dataset.records import SPLITS, Record, read_records
from run_config.cli import config_from_args, existing_file, run_main, skip_finished, stage_parser
from run_config.devices import resolve_device
from run_config.errors import DataError
from run_config.runtime import (
    AtomicFileSet,
    atomic_open,
    inputs_fingerprint,
    is_finished,
    set_seed,
    write_json,
    write_manifest,
)


@dataclass(frozen=True)
class Partition:
    """The training rows' clusters and how to route a new input to them."""

    labels: np.ndarray
    centroids: np.ndarray
    spec: EmbedderSpec
    assigner: DomainAssigner
    vectors: Matrix | None  # the clustered vectors (None for random / none)
    tfidf: TfidfEncoder | None = None
    kmeans: dict | None = None


def read_splits(path: Path) -> dict[str, list[Record]]:
    """Read the input JSONL and group its records by split."""
    by_split: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for r in read_records(path):
        by_split[r.split].append(r)
    return by_split


def _texts(records: list[Record], field: str, template: str) -> list[str]:
    return [build_text(r.term, r.context, r.definition, field, template) for r in records]


def _kmeans(cfg: ClusterConfig, x: Matrix) -> tuple[np.ndarray, np.ndarray, dict]:
    result = spherical_kmeans(
        x,
        cfg.num_clusters,
        balanced=cfg.algorithm == "balanced_kmeans",
        seed=cfg.seed,
        max_iter=cfg.max_iter,
        tol=cfg.tol,
        n_init=cfg.n_init,
    )
    info = {
        "algorithm": cfg.algorithm,
        "objective": result.objective,
        "iterations": result.n_iter,
        "converged": result.converged,
    }
    return result.labels, result.centroids, info


def build_partition(cfg: ClusterConfig, train: list[Record]) -> Partition:
    """Split the training rows as `cfg.partition` says."""
    k = cfg.num_clusters
    if cfg.partition in ("none", "random"):
        spec = EmbedderSpec(kind=cfg.partition)
        perm = np.random.default_rng(cfg.seed).permutation(len(train))
        labels = np.empty(len(train), dtype=np.int64)
        labels[perm] = np.arange(len(train)) % k  # balanced: sizes differ by at most one
        centroids = np.zeros((k, 0), dtype=np.float32)
        return Partition(labels, centroids, spec, DomainAssigner(spec, centroids), None)
    if cfg.partition == "lexical":
        texts = _texts(train, cfg.text_field, cfg.template)
        tfidf = TfidfEncoder.fit(texts, cfg.tfidf_max_features)
        x = tfidf.encode(texts)
        spec = EmbedderSpec(
            kind="tfidf", model=TFIDF_FILE, text_field=cfg.text_field, template=cfg.template, dim=x.shape[1]
        )
        labels, centroids, info = _kmeans(cfg, x)
        return Partition(labels, centroids, spec, DomainAssigner(spec, centroids, tfidf), x, tfidf, info)
    spec = make_spec(cfg.embedder, cfg.text_field, cfg.template, cfg.embed_prompt, cfg.max_length)
    assigner = DomainAssigner(
        spec, np.zeros((k, 0), dtype=np.float32), device=cfg.device, batch_size=cfg.batch_size, dtype=cfg.dtype
    )
    cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.output_dir) / "embeddings"
    # The assigner loads the model on first use, so a cache hit never loads it.
    x = embed_cached(_texts(train, cfg.text_field, cfg.template), spec, cache, encoder=assigner, dtype=cfg.dtype)
    spec = spec.model_copy(update={"dim": int(x.shape[1])})
    labels, centroids, info = _kmeans(cfg, x)
    return Partition(labels, centroids, spec, assigner.with_centroids(spec, centroids), x, kmeans=info)


def route(part: Partition, records: list[Record]) -> np.ndarray:
    """Clusters of valid/test rows from term + context only (what is known at test time)."""
    return part.assigner.assign([(r.term, r.context) for r in records])


def routing_agreement(part: Partition, records: list[Record], routed: np.ndarray) -> dict:
    """How often term+context routing picks the cluster the training recipe (with the gloss) would pick."""
    if part.vectors is None or not records:
        return {"rows": len(records), "agreement": None, "note": "no embedding (random/none partition)"}
    if part.spec.text_field == part.spec.query_text_field:
        return {
            "rows": len(records),
            "agreement": 1.0,
            "note": "clusters were built from term + context, the same text used at test time",
        }
    a = part.assigner
    texts = [build_text(r.term, r.context, r.definition, part.spec.text_field, part.spec.template) for r in records]
    by_training_recipe = np.argmax(a.scores_of(a.encode(texts)), axis=1)
    agree = float(np.mean(by_training_recipe == routed))
    return {
        "rows": len(records),
        "agreement": agree,
        "training_text_field": part.spec.text_field,
        "routing_text_field": part.spec.query_text_field,
        "note": "share of valid rows whose term+context cluster equals their training-recipe cluster",
    }


def make_report(
    cfg: ClusterConfig, part: Partition, train: list[Record], routed: dict[str, np.ndarray], agreement: dict
) -> dict:
    """Assemble report.json: quality, k-means info, routing statistics, example terms."""
    k = cfg.num_clusters
    report: dict = {
        "partition": cfg.partition,
        "num_clusters": k,
        "train_rows": len(train),
        "sizes": np.bincount(part.labels, minlength=k).tolist(),
    }
    if part.vectors is not None:
        quality = cluster_quality(part.vectors, part.labels, k)
        report.update(
            {key: quality[key] for key in ("cohesion", "separation", "paper_intra_distance", "paper_inter_distance")}
        )
        report["silhouette_cosine"] = silhouette(part.vectors, part.labels, cfg.seed)
        nearest = np.argmax(part.assigner.scores_of(part.vectors), axis=1)
        report["train_nearest_centroid_agreement"] = float(np.mean(nearest == part.labels))
        report["kmeans"] = part.kmeans
        terms = [r.term for r in train]
        report["examples"] = example_terms(part.vectors, part.labels, part.centroids, terms, cfg.examples_per_cluster)
    report["routed_sizes"] = {s: np.bincount(v, minlength=k).tolist() for s, v in routed.items()}
    report["valid_routing_agreement"] = agreement
    report["embedder"] = part.spec.model_dump()
    return report


def write_outputs(
    cfg: ClusterConfig, part: Partition, splits: dict[str, list[Record]], routed: dict[str, np.ndarray], report: dict
) -> None:
    """Write every output file; the manifest goes last."""
    out = Path(cfg.output_dir)
    k = cfg.num_clusters
    with AtomicFileSet() as files:
        assignments = files.get(out / ASSIGNMENTS_FILE)
        for r, c in zip(splits["train"], part.labels.tolist()):
            assignments.write(json.dumps({"id": r.id, "cluster": c}, ensure_ascii=False) + "\n")
        per_split = {"train": part.labels, **routed}
        for split in SPLITS:
            handles = [files.get(cluster_split_file(out, j, split)) for j in range(k)]
            for r, c in zip(splits[split], per_split[split].tolist()):
                handles[c].write(r.to_json() + "\n")
    with atomic_open(out / CENTROIDS_FILE, "wb", encoding=None) as f:
        np.save(f, part.centroids)
    write_json(out / EMBEDDER_FILE, part.spec.model_dump())
    if part.tfidf is not None:
        write_json(out / TFIDF_FILE, part.tfidf.to_json())
    write_json(out / REPORT_FILE, report)
    if cfg.plot and part.vectors is not None and k > 1:
        plot_scatter(
            part.vectors,
            part.labels,
            out / PLOT_FILE,
            cfg.seed,
            f"{cfg.partition} partition, N={k}, {len(part.labels):,} training rows",
        )
    write_manifest(out, "cluster", cfg, inputs=inputs_fingerprint(cfg), sizes=report["sizes"])


def is_up_to_date(cfg: ClusterConfig) -> bool:
    """True when `output_dir` already holds the outputs of this exact config and input."""
    return is_finished(cfg.output_dir, cfg, lambda: inputs_fingerprint(cfg), REPORT_FILE)


def cluster(cfg: ClusterConfig) -> dict:
    """Run the stage and return the report."""
    if cfg.partition == "semantic":
        resolve_device(cfg.device)  # a GPU this machine lacks is refused before any row is read
    set_seed(cfg.seed)
    splits = read_splits(existing_file(cfg.input))
    train = splits["train"]
    if len(train) < cfg.num_clusters:
        raise DataError(
            cfg.input, None, "split", f"{len(train)} train rows, need at least num_clusters={cfg.num_clusters}"
        )
    part = build_partition(cfg, train)
    routed = {s: route(part, splits[s]) for s in ("valid", "test")}
    agreement = routing_agreement(part, splits["valid"], routed["valid"])
    report = make_report(cfg, part, train, routed, agreement)
    write_outputs(cfg, part, splits, routed, report)
    return report


def format_summary(report: dict) -> str:
    """Human-readable lines: sizes, quality and a few typical terms per cluster."""
    lines = [
        f"cluster: {report['train_rows']} train rows -> {report['num_clusters']} clusters "
        f"({report['partition']}), sizes {report['sizes']}"
    ]
    if "cohesion" in report:
        c, s = report["cohesion"], report["separation"]
        lines.append(
            f"cohesion (mean intra-cluster cosine) {c['mean']:.3f} vs {c['baseline_all_points']:.3f} "
            f"for all points; separation (mean inter-centroid cosine distance) {s['mean']:.3f}"
        )
        for j, terms in enumerate(report["examples"]):
            lines.append(f"  cluster {j} ({report['sizes'][j]} rows): {', '.join(terms)}")
    agreement = report["valid_routing_agreement"]["agreement"]
    if agreement is not None:
        lines.append(f"valid routing agreement (term+context vs training recipe): {agreement:.3f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("cluster", __doc__, ClusterConfig)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, ClusterConfig)
    if skip_finished("cluster", cfg, is_up_to_date):
        return 0
    report = cluster(cfg)
    print(format_summary(report))
    print(f"cluster: outputs in {cfg.output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
