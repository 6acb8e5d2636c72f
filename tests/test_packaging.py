"""The installable package: pyproject's dependencies agree with requirements.txt's pins, every package
folder is packaged with its data files, and `pip install -e .` in a fresh venv gives `lm-lexicon --help`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PACKAGES = PROJECT["tool"]["setuptools"]["packages"]
CUDA_EXTRAS = {"vllm", "qlora"}  # CUDA-only, outside the CPU pin list (vllm pins its own torch)
SOURCE_ONLY = {
    "scripts/setup.sh",
    "scripts/demo.sh",
    "scripts/test.sh",
    "scripts/gpu_check.sh",
}  # run from a checkout, not installed
NOT_PACKAGES = {"tests", "build", "runs", "wandb"}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _requirements(extras: bool) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["project"]["dependencies"]]
    if extras:
        for extra, listed in PROJECT["project"]["optional-dependencies"].items():
            if extra not in CUDA_EXTRAS:
                reqs += [Requirement(r) for r in listed]
    return reqs


def _package_folders() -> set[str]:
    """Every folder below the repo root holding .py files (tests, hidden and output folders aside)."""
    found = set()
    for folder, dirs, files in os.walk(REPO_ROOT):
        rel = Path(folder).relative_to(REPO_ROOT)
        dirs[:] = [
            d
            for d in dirs
            if not (d.startswith(".") or d == "__pycache__" or d.endswith(".egg-info"))
            and not (rel == Path(".") and d in NOT_PACKAGES)
        ]
        if rel != Path(".") and any(f.endswith(".py") for f in files):
            found.add(".".join(rel.parts))
    return found


def _source_copy(dst: Path) -> Path:
    """What a source distribution holds: the metadata files and the packaged folders (no tests, no venv)."""
    dst.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "main.py"):
        shutil.copy(REPO_ROOT / name, dst / name)
    for top in {p.split(".")[0] for p in PACKAGES}:
        shutil.copytree(REPO_ROOT / top, dst / top, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_every_dependency_is_pinned_in_requirements_within_its_bound():
    pins = _pins()
    for req in _requirements(extras=True):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a pyproject dependency but requirements.txt does not pin it"
        assert req.specifier.contains(pins[name]), f"requirements.txt pins {name}=={pins[name]}, outside {req}"
    cuda = {
        canonicalize_name(Requirement(r).name)
        for e in CUDA_EXTRAS
        for r in PROJECT["project"]["optional-dependencies"][e]
    }
    assert not cuda & set(pins), "a CUDA-only extra is pinned in requirements.txt: list it as a plain dependency"


def test_runtime_dependencies_leave_out_test_and_benchmark_tools():
    runtime = {canonicalize_name(r.name) for r in _requirements(extras=False)}
    assert not runtime & {"pytest", "pytest-timeout", "ruff", "k-means-constrained", "ortools"}


def test_every_package_folder_is_listed():
    assert _package_folders() == set(PACKAGES)
    for package in PACKAGES:
        assert (REPO_ROOT / package.replace(".", "/") / "__init__.py").is_file(), package
    assert PROJECT["tool"]["setuptools"]["py-modules"] == ["main"]
    assert PROJECT["project"]["scripts"] == {"lm-lexicon": "main:main"}


def test_the_wheel_holds_every_module_and_data_file(tmp_path):
    """Build the wheel (setuptools from this venv, offline) and compare it with the source tree."""
    src = _source_copy(tmp_path / "src")
    out = tmp_path / "dist"
    build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", build, str(out)], cwd=src, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    with zipfile.ZipFile(out / done.stdout.strip().splitlines()[-1]) as wheel:
        names = set(wheel.namelist())
        entry_points = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    files = {
        p.relative_to(src).as_posix()
        for top in {p.split(".")[0] for p in PACKAGES}
        for p in (src / top).rglob("*")
        if p.is_file()
    }
    assert files - SOURCE_ONLY <= names, sorted(files - SOURCE_ONLY - names)
    assert {"main.py", "prompts/api_system.txt", "run_config/paper_full.json"} <= names
    assert "lm-lexicon = main:main" in entry_points


def _index_has_setuptools(pip: Path, tmp_path: Path) -> bool:
    probe = [str(pip), "download", "--no-deps", "-q", "-d", str(tmp_path / "probe"), "setuptools>=77"]
    return subprocess.run(probe, capture_output=True, timeout=300).returncode == 0


@pytest.mark.slow
def test_editable_install_in_a_fresh_venv_gives_the_console_script(tmp_path):
    """`pip install -e . --no-deps` in a new venv, then `lm-lexicon --help` outside the checkout: main.py
    imports a stage only when it runs, so the help needs none of the dependencies."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = venv / "bin" / "pip"
    if not _index_has_setuptools(pip, tmp_path):
        pytest.skip("no package index reachable: pip's build isolation cannot fetch setuptools>=77")
    src = _source_copy(tmp_path / "checkout")
    install = subprocess.run(
        [str(pip), "install", "-q", "--no-deps", "-e", str(src)], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stderr[-3000:]
    cli = venv / "bin" / "lm-lexicon"
    done = subprocess.run([str(cli), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: lm-lexicon <stage>" in done.stdout and "  finetune-router " in done.stdout
    bare = subprocess.run([str(cli)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and "stages:" in bare.stdout
