"""bench_parse: real Urban and WordNet definitions served through the stub come back unchanged and counted."""

from __future__ import annotations

from scripts.bench_parse import serve, urban_records, wordnet_glosses


def test_served_definitions_are_not_changed(data_3dex, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    corpora = {"urban": urban_records(data_3dex / "Urban_test.csv")[:30], "wordnet": wordnet_glosses()[:30]}
    for name, records in corpora.items():
        result = serve(records, tmp_path / name, concurrency=4)
        assert result["rows"] == 30 and result["changed"] == []
