"""training/moe/mergoo.py (convert --format mergoo) and the mergoo routing policy, on pico mergoo folders."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import main as toolkit_main
from dataset.records import load_records
from inference.backend import Request, Sampling
from inference.local import LocalBackend
from inference.tasks import build_items, item_prompt
from run_config.errors import ConfigError
from tests.helpers.pico import perturbed_copy, pico_llama
from training.moe.config import MergeConfig
from training.moe.merge import merge
from training.moe.routing import load_routed_moe

PROJ = ("gate_proj", "up_proj", "down_proj")
IDS = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11, 12], [1, 13, 14, 15, 16, 17, 18, 19, 20]])
_FFN = re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.weight$")


def write_mergoo(
    out: Path,
    experts: list[Path],
    top_k: int = 2,
    router_layers: tuple[str, ...] = PROJ,
    router_layers_index: list[int] | None = None,
    gate_std: float = 1.0,
    seed: int = 0,
    drop: tuple[str, ...] = (),
) -> Path:
    """The original code's MoE folder from dense experts: routed projections keep each expert's weight under
    `mlp.P.experts.E`, with a router `mlp.P.gate` [E, in]; every other tensor is the experts' mean."""
    dense = [load_file(e / "model.safetensors") for e in experts]
    config = json.loads((experts[0] / "config.json").read_text())
    layers = router_layers_index if router_layers_index is not None else list(range(config["num_hidden_layers"]))
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for key in dense[0]:
        m = _FFN.match(key)
        if m and int(m[1]) in layers and m[2] in router_layers:
            prefix = f"model.layers.{m[1]}.mlp.{m[2]}"
            for e, d in enumerate(dense):
                tensors[f"{prefix}.experts.{e}.weight"] = d[key]
            tensors[f"{prefix}.gate.weight"] = torch.randn(len(dense), dense[0][key].shape[1], generator=gen) * gate_std
        else:
            tensors[key] = sum(d[key] for d in dense) / len(dense)
    out.mkdir(parents=True)
    save_file({k: v for k, v in tensors.items() if k not in drop}, out / "model.safetensors", metadata={"format": "pt"})
    config.update(
        num_experts=len(dense),
        num_experts_per_tok=top_k,
        router_layers=list(router_layers),
        router_layers_index=router_layers_index,
    )
    (out / "config.json").write_text(json.dumps(config))
    for f in experts[0].glob("*"):
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, out / f.name)
    return out


class ReferenceMoeLayer(nn.Module):
    """The original MoE linear layer: raw-logit top-k, softmax over the k, sum of the chosen experts' outputs."""

    def __init__(self, gate: torch.Tensor, experts: list[torch.Tensor], k: int):
        super().__init__()
        self.k = k
        self.gate = nn.Linear(gate.shape[1], gate.shape[0], bias=False)
        self.gate.weight.data.copy_(gate)
        self.experts = nn.ModuleList(nn.Linear(w.shape[1], w.shape[0], bias=False) for w in experts)
        for linear, w in zip(self.experts, experts, strict=True):
            linear.weight.data.copy_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, selected = torch.topk(self.gate(x), self.k)
        weights = F.softmax(weights, dim=2, dtype=torch.float).to(x.dtype)
        out = torch.zeros(*x.shape[:2], self.experts[0].out_features, dtype=x.dtype)
        for ix, expert in enumerate(self.experts):
            b, t, slot = torch.where(selected == ix)
            out[b, t] += expert(x[b, t]) * weights[b, t, slot, None]
        return out


def reference_model(folder: Path) -> nn.Module:
    """A Llama whose routed FFN projections are ReferenceMoeLayers, built straight from a mergoo folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((folder / "config.json").read_text())
    tensors = load_file(folder / "model.safetensors")
    model = LlamaForCausalLM(LlamaConfig(**config)).eval()
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in tensors.items() if ".experts." not in k}, strict=False
    )
    assert all(".mlp." in k for k in missing) and all(k.endswith(".gate.weight") for k in unexpected)
    layers = config["router_layers_index"] or range(config["num_hidden_layers"])
    for layer in layers:
        mlp = model.model.layers[layer].mlp
        for proj in config["router_layers"]:
            prefix = f"model.layers.{layer}.mlp.{proj}"
            experts = [tensors[f"{prefix}.experts.{e}.weight"] for e in range(config["num_experts"])]
            setattr(
                mlp, proj, ReferenceMoeLayer(tensors[f"{prefix}.gate.weight"], experts, config["num_experts_per_tok"])
            )
    return model


def convert(src: Path, out: Path, *extra: str) -> int:
    return toolkit_main.main(["convert", "--format", "mergoo", "--input", str(src), "--output-dir", str(out), *extra])


@pytest.fixture(scope="module")
def pico(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pico_mergoo")
    base = pico_llama(root / "base", seed=0)
    experts = [perturbed_copy(base, root / f"e{i}", seed=i + 1, scale=0.5) for i in range(3)]
    return {"root": root, "base": base, **{f"e{i}": e for i, e in enumerate(experts)}}


def _logits(model: nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _greedy(model: Path, records: list) -> dict[str, tuple[str, float]]:
    """infer's local backend, greedy, on real records: item id -> (text, log-likelihood)."""
    backend = LocalBackend.from_path(str(model), device="cpu", batch_size=2)
    items = build_items("word_interpretation", records, list(range(1, len(records) + 1)), 42)
    requests = [
        Request(i.id, i.term, i.context, item_prompt("word_interpretation", i, backend.bos_token)) for i in items
    ]
    return {g.item_id: (g.text, g.logprob) for g in backend.generate(requests, Sampling(greedy=True, max_new_tokens=6))}


