"""The router of the pre-routed policies (domain, learned-domain, ensemble, hybrid), from a MoE folder's routing
pieces alone: `routing.json`, the `clustering/` copy (embedder + centroids) and the learned domain classifier.

`load_domain_router(path)` never builds the MoE: domain, ensemble and hybrid embed the prompt with the clustering
embedder; learned-domain reads the classifier's features from a dense prefix (the embeddings and the first
`layer` decoder layers with expert 0's FFN, as the MoE computes them) loaded tensor by tensor from the shards.
`load_routed_moe` routes with the same `DomainRouter` (its features from the loaded MoE), so both give one route.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dataset.predictions import Expert, expert_value
from prompts.builder import build_prompt
from run_config.devices import torch_dtype
from run_config.errors import ConfigError, DataError
from training.moe.checkpoint import ENSEMBLE_DEFAULTS, ROUTING_FILE, cluster_dir, load_classifier, read_routing
from training.moe.config import PRE_ROUTED

# features(pairs, layer) -> unit-normalised mean hidden state of each prompt after `layer` layers [n, hidden]
Features = Callable[[Sequence[tuple[str, str]], int], torch.Tensor]


@dataclass(frozen=True)
class Route:
    """The experts that answer one input, their weights (sum 1) and the router's margin (training.moe.routing)."""

    experts: tuple[int, ...]
    weights: tuple[float, ...]
    margin: float | None

    @property
    def field(self) -> Expert:
        """The prediction row's `expert` value."""
        return expert_value(list(self.experts), list(self.weights))


class DomainClassifier(nn.Module):
    """Learned domain router: linear layer over the unit-normalised mean hidden state of the prompt at `layer`."""

    def __init__(self, hidden: int, num_experts: int, layer: int):
        super().__init__()
        self.layer = layer
        self.linear = nn.Linear(hidden, num_experts)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


class _StopForward(Exception):
    """Raised by a hook once the probed layer has run, so the rest of the model is skipped."""


def prompt_features(
    decoder: nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]], layer: int, batch_size: int = 16
) -> torch.Tensor:
    """Unit-normalised mean hidden state of each pair's prompt after `layer` layers of `decoder` (the base model:
    embeddings + decoder layers) [n, hidden]; `layer` 0 is the input embedding. Later layers are skipped."""
    bos = tokenizer.bos_token or ""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(decoder.parameters()).device
    captured: list[torch.Tensor] = []

    def grab(_m: nn.Module, _i: Any, out: Any) -> None:
        captured.append(out[0] if isinstance(out, tuple) else out)
        raise _StopForward

    target = decoder.get_input_embeddings() if layer == 0 else decoder.layers[layer - 1]
    hook = target.register_forward_hook(grab)
    feats = []
    try:
        with torch.no_grad():
            for start in range(0, len(pairs), batch_size):
                ids = [
                    tokenizer(build_prompt(t, c, bos_token=bos), add_special_tokens=False)["input_ids"]
                    for t, c in pairs[start : start + batch_size]
                ]
                width = max(map(len, ids))
                input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device)
                mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
                captured.clear()
                with contextlib.suppress(_StopForward):
                    decoder(input_ids=input_ids, attention_mask=mask, use_cache=False)
                m = mask.unsqueeze(-1).float()
                vec = (captured[0].float() * m).sum(dim=1) / m.sum(dim=1)
                feats.append(vec / vec.norm(dim=-1, keepdim=True).clamp_min(1e-6))
    finally:
        hook.remove()
    return torch.cat(feats).cpu()


def no_classifier(path: Path) -> DataError:
    return DataError(
        str(path / ROUTING_FILE),
        None,
        "domain_classifier",
        "no learned domain router: run finetune-router with policy learned-domain",
    )


