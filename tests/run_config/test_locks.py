"""One writer per output folder: live holders in other processes refuse, dead ones are taken over, every
stage's output folder is locked."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from run_config.errors import ConfigError
from run_config.locks import LOCK_FILE, FolderLockedError, held_folders, output_lock

REPO = Path(__file__).resolve().parents[2]
HOLD = (
    "import sys, time; from run_config.locks import output_lock\n"
    "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n"
)


@pytest.fixture
def holder(tmp_path):
    """Start a real process that holds a folder's lock; yields (process, folder); killed at the end."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(folder)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline() == "held\n"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def lock_info(folder: Path) -> dict:
    return json.loads((folder / LOCK_FILE).read_text())


def test_live_holder_refuses_a_second_process(holder, tmp_path):
    out = tmp_path / "out"
    proc = holder(out)
    assert lock_info(out)["pid"] == proc.pid and lock_info(out)["host"] == socket.gethostname()
    with pytest.raises(FolderLockedError, match=rf"{out} is in use by another run \(pid {proc.pid} on host"):
        with output_lock(out):
            pass
    assert lock_info(out)["pid"] == proc.pid  # the refused run left the holder's lock alone


def test_kill_9_holder_then_rerun_takes_the_stale_lock_over(holder, tmp_path, caplog):
    out = tmp_path / "out"
    proc = holder(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_info(out)["pid"] == proc.pid  # kill -9 left the file behind
    with caplog.at_level(logging.WARNING), output_lock(out):
        assert lock_info(out)["pid"] == os.getpid()
    assert f"taking over the stale lock of pid {proc.pid}" in caplog.text
    assert not (out / LOCK_FILE).exists()


def test_stale_lock_file_of_a_dead_pid(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": "earlier"}))
    with caplog.at_level(logging.WARNING), output_lock(out):
        assert lock_info(out)["pid"] == os.getpid()
    assert f"taking over the stale lock of pid {pid} on host {socket.gethostname()}" in caplog.text


def test_lock_of_another_host_is_not_guessed_at(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "earlier"}))
    with pytest.raises(FolderLockedError, match="pid 1 on host elsewhere.*delete the file if that run is over"):
        with output_lock(out):
            pass


def test_released_on_error_reentrant_and_an_empty_new_folder_is_removed(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError), output_lock(out):
        with output_lock(tmp_path / "new" / "." / "out"):  # same folder, same process: re-entrant
            assert held_folders() == [out]
        raise RuntimeError("the stage failed")
    assert held_folders() == [] and not (tmp_path / "new").exists()
    with output_lock(out):
        (out / "result.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]


def test_release_leaves_a_lock_that_a_folder_swap_brought_in(tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        out.rename(tmp_path / "old")  # a stage swaps a new folder in; another run locks it
        out.mkdir()
        (out / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))
    assert lock_info(out)["pid"] == 1


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_text("x"), "output_dir: is a file, not a folder"),
        (lambda p: None, "output_dir: cannot create the folder: Not a directory"),
    ],
)
def test_output_path_that_cannot_be_a_folder(tmp_path, make, message):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker if make(blocker) is not None else blocker / "sub"
    with pytest.raises(ConfigError, match=message):
        with output_lock(out):
            pass


def _stage_argv(tmp: Path, out: Path) -> dict[str, list[str]]:
    f = str(tmp / "in.jsonl")
    o = str(out)
    return {
        "preprocess": ["--input", f, "--output-dir", o],
        "cluster": ["--input", f, "--output-dir", o],
        "train": ["--model-name-or-path", "m", "--train-file", f, "--output-dir", o],
        "distill": ["--teacher-model", "t", "--data-path-train", "x", "--output-dir", o],
        "merge": ["--experts", "e0", "e1", "--output-dir", o],
        "convert": ["--format", "mergoo", "--input", "m", "--output-dir", o],
        "finetune-router": ["--moe-dir", "m", "--train-file", f, "--output-dir", o],
        "train-reward": ["--policy-model", "m", "--train", f, "--valid", f, "--output-dir", o],
        "infer": ["--model", "m", "--input", f, "--output-dir", o],
        "evaluate": ["--predictions", f, "--references", f, "--output-dir", o],
        "pipeline": ["--work-dir", o],
    }


def test_every_stage_refuses_a_held_output_folder(holder, tmp_path, capsys):
    from main import STAGES, main

    out = tmp_path / "out"
    proc = holder(out)
    argv = _stage_argv(tmp_path, out)
    assert set(argv) == set(STAGES)
    for stage, args in argv.items():
        assert main([stage, *args]) == 1, stage
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{out} is in use by another run (pid {proc.pid}" in err[0], (stage, err)


def test_a_launcher_rank_other_than_0_leaves_the_lock_to_rank_0(holder, tmp_path, monkeypatch, capsys):
    from dataset.preprocess import main

    out = tmp_path / "out"
    holder(out)
    monkeypatch.setenv("RANK", "1")
    assert main(["--input", str(tmp_path / "none.csv"), "--output-dir", str(out)]) == 1
    assert "none.csv: no such file" in capsys.readouterr().err  # got past the lock to the stage's own check