def test_identical_experts_give_the_dense_logits_and_greedy_output(pico, tmp_path, wordnet_lexicon, capsys):
    src = write_mergoo(tmp_path / "mergoo", [pico["base"]] * 3)
    assert convert(src, tmp_path / "moe") == 0
    assert "3 experts, 6 routers (0 initialised)" in capsys.readouterr().out
    moe = load_routed_moe(tmp_path / "moe")
    assert moe.policy == "mergoo" and moe.top_k == 2
    from transformers import AutoModelForCausalLM

    dense = AutoModelForCausalLM.from_pretrained(str(pico["base"])).eval()
    torch.testing.assert_close(_logits(moe.model), _logits(dense), rtol=1e-5, atol=1e-5)
    records = load_records(wordnet_lexicon / "test.jsonl")[:3]
    routed, plain = _greedy(tmp_path / "moe", records), _greedy(pico["base"], records)
    assert len(routed) == 3 and {k: t for k, (t, _) in routed.items()} == {k: t for k, (t, _) in plain.items()}
    for key, (_, logprob) in routed.items():
        assert logprob == pytest.approx(plain[key][1], abs=1e-4)
    greedy = dict(max_new_tokens=12, do_sample=False, pad_token_id=3, eos_token_id=None)  # tokens past EOS too
    with torch.no_grad():
        tokens = moe.generate(input_ids=IDS, **greedy)
        assert tokens.tolist() == dense.generate(input_ids=IDS, **greedy).tolist()
    assert len(tokens[:, IDS.shape[1] :].unique()) > 2


@pytest.mark.parametrize(
    "top_k,router_layers,router_layers_index",
    [(2, PROJ, None), (1, ("up_proj", "down_proj"), [1]), (3, ("down_proj",), [0])],
)
def test_different_experts_match_the_original_forward(pico, tmp_path, top_k, router_layers, router_layers_index):
    experts = [pico["e0"], pico["e1"], pico["e2"]]
    src = write_mergoo(tmp_path / "mergoo", experts, top_k, router_layers, router_layers_index)
    assert convert(src, tmp_path / "moe") == 0
    moe = load_routed_moe(tmp_path / "moe")
    reference = reference_model(src)
    picked = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: picked.append(torch.topk(mod.gate(i[0]), mod.k)[1].unique()))
        for m in reference.modules()
        if isinstance(m, ReferenceMoeLayer)
    ]
    expected = _logits(reference)
    for h in hooks:
        h.remove()
    assert len(torch.cat(picked).unique()) == 3  # every expert is chosen somewhere: the routing matters
    torch.testing.assert_close(_logits(moe.model), expected, rtol=1e-5, atol=1e-5)
    with moe.only_expert(0):  # a different forward gives different logits: the comparison has teeth
        assert (_logits(moe.model) - expected).abs().max() > 1e-2
    prompt = IDS[:1, :5]
    greedy = dict(max_new_tokens=8, do_sample=False, pad_token_id=3, eos_token_id=None)
    with torch.no_grad():
        assert (
            moe.generate(input_ids=prompt, **greedy).tolist() == reference.generate(input_ids=prompt, **greedy).tolist()
        )


def test_converted_folder_layout(pico, tmp_path):
    src = write_mergoo(tmp_path / "mergoo", [pico["e0"], pico["e1"]], router_layers_index=[1])
    assert convert(src, tmp_path / "moe") == 0
    out = tmp_path / "moe"
    routing = json.loads((out / "routing.json").read_text())
    assert routing["policy"] == "mergoo" and routing["num_experts"] == 2 and routing["top_k"] == 2
    assert routing["projection_routers"] == {
        "file": "projection_routers.safetensors",
        "layers": [1],
        "projections": list(PROJ),
    }
    assert routing["converted_from"] == {"format": "mergoo", "folder": str(src.resolve())}
    assert "num_experts" not in routing["dense_config"] and routing["dense_config"]["model_type"] == "llama"
    original = load_file(src / "model.safetensors")
    routers = load_file(out / "projection_routers.safetensors")
    assert sorted(routers) == sorted(f"model.layers.1.mlp.{p}.gate.weight" for p in PROJ)
    for key, value in routers.items():
        torch.testing.assert_close(value, original[key], rtol=0, atol=0)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mixtral" and config["num_local_experts"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "convert" and manifest["routers"] == 3 and manifest["initialised_routers"] == 0
    assert convert(src, out) == 0  # finished: nothing redone
    assert (out / "manifest.json").read_text() == json.dumps(manifest, indent=2) + "\n"


