"""Embedded-text recipes, embedder presets, the embedding cache, TF-IDF save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clustering.embed import EMBEDDER_PRESETS, SentenceEncoder, TfidfEncoder, build_text, embed_cached, make_spec
from dataset.records import read_records
from prompts.builder import render_question


@pytest.fixture(scope="module")
def wordnet_rows(wordnet_lexicon):
    rows = []
    for r in read_records(wordnet_lexicon / "valid.jsonl"):
        rows.append(r)
        if len(rows) == 40:
            break
    return rows


def test_text_recipes():
    assert build_text(
        "bank", "the river bank", "sloping land", "term_context", "word_interpretation"
    ) == render_question("bank", "the river bank")
    assert build_text("bank", "the river bank", "sloping land", "definition", "word_interpretation") == "sloping land"
    assert (
        build_text("bank", "the river bank", "sloping land", "instruction_definition", "word_interpretation")
        == render_question("bank", "the river bank") + "\n\nsloping land"
    )
    with pytest.raises(ValueError, match="needs the gold definition"):
        build_text("bank", "the river bank", None, "definition", "word_interpretation")


def test_presets(minilm_dir):
    nv = make_spec("nv-embed-v2", "term_context", "word_interpretation", None, None)
    assert nv.model == "nvidia/NV-Embed-v2" and nv.prompt.startswith("Instruct: ") and nv.prompt.endswith("Query: ")
    assert nv.append_eos and nv.trust_remote_code
    mini = make_spec("minilm", "definition", "word_interpretation", "", 128)
    assert mini.model == str(minilm_dir) and mini.max_length == 128 and not mini.trust_remote_code
    other = make_spec("/some/local/model", "term_context", "word_interpretation", "query: ", None)
    assert other.model == "/some/local/model" and other.prompt == "query: "
    assert set(EMBEDDER_PRESETS) == {"minilm", "nv-embed-v2"}


class CountingEncoder:
    """The real MiniLM encoder, counting how often it is asked to embed."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        self.encoder, self.calls = encoder, 0

    def encode(self, texts):
        self.calls += 1
        return self.encoder.encode(texts)


def test_cache_is_reused_and_keyed_by_text(wordnet_rows, tmp_path):
    spec = make_spec("minilm", "definition", "word_interpretation", None, None)
    encoder = CountingEncoder(SentenceEncoder(spec, device="cpu"))
    texts = [r.definition for r in wordnet_rows]
    first = embed_cached(texts, spec, tmp_path, encoder=encoder)
    assert first.shape == (40, 384) and np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    again = embed_cached(texts, spec, tmp_path, encoder=encoder)
    assert encoder.calls == 1 and np.array_equal(first, again)
    manifest = json.loads(next(tmp_path.glob("emb-*.json")).read_text())
    assert manifest["model"] == spec.model and manifest["text_field"] == "definition" and manifest["rows"] == 40
    assert len(manifest["texts_sha256"]) == 64
    changed = embed_cached(texts[:-1] + ["a different gloss"], spec, tmp_path, encoder=encoder)
    assert encoder.calls == 2 and len(list(tmp_path.glob("emb-*.npy"))) == 2
    assert np.allclose(changed[:-1], first[:-1], atol=1e-5)


def test_tfidf_round_trip(wordnet_rows):
    texts = [r.context for r in wordnet_rows]
    fitted = TfidfEncoder.fit(texts, 256)
    saved = json.loads(json.dumps(fitted.to_json()))
    rebuilt = TfidfEncoder(saved["vocabulary"], saved["idf"])
    assert np.allclose(fitted.encode(texts).toarray(), rebuilt.encode(texts).toarray())
