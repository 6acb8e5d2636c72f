"""main.py dispatch and every stage's own entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

import main
from tests.conftest import REPO_ROOT


def test_help_lists_every_stage(capsys):
    assert main.main(["--help"]) == 0
    out = capsys.readouterr().out
    for stage in ("preprocess", "cluster", "train", "merge", "finetune-router", "infer", "evaluate", "pipeline"):
        assert f"  {stage} " in out


def test_unknown_stage_suggests(capsys):
    assert main.main(["evalute"]) == 2
    assert "did you mean evaluate" in capsys.readouterr().err


@pytest.mark.parametrize("module", sorted({m for m, _ in main.STAGES.values()}))
def test_entry_point_help(module):
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


@pytest.mark.parametrize("stage", sorted(main.STAGES))
def test_main_stage_help(stage, capsys):
    with pytest.raises(SystemExit) as exc:
        main.main([stage, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out
