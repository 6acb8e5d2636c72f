"""Stream tensors through safetensors: lazy per-tensor reads from (sharded) checkpoints, planned shard writes.

Reads parse each shard's header once and then read one tensor's bytes with plain file reads (no mapping:
page faults on a mapped shard cost more than the copy itself); writes know every tensor's name, dtype and
shape up front, write each shard's header first and then the tensor bytes one at a time, so memory holds one
tensor, never a shard. A tensor that goes out unchanged is copied file to file in the kernel
(`copy_file_range`), never through Python.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

from run_config.errors import DataError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """Return the safetensors name of a torch dtype."""
    return _NAMES[dtype]


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and dtype of one stored tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


class CheckpointReader:
    """The safetensors tensors of one HF folder (single file or index + shards), read one at a time."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = self.folder / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise DataError(str(index), None, "weight_map", f"unreadable shard index: {e}") from None
            files = sorted(set(weight_map.values()))
        elif (self.folder / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
        else:
            raise DataError(str(self.folder), None, None, f"no {SINGLE_FILE} or {INDEX_FILE} (safetensors checkpoint)")
        self.file_of: dict[str, Path] = {}
        self.info: dict[str, TensorInfo] = {}
        self.offset: dict[str, int] = {}
        for name in files:
            path = self.folder / name
            if not path.is_file():
                raise DataError(str(path), None, None, "shard named in the index is missing")
            self._read_header(path)

    def _read_header(self, path: Path) -> None:
        """Record name, dtype, shape and absolute byte offset of every tensor of one shard; refuse a bad header."""
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else size
            if length > size - 8:
                raise DataError(str(path), None, None, "not a safetensors file (header length beyond the file)")
            try:
                header = json.loads(f.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(str(path), None, None, f"unreadable safetensors header: {e}") from None
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            try:
                dtype, shape, (begin, end) = _DTYPES.get(meta["dtype"]), tuple(meta["shape"]), meta["data_offsets"]
            except (TypeError, KeyError, ValueError):
                raise DataError(str(path), None, key, "header entry lacks dtype, shape or data_offsets") from None
            if dtype is None:
                raise DataError(str(path), None, key, f"unsupported dtype {meta['dtype']}")
            info = TensorInfo(key, shape, dtype)
            if end - begin != info.nbytes or 8 + length + end > size:
                raise DataError(str(path), None, key, "data offsets do not match its shape or lie beyond the file")
            self.info[key], self.file_of[key], self.offset[key] = info, path, 8 + length + begin

    def __contains__(self, name: str) -> bool:
        return name in self.info

    def read(self, name: str) -> torch.Tensor:
        """Load one tensor into memory of its own."""
        info = self.info[name]
        buf = torch.empty(info.nbytes, dtype=torch.uint8)
        with open(self.file_of[name], "rb", buffering=0) as f:
            f.seek(self.offset[name])
            view, done = memoryview(buf.numpy()), 0
            while done < info.nbytes:
                got = f.readinto(view[done:])
                if not got:
                    raise DataError(str(self.file_of[name]), None, name, "file ends inside the tensor")
                done += got
        return buf.view(info.dtype).reshape(info.shape)

    def copy_to(self, name: str, out_fd: int) -> None:
        """Append one tensor's bytes to the open file `out_fd` at its current position, in the kernel."""
        count, offset = self.info[name].nbytes, self.offset[name]
        with open(self.file_of[name], "rb", buffering=0) as f:
            while count:
                try:
                    n = os.copy_file_range(f.fileno(), out_fd, count, offset)
                except OSError:  # e.g. across filesystems on old kernels: copy through user space
                    f.seek(offset)
                    n = os.write(out_fd, f.read(min(count, 64 << 20)))
                if not n:
                    raise DataError(str(self.file_of[name]), None, name, "file ends inside the tensor")
                count, offset = count - n, offset + n

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self.info.values())


def plan_shards(tensors: Iterable[TensorInfo], max_shard_bytes: int) -> list[list[TensorInfo]]:
    """Group tensors, in order, into shards of at most `max_shard_bytes` (a bigger tensor gets its own)."""
    shards: list[list[TensorInfo]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _header(shard: list[TensorInfo]) -> bytes:
    meta: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in shard:
        meta[t.name] = {
            "dtype": dtype_name(t.dtype),
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    raw = json.dumps(meta, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class ShardedWriter:
    """Write planned tensors, in plan order, into `model-0000i-of-0000n.safetensors` + index.

    Use `write(name, tensor)` for every planned tensor in order, then `finalize()`; as a context manager
    the open shard is closed on errors too.
    """

    def __init__(self, folder: str | Path, tensors: list[TensorInfo], max_shard_bytes: int):
        self.folder = Path(folder)
        self.shards = plan_shards(tensors, max_shard_bytes)
        n = len(self.shards)
        self.names = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self.order = [(i, t) for i, shard in enumerate(self.shards) for t in shard]
        self.pos = 0
        self._file: IO[bytes] | None = None
        self._shard = -1

    def _next(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, TensorInfo]:
        """Check that `name` is the next planned tensor, with this shape and dtype; open its shard when new."""
        shard, info = self.order[self.pos]
        if name != info.name or tuple(shape) != info.shape or dtype != info.dtype:
            raise ValueError(f"expected {info.name} {info.shape} {info.dtype}, got {name} {tuple(shape)} {dtype}")
        if shard != self._shard:
            self._close()
            self._file = open(self.folder / self.names[shard], "wb")
            self._file.write(_header(self.shards[shard]))
            self._shard = shard
        return shard, info

    def write(self, name: str, tensor: torch.Tensor) -> None:
        self._next(name, tuple(tensor.shape), tensor.dtype)
        self._file.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
        self.pos += 1

    def copy(self, name: str, reader: CheckpointReader, key: str) -> None:
        """Write planned tensor `name` as the unchanged bytes of `key` in `reader` (same shape and dtype)."""
        self._next(name, reader.info[key].shape, reader.info[key].dtype)
        self._file.flush()
        reader.copy_to(key, self._file.fileno())
        self.pos += 1

    def _close(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None

    def finalize(self) -> None:
        """Close the last shard and write the index (only when there are several shards)."""
        if self.pos != len(self.order):
            raise ValueError(f"{len(self.order) - self.pos} planned tensors were never written")
        self._close()
        if len(self.shards) > 1:
            weight_map = {t.name: self.names[i] for i, t in self.order}
            index = {"metadata": {"total_size": sum(t.nbytes for _, t in self.order)}, "weight_map": weight_map}
            (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self._close()
