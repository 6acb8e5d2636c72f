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
  router is dense (every expert slot holds the same weight, expert 0's is used).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prompts.builder import build_prompt
from run_config.devices import resolve_device, torch_dtype
from run_config.errors import ConfigError, DataError
from training.moe.checkpoint import (
    ROUTING_FILE,
    cluster_dir,
    config_num_experts,
    load_classifier,
    load_projection_routers,
    read_routing,
)
from training.moe.config import POLICIES


@dataclass
class RoutingState:
    """What every MoE layer of one model reads: policy, per-sequence experts, pooling mask, prompt choices."""

    policy: str
    override: torch.Tensor | None = None
    pool_mask: torch.Tensor | None = None
    seq_logits: dict[int, torch.Tensor] = field(default_factory=dict)


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

    def _projection(self, proj: str, x: torch.Tensor) -> torch.Tensor:
        """One FFN projection of tokens x [N, in]: top-k of its router's logits, softmax over those k, weighted
        sum of the chosen experts' projections; expert 0's projection when it has no router."""
        if proj not in self.routed_projections:
            return F.linear(x, self._expert_weight(0, proj))
        logits = F.linear(x, getattr(self, f"{proj}_router"))
        top, chosen = torch.topk(logits, self.gate.top_k, dim=-1)
        weights = top.softmax(dim=-1, dtype=torch.float32).to(x.dtype)
        out = x.new_zeros(x.shape[0], self._expert_weight(0, proj).shape[0])
        for e in chosen.unique().tolist():
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            out.index_add_(0, rows, F.linear(x[rows], self._expert_weight(e, proj)) * weights[rows, slot, None])
        return out

    def _per_projection(self, hidden_states: torch.Tensor) -> torch.Tensor:
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        inner = self.experts.act_fn(self._projection("gate_proj", flat)) * self._projection("up_proj", flat)
        return self._projection("down_proj", inner).reshape(hidden_states.shape)

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

    def _sequence_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Router logits mean-pooled over the prompt [B, E]; decoding steps reuse the prompt's."""
        cached = self.state.seq_logits.get(self.layer_idx)
        if h.shape[1] == 1 and cached is not None and cached.shape[0] == h.shape[0]:
            return cached
        logits = self.gate(h.reshape(-1, h.shape[-1]))[0].view(h.shape[0], h.shape[1], -1).float()
        mask = self.state.pool_mask
        if mask is not None and mask.shape[1] == h.shape[1] and h.shape[0] % mask.shape[0] == 0:
            mask = mask.repeat_interleave(h.shape[0] // mask.shape[0], dim=0)  # generate's num_return_sequences
        if mask is None or tuple(mask.shape) != tuple(h.shape[:2]):
            pooled = logits.mean(dim=1)
        else:
            m = mask.to(logits.device, logits.dtype).unsqueeze(-1)
            pooled = (logits * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        self.state.seq_logits[self.layer_idx] = pooled
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
        if state.policy in ("domain", "learned-domain"):
            raise ValueError(
                f"{state.policy} routing needs each sequence's expert: wrap the call in "
                "moe.route(moe.domains_for(pairs)) or use moe.generate(pairs=...)"
            )
        if state.policy == "mergoo":
            return self._per_projection(hidden_states)
        if state.policy == "token":
            b, t, d = hidden_states.shape
            flat = hidden_states.reshape(-1, d)
            _, weights, index = self.gate(flat)
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
        self.state.policy = policy
        self.state.seq_logits.clear()

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
        if self.policy == "domain":
            raise ConfigError(
                "the domain policy routes by centroids and has no trainable router; "
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
            return self.classifier(self.prompt_features(pairs, self.classifier.layer)).argmax(dim=-1).tolist()

    def cluster_dir(self) -> Path:
        return cluster_dir(self.path, self.routing)

    def domains_for(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Expert id of each (term, context): nearest centroid, or the learned classifier for learned-domain."""
        if not pairs:
            return []
        if self.policy == "learned-domain":
            return self.classify_domains(pairs)
        if self._assigner is None:
            folder = self.cluster_dir()
            from clustering.assign import load_assigner

            self._assigner = load_assigner(folder, device=str(next(self.model.parameters()).device))  # the MoE's
        to_expert = self.routing["cluster_to_expert"]
        return [to_expert[int(c)] for c in self._assigner.assign(list(pairs))]

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
    def _reset(self, pool_mask: torch.Tensor | None) -> None:
        self.state.seq_logits.clear()
        self.state.pool_mask = pool_mask

    def forward(self, pool_mask: torch.Tensor | None = None, **batch: Any) -> Any:
        """model(**batch); sequence policies pool over `pool_mask` (default: the attention mask)."""
        self._reset(pool_mask if pool_mask is not None else batch.get("attention_mask"))
        return self.model(**batch)

    def generate(self, pairs: Sequence[tuple[str, str]] | None = None, **kwargs: Any) -> Any:
        """model.generate(**kwargs); domain policies route each row by its (term, context) in `pairs`."""
        self._reset(kwargs.get("attention_mask"))
        if self.policy in ("domain", "learned-domain") and self.state.override is None:
            if pairs is None:
                raise ValueError(f"{self.policy} routing needs pairs=[(term, context), ...] for generate")
            with self.route(self.domains_for(pairs)):
                return self.model.generate(**kwargs)
        return self.model.generate(**kwargs)


def load_routed_moe(
    path: str | Path,
    policy: str | None = None,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
    top_k: int | None = None,
) -> RoutedMoE:
    """Load a merged MoE folder with the given policy (default: routing.json's) on `device` (auto: cuda when
    torch sees a GPU), in `dtype` (None or auto: the stored one)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    path = Path(path)
    routing = read_routing(path)
    policy = policy or routing["policy"]
    dtype = torch_dtype(dtype) if isinstance(dtype, str) and dtype != "auto" else dtype  # auto: the stored one
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or "auto").to(device).eval()
    moe = RoutedMoE(model, AutoTokenizer.from_pretrained(str(path)), path, routing, "token")
    for layer, routers in (load_projection_routers(path, routing) or {}).items():
        moe.blocks[layer].attach_projection_routers(routers)
    moe.set_policy(policy)
    if top_k is not None:
        moe.set_top_k(top_k)
    classifier = load_classifier(path, routing)
    if classifier is not None:
        state, layer = classifier
        moe.classifier = DomainClassifier(model.config.hidden_size, moe.num_experts, layer)
        moe.classifier.load_state_dict(state)
    return moe
