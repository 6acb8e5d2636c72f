"""vLLM backend (GPU, optional import): same interface as the local one.

* a dense model folder: one engine;
* a token-routed merged MoE (policy token; a stock Mixtral / Qwen-MoE checkpoint): one engine on the MoE folder,
  vLLM's own MoE kernels routing every token;
* a domain-routed MoE (domain, learned-domain, hybrid, ensemble of one) is routed on the host by the MoE's
  `DomainRouter` (training.moe.domain_router: routing.json, clustering/ or the learned classifier, never the MoE
  itself), then generated either by its per-domain dense exports (`domain_exports[e]`: one engine per domain, one
  at a time on the GPU) or, when the experts were LoRA-trained, by one engine over the shared base with domain e
  as LoRA adapter `domain_adapters[e]` (vLLM multi-LoRA, one `LoRARequest` per domain).

vLLM serves one expert per input: an ensemble of k > 1 experts is refused before any engine starts, and a
hybrid route that would mix experts is refused after routing, before any engine starts.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from inference.backend import Generation, Request, Sampling, derived_seed, group_by_domain
from inference.decoding import term_variants
from run_config.errors import ConfigError, DataError
from training.moe.checkpoint import is_moe_folder, read_routing
from training.moe.config import PRE_ROUTED

log = logging.getLogger(__name__)
# The LoRA ranks vLLM's engines accept as max_lora_rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
ADAPTER_CONFIG = "adapter_config.json"


def import_vllm() -> Any:
    """Import vllm or explain how to get it."""
    try:
        import vllm
    except ImportError as e:
        raise ConfigError(f"backend vllm needs the vllm package on a CUDA machine (pip install vllm): {e}") from None
    return vllm


def import_lora_request() -> Any:
    """vLLM's LoRARequest(lora_name, lora_int_id, lora_path) class."""
    from vllm.lora.request import LoRARequest

    return LoRARequest


def vllm_domain_router(model_path: str, device: str, dtype: str) -> Any:
    """The MoE's domain router for serving with one expert per input; what would mix experts is refused now."""
    from training.moe.domain_router import load_domain_router

    policy = read_routing(model_path)["policy"]
    if policy not in PRE_ROUTED:
        raise ConfigError(
            f"{model_path}: policy {policy} routes inside the model; vllm's domain exports and adapters serve one "
            f"expert per input ({', '.join(PRE_ROUTED)}): use backend local"
            + (
                ", or serve the token-routed MoE itself (no domain_exports, no domain_adapters)"
                if policy == "token"
                else ""
            )
        )
    router = load_domain_router(model_path, device=device, dtype=dtype)
    if router.policy == "ensemble" and router.ensemble_k > 1:
        raise ConfigError(
            f"{model_path}: policy ensemble mixes {router.ensemble_k} experts per input, which vllm's one-expert "
            "engines cannot: use backend local (or merge with ensemble_k 1)"
        )
    if router.policy != "learned-domain":
        router.cluster_assigner()  # centroids and embedder description now: a broken copy fails before any engine
    return router


def read_adapters(paths: Sequence[str]) -> tuple[str, int]:
    """(shared base, max LoRA rank vLLM must reserve) of the per-domain LoRA adapter folders."""
    bases, ranks = set(), []
    for path in paths:
        file = Path(path) / ADAPTER_CONFIG
        try:
            cfg = json.loads(file.read_text(encoding="utf-8"))
            bases.add(cfg["base_model_name_or_path"])
            ranks.append(int(cfg["r"]))
        except FileNotFoundError:
            raise DataError(
                str(file), None, None, "not a LoRA adapter folder (train --use-lora writes <expert>/adapter)"
            ) from None
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(str(file), None, "base_model_name_or_path/r", f"unreadable adapter config: {e}") from None
    if len(bases) != 1:
        names = ", ".join(sorted(map(str, bases)))
        raise ConfigError(f"domain_adapters: adapters of different base models ({names}); one engine has one base")
    rank = next((r for r in VLLM_LORA_RANKS if r >= max(ranks)), None)
    if rank is None:
        raise ConfigError(f"domain_adapters: LoRA rank {max(ranks)} exceeds vLLM's largest ({VLLM_LORA_RANKS[-1]})")
    return bases.pop(), rank


