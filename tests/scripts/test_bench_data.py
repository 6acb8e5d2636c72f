"""bench_data: the benchmarks' 3D-EX file comes from their flag, else $LMLEXICON_3DEX_DIR, else a one-line error."""

from __future__ import annotations

import argparse

import pytest

from scripts.bench_data import ENV, add_urban_option, urban_csv


def resolve(argv: list[str]):
    parser = argparse.ArgumentParser(prog="bench_x")
    add_urban_option(parser, "--urban")
    return urban_csv(parser, "--urban", parser.parse_args(argv).urban)


def test_the_flag_wins_over_the_environment(data_3dex, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, str(tmp_path))
    assert resolve(["--urban", str(data_3dex / "Urban_test.csv")]) == data_3dex / "Urban_test.csv"


def test_the_default_is_the_file_in_the_environment_folder(data_3dex, monkeypatch):
    monkeypatch.setenv(ENV, str(data_3dex))
    assert resolve([]) == data_3dex / "Urban_test.csv"


@pytest.mark.parametrize("folder", [None, "missing"])
def test_no_data_is_one_line_and_exit_2(folder, monkeypatch, tmp_path, capsys):
    if folder is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, str(tmp_path / folder))
    with pytest.raises(SystemExit) as stop:
        resolve([])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench_x: error: ")
    assert (ENV in err) and ("--urban" in err)
    if folder:
        assert str(tmp_path / folder / "Urban_test.csv") in err
