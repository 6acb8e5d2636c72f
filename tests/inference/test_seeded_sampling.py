"""Per-row seeded sampling: the right distribution, HF's warpers honoured, each row independent of the others."""

from __future__ import annotations

import pytest
import torch

from inference.backend import Sampling
from inference.seeded_sampling import RowSampler, seeded_processors


def _picked(scores: torch.Tensor) -> torch.Tensor:
    finite = torch.isfinite(scores)
    assert (finite.sum(dim=1) == 1).all()  # exactly one token left per row: generate's greedy step takes it
    return finite.int().argmax(dim=1)


def test_draws_follow_the_distribution_and_never_pick_a_masked_token():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    rows = 8000
    tokens = _picked(RowSampler(range(rows))(None, probs.log().expand(rows, -1).clone()))
    freq = torch.bincount(tokens, minlength=5).double() / rows
    assert freq[4] == 0
    assert torch.allclose(freq[:4], probs[:4].double(), atol=0.02)


def test_a_rows_draws_do_not_depend_on_the_other_rows():
    gen = torch.Generator().manual_seed(0)
    steps = [torch.randn(3, 40, generator=gen) for _ in range(6)]
    batch, alone = RowSampler([11, 12, 13]), RowSampler([12])
    together = [_picked(batch(None, s.clone()))[1].item() for s in steps]
    single = [_picked(alone(None, s[1:2].clone()))[0].item() for s in steps]
    assert together == single and len(set(together)) > 1
    again = RowSampler([13, 12])
    assert [_picked(again(None, s[[2, 1]].clone()))[1].item() for s in steps] == together  # order is irrelevant


def test_hf_warpers_shape_the_distribution_first():
    scores = torch.tensor([[4.0, 3.0, 2.5, 2.0, 1.0, 0.0]]).expand(500, -1).clone()
    top2 = seeded_processors(Sampling(temperature=5.0, top_k=2, top_p=None), range(500))(None, scores.clone())
    assert set(_picked(top2).tolist()) == {0, 1}
    # top-p 0.7 at temperature 1 keeps tokens 0 and 1 (p = 0.56 + 0.21 covers 0.7), never the tail
    nucleus = seeded_processors(Sampling(temperature=1.0, top_k=None, top_p=0.7), range(500))(None, scores.clone())
    assert set(_picked(nucleus).tolist()) == {0, 1}
    names = [type(p).__name__ for p in seeded_processors(Sampling(), [0])]
    assert names == ["TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "RowSampler"]


def test_row_count_must_match_the_seeds():
    with pytest.raises(ValueError, match="3 rows for 2 seeded generators"):
        RowSampler([1, 2])(None, torch.zeros(3, 5))
