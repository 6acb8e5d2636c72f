"""Qwen experts: pico Qwen3 -> stock Qwen3MoeForCausalLM, pico Qwen2 -> Qwen2MoeForCausalLM (shared expert off)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from run_config.errors import DataError
from tests.helpers.pico import perturbed_copy, tiny_tokenizer
from training.moe.config import MergeConfig
from training.moe.export import export_dense
from training.moe.merge import merge
from training.moe.plan import LAYOUTS
from training.moe.routing import load_routed_moe
from training.moe.safetensors_stream import CheckpointReader

LAYERS, HIDDEN = 2, 32
FAMILIES = {"qwen3": "Qwen3MoeForCausalLM", "qwen2": "Qwen2MoeForCausalLM"}


def pico_qwen(folder: Path, family: str, seed: int, **extra) -> Path:
    """A random 2-layer Qwen3 (q/k norms, head_dim 16) or Qwen2 (q/k/v biases) with the tiny tokenizer, GQA,
    untied embeddings."""
    import transformers

    torch.manual_seed(seed)
    name = {"qwen3": "Qwen3", "qwen2": "Qwen2"}[family]
    cfg = getattr(transformers, f"{name}Config")(
        vocab_size=64,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        **({"head_dim": 16} if family == "qwen3" else {}),
        **extra,
    )
    getattr(transformers, f"{name}ForCausalLM")(cfg).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory) -> tuple[str, Path, list[Path]]:
    root = tmp_path_factory.mktemp(request.param)
    base = pico_qwen(root / "base", request.param, seed=0)
    return request.param, base, [perturbed_copy(base, root / f"e{i}", seed=10 + i, scale=0.05) for i in range(3)]


def _ids() -> torch.Tensor:
    return torch.tensor([[1, 20, 13, 14, 15, 16, 21, 5], [1, 22, 13, 14, 15, 17, 23, 5]])


def _stock(folder: Path, name: str):
    import transformers

    model, info = getattr(transformers, name).from_pretrained(folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


def _dense_logits(folder: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(folder).eval()(_ids()).logits


def test_identical_experts_give_the_dense_logits_under_every_policy(family, tmp_path):
    name, base, _ = family
    out = tmp_path / "moe"
    merge(MergeConfig(experts=[str(base)] * 3, output_dir=str(out), top_k=2))
    dense = _dense_logits(base)
    stock = _stock(out, FAMILIES[name])  # the stock class loads every tensor, nothing missing or left over
    assert type(stock).__name__ == FAMILIES[name] and stock.config.num_experts == 3
    assert f'from_pretrained("moe")  # {FAMILIES[name]}' in (out / "README.md").read_text(encoding="utf-8")
    with torch.no_grad():
        torch.testing.assert_close(stock(_ids()).logits, dense, atol=1e-5, rtol=1e-5)
    moe = load_routed_moe(out)
    assert moe.num_experts == 3 and moe.top_k == 2
    for policy in ("token", "soft-sequence", "hard-sequence"):
        moe.set_policy(policy)
        with torch.no_grad():
            torch.testing.assert_close(moe.forward(input_ids=_ids()).logits, dense, atol=1e-5, rtol=1e-5)
    moe.set_policy("domain")
    with torch.no_grad(), moe.route([2, 0]):
        torch.testing.assert_close(moe.forward(input_ids=_ids()).logits, dense, atol=1e-5, rtol=1e-5)


def test_expert_slots_hold_the_dense_ffns_and_export_back(family, tmp_path):
    """Expert e's slot holds expert e's FFN under the family's names; routing to one expert gives that dense
    model's logits, and its dense export is that model again."""
    name, _, experts = family
    out = tmp_path / "moe"
    merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(out), shared_params="expert", shared_expert=1))
    layout = LAYOUTS[name]
    reader = CheckpointReader(out)
    for layer in range(LAYERS):
        assert reader.info[layout.router_key(layer)].shape == (3, HIDDEN)
        for e, folder in enumerate(experts):
            dense = load_file(folder / "model.safetensors")
            for proj in ("gate_proj", "up_proj", "down_proj"):
                key = f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight"
                assert torch.equal(reader.read(key), dense[f"model.layers.{layer}.mlp.{proj}.weight"])
    if name == "qwen2":
        assert reader.info["model.layers.0.mlp.shared_expert.down_proj.weight"].shape == (HIDDEN, 0)
        assert not reader.read("model.layers.0.mlp.shared_expert_gate.weight").any()
    moe = load_routed_moe(out, policy="domain")
    with torch.no_grad(), moe.route([1, 1]):
        torch.testing.assert_close(moe.forward(input_ids=_ids()).logits, _dense_logits(experts[1]), atol=1e-5, rtol=0)
    exported = export_dense(out, 1, tmp_path / "expert_1")
    assert sorted(load_file(exported / "model.safetensors")) == sorted(load_file(experts[1] / "model.safetensors"))
    torch.testing.assert_close(_dense_logits(exported), _dense_logits(experts[1]), atol=1e-6, rtol=0)


def test_mixed_families_and_sliding_windows_are_refused(family, tmp_path):
    name, base, _ = family
    other = pico_qwen(tmp_path / "other", "qwen2" if name == "qwen3" else "qwen3", seed=0)
    with pytest.raises(DataError, match="model_type: expert 1 has"):
        merge(MergeConfig(experts=[str(base), str(other)], output_dir=str(tmp_path / "moe")))
    windowed = pico_qwen(tmp_path / "windowed", name, seed=0, use_sliding_window=True, sliding_window=16)
    with pytest.raises(DataError, match="use_sliding_window: sliding-window Qwen experts are not supported"):
        merge(MergeConfig(experts=[str(windowed)] * 2, output_dir=str(tmp_path / "moe")))
    assert not (tmp_path / "moe").exists()


def test_finetune_router_trains_only_the_qwen_routers(family, tmp_path, wordnet_lexicon):
    """Token routing with the load-balancing loss: the routers change, every other tensor (Qwen2-MoE's shared
    expert included) is saved as it was."""
    import main as toolkit_main

    name, _, experts = family
    moe = tmp_path / "moe"
    merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(moe)))
    lines = (wordnet_lexicon / "train.jsonl").read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:16]) + "\n")
    out = tmp_path / "ft"
    argv = ["finetune-router", "--moe-dir", str(moe), "--train-file", str(tmp_path / "train.jsonl")]
    argv += ["--output-dir", str(out), "--policy", "token", "--learning-rate", "1e-2", "--batch-size", "4"]
    assert toolkit_main.main(argv) == 0
    before, after = CheckpointReader(moe), CheckpointReader(out)
    assert before.info.keys() == after.info.keys()
    changed = {k for k in before.info if not torch.equal(before.read(k), after.read(k))}
    assert changed == {LAYOUTS[name].router_key(i) for i in range(LAYERS)}
    _stock(out, FAMILIES[name])
