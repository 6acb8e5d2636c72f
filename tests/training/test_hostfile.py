"""DeepSpeed hostfiles are read as the launcher reads them, and refused up front with file and line."""

from __future__ import annotations

import pytest

from run_config.errors import DataError
from training.hostfile import check_hostfile, read_hostfile


def _write(tmp_path, text):
    path = tmp_path / "hostfile"
    path.write_text(text, encoding="utf-8")
    return path


def test_hosts_in_file_order_comments_and_blank_lines_skipped(tmp_path):
    path = _write(tmp_path, "# two 8-GPU nodes\nworker-0 slots=8\n\nworker-1 slots=8  # second node\n")
    assert list(read_hostfile(path).items()) == [("worker-0", 8), ("worker-1", 8)]
    assert check_hostfile(path, 1, 8) == {"worker-0": 8}


@pytest.mark.parametrize(
    "text, where",
    [
        ("worker-0 slots=8\nworker-1 gpus=8\n", "hostfile:2: hostfile: 'worker-1 gpus=8' is not `HOST slots=N`"),
        ("worker-0 slots=8\nworker-0 slots=8\n", "hostfile:2: hostfile: worker-0 is listed twice"),
        ("worker-0 slots=0\n", "hostfile:1: slots: worker-0 has no slots"),
        ("# nothing\n\n", "hostfile: hostfile: no `HOST slots=N` line"),
    ],
)
def test_malformed_hostfile_names_file_and_line(tmp_path, text, where):
    with pytest.raises(DataError) as e:
        read_hostfile(_write(tmp_path, text))
    assert str(e.value) == f"{tmp_path}/{where}"


def test_missing_hostfile_is_refused(tmp_path):
    # DeepSpeed's launcher would warn and quietly train on the local GPUs only
    with pytest.raises(DataError, match="hostfile: no such file"):
        read_hostfile(tmp_path / "absent")


def test_more_nodes_or_gpus_than_the_hostfile_holds(tmp_path):
    path = _write(tmp_path, "worker-0 slots=8\nworker-1 slots=4\n")
    with pytest.raises(DataError, match="num_nodes: 3 nodes asked for, the hostfile lists 2"):
        check_hostfile(path, 3, 8)
    with pytest.raises(DataError, match=r"num_gpus: 8 GPUs per node asked for: worker-1 \(slots=4\)"):
        check_hostfile(path, 2, 8)
