"""Local or hub transformer encoders for MoverScore token embeddings and MAUVE text features.

A text can have no tokens at all: the empty string under a tokenizer that adds no special tokens
(GPT-2's, SmolLM2's). Such texts never reach the model; `token_states` gives them no tokens and
`features` leaves them out and says which texts it kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Literal

import numpy as np


class Encoder:
    """A tokenizer + model pair giving hidden states of one layer, batched, without gradients."""

    def __init__(self, name: str, device: str = "cpu", dtype: str = "float32"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from run_config.devices import resolve_device, resolve_dtype

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(name)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"  # positions count from each text's first token
        device = resolve_device(device)
        self.model = AutoModel.from_pretrained(name, dtype=resolve_dtype(dtype, device)).to(device).eval()
        self.device = device
        self.dim = int(self.model.config.hidden_size)

    def _batches(
        self, texts: Sequence[str], batch_size: int, layer: int, max_length: int
    ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray, np.ndarray]]:
        """Per batch, its texts that have tokens: (their indices in `texts`, ids, attention mask, states)."""
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            has_tokens = batch["attention_mask"].sum(dim=1) > 0
            if not bool(has_tokens.any()):
                continue
            batch = {k: v[has_tokens].to(self.device) for k, v in batch.items()}
            with self.torch.no_grad():
                states = self.model(**batch, output_hidden_states=True).hidden_states[layer]
            index = (start + self.torch.nonzero(has_tokens).flatten()).tolist()
            yield (
                index,
                batch["input_ids"].cpu().numpy(),
                batch["attention_mask"].cpu().numpy().astype(bool),
                states.float().cpu().numpy(),
            )

    def token_states(
        self, texts: Sequence[str], layer: int = -1, batch_size: int = 64, max_length: int = 256
    ) -> list[tuple[list[str], np.ndarray]]:
        """(tokens incl. special ones, (n_tokens, dim) states) of each text; ([], (0, dim)) for one without tokens."""
        empty = np.zeros((0, self.dim), dtype=np.float32)
        out: list[tuple[list[str], np.ndarray]] = [([], empty)] * len(texts)
        for index, ids, mask, states in self._batches(texts, batch_size, layer, max_length):
            for i, row_ids, m, s in zip(index, ids, mask, states):
                out[i] = (self.tokenizer.convert_ids_to_tokens(row_ids[m].tolist()), s[m])
        return out

    def features(
        self,
        texts: Sequence[str],
        pooling: Literal["last", "mean"] = "last",
        layer: int = -1,
        batch_size: int = 64,
        max_length: int = 256,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One (dim,) vector per text that has tokens (the last token's state, or the mean over its tokens),
        and the indices of those texts in `texts`."""
        kept: list[int] = []
        out: list[np.ndarray] = []
        for index, _, mask, states in self._batches(texts, batch_size, layer, max_length):
            kept += index
            out += [s[m][-1] if pooling == "last" else s[m].mean(axis=0) for m, s in zip(mask, states)]
        feats = np.stack(out).astype(np.float32) if out else np.zeros((0, self.dim), dtype=np.float32)
        return feats, np.asarray(kept, dtype=np.int64)


@lru_cache(maxsize=4)
def load_encoder(name: str, device: str = "cpu", dtype: str = "float32") -> Encoder:
    """Load (once per process) the encoder `name` (hub name or local folder) on `device` in `dtype`."""
    return Encoder(name, device, dtype)
