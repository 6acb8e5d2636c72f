"""The hinge margin γ of L_sem, calibrated from the teacher's own distances to antonym senses.

γ is in hidden-state MSE units, whose scale depends on the model (SmolLM2's last hidden states sit
~2.6 MSE from their nearest antonym senses, so a fixed γ = 1.0 never triggers). Calibrated, γ is the
`quantile` of MSE(m_t, a) between the teacher state m_t and its κ nearest antonym senses a, over the
training positions whose word has antonyms: the student is pushed away from an antonym while it sits
closer to it than the teacher usually does.
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from training.dskd.examples import collate
from training.dskd.loss import SenseBank, nearest_mse


@torch.no_grad()
def antonym_distances(
    teacher: Any,
    examples: list[dict],
    bank: SenseBank,
    kappa: int,
    batch_size: int,
    pad_token_id: int,
    max_examples: int,
) -> tuple[torch.Tensor, int]:
    """Return (MSE of each teacher state to each of its κ nearest antonym senses, positions measured)
    over the first `max_examples` examples that have an L_sem position whose word has antonyms."""
    has_antonyms = (bank.negatives.offsets[1:] - bank.negatives.offsets[:-1]) > 0
    chosen = [e for e in examples if any(has_antonyms[w] for _, w in e.get("sem", []))][:max_examples]
    device = next(teacher.parameters()).device
    distances, positions = [], 0
    for i in tqdm(range(0, len(chosen), batch_size), desc="gamma calibration", unit=" batches", disable=None):
        batch = collate(chosen[i : i + batch_size], pad_token_id)
        b, t, w = batch["sem"].unbind(1)
        keep = has_antonyms[w]
        hidden = teacher.base_model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).last_hidden_state[b[keep].to(device), t[keep].to(device)]
        rows, mask = bank.negatives.padded(w[keep])
        mse, real = nearest_mse(hidden, hidden, bank.vectors, rows, mask, kappa)
        distances.append(mse[real].float().cpu())
        positions += int(keep.sum())
    return (torch.cat(distances) if distances else torch.zeros(0)), positions


def margin_report(distances: torch.Tensor, positions: int, gamma: float | None, quantile: float) -> dict[str, Any]:
    """γ (the configured one, else the `quantile` of `distances`) with the distances' summary and the share
    of teacher-antonym pairs inside the margin (0 = the push term would never trigger at the teacher)."""
    if gamma is None:
        gamma = float(torch.quantile(distances, quantile)) if len(distances) else 0.0
        source = f"calibrated: quantile {quantile:g} of the teacher's MSE to its kappa nearest antonym senses"
    else:
        source = "config"
    report: dict[str, Any] = {"gamma": gamma, "source": source, "positions": positions, "pairs": len(distances)}
    if len(distances):
        q10, q50, q90 = torch.quantile(distances, torch.tensor([0.1, 0.5, 0.9])).tolist()
        report["teacher_antonym_mse"] = {"q10": q10, "q50": q50, "q90": q90, "mean": float(distances.mean())}
        report["teacher_pairs_inside_margin"] = float((distances < gamma).float().mean())
    return report
