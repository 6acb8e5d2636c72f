"""One writer per output folder: a lock file in the folder names its holder (pid, host).

The holder keeps an exclusive `flock` on the file, which the kernel drops when the process ends however it
ends (kill -9 included), so a lock file whose flock is free is stale and the next run takes it over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from run_config.errors import ConfigError, LexiconError

log = logging.getLogger(__name__)
LOCK_FILE = ".lock"
_held: dict[Path, Path] = {}  # resolved folder -> folder as given, for the locks this process holds


class FolderLockedError(LexiconError):
    """Another run writes into the folder."""


def held_folders() -> list[Path]:
    """The output folders this process holds, in the order they were locked."""
    return list(_held.values())


@contextlib.contextmanager
def output_lock(folder: str | Path, key: str = "output_dir") -> Iterator[Path]:
    """Hold `folder` for this process until the block ends (re-entrant); the folders it had to create
    are removed again when the run left them empty.

    Raises ConfigError when the folder cannot be made or written (`key` names the setting) and
    FolderLockedError, naming the holder, when another live process holds it.
    """
    folder = Path(folder)
    resolved = folder.resolve()
    if resolved in _held:
        yield folder
        return
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # leaf first
    fd = _acquire(folder, key)
    _held[resolved] = folder
    try:
        yield folder
    finally:
        del _held[resolved]
        _release(folder / LOCK_FILE, fd)
        with contextlib.suppress(OSError):  # a run that wrote nothing (a failed start) leaves no empty folders
            for made in created:
                made.rmdir()


def _acquire(folder: Path, key: str) -> int:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: {key}: is a file, not a folder")
    path = folder / LOCK_FILE
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{folder}: {key}: cannot create the folder: {e.strerror or e}") from None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue  # a run that just ended removed the (empty) folder: make it again
        except OSError as e:
            raise ConfigError(f"{path}: {key}: cannot write in the folder: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise FolderLockedError(
                f"{folder} is in use by another run ({_describe(holder)}; lock file {path}); "
                "wait for it to end or stop it"
            ) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the previous holder removed the file between our open and flock: lock the new one
    previous = _read(fd)
    host = socket.gethostname()
    if previous and previous.get("host") not in (None, host):
        os.close(fd)
        raise FolderLockedError(
            f"{folder} is locked by {_describe(previous)} (lock file {path}); a lock taken on "
            "another host cannot be checked from here: delete the file if that run is over"
        )
    if previous:
        log.warning("%s: taking over the stale lock of %s, which no longer runs", folder, _describe(previous))
    data = json.dumps({"pid": os.getpid(), "host": host, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data + b"\n", 0)
    except OSError as e:
        os.close(fd)
        raise ConfigError(f"{path}: {key}: cannot write in the folder: {e.strerror or e}") from None
    return fd


def _release(path: Path, fd: int) -> None:
    """Remove the lock file (only while it is still ours: a folder swap may have replaced it), then unlock."""
    try:
        if _same_file(fd, path):
            path.unlink()
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "a process that has not yet written its pid"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}"
