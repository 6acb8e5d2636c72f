"""README and docs/: the README stays short, every relative link resolves, the original's bugs are all explained,
and nothing in the repository cites files outside it."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
OUTSIDE = ("../shared", "/work/", "ORIGINAL.md", "paper.txt", "dskd.txt", "STYLE.md", "ENVIRONMENT.md")


def repo_files() -> list[str]:
    """Tracked files (every file outside .git and .venv when the tree is not a git checkout)."""
    done = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode == 0:
        return [n for n in done.stdout.splitlines() if (REPO_ROOT / n).is_file()]
    skip = (".git", ".venv", ".cache")
    return [
        p.relative_to(REPO_ROOT).as_posix()
        for p in REPO_ROOT.rglob("*")
        if p.is_file() and p.relative_to(REPO_ROOT).parts[0] not in skip
    ]


def anchors(text: str) -> set[str]:
    """GitHub's anchors of the Markdown headings in `text`."""
    heads = re.findall(r"^#{1,6} (.+)$", FENCE.sub("", text), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def relative_links(page) -> list[str]:
    links = LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8")))
    return [link for link in links if not re.match(r"[a-z]+:", link)]


def test_readme_is_at_most_400_lines():
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 400, f"README.md has {lines} lines; move reference material to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_resolves(page):
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: link {link!r} points at no file"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target.read_text(encoding="utf-8")), f"{page.name}: no heading for {link!r}"


def test_every_bug_the_code_cites_is_explained():
    explained = set(re.findall(r"^(\d+)\. \*\*", (REPO_ROOT / "docs" / "original_code.md").read_text(), re.M))
    assert explained == {str(n) for n in range(1, 43)}
    cited = set()
    for name in repo_files():
        if name.endswith((".py", ".md", ".json", ".sh")):
            text = (REPO_ROOT / name).read_text(encoding="utf-8", errors="replace")
            cited |= set(re.findall(r"\bbugs? #?(\d+)", text))
    assert cited and cited <= explained


def test_nothing_outside_the_tests_cites_files_outside_the_repo():
    found = []
    for name in repo_files():
        if name.startswith(("tests/", ".ci/")) or "__pycache__" in name:
            continue
        text = (REPO_ROOT / name).read_text(encoding="utf-8", errors="replace")
        found += [f"{name}: {word}" for word in OUTSIDE if word in text]
    assert not found, found
