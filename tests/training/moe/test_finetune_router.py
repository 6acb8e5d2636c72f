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
from training.moe.finetune_router import freeze_all_but_router, master_weights
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


def _router_argv(setup: dict[str, Path], out: Path, *extra: str) -> list[str]:
    argv = ["finetune-router", "--moe-dir", str(setup["moe"]), "--train-file", str(setup["root"] / "train.jsonl")]
    return [*argv, "--output-dir", str(out), "--max-records", "8", "--batch-size", "4", *extra]


def test_token_routing_trains_on_the_load_balancing_loss(setup, tmp_path):
    """The first logged loss (the first batch, before any update) is the definition loss plus coef x the
    Mixtral load-balancing loss of that batch: the same batch with coef 0 gives the definition loss alone."""
    infos = {}
    for coef in ("0", "0.5"):
        argv = _router_argv(setup, tmp_path / coef, "--policy", "token", "--top-k", "2", "--aux-loss-coef", coef)
        assert toolkit_main.main(argv) == 0
        infos[coef] = json.loads((tmp_path / coef / "routing.json").read_text())["router_finetune"]
    aux = infos["0.5"]["aux_loss_first"]
    assert aux > 0.5 and infos["0"]["aux_loss_first"] == pytest.approx(aux, abs=1e-6)  # same batch, same routers
    assert infos["0.5"]["train_loss_first"] - infos["0"]["train_loss_first"] == pytest.approx(0.5 * aux, abs=2e-4)
    assert "aux_loss_first" not in _router_info(setup, tmp_path / "seq", "--policy", "hard-sequence")


def _router_info(setup: dict[str, Path], out: Path, *extra: str) -> dict:
    assert toolkit_main.main(_router_argv(setup, out, *extra)) == 0
    return json.loads((out / "routing.json").read_text())["router_finetune"]


@pytest.mark.parametrize("policy", ["token", "hard-sequence", "soft-sequence"])
def test_bfloat16_moe_trains_float32_routers_under_autocast(setup, policy):
    """What a GPU run without DeepSpeed does (bf16 weights, bf16 autocast, float32 master routers), on the CPU's
    autocast: the dtypes meet, only the routers get gradients, and they come back in bfloat16 to be saved."""
    from dataset.records import load_records
    from training.data import encode_records, pad_batch, pad_token_id

    moe = load_routed_moe(setup["moe"], policy=policy, device="cpu", dtype="bfloat16", top_k=2)
    params = freeze_all_but_router(moe)
    assert master_weights(params, mixed=True) == torch.bfloat16 and {p.dtype for p in params} == {torch.float32}
    examples = encode_records(moe.tokenizer, load_records(setup["root"] / "train.jsonl")[:4], 64).examples
    batch = pad_batch(examples, pad_token_id(moe.tokenizer))
    moe.model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = moe.forward(pool_mask=batch["labels"] == -100, output_router_logits=policy == "token", **batch)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0 for p in params)
    assert all(p.grad is None for p in moe.model.parameters() if not p.requires_grad)


def test_settings_that_cannot_work_are_refused_before_any_work(setup, tmp_path, capsys):
    ds = ["--deepspeed", str(REPO_ROOT / "run_config" / "ds_zero3.json")]
    cases = {
        "dtype bfloat16 with deepspeed: DeepSpeed runs the weights in float32 (precision bf16 on cpu); give dtype "
        "auto": ["--policy", "token", "--dtype", "bfloat16", *ds],
        "device cuda:1: router training places rank r on cuda:r": ["--device", "cuda:1"],
        "learned-domain trains its classifier in one process: drop deepspeed": ["--policy", "learned-domain", *ds],
    }
    for message, extra in cases.items():
        assert toolkit_main.main(_router_argv(setup, tmp_path / "ft", *extra)) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "ft").exists() and not (tmp_path / ".ft.trainer").exists()


def test_router_aux_loss_coef_is_the_hf_name_of_aux_loss_coef(tmp_path):
    from run_config.loader import load_config
    from training.moe.config import FinetuneRouterConfig

    path = tmp_path / "router.json"
    path.write_text(json.dumps({"moe_dir": "m", "train_file": "t", "output_dir": "o", "router_aux_loss_coef": 0.02}))
    assert load_config(path, FinetuneRouterConfig).aux_loss_coef == 0.02
