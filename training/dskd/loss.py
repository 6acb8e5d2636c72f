"""DSKD loss terms: cross-entropy, KL(teacher || student) and the hinge-MSE sense loss L_sem (reference Eq. 3-5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.dskd.relations import Relations
from training.dskd.senses import SenseDictionary


def ce_loss(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the (already selected) target positions: logits (n, V), targets (n,)."""
    return F.cross_entropy(student_logits.float(), targets)


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) per position at `temperature`, averaged over positions, times T^2."""
    t_logp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean() * temperature**2


@dataclass(frozen=True)
class CandidateRows:
    """Per word, the sense rows of one candidate set, as CSR (`rows[offsets[w]:offsets[w+1]]`)."""

    rows: torch.Tensor
    offsets: torch.Tensor

    def padded(self, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (rows (n, C) with 0 padding, mask (n, C)) of the candidate sets of `words`."""
        starts, lengths = self.offsets[words], self.offsets[words + 1] - self.offsets[words]
        width = max(int(lengths.max()) if len(words) else 0, 1)
        steps = torch.arange(width)
        mask = steps[None, :] < lengths[:, None]
        if len(self.rows) == 0:
            return torch.zeros(mask.shape, dtype=torch.long), mask
        rows = self.rows[(starts[:, None] + steps[None, :]).masked_fill(~mask, 0)].masked_fill(~mask, 0)
        return rows, mask


def _csr(lists: list[list[int]]) -> CandidateRows:
    sizes = torch.tensor([0] + [len(x) for x in lists], dtype=torch.long)
    flat = torch.tensor([r for x in lists for r in x], dtype=torch.long)
    return CandidateRows(flat, sizes.cumsum(0))


@dataclass(frozen=True)
class SenseBank:
    """Sense vectors with, per dictionary word, its positive rows (own senses + synonyms') and negative
    rows (antonyms' senses)."""

    vectors: torch.Tensor
    positives: CandidateRows
    negatives: CandidateRows

    @classmethod
    def build(cls, senses: SenseDictionary, relations: Relations) -> SenseBank:
        pos, neg = [], []
        for word in senses.words:
            pos.append([r for w in [word, *relations.synonyms.get(word, [])] if w in senses for r in senses.rows(w)])
            neg.append([r for w in relations.antonyms.get(word, []) if w in senses for r in senses.rows(w)])
        return cls(senses.vectors, _csr(pos), _csr(neg))

    def to(self, device: torch.device) -> SenseBank:
        return SenseBank(self.vectors.to(device), self.positives, self.negatives)


def nearest_mse(
    student: torch.Tensor,
    teacher: torch.Tensor,
    vectors: torch.Tensor,
    rows: torch.Tensor,
    mask: torch.Tensor,
    kappa: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE of each student state to the `kappa` candidates nearest (L2) to the teacher state.

    Returns (mse (n, k), mask (n, k)) where the mask marks real candidates.
    """
    cand = vectors[rows.to(vectors.device)]
    mask = mask.to(vectors.device)
    with torch.no_grad():
        dist = (teacher.float()[:, None, :] - cand).pow(2).sum(-1).masked_fill(~mask, float("inf"))
        idx = dist.topk(min(kappa, cand.shape[1]), dim=1, largest=False).indices
    chosen = cand.gather(1, idx[..., None].expand(-1, -1, cand.shape[-1]))
    return (student.float()[:, None, :] - chosen).pow(2).mean(-1), mask.gather(1, idx)


def semantic_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    words: torch.Tensor,
    bank: SenseBank,
    kappa: int,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (pull, push, active) of L_sem averaged over the n target positions (reference Eq. 4).

    pull: mean MSE of the student state n_t to the kappa positive senses nearest the teacher state m_t;
    push: mean hinge [gamma - MSE(n_t, a)]_+ over the kappa nearest antonym senses (0 without antonyms);
    active: the share (no gradient) of those antonym pairs inside the margin, where the push acts.
    `student_hidden` must already be in the teacher's width (projected when the widths differ).
    """
    if len(words) == 0:
        zero = student_hidden.sum() * 0.0
        return zero, zero, zero.detach()
    rows, mask = bank.positives.padded(words.cpu())
    mse, chosen = nearest_mse(student_hidden, teacher_hidden, bank.vectors, rows, mask, kappa)
    pull = ((mse * chosen).sum(1) / chosen.sum(1).clamp(min=1)).mean()
    rows, mask = bank.negatives.padded(words.cpu())
    mse, chosen = nearest_mse(student_hidden, teacher_hidden, bank.vectors, rows, mask, kappa)
    hinge = (gamma - mse).clamp(min=0.0) * chosen
    push = (hinge.sum(1) / chosen.sum(1).clamp(min=1)).mean()
    active = ((hinge > 0).sum() / chosen.sum().clamp(min=1)).detach().float()
    return pull, push, active
