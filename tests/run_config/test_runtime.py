"""Atomic writes and seeding."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from run_config.runtime import AtomicFileSet, atomic_open, read_manifest, set_seed, write_manifest


def test_atomic_open_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_open_replaces(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_open(target) as f:
        f.write("new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_file_set_all_or_nothing(tmp_path):
    with pytest.raises(ValueError):
        with AtomicFileSet() as files:
            files.get(tmp_path / "a.jsonl").write("x\n")
            files.get(tmp_path / "sub" / "b.jsonl").write("y\n")
            raise ValueError
    assert not (tmp_path / "a.jsonl").exists() and not list((tmp_path / "sub").iterdir())
    with AtomicFileSet() as files:
        files.get(tmp_path / "a.jsonl").write("x\n")
    assert (tmp_path / "a.jsonl").read_text() == "x\n"


def test_set_seed_is_deterministic():
    set_seed(21)
    a = (random.random(), np.random.rand())
    set_seed(21)
    assert a == (random.random(), np.random.rand())
    with pytest.raises(ValueError):
        set_seed(-1)


def test_manifest_roundtrip(tmp_path):
    write_manifest(tmp_path, "demo", {"k": 1}, extra="x")
    m = read_manifest(tmp_path)
    assert m["stage"] == "demo" and m["config"] == {"k": 1} and m["extra"] == "x" and "python" in m["versions"]


def test_fingerprint_follows_model_folders_and_names(tmp_path):
    from run_config.runtime import fingerprint

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    first = fingerprint([model, "meta-llama/Meta-Llama-3-8B", None])
    assert first[1] == ["meta-llama/Meta-Llama-3-8B", None, None] and len(first) == 2
    write_manifest(model, "train", {"a": 1})  # a finished (re)training writes its manifest last
    assert fingerprint([model])[0][1] == (model / "manifest.json").stat().st_size
    assert fingerprint([model]) != first[:1]


def test_a_folder_without_manifest_counts_by_every_file(tmp_path):
    from run_config.runtime import fingerprint

    model = tmp_path / "downloaded"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"1234")
    before = fingerprint([model])
    assert [name for name, _, _ in before[0][1]] == ["config.json", "model.safetensors"]
    (model / "model.safetensors").write_bytes(b"123456")  # weights replaced, config.json untouched
    assert fingerprint([model]) != before


def test_inputs_fingerprint_reads_the_input_fields_of_a_config(tmp_path):
    from typing import ClassVar

    from run_config.loader import StageConfig
    from run_config.runtime import fingerprint, inputs_fingerprint

    class Demo(StageConfig):
        INPUT_FIELDS: ClassVar[tuple[str, ...]] = ("data", "models", "extra")
        data: str
        models: list[str]
        extra: str | None = None
        seed: int = 1

    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    cfg = Demo(data=str(data), models=["asset:m", "hub/model"])
    assert inputs_fingerprint(cfg) == fingerprint([data, "asset:m", "hub/model"])
    resolved = inputs_fingerprint(cfg, lambda n: str(data) if n == "asset:m" else n)
    assert resolved[1] == [str(data), data.stat().st_size, data.stat().st_mtime_ns]


def test_config_hash_leaves_force_out():
    from run_config.loader import StageConfig
    from run_config.runtime import config_hash

    class Demo(StageConfig):
        seed: int = 1
        force: bool = False

    cfg = Demo()
    assert config_hash(cfg.model_copy(update={"force": True})) == config_hash(cfg)
    assert config_hash(cfg.model_copy(update={"seed": 7})) != config_hash(cfg)


# --- folder swaps and leftovers of killed runs ---

_KILL_AT = """
import os, shutil, signal, sys
from pathlib import Path
from run_config import runtime

out, kill_at = Path(sys.argv[1]), int(sys.argv[2])
calls = [0]

def dying(fn):
    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapped

os.replace, shutil.rmtree = dying(os.replace), dying(shutil.rmtree)  # the swap: out aside, new in, old deleted
with runtime.staged_dir(out) as tmp:
    (tmp / "weights.bin").write_text("new")
    if kill_at == 0:
        os.kill(os.getpid(), signal.SIGKILL)  # killed while building the new folder
    (tmp / "manifest.json").write_text("new")