def test_a_missing_gate_is_refused_in_one_line(pico, tmp_path, capsys):
    gone = "model.layers.1.mlp.down_proj.gate.weight"
    src = write_mergoo(tmp_path / "mergoo", [pico["e0"], pico["e1"]], drop=(gone,))
    assert convert(src, tmp_path / "moe") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{src}: {gone}: router missing (1 of 6 absent)" in err[0]
    assert "--init-missing-gates" in err[0]
    assert not (tmp_path / "moe").exists()


def test_init_missing_gates_warns_and_draws_them_seeded(pico, tmp_path, caplog):
    gone = tuple(f"model.layers.{layer}.mlp.{p}.gate.weight" for layer in (0, 1) for p in PROJ)
    src = write_mergoo(tmp_path / "mergoo", [pico["e0"], pico["e1"], pico["e2"]], drop=gone[:5])
    with caplog.at_level(logging.WARNING, logger="training.moe.mergoo"):
        assert convert(src, tmp_path / "a", "--init-missing-gates") == 0
    assert "5 of 6 routers missing" in caplog.text and "routes at random" in caplog.text
    assert convert(src, tmp_path / "b", "--init-missing-gates") == 0
    a, b = (
        load_file(tmp_path / "a" / "projection_routers.safetensors"),
        load_file(tmp_path / "b" / "projection_routers.safetensors"),
    )
    for key in gone[:5]:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        assert 0.005 < float(a[key].std()) < 0.05  # N(0, initializer_range = 0.02)
    torch.testing.assert_close(a[gone[5]], load_file(src / "model.safetensors")[gone[5]], rtol=0, atol=0)
    assert "missing ones" in json.loads((tmp_path / "a" / "routing.json").read_text())["router_init"]
    moe = load_routed_moe(tmp_path / "a")
    assert torch.isfinite(_logits(moe.model)).all()


def test_a_dense_folder_is_not_a_mergoo_folder(pico, tmp_path, capsys):
    assert convert(pico["base"], tmp_path / "moe") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json: num_experts: not a mergoo MoE folder" in err[0]
    assert not (tmp_path / "moe").exists()


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda cfg, t: cfg.update(router_layers=["q_proj"]), "router_layers: 'q_proj' cannot be routed here"),
        (lambda cfg, t: cfg.update(num_experts_per_tok=4), "num_experts_per_tok: expected an integer in [1, 2]"),
        (lambda cfg, t: cfg.update(router_layers_index=[2]), "router_layers_index: expected distinct layer ids"),
        (
            lambda cfg, t: t.update({"model.layers.0.mlp.up_proj.gate.weight": torch.zeros(2, 7)}),
            "model.layers.0.mlp.up_proj.gate.weight: shape [2, 7], config.json implies [2, 32]",
        ),
        (
            lambda cfg, t: t.update({"model.layers.0.mlp.up_proj.weight": torch.zeros(64, 32)}),
            "model.layers.0.mlp.up_proj.weight: not part of the layout config.json describes",
        ),
        (
            lambda cfg, t: t.pop("model.layers.1.mlp.gate_proj.experts.1.weight"),
            "model.layers.1.mlp.gate_proj.experts.1.weight: missing tensor (config.json routes gate_proj of layer 1",
        ),
    ],
)
def test_bad_mergoo_folders_are_refused_naming_the_key(pico, tmp_path, capsys, edit, message):
    src = write_mergoo(tmp_path / "mergoo", [pico["e0"], pico["e1"]])
    cfg, tensors = json.loads((src / "config.json").read_text()), load_file(src / "model.safetensors")
    edit(cfg, tensors)
    (src / "config.json").write_text(json.dumps(cfg))
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    assert convert(src, tmp_path / "moe") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "moe").exists()


def test_mergoo_policy_needs_a_converted_folder(pico, tmp_path):
    merged = tmp_path / "merged"
    merge(MergeConfig(experts=[str(pico["e0"]), str(pico["e1"])], output_dir=str(merged)))
    with pytest.raises(ConfigError, match="no per-projection routers"):
        load_routed_moe(merged, policy="mergoo")
    with pytest.raises(ValueError, match="only `convert --format mergoo` writes"):
        MergeConfig(experts=[str(pico["e0"])], output_dir=str(tmp_path / "x"), policy="mergoo", top_k=1)
    src = write_mergoo(tmp_path / "mergoo", [pico["e0"], pico["e1"]])
    assert convert(src, tmp_path / "moe") == 0
    moe = load_routed_moe(tmp_path / "moe")
    with pytest.raises(ConfigError, match="does not train the per-projection routers"):
        moe.router_parameters()
