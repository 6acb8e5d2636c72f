"""What the GPU check carries to the device machine in `.whl/`: wheels the image lacks, configs, tokenizers, rows.

The device image (Python 3.12, CUDA torch, transformers, accelerate, peft, sentence-transformers, sacrebleu,
scikit-learn, numba, pandas, matplotlib, pytest) reaches no registry, so `prepare` (run here) downloads the
cp312 manylinux wheels it lacks at the pins of requirements.txt (else at the version installed here), builds
the two sdists (deepspeed with DS_BUILD_OPS=0, rouge_score) into wheels, and copies the SmolLM2 and MiniLM
configs and tokenizers (weights cannot travel: the check initialises them at random) and a few hundred
rows of the embedded WordNet lexicon. The whole payload must stay under MAX_MIB.

POT is left out: its 0.9.7.post1 cp312 wheel alone is 32.9 MB, which with faiss-cpu (18.8 MB, needed by
MAUVE) exceeds the cap, and no step of the check needs it (MoverScore is not among them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from run_config.runtime import staged_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = REPO_ROOT / ".whl"
MAX_MIB = 40
MANIFEST = "manifest.json"
# (distribution, how it travels): "binary" = a cp312 manylinux wheel from the index, "build" = a wheel built here.
WHEELS = (
    ("pydantic", "binary"),
    ("pydantic-core", "binary"),
    ("annotated-types", "binary"),
    ("typing-inspection", "binary"),
    ("typing-extensions", "binary"),  # pydantic needs >= 4.16; the image's may be older
    ("deepspeed", "build"),
    ("hjson", "binary"),
    ("nltk", "binary"),
    ("defusedxml", "binary"),
    ("rouge_score", "build"),
    ("bert-score", "binary"),
    ("mauve-text", "binary"),
    ("faiss-cpu", "binary"),
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
SMOLLM2_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
MINILM_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)
ROWS = {"train": 2048, "valid": 64, "test": 512}  # WordNet rows per split in data/


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(requirements: Path = REPO_ROOT / "requirements.txt") -> dict[str, str]:
    """Normalised name -> version of every `name==version` line of requirements.txt."""
    pins = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def wheel_plan() -> list[tuple[str, str, str]]:
    """(name, version, how) of every wheel: the requirements.txt pin, else the version installed here."""
    pins = pinned_versions()
    plan = []
    for name, how in WHEELS:
        pin = pins.get(_norm(name))
        if pin is None:
            try:
                pin = version(name)
            except PackageNotFoundError:
                raise SystemExit(f"gpu_payload: {name} has no pin in requirements.txt and is not installed here")
        plan.append((name, pin, how))
    return plan


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"gpu_payload: {' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def fetch_wheel(name: str, pin: str, how: str, dest: Path) -> None:
    """Download (binary) or build (sdist, no build isolation: deepspeed's setup imports torch) one wheel."""
    if how == "binary":
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        _pip(
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(dest),
            f"{name}=={pin}",
        )
    else:
        _pip(
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "-w",
            str(dest),
            f"{name}=={pin}",
            env={**os.environ, "DS_BUILD_OPS": "0"},
        )


def copy_assets(dest: Path) -> None:
    """SmolLM2 and MiniLM config + tokenizer files, and WordNet rows (data/{all,train,test}.jsonl)."""
    from dataset.lexicon import wordnet_lexicon_dir
    from run_config.assets import minilm_path, smollm2_path

    for src, files, name in ((smollm2_path(), SMOLLM2_FILES, "smollm2"), (minilm_path(), MINILM_FILES, "minilm")):
        for f in files:
            if (src / f).is_file():
                (dest / name / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src / f, dest / name / f)
        if not (dest / name / "config.json").is_file():
            raise SystemExit(f"gpu_payload: {src} has no config.json")
    lexicon = wordnet_lexicon_dir()
    (dest / "data").mkdir(parents=True, exist_ok=True)
    chosen: dict[str, list[str]] = {}
    for split, n in ROWS.items():
        lines = (lexicon / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        chosen[split] = random.Random(0).sample(lines, min(n, len(lines)))  # seeded: the same rows every time
        (dest / "data" / f"{split}.jsonl").write_text("\n".join(chosen[split]) + "\n", encoding="utf-8")
    (dest / "data" / "all.jsonl").write_text("\n".join(sum(chosen.values(), [])) + "\n", encoding="utf-8")


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def check_payload(folder: Path = PAYLOAD, plan: list[tuple[str, str, str]] | None = None) -> str | None:
    """Why `folder` is not a complete payload (of the wheels of `plan`, when given); None when it is."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{manifest}: missing (run `bash scripts/gpu_check.sh --prepare`)"
    info = json.loads(manifest.read_text(encoding="utf-8"))
    if plan is not None and {tuple(w[:2]) for w in info.get("wheels", [])} != {(n, v) for n, v, _ in plan}:
        return f"{manifest}: its wheels are not the planned ones (run --prepare again)"
    for name, _pin, file in info["wheels"]:
        if not (folder / file).is_file():
            return f"{folder / file}: missing ({name})"
    for f in ("smollm2/config.json", "smollm2/tokenizer.json", "minilm/config.json", "data/all.jsonl"):
        if not (folder / f).is_file():
            return f"{folder / f}: missing"
    size = folder_mib(folder) - (folder_mib(folder / "site") if (folder / "site").is_dir() else 0)
    if size > MAX_MIB:
        return f"{folder}: {size:.1f} MiB > {MAX_MIB} MiB"
    return None


def prepare(dest: Path = PAYLOAD) -> int:
    """Build the payload into `dest` (swapped in whole); print its size; 1 when over MAX_MIB."""
    wheels = []
    with staged_dir(dest) as tmp:
        for name, pin, how in wheel_plan():
            before = set(tmp.glob("*.whl"))
            fetch_wheel(name, pin, how, tmp)
            new = sorted(set(tmp.glob("*.whl")) - before)
            if len(new) != 1:
                raise SystemExit(f"gpu_payload: {name}=={pin}: expected one new wheel, got {[p.name for p in new]}")
            wheels.append([name, pin, new[0].name])
            print(f"  {new[0].name}: {new[0].stat().st_size / 2**20:.2f} MiB")
        copy_assets(tmp)
        (tmp / MANIFEST).write_text(json.dumps({"wheels": wheels}, indent=1) + "\n", encoding="utf-8")
    size = folder_mib(dest)
    print(f"gpu_payload: {dest}: {len(wheels)} wheels + configs, tokenizers, rows = {size:.1f} MiB (cap {MAX_MIB} MiB)")
    if size > MAX_MIB:
        print(f"gpu_payload: {size:.1f} MiB is over the {MAX_MIB} MiB cap", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, default=PAYLOAD, help="payload folder (default: .whl/)")
    parser.add_argument("--check", action="store_true", help="only say whether --dest is a complete payload")
    parser.add_argument("--on-device", action="store_true", help="with --check: files only (no plan to compare)")
    args = parser.parse_args(argv)
    if args.check:
        problem = check_payload(args.dest, None if args.on_device else wheel_plan())
        print(problem or f"gpu_payload: {args.dest} is complete ({folder_mib(args.dest):.1f} MiB)")
        return 1 if problem else 0
    return prepare(args.dest)


if __name__ == "__main__":
    sys.exit(main())
