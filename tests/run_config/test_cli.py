"""run_main: operating-system errors are one line and an exit code like every other error (preprocess on
real Urban rows as the stage)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset.preprocess import main
from tests.conftest import REPO_ROOT


@pytest.fixture
def urban_csv(data_3dex, tmp_path) -> Path:
    """The first 400 rows of the real Urban test file."""
    lines = (data_3dex / "Urban_test.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path / "Urban_test.csv"
    path.write_text("".join(lines[:401]), encoding="utf-8")
    return path


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """Mount a small tmpfs at `path` (skip the test where this process may not mount)."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)  # detached even while a leaked fd holds it


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_disk_full_is_one_line_exit_1_and_leaves_no_file(urban_csv, tmp_path, capsys):
    with tmpfs(tmp_path / "small", "size=64k") as disk:
        assert main(["--input", str(urban_csv), "--output-dir", str(disk / "out")]) == 1
        err = one_error_line(capsys)
        assert err == f"preprocess: error: No space left on device (writing in {disk / 'out'})"
        assert [p for p in disk.rglob("*") if p.is_file()] == []  # no half-written output, no temp file, no lock


def test_disk_full_at_the_commit_renames_no_output_in(data_3dex, tmp_path, capsys):
    """Twenty rows fit in the write buffers, so the disk fills only when the files are flushed together:
    none of them may replace its target (each output file needs 2 pages; the lock and the first take 3)."""
    rows = tmp_path / "Urban_test.csv"
    rows.write_text("".join((data_3dex / "Urban_test.csv").read_text(encoding="utf-8").splitlines(True)[:21]))
    assert main(["--input", str(rows), "--output-dir", str(tmp_path / "roomy")]) == 0
    sizes = [p.stat().st_size for p in (tmp_path / "roomy").rglob("*.jsonl")]
    with tmpfs(tmp_path / "small", "size=64k") as disk:
        page = os.statvfs(disk).f_frsize
        assert len(sizes) == 3 and all(page < n < min(2 * page, 8192) for n in sizes)  # the premise above
        (disk / "filler").write_bytes(b"x" * (os.statvfs(disk).f_bavail * page - 3 * page))
        assert main(["--input", str(rows), "--output-dir", str(disk / "out")]) == 1
        assert "No space left on device" in one_error_line(capsys)
        assert [p.name for p in disk.rglob("*") if p.is_file()] == ["filler"]


def test_read_only_folder_is_a_config_error(urban_csv, tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as disk:
        assert main(["--input", str(urban_csv), "--output-dir", str(disk)]) == 2
        assert f"{disk}/.lock: output_dir: cannot write in the folder: Read-only file system" in one_error_line(capsys)
        assert main(["--input", str(urban_csv), "--output-dir", str(disk / "sub")]) == 2
        assert f"{disk / 'sub'}: output_dir: cannot create the folder: Read-only file system" in one_error_line(capsys)


def test_output_path_that_is_a_file_or_under_one(urban_csv, tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    assert main(["--input", str(urban_csv), "--output-dir", str(blocker)]) == 2
    assert f"{blocker}: output_dir: is a file, not a folder" in one_error_line(capsys)
    assert main(["--input", str(urban_csv), "--output-dir", str(blocker / "out")]) == 2
    assert f"{blocker / 'out'}: output_dir: cannot create the folder: Not a directory" in one_error_line(capsys)
    assert blocker.read_text() == "not a folder"


def test_os_error_raised_by_a_stage_names_its_file(urban_csv, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "all.jsonl").mkdir()  # the stage's output file cannot replace a folder
    assert main(["--input", str(urban_csv), "--output-dir", str(out)]) == 1
    err = one_error_line(capsys)
    assert err.startswith("preprocess: error: ") and f"{out / 'all.jsonl'}: Is a directory" in err


def test_config_that_is_not_utf8(tmp_path, capsys):
    cfg = tmp_path / "pre.json"
    raw = b'{\n "output_dir": "o",\n "split": "caf\xe9"\n}\n'  # Latin-1, not UTF-8
    cfg.write_bytes(raw)
    assert main(["--config", str(cfg)]) == 2
    assert f"{cfg}:3: not UTF-8 text (byte 0xe9 at offset {raw.index(0xE9)})" in one_error_line(capsys)


def test_config_that_cannot_be_read(tmp_path, capsys):
    assert main(["--config", str(tmp_path)]) == 2
    assert f"{tmp_path}: cannot read config: Is a directory" in one_error_line(capsys)


def test_duplicate_key_in_a_config(tmp_path, capsys):
    cfg = tmp_path / "pre.json"
    cfg.write_text('{\n "output_dir": "o",\n "builtin": "wordnet",\n "output_dir": "elsewhere"\n}\n')
    assert main(["--config", str(cfg)]) == 2
    assert f"{cfg}:4: output_dir: key given twice in one object (JSON would keep only the last)" in one_error_line(
        capsys
    )
    assert not (tmp_path / "o").exists() and not (tmp_path / "elsewhere").exists()
    assert json.loads(cfg.read_text())["output_dir"] == "elsewhere"  # what plain JSON would have run with


@pytest.mark.parametrize("verbose", [False, True])
def test_faiss_probing_shows_only_with_verbose(verbose, capfd):
    """faiss (which mauve, the MAUVE metric's package, imports) logs each AVX-512/AVX2 build it fails to load at
    INFO, with a ModuleNotFoundError; under a stage's logging that stays off stderr unless --verbose."""
    code = f"from run_config.cli import setup_logging; setup_logging({verbose}); import faiss"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
    err = capfd.readouterr().err
    if verbose:
        assert "faiss.loader: Loading faiss" in err
    else:
        assert "faiss" not in err and "ModuleNotFoundError" not in err, err
