"""Typed config of the inference stage."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from inference.backend import Sampling
from run_config.devices import DEVICE_HELP, Device, Dtype
from run_config.loader import SECRET_ERROR, StageConfig

Task = Literal["word_interpretation", "context_synthesis", "definition_synthesis", "wsd"]
Backend = Literal["local", "vllm", "openai", "anthropic", "gemini"]
API_BACKENDS = ("openai", "anthropic", "gemini")
# Original task / retrieval-policy spellings (inference/args.py) -> ours.
TASK_ALIASES = {
    "word-interpretation": "word_interpretation",
    "synthesize-context": "context_synthesis",
    "synthesize-definition": "definition_synthesis",
    "word-sense-disambiguation": "wsd",
}
ICL_ALIASES = {"topk": "retrieval"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# OpenAI and Anthropic keys (sk-..., sk-ant-...) fail the name pattern on their "-"; Google's need a look.
_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_-]{20}")
# Keys that do not change what is generated: a resumed run may differ in them.
RESUME_NEUTRAL = (
    "output_dir",
    "batch_size",
    "concurrency",
    "requests_per_second",
    "max_retries",
    "retry_base_delay_s",
    "retry_max_delay_s",
    "timeout_s",
    "device",
    "force",
    "selection",
    "mbr_utility",
    "mbr_bertscore_model",
    "mbr_bertscore_num_layers",
    "reward_model",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "on_long_prompt",
    "base_url",
    "api_key_env",
    "max_prompt_tokens",
    "icl_cache_dir",
    "api_cache",
    "api_cache_dir",
    "dry_run",
    "max_requests",
    "api_batch",
    "api_batch_size",
    "api_batch_poll_s",
    "api_batch_retry",
    "routing",
    "oracle_metric",
)


def _env_name_not_key(value: str | None) -> str | None:
    if value is not None and (not _ENV_NAME.fullmatch(value) or _GOOGLE_KEY.match(value)):
        raise PydanticCustomError(
            SECRET_ERROR,
            "takes the name of the environment variable that holds the "
            "API key (letters, digits, _), not the key itself; the value is not shown "
            "or saved: put the key in e.g. OPENAI_API_KEY and pass that name",
        )
    return value


# The name of the environment variable holding an API key; a key given in its place is refused unseen.
KeyEnvName = Annotated[str | None, AfterValidator(_env_name_not_key)]


class DecodingConfig(StageConfig):
    """Sampling settings shared by inference and the reward model's negative mining (paper defaults)."""

    temperature: float = Field(0.6, gt=0, description="sampling temperature (paper: 0.6)")
    top_k: int | None = Field(50, ge=1, description="top-k (paper: 50; not sent to OpenAI)")
    top_p: float | None = Field(0.9, gt=0, le=1, description="nucleus top-p (paper: 0.9; null: not sent)")
    repetition_penalty: float = Field(1.05, gt=0, description="repetition penalty (paper: 1.05; local/vLLM)")
    max_new_tokens: int = Field(64, ge=1, description="generated tokens per answer (paper: 64)")

    def sampling(self, seed: int, greedy: bool = False) -> Sampling:
        return Sampling(
            greedy=greedy,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            max_new_tokens=self.max_new_tokens,
            seed=seed,
        )


