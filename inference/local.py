"""Local HF backend: any causal LM, or a routed MoE (a model folder with `routing.json`, run with its policy).

Prompts are tokenised exactly as in training (BOS in the text, no added special tokens), sorted by
length, left-padded per batch and never truncated (bug 32). Each sample's log-likelihood is the
mean log-probability of its tokens under the raw logits up to and including EOS, pads excluded (bug 33).
Each (item, sample) is one row with its own seed (inference.seeded_sampling), so a sample does not depend
on the batch size, the batch order or which samples a resumed run still has to make.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from inference.backend import Generation, Request, Sampling, derived_seed
from run_config.devices import resolve_device, resolve_dtype
from run_config.errors import ConfigError
from training.moe.checkpoint import is_moe_folder
from training.moe.config import PRE_ROUTED

log = logging.getLogger(__name__)


def load_causal_lm(path: str, device: str, dtype: str) -> tuple[Any, Any]:
    """Load model (eval mode) and a left-padding tokenizer with a pad token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device)).to(device).eval()
    return model, tokenizer


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding, and the EOS as pad when the tokenizer has none (pads are masked out)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def sample_logprobs(
    step_logits: Sequence[torch.Tensor], tokens: torch.Tensor, eos_ids: set[int], pad_id: int | None = None
) -> tuple[list[float], list[int]]:
    """Mean log-prob of each row of `tokens` (generated ids) up to its first EOS (counted) or `pad_id`, the
    filler after a stop string (not counted); returns (means, lengths)."""
    total = torch.zeros(tokens.shape[0], dtype=torch.float64)
    alive = torch.ones(tokens.shape[0], dtype=torch.bool)
    length = torch.zeros(tokens.shape[0], dtype=torch.long)
    eos = torch.tensor(sorted(eos_ids), dtype=tokens.dtype) if eos_ids else None
    for t, logits in enumerate(step_logits):
        tok = tokens[:, t]
        if pad_id is not None and pad_id not in eos_ids:
            alive &= tok.cpu() != pad_id
        lp = torch.log_softmax(logits.float(), dim=-1).gather(1, tok[:, None].to(logits.device)).squeeze(1).cpu()
        total += torch.where(alive, lp.double(), 0.0)
        length += alive.long()
        if eos is not None:
            alive &= ~torch.isin(tok.cpu(), eos)
    means = (total / length.clamp(min=1)).tolist()
    return means, length.tolist()


def group_by_route(requests: Sequence[Request], routes: dict[str, Any]) -> dict[tuple[int, ...], list[Request]]:
    """Requests by the expert they run on alone, ascending (key `(e,)`), then the mixed ones (key `()`)."""
    groups: dict[tuple[int, ...], list[Request]] = {}
    for request in requests:
        experts = routes[request.item_id].experts
        groups.setdefault(experts if len(experts) == 1 else (), []).append(request)
    return dict(sorted(groups.items(), key=lambda kv: (not kv[0], kv[0])))


def beam_logits(step_logits: Sequence[torch.Tensor], beam_indices: torch.Tensor) -> list[torch.Tensor]:
    """Each step's raw logits of the beam each returned sequence came from (`generate`'s beam_indices, -1: done)."""
    index = beam_indices.clamp(min=0)
    return [logits[index[:, t].to(logits.device)] for t, logits in enumerate(step_logits[: index.shape[1]])]


def _cut_at_eos(ids: list[int], eos_ids: set[int]) -> list[int]:
    for i, tok in enumerate(ids):
        if tok in eos_ids:
            return ids[:i]
    return ids


