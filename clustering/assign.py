"""Route new (term, context) inputs to a saved cluster: nearest centroid by cosine (paper Alg. 3).

At test time the gold definition is unknown, so a new input is always embedded from what it has:
the `query_text_field` of `embedder.json` (term + context). When the training clusters were built
from definitions, the cluster stage reports how often this agrees with the definition-based cluster.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clustering.artifacts import CENTROIDS_FILE, EMBEDDER_FILE, TFIDF_FILE, missing_assigner_files
from clustering.config import AssignConfig
from clustering.embed import EmbedderSpec, SentenceEncoder, TextEncoder, TfidfEncoder, build_text
from clustering.kmeans import normalize_rows, similarities
from dataset.records import read_records
from run_config.cli import config_from_args, existing_file, run_main, stage_parser
from run_config.devices import resolve_device
from run_config.errors import ConfigError
from run_config.runtime import atomic_open


def stable_bucket(term: str, context: str, k: int) -> int:
    """Deterministic pseudo-random cluster of an input (routing of the random partition)."""
    digest = hashlib.sha256(f"{term}\0{context}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % k


class DomainAssigner:
    """Map (term, context) pairs to cluster ids with the training-time embedder and centroids."""

    def __init__(
        self,
        spec: EmbedderSpec,
        centroids: np.ndarray,
        encoder: TextEncoder | None = None,
        device: str = "auto",
        batch_size: int = 64,
        dtype: str = "auto",
    ) -> None:
        self.spec, self.centroids = spec, centroids
        self._encoder, self._device, self._batch_size, self._dtype = encoder, device, batch_size, dtype

    def with_centroids(self, spec: EmbedderSpec, centroids: np.ndarray) -> DomainAssigner:
        """Return an assigner for new centroids that shares this one's (loaded) encoder."""
        return DomainAssigner(spec, centroids, self._encoder, self._device, self._batch_size, self._dtype)

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def texts(self, pairs: Sequence[tuple[str, str]], field: str | None = None) -> list[str]:
        """Return the embedded text of each pair (the query recipe unless `field` is given)."""
        field = field or self.spec.query_text_field
        return [build_text(term, context, None, field, self.spec.template) for term, context in pairs]

    def encode(self, texts: Sequence[str]):
        """Embed texts exactly as the training rows were (unit-norm rows)."""
        if self._encoder is None:
            self._encoder = SentenceEncoder(self.spec, self._device, self._batch_size, self._dtype)
        out = self._encoder.encode(texts)
        return out if self.spec.kind == "tfidf" else normalize_rows(out)

    def scores_of(self, embeddings) -> np.ndarray:
        """Cosine similarity of embeddings (unit rows) to every centroid, shape (n, k)."""
        return similarities(embeddings, self.centroids)

    def scores(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Cosine similarity of each (term, context) to every centroid, shape (n, k)."""
        return self.scores_of(self.encode(self.texts(pairs)))

    def assign(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Return the cluster id (int64) of each (term, context)."""
        if self.spec.kind == "none" or not len(pairs):
            return np.zeros(len(pairs), dtype=np.int64)
        if self.spec.kind == "random":
            return np.array([stable_bucket(t, c, self.num_clusters) for t, c in pairs], dtype=np.int64)
        return np.argmax(self.scores(pairs), axis=1).astype(np.int64)


def load_assigner(
    cluster_dir: str | Path, device: str = "auto", batch_size: int = 64, dtype: str = "auto"
) -> DomainAssigner:
    """Load the assigner saved by the cluster stage in `cluster_dir`."""
    d = Path(cluster_dir)
    for missing in missing_assigner_files(d):
        raise ConfigError(f"{d}: not a cluster folder ({missing.name} missing); run `python main.py cluster` first")
    spec = EmbedderSpec.model_validate_json((d / EMBEDDER_FILE).read_text(encoding="utf-8"))
    centroids = np.load(d / CENTROIDS_FILE)
    encoder = None
    if spec.kind == "tfidf":
        data = json.loads((d / TFIDF_FILE).read_text(encoding="utf-8"))
        encoder = TfidfEncoder(data["vocabulary"], data["idf"])
    return DomainAssigner(spec, centroids, encoder, device, batch_size, dtype)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("clustering.assign", __doc__, AssignConfig)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, AssignConfig)
    resolve_device(cfg.device)
    records = list(read_records(existing_file(cfg.input)))
    assigner = load_assigner(cfg.cluster_dir, cfg.device, cfg.batch_size, cfg.dtype)
    labels = assigner.assign([(r.term, r.context) for r in records])
    with atomic_open(cfg.output) as f:
        for r, c in zip(records, labels.tolist()):
            f.write(json.dumps({"id": r.id, "cluster": c}, ensure_ascii=False) + "\n")
    sizes = np.bincount(labels, minlength=assigner.num_clusters).tolist()
    print(f"clustering.assign: {len(records)} rows -> {cfg.output} (per cluster: {sizes})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