class InferConfig(DecodingConfig):
    """Generate definitions for a preprocessed JSONL test file with a local model, vLLM or an API."""

    legacy_keys: ClassVar[dict[str, str | None]] = {
        "input_path": "input",
        "max_query": "max_items",
        "max_tokens": "max_new_tokens",
        "shot_num": "icl_k",
        "retrieval_policy": "icl_mode",
        "num_return_sequences": "n_samples",
        "example_path": "icl_examples",
        "run_local_model": None,
        "with_vllm": None,
        "evaluate": None,
        "verbal": None,
        "debug": None,
        "prompt_path": None,
        "output_format": None,
        "max_length": None,
    }

    task: Task = Field(
        "word_interpretation",
        description="word_interpretation (term+context -> definition), context_synthesis, definition_synthesis or wsd",
    )
    INPUT_FIELDS: ClassVar[tuple[str, ...]] = ("input", "model", "icl_examples")

    input: str = Field(description="preprocessed JSONL (dataset/records.py) to generate for")
    output_dir: str = Field(description="writes samples.jsonl (resumable), predictions.jsonl, summary.json")
    backend: Backend = Field("local", description="local (HF, incl. a routed MoE), vllm, openai, anthropic, gemini")
    model: str = Field(description="HF folder/hub id (local, vllm) or the API model name")
    seed: int = Field(42, ge=0, description="seed of sampling, ICL demos, WSD options and --max-items")
    max_items: int | None = Field(None, ge=1, description="a seeded random subset of this many inputs")
    greedy: bool = Field(False, description="greedy decoding instead of sampling")
    n_samples: int = Field(1, ge=1, description="samples per input (Best-of-N)")
    selection: Literal["first", "likelihood", "oracle", "orm", "mbr"] = Field(
        "first",
        description="pick one of the N samples: first, likelihood (mean token log-prob), oracle "
        "(max BLEU vs the references), orm (reward model), mbr (max mean mbr_utility vs the other samples)",
    )
    mbr_utility: Literal["bleu", "bertscore"] = Field(
        "bleu", description="mbr: utility between two samples, Moses sentence BLEU or BERTScore F1"
    )
    mbr_bertscore_model: str | None = Field(
        None, description="mbr bertscore: BERTScore model name or folder (default: the offline all-MiniLM-L6-v2)"
    )
    mbr_bertscore_num_layers: int | None = Field(
        None, ge=1, description="mbr bertscore: the model's layer (default: 6 for MiniLM; required for a folder)"
    )
    num_beams: int = Field(1, ge=1, description="beam search with this many beams (1: greedy or sampling)")
    length_penalty: float = Field(
        1.0, description="beam search: a beam scores sum log-prob / length ** length_penalty (> 0 favours long)"
    )
    stop: list[str] = Field(
        default_factory=list,
        description="stop sequences (e.g. . or ;): the prediction is cut before the first; `raw` keeps the text",
    )
    block_term: bool = Field(
        False, description="the term may not appear in its definition (Giulianelli et al.; local, vllm)"
    )
    reward_model: str | None = Field(None, description="reward model folder (train-reward output) for orm")
    routing: Literal["model", "oracle"] = Field(
        "model",
        description="routed MoE: model (the checkpoint's policy) or oracle (also run every expert on every input, "
        "N x cost, and report oracle routing, router regret and the expert x cluster matrix)",
    )
    oracle_metric: Literal["bleu", "rougeL"] = Field("bleu", description="routing oracle: metric of the best expert")
    icl_mode: Literal["none", "random", "retrieval"] = Field(
        "none", description="few-shot demos: none, random-k, or retrieval-k (MiniLM neighbours)"
    )
    icl_k: int = Field(0, ge=0, le=128, description="demos per input (paper: 32)")
    icl_examples: str | None = Field(None, description="JSONL of training records the demos come from")
    embedder: str | None = Field(None, description="sentence-transformers model for retrieval (default MiniLM)")
    icl_cache_dir: str | None = Field(
        None,
        description="retrieval: cache of the pool's embeddings, keyed by "
        "embedder and pool texts (default: <asset cache>/icl-embeddings)",
    )
    batch_size: int = Field(16, ge=1, description="prompts per generate call (local)")
    max_prompt_tokens: int | None = Field(
        None,
        ge=1,
        description="longest prompt allowed (default: model limit - max_new_tokens); prompts are never truncated",
    )
    on_long_prompt: Literal["error", "skip"] = Field(
        "error", description="a longer prompt: stop, or write an error row and count it"
    )
    device: Device = Field(
        "auto", description=DEVICE_HELP + "; vllm: the domain router's (auto: cpu), the engines take vLLM's GPUs"
    )
    dtype: Dtype = Field(
        "auto", description="weights dtype of the generator, the MoE and the reward model (auto: bfloat16 on a GPU)"
    )
    domain_exports: list[str] = Field(
        default_factory=list, description="vllm + routed MoE: per-domain dense export folders, index = domain"
    )
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vllm GPU memory fraction")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm tensor parallel size")
    base_url: str | None = Field(None, description="API base URL (default: the vendor's)")
    api_key_env: KeyEnvName = Field(
        None, description="env var holding the API key (default: OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY)"
    )
    system_prompt: bool = Field(True, description="APIs: send prompts/api_system.txt as system instruction")
    send_sampling: bool = Field(
        True,
        description="APIs: send temperature/top-p/top-k (off for models that reject them, e.g. recent Claude models)",
    )
    concurrency: int = Field(8, ge=1, description="API requests in flight")
    requests_per_second: float | None = Field(None, gt=0, description="API rate limit (null: none)")
    max_retries: int = Field(
        6, ge=0, description="API retries on 429, 5xx, timeouts, connection errors, broken replies"
    )
    retry_base_delay_s: float = Field(1.0, ge=0, description="first backoff delay; doubles per retry")
    retry_max_delay_s: float = Field(60.0, ge=0, description="backoff cap")
    timeout_s: float = Field(
        60.0, gt=0, description="API: seconds for a whole request attempt, first to last byte (then retried)"
    )
    api_cache: bool = Field(
        True,
        description="APIs: answer from the response cache and store new answers (--no-api-cache: ask again)",
    )
    api_cache_dir: str | None = Field(
        None,
        description="APIs: the response cache, shared by every output folder (default: <asset cache>/api-responses)",
    )
    max_requests: int | None = Field(
        None,
        ge=1,
        description="APIs: send at most this many requests (cache hits are free, retries not counted); "
        "the rest become NotSent error rows that a rerun sends",
    )
    api_batch: bool = Field(
        False,
        description="APIs: send through the vendor's batch API (OpenAI Batch, Anthropic Message Batches, Gemini "
        "batch mode; half price, results within 24 h); resumable from output_dir/api_batches.jsonl",
    )
    api_batch_size: int = Field(
        10_000,
        ge=1,
        le=50_000,
        description="api_batch: requests per submitted batch, at most (OpenAI's cap: 50000; batches are "
        "also kept under the vendors' size caps: 200 MB OpenAI, 256 MB Anthropic, 20 MB Gemini)",
    )
    api_batch_poll_s: float = Field(30.0, gt=0, description="api_batch: seconds between polls of open batches")
    api_batch_retry: bool = Field(
        False, description="api_batch: send the items a batch failed or expired again as ordinary requests"
    )
    dry_run: bool = Field(
        False,
        description="APIs: print the requests, cache hits, prompt tokens and max completion tokens a run "
        "would send, then exit without a network call",
    )
    parse_answer: Literal["auto", "always", "never"] = Field(
        "auto",
        description="pull the definition out of chatty answers (prompts/parse.py; the raw text stays in "
        "`raw`): auto = for API backends only; never scores the text as generated (whitespace collapsed)",
    )
    force: bool = Field(False, description="discard existing outputs and start over")

    def sampling(self, seed: int, greedy: bool = False) -> Sampling:
        return replace(
            super().sampling(seed, greedy),
            num_beams=self.num_beams,
            length_penalty=self.length_penalty,
            stop=tuple(self.stop),
            block_term=self.block_term,
        )

    @property
    def parses_answers(self) -> bool:
        """Whether answers go through the chatty-answer parser (`parse_answer`)."""
        return self.parse_answer == "always" or (self.parse_answer == "auto" and self.backend in API_BACKENDS)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        """--stop ".;," style comma lists and repeated flags both become one list."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = [part for v in value for part in (v.split(",") if "," in v and v != "," else [v])]
            if any(not v for v in value):
                raise ValueError("an empty stop sequence would cut every answer to nothing")
        return value

    @field_validator("task", mode="before")
    @classmethod
    def _task_alias(cls, value: Any) -> Any:
        return TASK_ALIASES.get(value, value)

    @field_validator("icl_mode", mode="before")
    @classmethod
    def _icl_alias(cls, value: Any) -> Any:
        return ICL_ALIASES.get(value, value)

    @model_validator(mode="after")
    def _consistent(self) -> InferConfig:
        if self.greedy and self.n_samples > 1:
            raise ValueError("greedy decoding gives N identical samples: set greedy false for n_samples > 1")
        if self.backend in API_BACKENDS:
            if self.selection == "likelihood":
                raise ValueError(
                    f"selection likelihood needs token log-probs, which backend {self.backend} does "
                    "not return: use oracle, orm or first (or a local/vllm backend)"
                )
            if self.greedy and not self.send_sampling:
                raise ValueError(
                    f"greedy with send_sampling false: backend {self.backend} would sample at the "
                    "vendor's default temperature (send_sampling true sends temperature 0)"
                )
            if self.max_prompt_tokens is not None:
                raise ValueError(
                    f"max_prompt_tokens: backend {self.backend} has no local tokenizer to count "
                    "prompt tokens with (the vendor refuses over-long prompts itself)"
                )
        else:
            for key in ("dry_run", "max_requests", "api_batch", "api_batch_retry"):
                if getattr(self, key):
                    raise ValueError(f"{key} is for the API backends {', '.join(API_BACKENDS)}, not {self.backend}")
        if self.num_beams > 1:
            if self.n_samples > 1:
                raise ValueError(
                    f"num_beams {self.num_beams}: beam search is deterministic and gives N identical samples: "
                    "use n_samples 1 (Best-of-N samples; beams search)"
                )
            if not self.greedy:
                raise ValueError(
                    f"num_beams {self.num_beams} is deterministic beam search: set greedy true (the sampling "
                    "knobs temperature/top_k/top_p would be ignored)"
                )
            if self.backend in API_BACKENDS:
                raise ValueError(f"num_beams: backend {self.backend} has no beam search (local, vllm)")
            if self.backend == "vllm" and (self.block_term or self.repetition_penalty != 1.0):
                raise ValueError(
                    "num_beams on vllm: vLLM's beam search takes neither block_term nor repetition_penalty "
                    "(set repetition_penalty 1.0, or use the local backend)"
                )
        elif self.length_penalty != 1.0:
            raise ValueError("length_penalty applies to beam search only: set num_beams > 1")
        if self.block_term and self.backend in API_BACKENDS:
            raise ValueError(f"block_term needs the model's tokenizer and logits: backend {self.backend} has neither")
        if self.block_term and self.task != "word_interpretation":
            raise ValueError("block_term is defined for word_interpretation only (the term's own definition)")
        if self.selection == "orm" and not self.reward_model:
            raise ValueError("selection orm needs reward_model (a train-reward output folder)")
        if self.selection != "first" and self.task not in ("word_interpretation",):
            raise ValueError(f"selection {self.selection} is defined for word_interpretation only")
        if self.icl_mode == "none" and self.icl_k > 0:
            raise ValueError(f"icl_k {self.icl_k} needs icl_mode random or retrieval (with none no demo is shown)")
        if self.icl_mode != "none":
            if self.task != "word_interpretation":
                raise ValueError("few-shot demos (icl_mode) are defined for word_interpretation only")
            if self.icl_k < 1 or not self.icl_examples:
                raise ValueError(f"icl_mode {self.icl_mode} needs icl_k >= 1 and icl_examples")
        if self.routing == "oracle" and (
            self.backend != "local" or self.task != "word_interpretation" or self.n_samples != 1
        ):
            raise ValueError("routing oracle needs backend local, task word_interpretation and n_samples 1")
        if self.domain_exports and self.backend != "vllm":
            raise ValueError("domain_exports is for backend vllm (the local backend routes the MoE itself)")
        return self