"""


def _folder(path, tag):
    path.mkdir(exist_ok=True)
    for name in ("weights.bin", "manifest.json"):
        (path / name).write_text(tag)


def _holds(path):
    """'old' or 'new' when `path` is a complete folder of that version, else None."""
    texts = {(path / n).read_text() if (path / n).is_file() else None for n in ("weights.bin", "manifest.json")}
    return texts.pop() if len(texts) == 1 else None


@pytest.mark.parametrize("kill_at,expected", [(0, "old"), (1, "old"), (2, "old"), (3, "new")])
def test_swap_killed_at_each_step_leaves_one_whole_folder(tmp_path, kill_at, expected):
    import subprocess
    import sys

    from run_config.runtime import clear_leftovers
    from tests.conftest import REPO_ROOT

    out = tmp_path / "model"
    _folder(out, "old")
    proc = subprocess.run([sys.executable, "-c", _KILL_AT, str(out), str(kill_at)], cwd=REPO_ROOT)
    assert proc.returncode == -9
    aside = tmp_path / ".model.old"
    assert _holds(out) in ("old", "new") or (not out.exists() and _holds(aside) == "old")  # never a torn folder
    left = [
        p.name for p in tmp_path.iterdir() if p.name != "model"
    ]  # the new one half-built or unswapped, the old aside
    assert left and all(n == ".model.old" or (n.startswith(".model.") and n.endswith(".tmp")) for n in left)
    clear_leftovers(out)
    assert _holds(out) == expected and [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize("fail_at,expected", [(1, "old"), (2, "old"), (3, "new")])
def test_swap_failing_at_each_step_keeps_old_or_new(tmp_path, monkeypatch, fail_at, expected):
    import os
    import shutil

    from run_config import runtime

    out = tmp_path / "model"
    _folder(out, "old")
    calls = [0]

    def failing(fn):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == fail_at:
                raise OSError("injected")
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(runtime.os, "replace", failing(os.replace))
    monkeypatch.setattr(runtime.shutil, "rmtree", failing(shutil.rmtree))
    with pytest.raises(OSError, match="injected"):
        with runtime.staged_dir(out) as tmp:
            _folder(tmp, "new")
    monkeypatch.undo()
    assert _holds(out) == expected
    runtime.clear_leftovers(out)
    assert _holds(out) == expected and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_swap_over_nothing_and_restore_of_a_folder_moved_aside(tmp_path):
    from run_config.runtime import clear_leftovers, staged_dir

    with staged_dir(tmp_path / "a" / "model") as tmp:
        _folder(tmp, "new")
    assert _holds(tmp_path / "a" / "model") == "new"
    _folder(tmp_path / ".m.old", "old")  # killed after moving m aside, before the new one came in
    clear_leftovers(tmp_path / "m")
    assert _holds(tmp_path / "m") == "old" and not (tmp_path / ".m.old").exists()


def test_a_staged_folder_reaches_the_disk_before_it_is_published(tmp_path, monkeypatch):
    from run_config import runtime

    out, synced = tmp_path / "model", []

    def fsync(fd):
        synced.append((Path(os.readlink(f"/proc/self/fd/{fd}")).name, out.exists()))
        return real(fd)

    real = os.fsync
    monkeypatch.setattr(runtime.os, "fsync", fsync)
    with runtime.staged_dir(out) as tmp:
        (tmp / "shards").mkdir()
        (tmp / "shards" / "model.safetensors").write_bytes(b"x" * 4096)
        (tmp / "config.json").write_text("{}")
    names = [name for name, _ in synced]
    assert {"model.safetensors", "config.json", "shards"} <= set(names)
    assert not any(published for name, published in synced if name in ("model.safetensors", "config.json"))
    assert (out / "shards" / "model.safetensors").read_bytes() == b"x" * 4096


def test_dead_runs_temps_are_removed_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = tmp_path / f".out.json.{dead}.k3j_x9ab.tmp"
    stale_dir = tmp_path / f".out.json.{dead}.q1w2e3r4.tmp"
    live = tmp_path / f".out.json.{os.getpid()}.abcd1234.tmp"
    other = tmp_path / f".out.json.bak.{dead}.abcd1234.tmp"  # a temp of another file, out.json.bak
    for p in (stale, live, other):
        p.write_text("partial")
    stale_dir.mkdir()
    (stale_dir / "x").write_text("partial")
    with atomic_open(tmp_path / "out.json") as f:
        f.write("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "out.json"])


def test_file_sizes_and_intact(tmp_path):
    from run_config.runtime import file_sizes, files_intact

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(b"12345")
    write_manifest(tmp_path, "demo", {"k": 1})
    sizes = file_sizes(tmp_path)
    assert sizes == {"sub/a.bin": 5} and files_intact(tmp_path, sizes)
    (tmp_path / "sub" / "a.bin").write_bytes(b"123")
    assert not files_intact(tmp_path, sizes) and not files_intact(tmp_path, None)


# --- seeding: every stage seeds in its work function, the one Python callers use ---

_WORK = {  # stage -> (module of its work function, the function, its config class, minimal config)
    "preprocess": ("dataset.preprocess", "preprocess", "dataset.config:PreprocessConfig", {"input": ["IN"]}),
    "cluster": ("clustering.cluster", "cluster", "clustering.config:ClusterConfig", {"input": "IN"}),
    "train": ("training.sft.trainer", "train", "training.sft.config:TrainConfig", {"model_name_or_path": "m"}),
    "distill": (
        "training.dskd.trainer",
        "run",
        "training.dskd.config:DSKDConfig",
        {"teacher_model": "t", "data_path_train": "IN"},
    ),
    "merge": ("training.moe.merge", "merge", "training.moe.config:MergeConfig", {"experts": ["e0", "e1"]}),
    "convert": (
        "training.moe.mergoo",
        "convert",
        "training.moe.config:ConvertConfig",
        {"format": "mergoo", "input": "IN"},
    ),
    "finetune-router": (
        "training.moe.finetune_router",
        "finetune_router",
        "training.moe.config:FinetuneRouterConfig",
        {"moe_dir": "m", "train_file": "IN"},
    ),
    "train-reward": (
        "inference.reward.train",
        "run",
        "inference.reward.config:RewardConfig",
        {"policy_model": "m", "train": "IN", "valid": "IN"},
    ),
    "infer": ("inference.infer", "run", "inference.config:InferConfig", {"model": "m", "input": "IN"}),
    "evaluate": (
        "evaluation.evaluate",
        "evaluate",
        "evaluation.config:EvaluateConfig",
        {"predictions": "IN", "references": "IN"},
    ),
}


class _Seeded(Exception):
    pass


def test_every_seeded_stage_is_listed():
    from main import STAGES

    assert set(_WORK) == set(STAGES) - {"pipeline"}  # pipeline runs the others, each seeding itself


@pytest.mark.parametrize("stage", sorted(_WORK))
def test_the_work_function_seeds_before_any_work(stage, tmp_path, monkeypatch):
    """Seeding in the CLI left Python callers of the work function unseeded: it now comes first in it."""
    import importlib

    module_name, func, config, fields = _WORK[stage]
    module = importlib.import_module(module_name)
    config_module, config_class = config.split(":")
    model = getattr(importlib.import_module(config_module), config_class)
    values = {
        k: ([str(tmp_path / "none.jsonl")] if v == ["IN"] else str(tmp_path / "none.jsonl") if v == "IN" else v)
        for k, v in fields.items()
    }
    cfg = model.model_validate({**values, "output_dir": str(tmp_path / "out"), "seed": 7})

    def seeded(seed, **_):
        raise _Seeded(seed)

    monkeypatch.setattr(module, "set_seed", seeded)
    with pytest.raises(_Seeded) as e:
        getattr(module, func)(cfg)
    assert e.value.args == (7,) and not (tmp_path / "out").exists()
