"""A stand-in for the `vllm` module (GPU-only, not installable here): it records what the backend asks for."""

from __future__ import annotations

from types import SimpleNamespace


class FakeVllm:
    """The names the backend uses: `LLM` records each engine (model, engine args) and each generate / beam_search
    call (prompts, params, keyword arguments such as lora_request); `generate` answers from the prompt length and
    seed, `beam_search` with `beam_tokens` after the prompt (vLLM's BeamSearchSequence.tokens hold the prompt too),
    best beam first; `SamplingParams`, `sampling_params.BeamSearchParams` and `LoRARequest` keep their arguments."""

    def __init__(self) -> None:
        self.engines: list[tuple[str, dict]] = []
        self.calls: list[tuple[list[dict], list[SimpleNamespace]]] = []
        self.generate_kwargs: list[dict] = []
        self.beam_tokens: list[int] = []
        fake = self

        class LLM:
            def __init__(self, model: str, **engine_args: object) -> None:
                self.model = model
                fake.engines.append((model, engine_args))

            def generate(self, prompts, params, use_tqdm, **kwargs):
                fake.calls.append((prompts, params))
                fake.generate_kwargs.append({"model": self.model, **kwargs})
                answer = lambda p, sp: SimpleNamespace(
                    text=f"len {len(p['prompt_token_ids'])} seed {sp.seed}", token_ids=[1, 2], cumulative_logprob=-1.0
                )
                return [SimpleNamespace(outputs=[answer(p, sp)] * sp.n) for p, sp in zip(prompts, params)]

            def beam_search(self, prompts, params, **kwargs):
                fake.calls.append((prompts, params))
                fake.generate_kwargs.append({"model": self.model, **kwargs})
                beam = lambda p, tail, lp: SimpleNamespace(
                    tokens=p["prompt_token_ids"] + tail, cum_logprob=lp, text="?"
                )
                return [
                    SimpleNamespace(sequences=[beam(p, fake.beam_tokens, -3.0), beam(p, fake.beam_tokens[:1], -9.0)])
                    for p in prompts
                ]

        self.LLM, self.SamplingParams = LLM, lambda **kwargs: SimpleNamespace(**kwargs)
        self.sampling_params = SimpleNamespace(BeamSearchParams=lambda **kwargs: SimpleNamespace(**kwargs))

    @staticmethod
    def LoRARequest(lora_name: str, lora_int_id: int, lora_path: str) -> SimpleNamespace:  # noqa: N802 (vLLM's name)
        return SimpleNamespace(lora_name=lora_name, lora_int_id=lora_int_id, lora_path=lora_path)