class VllmBackend:
    """Offline `vllm.LLM` generation from token ids (tokenised exactly as in training); `dtype` is the engines'
    (and the learned router's dense prefix), `device` the domain router's (the engines take the GPUs vLLM is given).

    Each (item, sample) is its own request seeded by (seed, item id, sample index), so a sample does not
    depend on the batch or on which samples a resumed run still has; vLLM's prefix cache shares the prompt.
    """

    def __init__(
        self,
        model_path: str,
        *,
        domain_exports: Sequence[str] = (),
        domain_adapters: Sequence[str] = (),
        dtype: str = "auto",
        device: str = "cpu",
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        seed: int = 42,
    ) -> None:
        from transformers import AutoTokenizer

        self.vllm = import_vllm()
        if domain_exports and domain_adapters:
            raise ConfigError("domain_exports (an engine per domain) or domain_adapters (one LoRA engine), not both")
        per_domain = list(domain_exports or domain_adapters)
        self.router = None
        if per_domain and not is_moe_folder(model_path):
            raise ConfigError(f"{model_path}: domain_exports / domain_adapters need a routed MoE folder (routing.json)")
        if is_moe_folder(model_path):
            policy = read_routing(model_path)["policy"]
            if not per_domain and policy in PRE_ROUTED:
                raise ConfigError(
                    f"{model_path} is a domain-routed MoE (policy {policy}): vllm serves it through domain_exports "
                    "(the per-domain dense exports of `merge`) or domain_adapters (the experts' LoRA adapters)"
                )
            if not per_domain and policy != "token":
                raise ConfigError(
                    f"{model_path}: policy {policy} is not the per-token top-k routing of vLLM's stock MoE "
                    "kernels: use backend local (vllm serves a routed MoE as it is only with policy token)"
                )
            if per_domain:
                self.router = vllm_domain_router(model_path, device, dtype)
                if len(per_domain) != self.router.num_experts:
                    key = "domain_exports" if domain_exports else "domain_adapters"
                    raise ConfigError(f"{key}: {len(per_domain)} given for {self.router.num_experts} experts")
        self.engine_args: dict[str, Any] = {
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
            "seed": seed,
        }
        self.adapters = list(domain_adapters)
        if self.adapters:
            base, rank = read_adapters(self.adapters)
            self.paths = [base]
            self.engine_args.update(enable_lora=True, max_loras=len(self.adapters), max_lora_rank=rank)
            self.lora_request = import_lora_request()
        else:
            self.paths = list(domain_exports) or [model_path]
        self.name = model_path
        self.tokenizer = AutoTokenizer.from_pretrained(model_path if self.adapters else self.paths[0])
        self.bos_token = self.tokenizer.bos_token or ""

    def max_prompt_tokens(self, max_new_tokens: int) -> int | None:
        from transformers import AutoConfig

        limit = getattr(AutoConfig.from_pretrained(self.paths[0]), "max_position_embeddings", None)
        return limit - max_new_tokens if limit else None

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]

    def _params(self, sampling: Sampling, seed: int, term: str) -> Any:
        """One request's SamplingParams: the stop strings kept in the text (infer cuts them, as for every backend)
        and, with block_term, the term's variants as bad words (vLLM bans their last token in context)."""
        knobs = (
            {"temperature": 0.0}
            if sampling.greedy
            else {
                "temperature": sampling.temperature,
                "top_k": sampling.top_k or -1,
                "top_p": sampling.top_p if sampling.top_p is not None else 1.0,
            }
        )
        decoding: dict[str, Any] = {}
        if sampling.stop:
            decoding |= {"stop": list(sampling.stop), "include_stop_str_in_output": True}
        if sampling.block_term:
            decoding["bad_words"] = term_variants(term)
        return self.vllm.SamplingParams(
            n=1,
            max_tokens=sampling.max_new_tokens,
            seed=seed,
            logprobs=0,
            repetition_penalty=sampling.repetition_penalty,
            **knobs,
            **decoding,
        )

    def beam_params(self, sampling: Sampling) -> Any:
        """vLLM's BeamSearchParams (no stop strings there: the full beam comes back and infer cuts it)."""
        return self.vllm.sampling_params.BeamSearchParams(
            beam_width=sampling.num_beams,
            max_tokens=sampling.max_new_tokens,
            length_penalty=sampling.length_penalty,
            temperature=0.0,
        )

    def _beam_search(
        self, engine: Any, requests: Sequence[Request], ids: list[list[int]], sampling: Sampling, extra: dict
    ):
        """(request, text, mean log-prob) per request: the best beam, its new tokens decoded up to EOS."""
        began = time.monotonic()
        outputs = engine.beam_search([{"prompt_token_ids": p} for p in ids], self.beam_params(sampling), **extra)
        latency = (time.monotonic() - began) / max(len(requests), 1)
        eos = self.tokenizer.eos_token_id
        for request, prompt, output in zip(requests, ids, outputs, strict=True):
            best = output.sequences[0]
            new = list(best.tokens[len(prompt) :])
            if eos in new:
                new = new[: new.index(eos) + 1]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            yield request, text, latency, best.cum_logprob / max(len(new), 1)

    def _on_engine(
        self, engine: Any, requests: Sequence[Request], sampling: Sampling, lora: Any = None
    ) -> Iterator[Generation]:
        """Generate `requests` on a started engine (with LoRA adapter `lora` when given)."""
        ids = self.tokenizer([r.prompt for r in requests], add_special_tokens=False)["input_ids"]
        extra = {} if lora is None else {"lora_request": lora}
        if sampling.num_beams > 1:  # deterministic: every pending sample index is the best beam
            for request, text, latency, mean in self._beam_search(engine, requests, ids, sampling, extra):
                for idx in request.sample_indices:
                    yield Generation(request.item_id, idx, text, latency, logprob=round(mean, 6))
            return
        jobs = [(r, idx, p) for r, p in zip(requests, ids) for idx in r.sample_indices]
        params = [self._params(sampling, derived_seed(sampling.seed, r.item_id, idx), r.term) for r, idx, _ in jobs]
        began = time.monotonic()
        outputs = engine.generate([{"prompt_token_ids": p} for _, _, p in jobs], params, use_tqdm=False, **extra)
        latency = (time.monotonic() - began) / max(len(requests), 1)
        for (request, idx, _), output in zip(jobs, outputs, strict=True):
            sample = output.outputs[0]
            mean = sample.cumulative_logprob / max(len(sample.token_ids), 1)
            yield Generation(request.item_id, idx, sample.text, latency, logprob=round(mean, 6))

    def _run_engine(self, path: str, requests: Sequence[Request], sampling: Sampling) -> Iterator[Generation]:
        engine = self.vllm.LLM(model=path, **self.engine_args)
        try:
            yield from self._on_engine(engine, requests, sampling)
        finally:
            del engine
            gc.collect()

    def _routed_groups(self, requests: Sequence[Request]) -> tuple[dict[str, Any], dict[int, list[Request]]]:
        routes = dict(zip((r.item_id for r in requests), self.router.routes([(r.term, r.context) for r in requests])))
        mixed = sum(len(route.experts) > 1 for route in routes.values())
        if mixed:
            raise ConfigError(
                f"policy {self.router.policy} mixes experts for {mixed} of {len(routes)} inputs (margin below "
                f"hybrid_tau {self.router.hybrid_tau}), which vllm's one-expert engines cannot: use backend local"
            )
        return routes, group_by_domain(routes, requests)

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[Generation]:
        if self.router is None:
            yield from self._run_engine(self.paths[0], requests, sampling)
            return
        routes, groups = self._routed_groups(requests)
        if self.adapters:
            yield from self._generate_adapters(routes, groups, sampling)
            return
        for domain, group in groups.items():
            log.info("domain %d: %d inputs on %s", domain, len(group), self.paths[domain])
            for gen in self._run_engine(self.paths[domain], group, sampling):
                route = routes[gen.item_id]
                yield dataclasses.replace(gen, expert=route.field, router_margin=route.margin)

    def _generate_adapters(
        self, routes: dict[str, Any], groups: dict[int, list[Request]], sampling: Sampling
    ) -> Iterator[Generation]:
        """Every domain's group on the one LoRA engine, with that domain's adapter (id domain + 1; 0 is no LoRA)."""
        engine = self.vllm.LLM(model=self.paths[0], **self.engine_args)
        try:
            for domain, group in groups.items():
                lora = self.lora_request(f"domain_{domain}", domain + 1, self.adapters[domain])
                log.info("domain %d: %d inputs with adapter %s", domain, len(group), self.adapters[domain])
                for gen in self._on_engine(engine, group, sampling, lora):
                    route = routes[gen.item_id]
                    yield dataclasses.replace(gen, expert=route.field, router_margin=route.margin)
        finally:
            del engine
            gc.collect()
