"""training/moe/finetune_router.py: only router tensors change; trainable count asserted; CLI and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main as toolkit_main
from run_config.errors import ConfigError
from tests.conftest import REPO_ROOT
from tests.helpers.launcher import DEEPSPEED, run_launcher
from tests.helpers.pico import perturbed_copy, pico_llama, write_minilm_clusters
from training.moe.config import MergeConfig
from training.moe.finetune_router import freeze_all_but_router
from training.moe.merge import merge
from training.moe.routing import load_routed_moe
from training.moe.safetensors_stream import CheckpointReader


@pytest.fixture(scope="module")
def setup(tmp_path_factory, wordnet_lexicon) -> dict[str, Path]:
    """A 3-expert pico MoE and 40 real WordNet records (train) + 16 (valid), in the pico vocabulary or not."""
    root = tmp_path_factory.mktemp("router")
    base = pico_llama(root / "base", seed=0)
    experts = [perturbed_copy(base, root / f"e{i}", seed=i, scale=0.2) for i in range(3)]
    merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(root / "moe")))
    lines = (wordnet_lexicon / "train.jsonl").read_text().splitlines()
    (root / "train.jsonl").write_text("\n".join(lines[:40]) + "\n")
    (root / "valid.jsonl").write_text("\n".join(lines[40:56]) + "\n")
    return {"root": root, "moe": root / "moe"}


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    reader = CheckpointReader(folder)
    return {k: reader.read(k) for k in reader.info}


@pytest.mark.parametrize("policy", ["token", "hard-sequence", "soft-sequence"])
def test_only_router_tensors_change(setup, tmp_path, policy):
    out = tmp_path / "ft"
    code = toolkit_main.main(
        [
            "finetune-router",
            "--moe-dir",
            str(setup["moe"]),
            "--train-file",
            str(setup["root"] / "train.jsonl"),
            "--valid-file",
            str(setup["root"] / "valid.jsonl"),
            "--output-dir",
            str(out),
            "--policy",
            policy,
            "--learning-rate",
            "1e-2",
            "--batch-size",
            "4",
            "--top-k",
            "1",
        ]
    )
    assert code == 0
    before, after = _tensors(setup["moe"]), _tensors(out)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"model.layers.{i}.block_sparse_moe.gate.weight" for i in range(2)}
    routing = json.loads((out / "routing.json").read_text())
    info = routing["router_finetune"]
    assert routing["policy"] == policy and info["steps"] == 10 and info["valid_loss_after"] is not None
    assert load_routed_moe(out).policy == policy


def test_trainable_count_is_asserted(setup):
    moe = load_routed_moe(setup["moe"], policy="token")
    params = freeze_all_but_router(moe)
    assert sum(p.numel() for p in params) == 2 * 3 * 32
    assert sum(p.numel() for p in moe.model.parameters() if p.requires_grad) == 2 * 3 * 32
    moe.model.model.norm.weight.requires_grad_(True)
    moe.router_parameters = lambda: {"model.model.norm.weight": moe.model.model.norm.weight}
    with pytest.raises(AssertionError, match="expected 192"):
        freeze_all_but_router(moe)


def test_domain_policy_has_nothing_to_train(setup, tmp_path, capsys):
    code = toolkit_main.main(
        [
            "finetune-router",
            "--moe-dir",
            str(setup["moe"]),
            "--train-file",
            str(setup["root"] / "train.jsonl"),
            "--output-dir",
            str(tmp_path / "ft"),
        ]
    )
    assert code == 2 and "no trainable router" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()
    with pytest.raises(ConfigError):
        load_routed_moe(setup["moe"]).router_parameters()


def test_bad_train_file_names_the_line(setup, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"term": "x", "context": "y", "definition": "z", "split": "train"}\n{"term": 3}\n')
    code = toolkit_main.main(
        [
            "finetune-router",
            "--moe-dir",
            str(setup["moe"]),
            "--train-file",
            str(bad),
            "--output-dir",
            str(tmp_path / "ft"),
            "--policy",
            "token",
        ]
    )
    assert code == 1 and f"{bad}:2: term" in capsys.readouterr().err


def test_learned_domain_cli_reports_agreement(setup, tmp_path, minilm_dir):
    pytest.importorskip("clustering.assign")
    from dataset.records import load_records

    records = load_records(setup["root"] / "train.jsonl") + load_records(setup["root"] / "valid.jsonl")
    write_minilm_clusters(tmp_path / "clusters", [(r.term, r.context) for r in records], 3, minilm_dir)
    experts = json.loads((setup["moe"] / "routing.json").read_text())["experts"]
    moe_dir = tmp_path / "moe"
    merge(MergeConfig(experts=experts, output_dir=str(moe_dir), cluster_dir=str(tmp_path / "clusters")))
    out = tmp_path / "ft"
    assert (
        toolkit_main.main(
            [
                "finetune-router",
                "--moe-dir",
                str(moe_dir),
                "--train-file",
                str(setup["root"] / "train.jsonl"),
                "--valid-file",
                str(setup["root"] / "valid.jsonl"),
                "--output-dir",
                str(out),
                "--policy",
                "learned-domain",
            ]
        )
        == 0
    )
    clf = json.loads((out / "routing.json").read_text())["domain_classifier"]
    assert 0 <= clf["valid_agreement"] <= 1 and clf["train_accuracy"] > 0
    assert _tensors(out).keys() == _tensors(moe_dir).keys()
    moe = load_routed_moe(out)
    assert moe.policy == "learned-domain" and len(moe.domains_for([(r.term, r.context) for r in records[:3]])) == 3


@pytest.mark.skipif(not DEEPSPEED.is_file(), reason="deepspeed launcher not installed")
@pytest.mark.parametrize(("policy", "checkpointing"), [("token", True), ("hard-sequence", False)])
def test_zero3_through_the_launcher_trains_only_the_routers(setup, tmp_path, policy, checkpointing):
    """`deepspeed --num_gpus 2 --module training.moe.finetune_router --deepspeed <ZeRO-3>`: the MoE partitioned over
    2 CPU ranks, the trainable count taken from the partitions, the export consolidated."""
    out = tmp_path / "ft"
    ds = json.loads((REPO_ROOT / "run_config" / "ds_zero3.json").read_text())
    # persistence 0: the routers too live as partitions (numel() 0 on every rank; the count reads ds_numel)
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    argv = ["--module", "training.moe.finetune_router", "--moe-dir", str(setup["moe"])]
    argv += ["--train-file", str(setup["root"] / "train.jsonl"), "--valid-file", str(setup["root"] / "valid.jsonl")]
    argv += ["--output-dir", str(out), "--policy", policy, "--top-k", "2", "--learning-rate", "1e-2"]
    argv += ["--batch-size", "4", "--aux-loss-coef", "0.5", "--deepspeed", str(tmp_path / "ds.json")]
    proc = run_launcher([*argv, "--gradient-checkpointing" if checkpointing else "--no-gradient-checkpointing"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    before, after = _tensors(setup["moe"]), _tensors(out)
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}  # whole tensors
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"model.layers.{i}.block_sparse_moe.gate.weight" for i in range(2)}
    info = json.loads((out / "routing.json").read_text())["router_finetune"]
    assert (info["world_size"], info["zero_stage"], info["steps"]) == (2, 3, 5)  # 40 rows / (4 x 2 ranks)
    assert info["trainable_parameters"] == 2 * 3 * 32 and info["gradient_checkpointing"] is checkpointing
    assert ("aux_loss_last" in info) is (policy == "token") and info["valid_loss_after"] is not None
    assert not (tmp_path / ".ft.trainer").exists() and load_routed_moe(out).policy == policy
