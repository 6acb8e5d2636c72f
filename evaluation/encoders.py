"""Local or hub transformer encoders for MoverScore token embeddings and MAUVE text features."""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np


class Encoder:
    """A tokenizer + model pair giving hidden states of one layer, batched, without gradients."""

    def __init__(self, name: str, device: str = "cpu", max_length: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(name)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(name).to(device).eval()
        self.device, self.max_length = device, max_length

    def _batches(self, texts: Sequence[str], batch_size: int, layer: int):
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            with self.torch.no_grad():
                states = self.model(**batch, output_hidden_states=True).hidden_states[layer]
            yield batch, states.float().cpu().numpy()

    def token_states(self, texts: Sequence[str], layer: int = -1,
                     batch_size: int = 64) -> list[tuple[list[str], np.ndarray]]:
        """(tokens incl. special ones, (n_tokens, dim) states) of each text."""
        out = []
        for batch, states in self._batches(texts, batch_size, layer):
            mask = batch["attention_mask"].cpu().numpy().astype(bool)
            for ids, m, s in zip(batch["input_ids"].cpu().numpy(), mask, states):
                out.append((self.tokenizer.convert_ids_to_tokens(ids[m].tolist()), s[m]))
        return out

    def features(self, texts: Sequence[str], pooling: Literal["last", "mean"] = "last", layer: int = -1,
                 batch_size: int = 64) -> np.ndarray:
        """One (dim,) vector per text: the last real token's state, or the mean over real tokens."""
        out = []
        for batch, states in self._batches(texts, batch_size, layer):
            mask = batch["attention_mask"].cpu().numpy().astype(bool)
            for m, s in zip(mask, states):
                real = s[m]
                out.append(real[-1] if pooling == "last" else real.mean(axis=0))
        return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), dtype=np.float32)


@lru_cache(maxsize=4)
def load_encoder(name: str, device: str = "cpu", max_length: int = 256) -> Encoder:
    """Load (once per process) the encoder `name` (hub name or local folder) on `device`."""
    return Encoder(name, device, max_length)
