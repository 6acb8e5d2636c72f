"""Typed configs of the clustering stage and of the assignment CLI."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from clustering.embed import TextField
from run_config.devices import DEVICE_HELP, Device, Dtype
from run_config.loader import StageConfig

EMBEDDER_DTYPE_HELP = "embedder weights (auto: float16 for a remote-code embedder, NV-Embed-v2, on a GPU; else float32)"


class ClusterConfig(StageConfig):
    """Embed the training rows, split them into N (balanced) clusters, route valid/test rows to them."""

    legacy_keys: ClassVar[dict[str, str | None]] = {
        "cluster_centroids": "num_clusters",
        "model": "embedder",
        "split_by": "partition",
        "clusterer": "algorithm",
        "sample_num": None,
        "dataset": None,
        "split": None,
    }

    INPUT_FIELDS: ClassVar[tuple[str, ...]] = ("input",)
    input: str = Field(description="preprocessed JSONL (all.jsonl: train rows are clustered, valid/test routed)")
    output_dir: str = Field(description="output folder")
    num_clusters: int = Field(4, ge=1, le=64, description="number of clusters N (1 = no split)")
    partition: Literal["semantic", "lexical", "random", "none"] = Field(
        "semantic", description="semantic (embeddings), lexical (TF-IDF), random balanced, none (N must be 1)"
    )
    algorithm: Literal["balanced_kmeans", "kmeans"] = Field(
        "balanced_kmeans", description="balanced (sizes differ by <= 1) or plain k-means (ablation)"
    )
    embedder: str = Field("minilm", description="preset (minilm, nv-embed-v2) or sentence-transformers name/path")
    text_field: TextField = Field(
        "term_context", description="embedded text: term_context, definition, instruction_definition (the original's)"
    )
    template: str = Field("word_interpretation", description="prompts/<template>.txt used for term_context")
    embed_prompt: str | None = Field(None, description="instruction prefix (default: the preset's)")
    max_length: int | None = Field(None, ge=8, description="embedder max tokens (default: the preset's)")
    batch_size: int = Field(64, ge=1, description="embedding batch size")
    device: Device = Field("auto", description=DEVICE_HELP)
    dtype: Dtype = Field("auto", description=EMBEDDER_DTYPE_HELP)
    cache_dir: str | None = Field(None, description="embedding cache (default: <output_dir>/embeddings)")
    seed: int = Field(42, ge=0, description="k-means++ / random split seed")
    max_iter: int = Field(1000, ge=1, description="k-means iterations at most")
    tol: float = Field(1e-8, ge=0, description="stop when the centroid shift is below tol x data variance")
    n_init: int = Field(1, ge=1, description="k-means restarts (best objective kept)")
    tfidf_max_features: int = Field(4096, ge=2, description="TF-IDF vocabulary size (lexical partition)")
    examples_per_cluster: int = Field(8, ge=0, description="typical terms printed per cluster")
    plot: bool = Field(True, description="write the 2-D scatter plot")
    force: bool = Field(False, description="redo even when the outputs are up to date")

    @model_validator(mode="after")
    def _none_means_one(self) -> ClusterConfig:
        if self.partition == "none" and self.num_clusters != 1:
            raise ValueError(f"partition 'none' needs num_clusters 1, got {self.num_clusters}")
        return self


class AssignConfig(StageConfig):
    """Route new (term, context) rows to the clusters saved in a cluster folder."""

    cluster_dir: str = Field(description="output folder of the cluster stage")
    input: str = Field(description="JSONL records to route")
    output: str = Field(description="JSONL of {id, cluster}")
    device: Device = Field("auto", description=DEVICE_HELP)
    dtype: Dtype = Field("auto", description=EMBEDDER_DTYPE_HELP)
    batch_size: int = Field(64, ge=1, description="embedding batch size")
