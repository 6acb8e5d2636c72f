"""One routed MoE model, policy chosen by config: token top-k, soft/hard sequence, domain, learned domain.

`load_routed_moe(path)` loads the merged checkpoint with stock transformers (Mixtral, Qwen3-MoE or Qwen2-MoE) and
swaps every layer's sparse block for a `RoutedMoeBlock` that keeps the same parameters (so saving and
reloading are unchanged) and routes by the active policy:

* token: the Mixtral top-k router (k = 1 or 2), router logits recorded for the load-balancing loss;
* soft-sequence / hard-sequence: the router logits mean-pooled over the prompt pick mixture weights or
  one expert for the whole sequence (Pham et al. 2023); decoding steps reuse the prompt's choice;
* domain (paper default): the prompt's nearest cluster centroid (clustering.assign) picks ONE expert per
  sequence and only that expert runs, so the cost is one dense expert's;
* learned-domain: a linear classifier on the model's own mean-pooled hidden states of the prompt (a
  middle layer, reached with expert 0), trained from the cluster labels (finetune-router), so
  inference needs no external embedder;
* mergoo (a converted folder of the original code, `convert --format mergoo`): each of gate_proj,
  up_proj and down_proj of a routed layer has its own top-k token router over its own input (down_proj's
  sees the intermediate activation), softmax over the k selected logits; a projection or layer without a
  router is dense (every expert slot holds the same weight, expert 0's is used);
* ensemble (c-BTM style): the k experts whose centroids are most similar to the prompt (`ensemble_k`), each a
  whole dense model (shared layers + its FFNs), with weights softmax(similarity / `ensemble_temperature`);
  their next-token distributions are mixed, p = sum_j w_j p_j, so the cost is k dense experts';
* hybrid: one expert (as domain) when the nearest centroid's similarity leads the next one's by >= `hybrid_tau`,
  else the ensemble.

What the router chose is a `Route` per input (a prediction row's `expert` and `router_margin`):
* domain: the nearest centroid's expert; margin = similarity gap between the two nearest centroids (null for a
  random or single partition, which has no similarities);
* learned-domain: the classifier's argmax; margin = the classifier's probability of it;
* ensemble / hybrid: the experts mixed and their weights (one expert: weight 1); margin = the centroid gap;
* token / soft-sequence / hard-sequence / mergoo (routed inside the model): the router's probabilities (softmax
  over all experts; mergoo: over its three projections' routers) averaged over the prompt's tokens and the
  layers; the expert(s) are hard-sequence's argmax, token and mergoo's top-k of that mean, soft-sequence's
  every expert, with those mean weights; margin = the mean probability of the top expert.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList

from dataset.predictions import Expert, expert_value
from prompts.builder import build_prompt
from run_config.devices import resolve_device, torch_dtype
from run_config.errors import ConfigError, DataError
from training.moe.checkpoint import (
    ENSEMBLE_DEFAULTS,
    ROUTING_FILE,
    cluster_dir,
    config_num_experts,
    load_classifier,
    load_projection_routers,
    read_routing,
)
from training.moe.config import POLICIES, PRE_ROUTED


@dataclass(frozen=True)
class Route:
    """The experts that answer one input, their weights (sum 1) and the router's margin (module docstring)."""

    experts: tuple[int, ...]
    weights: tuple[float, ...]
    margin: float | None

    @property
    def field(self) -> Expert:
        """The prediction row's `expert` value."""
        return expert_value(list(self.experts), list(self.weights))


@dataclass
class RoutingState:
    """What every MoE layer of one model reads: policy, per-sequence experts, pooling mask, prompt choices, and
    each layer's mean routing probabilities over the prompt [B, E] (`recorded`, for the rows' `expert`)."""

    policy: str
    override: torch.Tensor | None = None
    pool_mask: torch.Tensor | None = None
    seq_logits: dict[int, torch.Tensor] = field(default_factory=dict)
    recorded: dict[int, torch.Tensor] = field(default_factory=dict)


