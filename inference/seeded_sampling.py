"""Seeded sampling for HF `generate`: every row draws from its own generator, seeded per (item, sample).

HF samples a whole batch from one global generator, so a sample would depend on the batch size, the
batch order and which other rows a resumed run still has. Here HF's own warpers (temperature, top-k,
top-p, in HF's order) shape each row's distribution, and `RowSampler` picks each row's token with a
uniform from that row's generator (on the CPU, so the draws are the same on every device).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from inference.backend import Sampling


class RowSampler(LogitsProcessor):
    """Pick row b's next token by inverse CDF with the next uniform of generator b.

    Returns scores that are -inf except at the picked token, so `generate` run greedily takes it.
    Every row draws once per step (finished rows too), so a row's t-th token uses its t-th uniform.
    """

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows for {len(self.generators)} seeded generators")
        # u in (0, 1]: the first token whose cumulative probability reaches u * total has probability > 0
        u = 1.0 - torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
        cdf = torch.softmax(scores.double(), dim=-1).cumsum(dim=-1)
        target = u.to(scores.device)[:, None] * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, target)
        return torch.full_like(scores, float("-inf")).scatter_(1, tokens, 0.0)


def seeded_processors(sampling: Sampling, seeds: Sequence[int]) -> LogitsProcessorList:
    """HF's sampling warpers for `sampling`, then one seeded draw per row (for `generate(do_sample=False)`)."""
    warpers: list[LogitsProcessor] = []
    if sampling.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p is not None and sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    return LogitsProcessorList([*warpers, RowSampler(seeds)])
