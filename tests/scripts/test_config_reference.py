"""docs/config_reference.md is the generated page: every key of every stage, with type and default."""

from __future__ import annotations

from scripts.config_reference import PAGE, config_models, page, reference


def test_the_docs_page_is_the_generated_one():
    assert PAGE.read_text(encoding="utf-8") == page(), (
        f"{PAGE} is stale: run python scripts/config_reference.py --write"
    )


def test_every_key_of_every_stage_is_listed():
    text = reference()
    for _, model in config_models():
        for name in model.model_fields:
            assert f"| `{name}` |" in text
    assert "| `learning_rate` | float | `5e-06` | peak learning rate |" in text
