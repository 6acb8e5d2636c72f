"""Run-time helpers shared by every stage: seeding, atomic writes, manifests."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import tempfile
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.json"


def set_seed(seed: int) -> int:
    """Seed Python, NumPy and torch (when installed) with one value; return it."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    import numpy as np

    np.random.seed(seed)
    with contextlib.suppress(ImportError):
        import torch

        torch.manual_seed(seed)
    return seed


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside `path`; on success fsync and rename it onto `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    """Return a short stable hash of a config (pydantic model or JSON-able object)."""
    data = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else cfg
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
    manifest = {"stage": stage, "config_hash": config_hash(cfg), "config": data,
                "versions": package_versions(), **info}
    path = Path(out_dir) / MANIFEST
    write_json(path, manifest)
    return path


def fingerprint(paths: Iterable[str | Path | None]) -> list[list]:
    """(path, size, mtime_ns) of each input, so a rerun redoes the work when an input changed. A model
    folder counts by its manifest.json (else config.json), rewritten whenever the model is; a name that
    is no local path (a hub id, an API model) by its name alone; None entries are left out."""
    out = []
    for p in paths:
        if p is None:
            continue
        path = Path(p)
        if path.is_dir():
            path = next((path / n for n in (MANIFEST, "config.json") if (path / n).is_file()), path)
        out.append([str(p), path.stat().st_size, path.stat().st_mtime_ns] if path.exists() else [str(p), None, None])
    return out


def is_finished(out_dir: str | Path, cfg: Any, inputs: Callable[[], list] | None = None,
                marker: str | None = None) -> bool:
    """True when `out_dir`'s manifest records this exact config (and `inputs()`, called only when a
    manifest exists) and `marker` exists there."""
    manifest = read_manifest(out_dir)
    return bool(manifest and manifest.get("config_hash") == config_hash(cfg)
                and (inputs is None or manifest.get("inputs") == inputs())
                and (marker is None or (Path(out_dir) / marker).exists()))


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """Return the manifest of `out_dir`, or None when there is none."""
    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
