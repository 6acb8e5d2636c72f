"""Run-time helpers shared by every stage: seeding, atomic writes, manifests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


def set_seed(seed: int, *, frameworks: bool = True) -> int:
    """Seed Python, NumPy and torch (when installed) with one value; return it.

    `frameworks=False` seeds Python alone, for pure-Python stages that must not pay for importing torch.
    """
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    if not frameworks:
        return seed
    import numpy as np

    np.random.seed(seed)
    with contextlib.suppress(ImportError):
        import torch

        torch.manual_seed(seed)
    return seed


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        _fsync(path)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under `root` to disk (before a rename publishes them)."""
    for folder, _, names in os.walk(root):
        for name in names:
            _fsync(os.path.join(folder, name))
        _fsync_dir(Path(folder))


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside `path`; on success fsync and rename it onto `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    f = os.fdopen(fd, mode, **({} if binary else {"encoding": encoding, "newline": "\n"}))
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk fails the close too: the temp file goes regardless
            f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")


class AtomicFileSet:
    """Several output files that appear together on `commit()` or not at all.

    Files are opened lazily by name; until `commit()` they live as temp files in their target folder.
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._files: dict[Path, IO] = {}
        self._committed = False

    def get(self, path: str | Path) -> IO:
        path = Path(path)
        if path not in self._files:
            self._files[path] = self._stack.enter_context(_deferred(path, self))
        return self._files[path]

    @property
    def paths(self) -> list[Path]:
        return list(self._files)

    def commit(self) -> None:
        """Flush and sync every file, then rename them all in (a write error, a full disk say, renames none)."""
        try:
            for f in self._files.values():
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            self.discard()
            raise
        self._committed = True
        self._stack.close()

    def discard(self) -> None:
        self._stack.close()

    def __enter__(self) -> AtomicFileSet:
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        if exc_type is None and not self._committed:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def _deferred(path: Path, owner: AtomicFileSet) -> Iterator[IO]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    f = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
    try:
        yield f
    finally:
        if owner._committed:  # flushed and synced by commit()
            f.close()
            os.replace(tmp, path)
        else:
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def config_hash(cfg: Any) -> str:
    """Return a short stable hash of a config (pydantic model or JSON-able object); `force` counts as off:
    it says whether to redo the work, not what the work is."""
    data = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else cfg
    if isinstance(data, dict) and data.get("force") is True:
        data = {**data, "force": False}
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def package_versions(names: tuple[str, ...] = ("torch", "transformers", "numpy")) -> dict[str, str]:
    """Return installed versions of `names` (missing ones are omitted)."""
    out = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def write_manifest(out_dir: str | Path, stage: str, cfg: Any, **info: Any) -> Path:
    """Write `out_dir/manifest.json` (stage, resolved config, its hash, versions, extra info)."""
    data = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else cfg
    manifest = {"stage": stage, "config_hash": config_hash(cfg), "config": data, "versions": package_versions(), **info}
    path = Path(out_dir) / MANIFEST
    write_json(path, manifest)
    return path


def fingerprint(paths: Iterable[str | Path | None]) -> list[list]:
    """(path, size, mtime_ns) of each input, so a rerun redoes the work when an input changed. A model
    folder counts by its manifest.json, rewritten whenever a stage rewrites the model, and a folder without
    one by its files ([name, size, mtime_ns] each); a name that is no local path (a hub id, an API model) by
    its name alone; None entries are left out."""
    out = []
    for p in paths:
        if p is None:
            continue
        path = Path(p)
        if path.is_dir() and not (path / MANIFEST).is_file():
            files = sorted(f for f in path.iterdir() if f.is_file())
            out.append([str(p), [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]])
            continue
        path = path / MANIFEST if path.is_dir() else path
        out.append([str(p), path.stat().st_size, path.stat().st_mtime_ns] if path.exists() else [str(p), None, None])
    return out


def inputs_fingerprint(cfg: Any, resolve: Callable[[str], str] | None = None) -> list[list]:
    """The fingerprint of the inputs a stage config names in its INPUT_FIELDS (each entry of a list key);
    `resolve` maps a name to the path it stands for (an asset name, say)."""
    names: list[str | None] = []
    for key in type(cfg).INPUT_FIELDS:
        value = getattr(cfg, key)
        names.extend(value if isinstance(value, list) else [value])
    return fingerprint(resolve(n) if resolve and n else n for n in names)


def is_finished(
    out_dir: str | Path, cfg: Any, inputs: Callable[[], list] | None = None, marker: str | None = None
) -> bool:
    """True when `out_dir`'s manifest records this exact config (and `inputs()`, called only when a
    manifest exists) and `marker` exists there."""
    manifest = read_manifest(out_dir)
    return bool(
        manifest
        and manifest.get("config_hash") == config_hash(cfg)
        and (inputs is None or manifest.get("inputs") == inputs())
        and (marker is None or (Path(out_dir) / marker).exists())
    )


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """Return the manifest of `out_dir`, or None when there is none."""
    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def temp_prefix(path: str | Path) -> str:
    """Prefix of a temp file/folder beside `path` (`.NAME.<pid>.`); temps of `path` whose process is gone
    (a killed run) are removed first."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]+\.tmp")
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            m = pattern.fullmatch(entry.name)
            if m and not _pid_alive(int(m.group(1))):
                log.info("removing %s, left by a killed run", entry.path)
                _remove(Path(entry.path))
    return f".{path.name}.{os.getpid()}."


def clear_leftovers(path: str | Path) -> None:
    """Settle what a killed swap of `path` left: the old folder moved aside is deleted when the new one came
    in, else moved back; dead temps beside `path` are removed."""
    path = Path(path)
    old = _aside(path)
    if os.path.lexists(old):
        if os.path.lexists(path):
            log.info("removing %s, the old %s a killed run had moved aside", old, path.name)
            _remove(old)
        else:
            log.info("restoring %s: a killed run moved it aside and the new one never came in", path)
            os.replace(old, path)
    temp_prefix(path)


def swap_in(new: str | Path, out: str | Path) -> None:
    """Replace `out` by `new` (same folder): the old one is moved aside, the new one renamed in, then the old
    one deleted, so a kill at any point leaves one of them whole at `out` or aside (see clear_leftovers)."""
    new, out = Path(new), Path(out)
    clear_leftovers(out)
    old = _aside(out)
    had_old = os.path.lexists(out)
    if had_old:
        os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        if had_old:
            os.replace(old, out)
        raise
    _fsync_dir(out.parent)
    if had_old:
        _remove(old)


@contextlib.contextmanager
def staged_dir(out: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `out`; on success its files are synced to disk and it is swapped in for `out`
    (swap_in), so a crash after the swap cannot leave a published folder with unwritten data; on error deleted."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(out)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clear_manifest(out_dir: str | Path) -> None:
    """Remove `out_dir`'s manifest before a stage changes the folder in place: until the new one is written
    last, the folder records no finished run."""
    (Path(out_dir) / MANIFEST).unlink(missing_ok=True)


def file_sizes(folder: str | Path) -> dict[str, int]:
    """Size of every file under `folder` by relative path (its manifest left out)."""
    root = Path(folder)
    return {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST
    }


def files_intact(folder: str | Path, sizes: dict[str, int] | None) -> bool:
    """True when every file recorded in `sizes` is under `folder` with that size."""
    root = Path(folder)
    return sizes is not None and all(
        (root / name).is_file() and (root / name).stat().st_size == size for name, size in sizes.items()
    )
