"""Typed configs of the MoE stages: merge (experts -> stock MoE checkpoint), convert (the original's MoE) and router
finetuning."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from run_config.devices import DEVICE_HELP, Device, Dtype
from run_config.loader import StageConfig

# Routing policies of one RoutedMoE (training/moe/routing.py); "domain" is the paper's default, "mergoo" the
# original code's per-projection routers (only a converted folder has them); "ensemble" and "hybrid" mix the
# next-token distributions of the top-k experts by centroid similarity (c-BTM style).
POLICIES = ("domain", "learned-domain", "token", "soft-sequence", "hard-sequence", "mergoo", "ensemble", "hybrid")
Policy = Literal["domain", "learned-domain", "token", "soft-sequence", "hard-sequence", "mergoo", "ensemble", "hybrid"]
# Policies that choose each input's experts before generating (from its (term, context)); the others route
# inside the model, per token or per sequence.
PRE_ROUTED = ("domain", "learned-domain", "ensemble", "hybrid")


class MergeConfig(StageConfig):
    """N dense experts -> one stock MoE checkpoint with one expert per input (paper Alg. 1/2): Llama -> Mixtral,
    Qwen3 -> Qwen3-MoE, Qwen2 -> Qwen2-MoE."""

    INPUT_FIELDS: ClassVar[tuple[str, ...]] = ("experts", "base_model")

    experts: list[str] = Field(description="dense expert folders (HF safetensors), expert i = folder i")
    output_dir: str = Field(description="merged MoE folder (config, safetensors shards, routing.json)")
    shared_params: Literal["average", "base", "expert"] = Field(
        "average", description="non-FFN tensors: mean of the experts, the base model's, or one expert's"
    )
    base_model: str | None = Field(None, description="dense base folder (shared_params=base; hidden-state router init)")
    shared_expert: int = Field(0, description="expert whose non-FFN tensors are kept when shared_params=expert")
    policy: Policy = Field("domain", description="default routing policy written to routing.json")
    top_k: int = Field(2, description="experts per token for the token policy (1 or 2 in the paper)")
    ensemble_k: int = Field(
        2, ge=1, description="ensemble/hybrid: experts mixed per input (top-k by centroid similarity)"
    )
    ensemble_temperature: float = Field(
        0.1, gt=0, description="ensemble/hybrid: mixture weights softmax(similarity / T) of the k experts"
    )
    hybrid_tau: float = Field(
        0.05, ge=0, description="hybrid: one expert when its centroid similarity leads the next by >= tau"
    )
    router_init: Literal["random", "hidden", "centroids"] = Field(
        "random",
        description="router rows: N(0, initializer_range), mean hidden state of each expert's "
        "prompts, or of the prompts the cluster centroids assign to each expert",
    )
    router_prompt_files: list[str] = Field(
        default_factory=list, description="records JSONL for router init: one per expert (hidden) or a pool (centroids)"
    )
    router_prompt_samples: int = Field(64, description="records read per file for the router init")
    cluster_dir: str | None = Field(
        None, description="clustering output (centroids.npy + embedder.json) copied beside the MoE"
    )
    cluster_to_expert: list[int] | None = Field(None, description="expert id of cluster c (default: identity)")
    dtype: Dtype = Field("auto", description="output dtype (auto: the experts')")
    max_shard_size_mb: int = Field(2000, description="largest output shard in MiB")
    router_aux_loss_coef: float = Field(0.01, description="load-balancing loss coefficient written to the config")
    dense_export_dir: str | None = Field(None, description="also write one dense checkpoint per expert here")
    seed: int = Field(42, description="seed of the random router init")
    force: bool = Field(False, description="redo even when output_dir is up to date")

    legacy_keys: ClassVar[dict[str, str | None]] = {
        "num_experts_per_tok": "top_k",
        "model_type": None,
        "router_layers": None,
        "router_layers_index": None,
    }

    @field_validator("experts", mode="before")
    @classmethod
    def _original_experts(cls, value: object) -> object:
        """The original (mergoo) config lists `{"expert_name", "model_id"}` objects: keep their model_ids."""
        if isinstance(value, list) and value and all(isinstance(e, dict) for e in value):
            ids = []
            for i, e in enumerate(value):
                if set(e) - {"expert_name", "model_id"} or not isinstance(e.get("model_id"), str):
                    raise ValueError(
                        f'experts[{i}]: expected {{"expert_name", "model_id"}} with a string model_id, got {e}'
                    )
                ids.append(e["model_id"])
            return ids
        return value

    @model_validator(mode="after")
    def _check(self) -> MergeConfig:
        n = len(self.experts)
        if n == 0:
            raise ValueError("experts: give at least one expert folder")
        if not 1 <= self.top_k <= n:
            raise ValueError(f"top_k must be in [1, {n}] for {n} experts, got {self.top_k}")
        if self.shared_params == "base" and not self.base_model:
            raise ValueError("shared_params=base needs base_model")
        if not 0 <= self.shared_expert < n:
            raise ValueError(f"shared_expert must be in [0, {n}), got {self.shared_expert}")
        if self.cluster_to_expert is not None and sorted(self.cluster_to_expert) != list(range(n)):
            raise ValueError(f"cluster_to_expert must be a permutation of 0..{n - 1}, got {self.cluster_to_expert}")
        if self.policy == "mergoo":
            raise ValueError("policy mergoo needs per-projection routers, which only `convert --format mergoo` writes")
        if self.policy in ("ensemble", "hybrid") and not self.cluster_dir:
            raise ValueError(f"policy {self.policy} routes by centroid similarity: give cluster_dir")
        if self.policy in ("ensemble", "hybrid") and self.ensemble_k > n:
            raise ValueError(f"ensemble_k must be in [1, {n}] for {n} experts, got {self.ensemble_k}")
        if self.router_init == "hidden" and len(self.router_prompt_files) != n:
            raise ValueError(
                f"router_init=hidden needs one router_prompt_files entry per expert ({n}), "
                f"got {len(self.router_prompt_files)}"
            )
        if self.router_init == "centroids" and not (self.cluster_dir and self.router_prompt_files):
            raise ValueError("router_init=centroids needs cluster_dir and router_prompt_files")
        if self.max_shard_size_mb < 1 or self.router_prompt_samples < 1:
            raise ValueError("max_shard_size_mb and router_prompt_samples must be >= 1")
        return self


class ConvertConfig(StageConfig):
    """An MoE folder in another layout (mergoo: the original code's) -> this toolkit's MoE folder."""

    INPUT_FIELDS: ClassVar[tuple[str, ...]] = ("input",)

    format: Literal["mergoo"] = Field(
        description="layout of the input: mergoo (per-projection routers, as the paper's released MoEs)"
    )
    input: str = Field(description="the folder to convert (config.json, safetensors, tokenizer)")
    output_dir: str = Field(description="converted MoE folder (config, safetensors shards, routing.json)")
    init_missing_gates: bool = Field(
        False, description="draw absent routers from N(0, initializer_range) (seeded) instead of refusing"
    )
    seed: int = Field(42, description="seed of --init-missing-gates")
    max_shard_size_mb: int = Field(2000, ge=1, description="largest output shard in MiB")
    force: bool = Field(False, description="redo even when output_dir is up to date")


class FinetuneRouterConfig(StageConfig):
    """Train only the router of a merged MoE (Table 12 MoE column: 1 epoch, lr 1e-6)."""

    INPUT_FIELDS: ClassVar[tuple[str, ...]] = ("moe_dir", "train_file", "valid_file")

    moe_dir: str = Field(description="merged MoE folder (output of merge)")
    train_file: str = Field(description="records JSONL to train on")
    valid_file: str | None = Field(None, description="records JSONL for the validation loss / domain agreement")
    output_dir: str = Field(description="folder of the finetuned MoE")
    policy: Policy | None = Field(None, description="routing policy to train (default: routing.json's)")
    top_k: int | None = Field(None, description="experts per token for the token policy (default: the checkpoint's)")
    learning_rate: float = Field(1e-6, description="peak learning rate (cosine decay to 0)")
    num_epochs: int = Field(1, description="epochs over train_file")
    batch_size: int = Field(8, description="examples per step (per rank under a launcher)")
    gradient_accumulation_steps: int = Field(1, description="steps per optimizer update")
    warmup_ratio: float = Field(0.1, description="linear warm-up share of the updates")
    weight_decay: float = Field(0.01, description="AdamW weight decay")
    adam_beta2: float = Field(0.95, description="AdamW beta2 (beta1 0.9)")
    max_grad_norm: float = Field(1.0, description="gradient clipping")
    cutoff_len: int = Field(128, description="max tokens per example (prompt + definition)")
    aux_loss_coef: float = Field(
        0.01,
        description="token policy: loss = definition loss + coef x Mixtral's load-balancing loss (HF name: "
        "router_aux_loss_coef)",
    )
    classifier_learning_rate: float = Field(1e-2, description="learning rate of the learned domain router")
    classifier_epochs: int = Field(30, description="epochs of the learned domain router")
    classifier_layer: int | None = Field(
        None, description="hidden layer the learned domain router reads (default: middle)"
    )
    max_records: int | None = Field(None, description="use only the first N train records")
    device: Device = Field(
        "auto",
        description=DEVICE_HELP + " (cuda:N: give the GPUs with CUDA_VISIBLE_DEVICES; each rank takes cuda:LOCAL_RANK)",
    )
    dtype: Dtype = Field(
        "auto",
        description="dtype the MoE loads in (auto: bfloat16 on a GPU, float32 on the CPU; under DeepSpeed the "
        "precision's); routers train with float32 master weights under mixed precision",
    )
    precision: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="mixed precision (fp32 on CPU)")
    gradient_checkpointing: bool = Field(False, description="recompute activations to save memory")
    deepspeed: str | None = Field(
        None, description="DeepSpeed JSON (run_config/ds_zero3.json: the MoE partitioned over the ranks)"
    )
    logging_steps: int = Field(1, ge=1, description="log loss and learning rate every N optimizer steps")
    seed: int = Field(42, description="seed of shuffling and init")
    force: bool = Field(False, description="redo even when output_dir is up to date")

    legacy_keys: ClassVar[dict[str, str | None]] = {
        "trainable_layers": None,
        "num_train_epochs": "num_epochs",
        "per_device_train_batch_size": "batch_size",
        "router_aux_loss_coef": "aux_loss_coef",  # the HF MoE configs' name
    }

    @model_validator(mode="after")
    def _check(self) -> FinetuneRouterConfig:
        if self.learning_rate <= 0 or self.num_epochs < 1 or self.batch_size < 1 or self.cutoff_len < 8:
            raise ValueError("learning_rate > 0, num_epochs >= 1, batch_size >= 1 and cutoff_len >= 8 are required")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.device.startswith("cuda:"):
            raise ValueError(
                f"device {self.device}: router training places rank r on cuda:r; pick the GPUs with "
                "CUDA_VISIBLE_DEVICES and give device cuda"
            )
        if self.deepspeed and self.policy == "learned-domain":
            raise ValueError("policy learned-domain trains its classifier in one process: drop deepspeed")
        return self
