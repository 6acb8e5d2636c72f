"""DeepSpeed hostfiles (`worker-0 slots=8` per line), checked before any work: the launcher itself runs on
local resources only when the file is missing, and names no line when one is malformed."""

from __future__ import annotations

import re
from pathlib import Path

from run_config.errors import DataError

HOST_LINE = re.compile(r"(\S+)\s+slots=(\d+)")


def read_hostfile(path: str | Path) -> dict[str, int]:
    """Hosts and their slots (GPUs), in file order; blank lines and `#` comments are skipped."""
    if not Path(path).is_file():
        raise DataError(str(path), None, "hostfile", "no such file")
    hosts: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            match = HOST_LINE.fullmatch(line)
            if match is None:
                raise DataError(str(path), number, "hostfile", f"{line!r} is not `HOST slots=N`")
            host, slots = match.group(1), int(match.group(2))
            if host in hosts:
                raise DataError(str(path), number, "hostfile", f"{host} is listed twice")
            if slots < 1:
                raise DataError(str(path), number, "slots", f"{host} has no slots")
            hosts[host] = slots
    if not hosts:
        raise DataError(str(path), None, "hostfile", "no `HOST slots=N` line")
    return hosts


def check_hostfile(path: str | Path, num_nodes: int, num_gpus: int) -> dict[str, int]:
    """The first `num_nodes` hosts of `path` (DeepSpeed's choice), each with at least `num_gpus` slots."""
    hosts = read_hostfile(path)
    if num_nodes > len(hosts):
        raise DataError(str(path), None, "num_nodes", f"{num_nodes} nodes asked for, the hostfile lists {len(hosts)}")
    used = dict(list(hosts.items())[:num_nodes])
    short = [f"{host} (slots={slots})" for host, slots in used.items() if slots < num_gpus]
    if short:
        raise DataError(str(path), None, "num_gpus", f"{num_gpus} GPUs per node asked for: {', '.join(short)}")
    return used
