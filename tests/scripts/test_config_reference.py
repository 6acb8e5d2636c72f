"""README's config reference is the generated one: every key of every stage, with type and default."""

from __future__ import annotations

from scripts.config_reference import config_models, readme_section, reference
from tests.conftest import REPO_ROOT


def test_readme_holds_the_generated_reference():
    section = readme_section((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert section == reference(), "README.md is stale: run python scripts/config_reference.py --write"


def test_every_key_of_every_stage_is_listed():
    text = reference()
    for _, model in config_models():
        for name in model.model_fields:
            assert f"| `{name}` |" in text
    assert "| `learning_rate` | float | `5e-06` | peak learning rate |" in text