class EnsembleMix(LogitsProcessor):
    """Mix k expert copies of each sequence (rows b*k .. b*k+k-1) into one next-token distribution.

    The scores of every copy become log sum_j w_bj softmax(scores_bj); the wrapped processors (sampling
    warpers, the seeded draw) then run once per sequence and their result goes to all k copies, so the
    copies stay identical and decode one text.
    """

    def __init__(self, log_weights: torch.Tensor, inner: LogitsProcessorList | None) -> None:
        self.log_weights, self.inner = log_weights, inner

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        b, k = self.log_weights.shape
        mixed = mix_logprobs(scores, self.log_weights)
        if self.inner:
            mixed = self.inner(input_ids[::k], mixed)
        return mixed.repeat_interleave(k, dim=0).to(scores.dtype)


def mix_logprobs(scores: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """log sum_j w_bj softmax(scores[b*k + j]) [B, V] from per-copy scores [B*k, V] and log weights [B, k]."""
    b, k = log_weights.shape
    logp = torch.log_softmax(scores.float(), dim=-1).view(b, k, -1)
    return torch.logsumexp(logp + log_weights.to(scores.device)[:, :, None], dim=1)


class RoutedMoeBlock(nn.Module):
    """Sparse MoE FFN of one layer (expert = whole SwiGLU FFN, paper Eq. 2) routed by `state.policy`."""

    def __init__(self, block: nn.Module, layer_idx: int, state: RoutingState):
        super().__init__()
        self.gate = block.gate
        self.experts = block.experts
        self.layer_idx = layer_idx
        self.state = state
        self.routed_projections: tuple[str, ...] = ()
        if hasattr(block, "shared_expert"):  # Qwen2-MoE's, added to every policy's output (merge writes it off)
            self.shared_expert, self.shared_expert_gate = block.shared_expert, block.shared_expert_gate

    def attach_projection_routers(self, routers: dict[str, torch.Tensor]) -> None:
        """Give projections their own routers [experts, in_features] (policy mergoo); not saved with the model."""
        for proj, weight in routers.items():
            ref = self.gate.weight
            self.register_buffer(f"{proj}_router", weight.to(ref.device, ref.dtype), persistent=False)
        self.routed_projections = tuple(routers)

    def _expert_weight(self, e: int, proj: str) -> torch.Tensor:
        if proj == "down_proj":
            return self.experts.down_proj[e]
        gate, up = self.experts.gate_up_proj[e].chunk(2, dim=0)
        return gate if proj == "gate_proj" else up

    def _projection(self, proj: str, x: torch.Tensor, probs: list[torch.Tensor]) -> torch.Tensor:
        """One FFN projection of tokens x [N, in]: top-k of its router's logits, softmax over those k, weighted
        sum of the chosen experts' projections; expert 0's projection when it has no router. The router's softmax
        over all experts goes to `probs`."""
        if proj not in self.routed_projections:
            return F.linear(x, self._expert_weight(0, proj))
        logits = F.linear(x, getattr(self, f"{proj}_router"))
        probs.append(logits.float().softmax(dim=-1))
        top, chosen = torch.topk(logits, self.gate.top_k, dim=-1)
        weights = top.softmax(dim=-1, dtype=torch.float32).to(x.dtype)
        out = x.new_zeros(x.shape[0], self._expert_weight(0, proj).shape[0])
        for e in chosen.unique().tolist():
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            out.index_add_(0, rows, F.linear(x[rows], self._expert_weight(e, proj)) * weights[rows, slot, None])
        return out

    def _per_projection(self, hidden_states: torch.Tensor) -> torch.Tensor:
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        probs: list[torch.Tensor] = []
        gate = self.experts.act_fn(self._projection("gate_proj", flat, probs))
        inner = gate * self._projection("up_proj", flat, probs)
        out = self._projection("down_proj", inner, probs).reshape(hidden_states.shape)
        if probs:
            b, t = hidden_states.shape[:2]
            self._record(lambda: self._pool(torch.stack(probs).mean(dim=0).view(b, t, -1)))
        return out

    def expert_forward(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Run expert `e`'s FFN alone: down(act(gate(x)) * up(x))."""
        gate, up = F.linear(x, self.experts.gate_up_proj[e]).chunk(2, dim=-1)
        return F.linear(self.experts.act_fn(gate) * up, self.experts.down_proj[e])

    def _per_sequence(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if ids.numel() != h.shape[0]:
            if ids.numel() == 0 or h.shape[0] % ids.numel():
                raise ValueError(f"{ids.numel()} routed sequences for a batch of {h.shape[0]}")
            ids = ids.repeat_interleave(h.shape[0] // ids.numel())
        experts = ids.unique().tolist()
        if len(experts) == 1:
            return self.expert_forward(experts[0], h)
        out = torch.empty_like(h)
        for e in experts:
            rows = (ids == e).nonzero().squeeze(1)
            out[rows] = self.expert_forward(e, h[rows])
        return out

    def _pool(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of per-token values [B, T, E] over the pooling mask's tokens (all when it does not fit) [B, E]."""
        mask = self.state.pool_mask
        if mask is not None and mask.shape[1] == values.shape[1] and values.shape[0] % mask.shape[0] == 0:
            mask = mask.repeat_interleave(values.shape[0] // mask.shape[0], dim=0)  # generate's num_return_sequences
        if mask is None or tuple(mask.shape) != tuple(values.shape[:2]):
            return values.mean(dim=1)
        m = mask.to(values.device, values.dtype).unsqueeze(-1)
        return (values * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    def _record(self, probs: Any) -> None:
        """Keep this layer's mean routing probabilities [B, E] of the prompt (the first forward after a reset);
        computed without autograd, so a gradient checkpoint's recomputation saves the same tensors."""
        if self.layer_idx not in self.state.recorded:
            with torch.no_grad():
                self.state.recorded[self.layer_idx] = probs().float().cpu()

    def _sequence_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Router logits mean-pooled over the prompt [B, E]; decoding steps reuse the prompt's."""
        cached = self.state.seq_logits.get(self.layer_idx)
        if h.shape[1] == 1 and cached is not None and cached.shape[0] == h.shape[0]:
            return cached
        logits = self.gate(h.reshape(-1, h.shape[-1]))[0].view(h.shape[0], h.shape[1], -1).float()
        pooled = self._pool(logits)
        self.state.seq_logits[self.layer_idx] = pooled
        self._record(lambda: pooled.softmax(dim=-1))
        return pooled

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self._routed(hidden_states)
        if hasattr(self, "shared_expert"):
            out = out + torch.sigmoid(self.shared_expert_gate(hidden_states)) * self.shared_expert(hidden_states)
        return out

    def _routed(self, hidden_states: torch.Tensor) -> torch.Tensor:
        state = self.state
        if state.override is not None:
            return self._per_sequence(hidden_states, state.override.to(hidden_states.device))
        if state.policy in PRE_ROUTED:
            raise ValueError(
                f"{state.policy} routing needs each sequence's expert: wrap the call in "
                "moe.route(moe.domains_for(pairs)) or use moe.generate(pairs=...)"
            )
        if state.policy == "mergoo":
            return self._per_projection(hidden_states)
        if state.policy == "token":
            b, t, d = hidden_states.shape
            flat = hidden_states.reshape(-1, d)
            logits, weights, index = self.gate(flat)
            self._record(lambda: self._pool(logits.float().softmax(dim=-1).view(b, t, -1)))
            return self.experts(flat, index, weights).reshape(b, t, d)
        probs = self._sequence_logits(hidden_states).softmax(dim=-1)
        if state.policy == "soft-sequence":
            out = torch.zeros_like(hidden_states)
            for e in range(probs.shape[1]):
                out += self.expert_forward(e, hidden_states) * probs[:, e, None, None].to(hidden_states.dtype)
            return out
        chosen = probs.argmax(dim=-1)
        p = probs.gather(1, chosen[:, None]).squeeze(1)
        scale = (p / p.detach()).to(hidden_states.dtype)  # 1 in value; lets the router learn (hard routing)
        return self._per_sequence(hidden_states, chosen) * scale[:, None, None]


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


class RoutedMoE:
    """A merged MoE, its tokenizer and routing metadata; see the module docstring for the policies."""

    def __init__(self, model: Any, tokenizer: Any, path: Path, routing: dict[str, Any], policy: str):
        self.model, self.tokenizer, self.path, self.routing = model, tokenizer, path, routing
        self.state = RoutingState(policy)
        self.blocks: list[RoutedMoeBlock] = []
        for i, layer in enumerate(model.model.layers):
            layer.mlp = RoutedMoeBlock(layer.mlp, i, self.state)
            self.blocks.append(layer.mlp)
        self.classifier: DomainClassifier | None = None
        self._assigner: Any = None
        settings = {**ENSEMBLE_DEFAULTS, **{k: routing[k] for k in ENSEMBLE_DEFAULTS if k in routing}}
        self.ensemble_k = int(settings["ensemble_k"])
        self.ensemble_temperature = float(settings["ensemble_temperature"])
        self.hybrid_tau = float(settings["hybrid_tau"])

    @property
    def policy(self) -> str:
        return self.state.policy

    def set_policy(self, policy: str) -> None:
        """Switch the routing policy of every MoE layer."""
        if policy not in POLICIES:
            raise ConfigError(f"unknown routing policy {policy!r}; choose from {', '.join(POLICIES)}")
        if policy == "mergoo" and not self.routing.get("projection_routers"):
            raise ConfigError(
                f"{self.path} has no per-projection routers: policy mergoo runs a folder from `convert --format mergoo`"
            )
        if policy in ("ensemble", "hybrid"):
            cluster_dir(self.path, self.routing)  # raises when the MoE has no centroids to rank experts by
        self.state.policy = policy
        self.state.seq_logits.clear()

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

    @property
    def num_experts(self) -> int:
        return config_num_experts(self.model.config)

    @property
    def top_k(self) -> int:
        return int(self.model.config.num_experts_per_tok)

    def set_top_k(self, k: int) -> None:
        """Experts per token of the token policy."""
        if not 1 <= k <= self.num_experts:
            raise ConfigError(f"top_k must be in [1, {self.num_experts}], got {k}")
        self.model.config.num_experts_per_tok = k
        self.model.num_experts_per_tok = k
        for block in self.blocks:
            block.gate.top_k = k

    def router_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters of the active policy's router, by name (finetune-router trains only these)."""
        if self.policy == "learned-domain":
            if self.classifier is None:
                raise ConfigError("learned-domain has no classifier yet")
            return {f"domain_classifier.{n}": p for n, p in self.classifier.named_parameters()}
        if self.policy in ("domain", "ensemble", "hybrid"):
            raise ConfigError(
                f"the {self.policy} policy routes by centroids and has no trainable router; "
                "train learned-domain or a token/sequence policy"
            )
        if self.policy == "mergoo":
            raise ConfigError("finetune-router does not train the per-projection routers of policy mergoo")
        return {n: p for n, p in self.model.named_parameters() if n.endswith(".mlp.gate.weight")}

    # Domains -------------------------------------------------------------------------------------
    def prompt_features(self, pairs: Sequence[tuple[str, str]], layer: int, batch_size: int = 16) -> torch.Tensor:
        """Unit-normalised mean hidden state of each pair's prompt after `layer` decoder layers [n, hidden].

        Layers up to `layer` run with expert 0's FFN (the prompt's domain is not known yet); `layer` 0
        is the input embedding. The rest of the model is skipped.
        """
        tok, bos = self.tokenizer, self.tokenizer.bos_token or ""
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        device = next(self.model.parameters()).device
        captured: list[torch.Tensor] = []

        def grab(_m: nn.Module, _i: Any, out: Any) -> None:
            captured.append(out[0] if isinstance(out, tuple) else out)
            raise _StopForward

        target = self.model.get_input_embeddings() if layer == 0 else self.model.model.layers[layer - 1]
        hook = target.register_forward_hook(grab)
        feats = []
        try:
            with torch.no_grad(), self.route([0]):
                for start in range(0, len(pairs), batch_size):
                    ids = [
                        tok(build_prompt(t, c, bos_token=bos), add_special_tokens=False)["input_ids"]
                        for t, c in pairs[start : start + batch_size]
                    ]
                    width = max(map(len, ids))
                    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device)
                    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
                    captured.clear()
                    with contextlib.suppress(_StopForward):
                        self.model.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
                    m = mask.unsqueeze(-1).float()
                    vec = (captured[0].float() * m).sum(dim=1) / m.sum(dim=1)
                    feats.append(vec / vec.norm(dim=-1, keepdim=True).clamp_min(1e-6))
        finally:
            hook.remove()
        return torch.cat(feats).cpu()

    def classify_domains(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Expert ids from the learned domain router."""
        if self.classifier is None:
            raise DataError(
                str(self.path / ROUTING_FILE),
                None,
                "domain_classifier",
                "no learned domain router: run finetune-router with policy learned-domain",
            )
        with torch.no_grad():
            return self.classifier_probabilities(pairs).argmax(dim=-1).tolist()

    def classifier_probabilities(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """Softmax of the learned domain router over the experts [n, experts]."""
        if self.classifier is None:
            raise DataError(
                str(self.path / ROUTING_FILE),
                None,
                "domain_classifier",
                "no learned domain router: run finetune-router with policy learned-domain",
            )
        return self.classifier(self.prompt_features(pairs, self.classifier.layer)).softmax(dim=-1)

    def cluster_dir(self) -> Path:
        return cluster_dir(self.path, self.routing)

    def _cluster_assigner(self) -> Any:
        if self._assigner is None:
            folder = self.cluster_dir()
            from clustering.assign import load_assigner

            self._assigner = load_assigner(folder, device=str(next(self.model.parameters()).device))  # the MoE's
        return self._assigner

    def domains_for(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Expert id of each (term, context): nearest centroid, or the learned classifier for learned-domain."""
        if not pairs:
            return []
        if self.policy == "learned-domain":
            return self.classify_domains(pairs)
        to_expert = self.routing["cluster_to_expert"]
        return [to_expert[int(c)] for c in self._cluster_assigner().assign(list(pairs))]

    def expert_similarities(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray | None:
        """Cosine similarity of each pair's embedding to each expert's centroid [n, experts]; None for a random
        or single partition, which has no similarities."""
        assigner = self._cluster_assigner()
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
            with torch.no_grad():
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

    def recorded_routes(self) -> list[Route]:
        """Routes of the last forward's sequences under a policy that routes inside the model (module docstring)."""
        if not self.state.recorded:
            raise ValueError("nothing recorded: run forward or generate with a token, sequence or mergoo policy first")
        probs = torch.stack(list(self.state.recorded.values())).mean(dim=0).double()
        k = {"hard-sequence": 1, "soft-sequence": self.num_experts}.get(self.policy, self.top_k)
        top, experts = torch.topk(probs, k, dim=-1)
        return [Route(tuple(e.tolist()), tuple(w.tolist()), float(w[0])) for e, w in zip(experts, top)]

    @contextlib.contextmanager
    def route(self, experts: Sequence[int] | torch.Tensor) -> Iterator[None]:
        """Within the block every MoE layer runs only expert `experts[b]` for sequence b (any policy)."""
        ids = torch.as_tensor(experts, dtype=torch.long)
        if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < self.num_experts):
            raise ValueError(f"expert ids must be in [0, {self.num_experts}), got {ids.tolist()}")
        previous, self.state.override = self.state.override, ids
        try:
            yield
        finally:
            self.state.override = previous

    @contextlib.contextmanager
    def only_expert(self, e: int) -> Iterator[None]:
        """Within the block every MoE layer computes only expert `e` (a batch of one domain)."""
        with self.route([e]):
            yield

    # Running -------------------------------------------------------------------------------------
    def start_batch(self, pool_mask: torch.Tensor | None) -> None:
        """Clear the routing state of the last batch; sequence policies pool the next over `pool_mask`. Call it
        before running a wrapper of `model` (the Trainer's DeepSpeed engine) on a new batch."""
        self.state.seq_logits.clear()
        self.state.recorded.clear()
        self.state.pool_mask = pool_mask

    def forward(self, pool_mask: torch.Tensor | None = None, **batch: Any) -> Any:
        """model(**batch); sequence policies pool over `pool_mask` (default: the attention mask)."""
        self.start_batch(pool_mask if pool_mask is not None else batch.get("attention_mask"))
        return self.model(**batch)

    def generate(
        self, pairs: Sequence[tuple[str, str]] | None = None, routes: Sequence[Route] | None = None, **kwargs: Any
    ) -> Any:
        """model.generate(**kwargs); a pre-routed policy routes row b by `routes[b]` (default: the routes of its
        (term, context) in `pairs`): one expert runs alone, several mix their next-token distributions."""
        self.start_batch(kwargs.get("attention_mask"))
        if self.policy not in PRE_ROUTED or self.state.override is not None:
            return self.model.generate(**kwargs)
        if routes is None:
            if pairs is None:
                raise ValueError(f"{self.policy} routing needs pairs=[(term, context), ...] or routes for generate")
            routes = self.routes(pairs)
        if all(len(r.experts) == 1 for r in routes):
            with self.route([r.experts[0] for r in routes]):
                return self.model.generate(**kwargs)
        return self._generate_mixed(routes, **kwargs)

    def _generate_mixed(self, routes: Sequence[Route], **kwargs: Any) -> Any:
        """Generate with each row's experts mixed: k copies of the row, copy j on expert j, one mixed draw.

        Rows with fewer experts are padded with weight 0. The returned `sequences` have one row per input;
        `logits` (when asked for) are the mixture's log-probabilities, log sum_j w_j softmax(raw logits_j).
        """
        k = max(len(r.experts) for r in routes)
        experts = torch.tensor([[*r.experts, *[r.experts[0]] * (k - len(r.experts))] for r in routes])
        weights = torch.tensor([[*r.weights, *[0.0] * (k - len(r.weights))] for r in routes], dtype=torch.float64)
        config = kwargs.get("generation_config")
        if kwargs.get("num_return_sequences", getattr(config, "num_return_sequences", 1) or 1) != 1:
            raise ValueError("mixed routing generates one sequence per row: repeat the rows instead")
        log_w = weights.log().float()
        for name in ("input_ids", "attention_mask"):
            if kwargs.get(name) is not None:
                kwargs[name] = kwargs[name].repeat_interleave(k, dim=0)
        self.state.pool_mask = kwargs.get("attention_mask")
        kwargs["logits_processor"] = LogitsProcessorList([EnsembleMix(log_w, kwargs.get("logits_processor"))])
        with self.route(experts.reshape(-1)):
            out = self.model.generate(**kwargs)
        if isinstance(out, torch.Tensor):
            return out[::k]
        out.sequences = out.sequences[::k]
        if getattr(out, "logits", None) is not None:
            out.logits = tuple(mix_logprobs(step, log_w) for step in out.logits)
        if getattr(out, "scores", None) is not None:
            out.scores = tuple(step[::k] for step in out.scores)
        return out


def load_routed_moe(
    path: str | Path,
    policy: str | None = None,
    device: str | None = "auto",
    dtype: str | torch.dtype | None = None,
    top_k: int | None = None,
    ensemble_k: int | None = None,
    ensemble_temperature: float | None = None,
    hybrid_tau: float | None = None,
) -> RoutedMoE:
    """Load a merged MoE folder with the given policy (default: routing.json's) on `device` (auto: cuda when
    torch sees a GPU; None: where loading puts it, as ZeRO-3's partitions), in `dtype` (None or auto: the stored
    one); the ensemble settings default to routing.json's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device) if device is not None else None
    path = Path(path)
    routing = read_routing(path)
    policy = policy or routing["policy"]
    dtype = torch_dtype(dtype) if isinstance(dtype, str) and dtype != "auto" else dtype  # auto: the stored one
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or "auto")
    model = (model.to(device) if device is not None else model).eval()
    moe = RoutedMoE(model, AutoTokenizer.from_pretrained(str(path)), path, routing, "token")
    for layer, routers in (load_projection_routers(path, routing) or {}).items():
        moe.blocks[layer].attach_projection_routers(routers)
    moe.set_policy(policy)
    moe.set_ensemble(ensemble_k, ensemble_temperature, hybrid_tau)
    if top_k is not None:
        moe.set_top_k(top_k)
    classifier = load_classifier(path, routing)
    if classifier is not None:
        state, layer = classifier
        moe.classifier = DomainClassifier(model.config.hidden_size, moe.num_experts, layer)
        moe.classifier.load_state_dict(state)
    return moe
