"""Few-shot demos: per-input, seeded, up to 32, never the input's own term (random and MiniLM retrieval)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.icl import nearest_demos, random_demos, retrieval_demos, select_demos
from inference.tasks import build_items
from run_config.errors import DataError


@pytest.fixture(scope="module")
def split(urban_records):
    """Test items: records 0-39; pool: records 0-399 (so every test term also occurs in the pool)."""
    return build_items("word_interpretation", urban_records[:40], range(40), 42), urban_records


def test_random_k_is_per_item_seeded_and_never_the_same_term(split):
    items, pool = split
    demos = random_demos(items, pool, 32, seed=5)
    assert demos == random_demos(items, pool, 32, seed=5)
    assert demos != random_demos(items, pool, 32, seed=6)
    for item in items:
        assert len(demos[item.id]) == 32 == len(set(demos[item.id]))
        assert all(t.casefold() != item.term.casefold() for t, _, _ in demos[item.id])
    assert len({tuple(d) for d in demos.values()}) > 1  # not one fixed set for all inputs (bug 31)


def test_retrieval_k_finds_neighbours_but_never_the_same_term(split, minilm_dir, tmp_path):
    items, pool = split
    demos = retrieval_demos(items, pool[:200], 8, minilm_dir, "cpu", tmp_path)
    leaked = [i.term for i in items for t, _, _ in demos[i.id] if t.casefold() == i.term.casefold()]
    assert not leaked
    assert all(len(demos[i.id]) == 8 for i in items)
    # The same term is excluded even though its own rows are the nearest neighbours in the pool.
    repeated = [i for i in items if sum(r.term == i.term for r in pool[:200]) > 1]
    assert repeated


def test_nearest_widens_when_the_top_is_all_the_same_term(split):
    items, pool = split
    item = items[0]
    sims = np.array(
        [1.0 if r.term == item.term else -float(i) / len(pool) for i, r in enumerate(pool)], dtype=np.float32
    )
    keys = np.eye(len(pool), dtype=np.float32)
    demos = nearest_demos(sims[None, :], keys, [item], pool, 5)[item.id]
    others = [r for r in pool if r.term != item.term][:5]
    assert demos == [(r.term, r.context, r.definition) for r in reversed(others)]  # most similar last


def test_too_few_examples_is_a_clear_error(split):
    items, pool = split
    same = [r for r in pool if r.term == items[0].term]
    with pytest.raises(DataError, match="icl_k is 2"):
        random_demos(items[:1], same + pool[-1:], 2, seed=1)


def test_cli_few_shot_prompts_through_an_api(urban_records, tmp_path, monkeypatch):
    import json

    from inference.infer import main
    from inference.stub_server import StubServer

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    (tmp_path / "test.jsonl").write_text("".join(r.to_json() + "\n" for r in urban_records[:5]))
    (tmp_path / "train.jsonl").write_text("".join(r.to_json() + "\n" for r in urban_records[5:200]))
    with StubServer("openai") as stub:
        assert (
            main(
                [
                    "--backend",
                    "openai",
                    "--model",
                    "m",
                    "--input",
                    str(tmp_path / "test.jsonl"),
                    "--output-dir",
                    str(tmp_path / "out"),
                    "--base-url",
                    stub.base_url,
                    "--icl-mode",
                    "random",
                    "--icl-k",
                    "4",
                    "--icl-examples",
                    str(tmp_path / "train.jsonl"),
                ]
            )
            == 0
        )
    prompts = [r["body"]["messages"][-1]["content"] for r in stub.requests]
    assert len(prompts) == 5 and all(p.count("What is the definition of") == 5 for p in prompts)
    preds = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert all(p["prediction"] == f"a definition of {p['term']}" for p in preds)


def test_retrieval_pool_is_embedded_once_on_the_configured_device(split, minilm_dir, tmp_path, monkeypatch):
    """The pool's embeddings are cached (embedder + pool texts): a second run embeds only the queries;
    a changed pool file embeds the pool again."""
    from clustering.embed import SentenceEncoder

    items, records = split
    pool = tmp_path / "train.jsonl"
    pool.write_text("".join(r.to_json() + "\n" for r in records[:300]), encoding="utf-8")
    encoded, devices = [], []
    original_init, original_encode = SentenceEncoder.__init__, SentenceEncoder.encode

    def init(self, spec, device="auto", batch_size=64):
        devices.append(device)
        original_init(self, spec, device, batch_size)

    def encode(self, texts):
        encoded.append(len(texts))
        return original_encode(self, texts)

    monkeypatch.setattr(SentenceEncoder, "__init__", init)
    monkeypatch.setattr(SentenceEncoder, "encode", encode)
    run = lambda: select_demos("retrieval", items, pool, 8, 42, str(minilm_dir), "cpu", tmp_path / "cache")
    first = run()
    assert sum(encoded) == 300 + len(items) and devices == ["cpu"]
    encoded.clear()
    assert run() == first and encoded == [len(items)]  # the pool came from the cache
    encoded.clear()
    pool.write_text("".join(r.to_json() + "\n" for r in records[:299]), encoding="utf-8")
    run()
    assert sum(encoded) == 299 + len(items)
    assert len(list((tmp_path / "cache").glob("emb-*.npy"))) == 2