class DomainRouter:
    """Routes of a pre-routed policy for (term, context) inputs; see training.moe.routing for what each policy picks.

    `features` computes the learned domain classifier's inputs (None: the router has no model to read them from,
    and learned-domain is refused). The clustering embedder runs on `device` (in its own dtype: auto).
    """

    def __init__(
        self,
        path: str | Path,
        routing: dict[str, Any],
        policy: str,
        *,
        device: str = "cpu",
        features: Features | None = None,
    ) -> None:
        self.path, self.routing, self.policy = Path(path), routing, policy
        self.device, self.features = device, features
        self.classifier: DomainClassifier | None = None
        self._assigner: Any = None
        settings = {**ENSEMBLE_DEFAULTS, **{k: routing[k] for k in ENSEMBLE_DEFAULTS if k in routing}}
        self.ensemble_k = int(settings["ensemble_k"])
        self.ensemble_temperature = float(settings["ensemble_temperature"])
        self.hybrid_tau = float(settings["hybrid_tau"])

    @property
    def num_experts(self) -> int:
        return int(self.routing["num_experts"])

    def set_ensemble(self, k: int | None = None, temperature: float | None = None, tau: float | None = None) -> None:
        """Experts mixed per input, the softmax temperature of their weights, and hybrid's margin threshold."""
        if k is not None and not 1 <= k <= self.num_experts:
            raise ConfigError(f"ensemble_k must be in [1, {self.num_experts}], got {k}")
        if temperature is not None and temperature <= 0:
            raise ConfigError(f"ensemble_temperature must be > 0, got {temperature}")
        if tau is not None and tau < 0:
            raise ConfigError(f"hybrid_tau must be >= 0, got {tau}")
        self.ensemble_k = self.ensemble_k if k is None else k
        self.ensemble_temperature = self.ensemble_temperature if temperature is None else temperature
        self.hybrid_tau = self.hybrid_tau if tau is None else tau

    def cluster_dir(self) -> Path:
        return cluster_dir(self.path, self.routing)

    def cluster_assigner(self) -> Any:
        """The clustering embedder + centroids copied into the MoE folder (loaded once)."""
        if self._assigner is None:
            from clustering.assign import load_assigner

            self._assigner = load_assigner(self.cluster_dir(), device=self.device)
        return self._assigner

    def classifier_probabilities(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """Softmax of the learned domain router over the experts [n, experts]."""
        if self.classifier is None:
            raise no_classifier(self.path)
        if self.features is None:
            raise ConfigError(f"{self.path}: this router has no model to compute the classifier's features with")
        with torch.no_grad():
            return self.classifier(self.features(pairs, self.classifier.layer)).softmax(dim=-1)

    def classify_domains(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Expert ids from the learned domain router."""
        return self.classifier_probabilities(pairs).argmax(dim=-1).tolist()

    def domains_for(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Expert id of each (term, context): nearest centroid, or the learned classifier for learned-domain."""
        if not pairs:
            return []
        if self.policy == "learned-domain":
            return self.classify_domains(pairs)
        to_expert = self.routing["cluster_to_expert"]
        return [to_expert[int(c)] for c in self.cluster_assigner().assign(list(pairs))]

    def expert_similarities(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray | None:
        """Cosine similarity of each pair's embedding to each expert's centroid [n, experts]; None for a random
        or single partition, which has no similarities."""
        assigner = self.cluster_assigner()
        if assigner.spec.kind in ("none", "random"):
            return None
        sims = assigner.scores(list(pairs))
        out = np.empty_like(sims)
        out[:, self.routing["cluster_to_expert"]] = sims
        return out

    def routes(self, pairs: Sequence[tuple[str, str]]) -> list[Route]:
        """What a pre-routed policy (domain, learned-domain, ensemble, hybrid) runs for each (term, context)."""
        if not pairs:
            return []
        if self.policy == "learned-domain":
            probs = self.classifier_probabilities(pairs)
            return [Route((int(p.argmax()),), (1.0,), float(p.max())) for p in probs]
        if self.policy not in PRE_ROUTED:
            raise ValueError(f"policy {self.policy} routes inside the model: read recorded_routes() after a forward")
        sims = self.expert_similarities(pairs)
        if sims is None:
            if self.policy != "domain":
                raise DataError(
                    str(self.cluster_dir()),
                    None,
                    "embedder.json",
                    f"policy {self.policy} needs centroid similarities"
                    " (an embedding partition), not a random or single one",
                )
            return [Route((e,), (1.0,), None) for e in self.domains_for(pairs)]
        ranked = np.argsort(-sims, axis=1, kind="stable")
        out = []
        for row, order in zip(sims, ranked):
            margin = float(row[order[0]] - row[order[1]]) if len(order) > 1 else None
            confident = margin is not None and margin >= self.hybrid_tau
            one = self.policy == "domain" or (self.policy == "hybrid" and confident)
            top = order[: 1 if one else self.ensemble_k]
            weights = torch.softmax(torch.as_tensor(row[top], dtype=torch.float64) / self.ensemble_temperature, 0)
            out.append(Route(tuple(int(e) for e in top), tuple(weights.tolist()), margin))
        return out


def attach_classifier(router: DomainRouter, hidden: int) -> None:
    """Give `router` the learned domain classifier named in routing.json, when one was trained."""
    classifier = load_classifier(router.path, router.routing)
    if classifier is not None:
        state, layer = classifier
        router.classifier = DomainClassifier(hidden, router.num_experts, layer)
        router.classifier.load_state_dict(state)


def load_dense_prefix(path: str | Path, routing: dict[str, Any], layers: int, device: str, dtype: str) -> nn.Module:
    """The embeddings and first `layers` decoder layers of the MoE at `path`, expert 0's FFN in each, as a dense base
    model of the experts' family (what the MoE runs before the learned router's layer), read tensor by tensor."""
    from transformers import AutoConfig, AutoModel

    from training.moe.export import dense_name
    from training.moe.safetensors_stream import CheckpointReader

    dense = dict(routing["dense_config"])
    total = int(dense["num_hidden_layers"])
    if not 0 <= layers <= total:
        raise DataError(str(Path(path) / ROUTING_FILE), None, "domain_classifier.layer", f"not in [0, {total}]")
    for key in ("layer_types",):  # per-layer lists follow the layer count
        if isinstance(dense.get(key), list):
            dense[key] = dense[key][:layers]
    config = AutoConfig.for_model(dense.pop("model_type"), **{**dense, "num_hidden_layers": layers})
    reader = CheckpointReader(path)
    stored = reader.info["model.embed_tokens.weight"].dtype
    weights_dtype = stored if dtype == "auto" else torch_dtype(dtype)
    with torch.device("meta"):
        model = AutoModel.from_config(config, dtype=weights_dtype)
    wanted = set(model.state_dict())
    state = {}
    for src in reader.info:
        dst = dense_name(src, 0)
        if dst is not None and dst.removeprefix("model.") in wanted:
            state[dst.removeprefix("model.")] = reader.read(src).to(weights_dtype)
    missing = sorted(wanted - state.keys())
    if missing:
        raise DataError(str(path), None, missing[0], "tensor of the learned router's dense prefix missing")
    model.load_state_dict(state, assign=True)
    model.rotary_emb = type(model.rotary_emb)(config=config)  # its buffers are computed, not stored
    return model.to(device).eval()


def load_domain_router(
    path: str | Path,
    policy: str | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    ensemble_k: int | None = None,
    ensemble_temperature: float | None = None,
    hybrid_tau: float | None = None,
) -> DomainRouter:
    """The router of a MoE folder's pre-routed policy (default: routing.json's) without its model: the clustering
    embedder on `device`, or the learned classifier over a dense prefix (on `device`, in `dtype`; auto: the stored
    one) loaded when first needed."""
    from transformers import AutoTokenizer

    path = Path(path)
    routing = read_routing(path)
    policy = policy or routing["policy"]
    if policy not in PRE_ROUTED:
        raise ConfigError(f"{path}: policy {policy} routes inside the model; a domain router serves {PRE_ROUTED}")
    if policy in ("ensemble", "hybrid", "domain"):
        cluster_dir(path, routing)  # raises when the MoE has no centroids to route by
    prefix: list[nn.Module] = []

    def features(pairs: Sequence[tuple[str, str]], layer: int) -> torch.Tensor:
        if not prefix:
            prefix.append(load_dense_prefix(path, routing, layer, device, dtype))
            prefix.append(AutoTokenizer.from_pretrained(str(path)))
        return prompt_features(prefix[0], prefix[1], pairs, layer)

    router = DomainRouter(path, routing, policy, device=device, features=features)
    router.set_ensemble(ensemble_k, ensemble_temperature, hybrid_tau)
    attach_classifier(router, int(routing["dense_config"]["hidden_size"]))
    if policy == "learned-domain" and router.classifier is None:
        raise no_classifier(path)
    return router