class LocalBackend:
    """HF `generate` over sorted, left-padded batches. A routed MoE with a pre-routed policy (domain, learned-domain,
    ensemble, hybrid) runs the inputs of each single expert together on that expert and the mixed ones together;
    with a token or sequence policy its own routers pick experts per token / sequence. Every MoE row carries
    the route (`expert`, `router_margin`)."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str, batch_size: int = 16, moe: Any = None) -> None:
        self.model, self.tokenizer, self.moe = model, prepare_tokenizer(tokenizer), moe
        self.device = str(next(model.parameters()).device)
        self.name, self.batch_size = name, batch_size
        self.bos_token = self.tokenizer.bos_token or ""
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids = {i for i in [*eos, self.tokenizer.eos_token_id] if i is not None}

    @classmethod
    def from_path(cls, path: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 16) -> LocalBackend:
        """Load a causal LM, or a routed MoE when `path` holds `routing.json`."""
        device = resolve_device(device)
        if is_moe_folder(path):
            from training.moe.routing import load_routed_moe

            moe = load_routed_moe(path, policy=None, device=device, dtype=resolve_dtype(dtype, device))
            return cls(moe.model, moe.tokenizer, name=path, batch_size=batch_size, moe=moe)
        model, tokenizer = load_causal_lm(path, device, dtype)
        return cls(model, tokenizer, name=path, batch_size=batch_size)

    def max_prompt_tokens(self, max_new_tokens: int) -> int | None:
        """The model's context length minus the answer budget (None when the config gives none)."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        return limit - max_new_tokens if limit else None

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[Generation]:
        if self.moe is not None and sampling.num_beams > 1 and self.moe.policy not in PRE_ROUTED:
            raise ConfigError(
                f"num_beams on a routed MoE: policy {self.moe.policy} routes inside the model, per beam; beam "
                f"search runs each input on the experts its route names ({', '.join(PRE_ROUTED)})"
            )
        if self.moe is None or self.moe.policy not in PRE_ROUTED:
            yield from self._generate(requests, sampling)
            return
        routes = dict(zip((r.item_id for r in requests), self.moe.routes([(r.term, r.context) for r in requests])))
        groups = group_by_route(requests, routes)
        if sampling.num_beams > 1 and () in groups:
            raise ConfigError(
                f"num_beams: {len(groups[()])} inputs mix several experts under policy {self.moe.policy}, which "
                "mixes one next-token draw per input: beam search runs on single-expert routes (policy domain)"
            )
        for experts, group in groups.items():
            log.info("experts %s: %d inputs", "+".join(map(str, experts)) if experts else "mixed", len(group))
            yield from self._generate(group, sampling, routes)

    def generate_with_expert(
        self, requests: Sequence[Request], sampling: Sampling, expert: int
    ) -> Iterator[Generation]:
        """Every request on MoE expert `expert` alone, whatever the policy (oracle routing)."""
        from training.moe.routing import Route

        route = Route((expert,), (1.0,), None)
        with self.moe.only_expert(expert):
            yield from self._generate(requests, sampling, {r.item_id: route for r in requests})

    def _generate(
        self, requests: Sequence[Request], sampling: Sampling, routes: dict[str, Any] | None = None
    ) -> Iterator[Generation]:
        """One row per (request, pending sample); sampled rows draw with their own seed (inference.seeded_sampling).
        A routed MoE runs request x on `routes[x]` (pre-routed policies) or records its own routers' choice."""
        from transformers import GenerationConfig, LogitsProcessorList

        from inference.decoding import BlockSequences, term_token_sequences
        from inference.seeded_sampling import seeded_processors

        lengths = self.count_tokens([r.prompt for r in requests])
        order = sorted(range(len(requests)), key=lambda i: (-lengths[i], requests[i].item_id))
        beams = sampling.num_beams
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=False,
            num_beams=beams,
            length_penalty=sampling.length_penalty,
            stop_strings=list(sampling.stop) or None,
            repetition_penalty=sampling.repetition_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids) or None,
            output_logits=True,
            return_dict_in_generate=True,
        )
        extra = {"tokenizer": self.tokenizer} if sampling.stop else {}  # HF matches stop strings on decoded text
        run = self.model.generate if self.moe is None else self.moe.generate  # the MoE resets its routing state
        for start in range(0, len(order), self.batch_size):
            batch = [requests[i] for i in order[start : start + self.batch_size]]
            rows = [(r, idx) for r in batch for idx in r.sample_indices]
            processors = LogitsProcessorList()
            if sampling.block_term:  # before the seeded draw; beam b*beams .. b*beams+beams-1 are row b's
                banned = [term_token_sequences(self.tokenizer, r.term) for r, _ in rows]
                processors.append(BlockSequences([seqs for seqs in banned for _ in range(beams)]))
            if not sampling.greedy:
                processors.extend(
                    seeded_processors(sampling, [derived_seed(sampling.seed, r.item_id, idx) for r, idx in rows])
                )
            enc = self.tokenizer(
                [r.prompt for r, _ in rows], add_special_tokens=False, padding=True, return_tensors="pt"
            ).to(self.device)
            began = time.monotonic()
            routed = {} if routes is None else {"routes": [routes[r.item_id] for r, _ in rows]}
            with torch.inference_mode():
                out = run(**enc, generation_config=config, logits_processor=processors, **routed, **extra)
            picked = routed.get("routes") or (self.moe.recorded_routes() if self.moe is not None else None)
            new = out.sequences[:, enc["input_ids"].shape[1] :].cpu()
            logits = out.logits if beams == 1 else beam_logits(out.logits, out.beam_indices)
            means, _ = sample_logprobs(logits, new, self.eos_ids, self.tokenizer.pad_token_id)
            texts = self.tokenizer.batch_decode(
                [_cut_at_eos(row.tolist(), self.eos_ids) for row in new], skip_special_tokens=True
            )
            latency = (time.monotonic() - began) / len(batch)
            for b, ((request, idx), text, mean) in enumerate(zip(rows, texts, means)):
                route = {} if picked is None else {"expert": picked[b].field, "router_margin": picked[b].margin}
                yield Generation(request.item_id, idx, text, latency, logprob=round(mean, 6), **route)
