"""training/moe/merge.py: streamed Llama -> Mixtral merge of pico experts, checks before writing, configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import main as toolkit_main
from run_config.errors import ConfigError, DataError
from run_config.loader import load_config
from tests.helpers.pico import perturbed_copy, pico_llama, tiny_tokenizer
from training.moe.config import MergeConfig
from training.moe.merge import merge
from training.moe.plan import expert_key, router_key
from training.moe.safetensors_stream import CheckpointReader, ShardedWriter, TensorInfo

LAYERS, HIDDEN, INTER = 2, 32, 64


@pytest.fixture(scope="module")
def pico(tmp_path_factory) -> dict[str, Path]:
    """A base pico Llama and 8 experts (its copies with perturbed FFNs), untied, plus a tied one."""
    root = tmp_path_factory.mktemp("pico")
    base = pico_llama(root / "base", seed=0)
    out = {"base": base, "tied": pico_llama(root / "tied", seed=1, tie=True)}
    for i in range(8):
        out[f"e{i}"] = perturbed_copy(base, root / f"e{i}", seed=10 + i, scale=0.05)
    return out


def _merge(experts: list[Path], out: Path, **kw) -> dict:
    return merge(MergeConfig(experts=[str(e) for e in experts], output_dir=str(out), **kw))


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    reader = CheckpointReader(folder)
    return {k: reader.read(k) for k in reader.info}


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_merge_names_shapes_and_ffn_copies(pico, tmp_path, n):
    experts = [pico[f"e{i}"] for i in range(n)]
    _merge(experts, tmp_path / "moe", top_k=min(2, n))
    merged = _tensors(tmp_path / "moe")
    for layer in range(LAYERS):
        assert merged[router_key(layer)].shape == (n, HIDDEN)
        for e in range(n):
            dense = load_file(experts[e] / "model.safetensors")
            for w, proj in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
                assert torch.equal(merged[expert_key(layer, e, w)], dense[f"model.layers.{layer}.mlp.{proj}.weight"])
    assert merged[expert_key(0, 0, "w1")].shape == (INTER, HIDDEN)
    assert merged[expert_key(0, 0, "w2")].shape == (HIDDEN, INTER)
    assert all(torch.isfinite(t).all() for t in merged.values())
    dense = [load_file(e / "model.safetensors") for e in experts]
    for key in ("model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight", "lm_head.weight"):
        torch.testing.assert_close(merged[key], sum(d[key] for d in dense) / n, rtol=0, atol=1e-7)
    assert not any(".mlp." in k for k in merged)
    routing = json.loads((tmp_path / "moe" / "routing.json").read_text())
    assert (
        routing["num_experts"] == n and routing["policy"] == "domain" and routing["cluster_to_expert"] == list(range(n))
    )


def test_from_pretrained_loads_mixtral_with_every_key(pico, tmp_path):
    from transformers import AutoModelForCausalLM, MixtralForCausalLM

    _merge([pico[f"e{i}"] for i in range(4)], tmp_path / "moe")
    model, info = AutoModelForCausalLM.from_pretrained(str(tmp_path / "moe"), output_loading_info=True)
    assert isinstance(model, MixtralForCausalLM)
    assert model.config.num_local_experts == 4 and model.config.num_experts_per_tok == 2
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.model.layers[0].mlp.experts.gate_up_proj.shape == (4, 2 * INTER, HIDDEN)


def test_identical_experts_give_the_dense_logits(pico, tmp_path):
    from transformers import AutoModelForCausalLM

    _merge([pico["base"]] * 3, tmp_path / "moe", top_k=2)
    moe = AutoModelForCausalLM.from_pretrained(str(tmp_path / "moe")).eval()
    dense = AutoModelForCausalLM.from_pretrained(str(pico["base"])).eval()
    ids = torch.randint(4, 60, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(moe(input_ids=ids).logits, dense(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_tied_embeddings_stay_tied(pico, tmp_path):
    from transformers import AutoModelForCausalLM

    tied = pico["tied"]
    _merge([tied, tied], tmp_path / "moe")
    assert "lm_head.weight" not in CheckpointReader(tmp_path / "moe").info
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "moe"))
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("shared", ["base", "expert"])
def test_shared_params_from_base_or_one_expert(pico, tmp_path, shared):
    experts = [pico["e0"], pico["e1"]]
    _merge(experts, tmp_path / "moe", shared_params=shared, base_model=str(pico["base"]), shared_expert=1)
    src = load_file((pico["base"] if shared == "base" else pico["e1"]) / "model.safetensors")
    merged = _tensors(tmp_path / "moe")
    assert torch.equal(merged["model.layers.0.self_attn.k_proj.weight"], src["model.layers.0.self_attn.k_proj.weight"])


def test_bfloat16_output_and_rerun_skips(pico, tmp_path, capsys):
    args = [
        "merge",
        "--experts",
        str(pico["e0"]),
        str(pico["e1"]),
        "--output-dir",
        str(tmp_path / "moe"),
        "--dtype",
        "bfloat16",
    ]
    assert toolkit_main.main(args) == 0
    assert all(t.dtype == torch.bfloat16 for t in _tensors(tmp_path / "moe").values())
    assert json.loads((tmp_path / "moe" / "config.json").read_text())["dtype"] == "bfloat16"
    assert toolkit_main.main(args) == 0
    assert "up to date" in capsys.readouterr().out


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(
    "damage",
    [
        lambda moe, dense: _truncate(dense / "expert_1" / "model.safetensors"),
        lambda moe, dense: (dense / "expert_0" / "config.json").unlink(),
        lambda moe, dense: (dense / "experts.json").unlink(),  # the merge was killed while exporting
        lambda moe, dense: shutil.rmtree(dense / "expert_1"),
        lambda moe, dense: _truncate(moe / "model.safetensors"),
        lambda moe, dense: (moe / "tokenizer.json").unlink(),
    ],
    ids=[
        "truncated-export",
        "export-file-missing",
        "no-export-index",
        "export-missing",
        "truncated-moe",
        "moe-file-missing",
    ],
)
def test_up_to_date_only_when_every_output_is_whole_dense_exports_included(pico, tmp_path, capsys, damage):
    moe, dense = tmp_path / "moe", tmp_path / "dense"
    args = [
        "merge",
        "--experts",
        str(pico["e0"]),
        str(pico["e1"]),
        "--output-dir",
        str(moe),
        "--dense-export-dir",
        str(dense),
    ]
    assert toolkit_main.main(args) == 0
    whole = {p: p.read_bytes() for p in [*moe.rglob("*"), *dense.rglob("*")] if p.is_file()}
    assert toolkit_main.main(args) == 0 and "up to date" in capsys.readouterr().out
    damage(moe, dense)
    assert toolkit_main.main(args) == 0 and "up to date" not in capsys.readouterr().out  # redone
    assert {p: p.read_bytes() for p in [*moe.rglob("*"), *dense.rglob("*")] if p.is_file()}.keys() == whole.keys()
    assert all(p.read_bytes() == data for p, data in whole.items() if p.suffix == ".safetensors")
    assert toolkit_main.main(args) == 0 and "up to date" in capsys.readouterr().out


def test_an_export_of_an_earlier_merge_is_not_up_to_date(pico, tmp_path, capsys):
    moe, dense = tmp_path / "moe", tmp_path / "dense"
    args = [
        "merge",
        "--experts",
        str(pico["e0"]),
        str(pico["e1"]),
        "--output-dir",
        str(moe),
        "--dense-export-dir",
        str(dense),
    ]
    assert toolkit_main.main([*args, "--seed", "1"]) == 0
    index = (dense / "experts.json").read_bytes()
    assert toolkit_main.main(args) == 0  # another router seed: a new merge, killed before its export was indexed
    (dense / "experts.json").write_bytes(index)
    capsys.readouterr()
    assert toolkit_main.main(args) == 0 and "up to date" not in capsys.readouterr().out


def _vocab_mismatch(pico, root):
    return pico_llama(root / "v", seed=2, vocab_size=80)


def _shape_mismatch(pico, root):
    bad = shutil.copytree(pico["e1"], root / "s")
    t = load_file(bad / "model.safetensors")
    t["model.layers.1.self_attn.q_proj.weight"] = torch.zeros(16, HIDDEN)
    save_file(t, bad / "model.safetensors", metadata={"format": "pt"})
    return bad


def _tie_mismatch(pico, root):
    return pico["tied"]


def _other_tokenizer(pico, root):
    bad = shutil.copytree(pico["e1"], root / "t")
    tok = tiny_tokenizer()
    tok.add_tokens(["extra"])
    tok.save_pretrained(str(bad))
    return bad


def _bias(pico, root):
    bad = shutil.copytree(pico["e1"], root / "b")
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "mlp_bias": True}))
    return bad


def _not_a_model(pico, root):
    (root / "empty").mkdir()
    return root / "empty"


@pytest.mark.parametrize(
    "make_bad,needle",
    [
        (_vocab_mismatch, "vocab_size"),
        (_shape_mismatch, "q_proj"),
        (_tie_mismatch, "tie_word_embeddings"),
        (_other_tokenizer, "vocabulary"),
        (_bias, "mlp_bias"),
        (_not_a_model, "config.json"),
    ],
)
def test_bad_experts_fail_before_writing(pico, tmp_path, capsys, make_bad, needle):
    bad = make_bad(pico, tmp_path)
    out = tmp_path / "out" / "moe"
    code = toolkit_main.main(["merge", "--experts", str(pico["e0"]), str(bad), "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and needle in err and str(bad) in err
    assert not (tmp_path / "out").exists()


def test_centroid_count_must_match_experts(pico, tmp_path):
    import numpy as np

    (tmp_path / "clusters").mkdir()
    np.save(tmp_path / "clusters" / "centroids.npy", np.eye(3, 8, dtype=np.float32))
    (tmp_path / "clusters" / "embedder.json").write_text("{}")
    with pytest.raises(DataError, match="3 centroids for 2 experts"):
        _merge([pico["e0"], pico["e1"]], tmp_path / "moe", cluster_dir=str(tmp_path / "clusters"))
    assert not (tmp_path / "moe").exists()


def test_cluster_artefacts_are_copied(pico, tmp_path):
    import numpy as np

    (tmp_path / "clusters").mkdir()
    np.save(tmp_path / "clusters" / "centroids.npy", np.eye(2, 8, dtype=np.float32))
    (tmp_path / "clusters" / "embedder.json").write_text('{"kind": "none"}')
    _merge([pico["e0"], pico["e1"]], tmp_path / "moe", cluster_dir=str(tmp_path / "clusters"), cluster_to_expert=[1, 0])
    routing = json.loads((tmp_path / "moe" / "routing.json").read_text())
    assert routing["cluster_dir"] == "clustering" and routing["cluster_to_expert"] == [1, 0]
    assert np.array_equal(np.load(tmp_path / "moe" / "clustering" / "centroids.npy"), np.eye(2, 8))


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"top_k": 3}, "top_k"),
        ({"shared_params": "base"}, "base_model"),
        ({"cluster_to_expert": [0, 0]}, "permutation"),
        ({"router_init": "hidden"}, "router_prompt_files"),
        ({"router_init": "centroids"}, "cluster_dir"),
    ],
)
def test_config_cross_field_errors(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, MergeConfig, {"experts": ["a", "b"], "output_dir": "o", **kw})


def test_sharded_writer_roundtrip(tmp_path):
    tensors = {f"t{i}": torch.randn(5, 7 + i) for i in range(5)}
    infos = [TensorInfo(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    writer = ShardedWriter(tmp_path, infos, max_shard_bytes=400)
    for k, v in tensors.items():
        writer.write(k, v)
    writer.finalize()
    assert len(writer.shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    reader = CheckpointReader(tmp_path)
    for k, v in tensors.items():
        assert torch.equal(reader.read(k), v)
    with safe_open(str(tmp_path / writer.names[0]), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    with pytest.raises(ValueError, match="expected t0"):
        ShardedWriter(tmp_path / "x", infos, 400).write("t1", tensors["t1"])


def test_reader_copies_bytes_and_reads_safetensors_files(tmp_path):
    """Files written by safetensors itself read back exactly (bf16, bool, scalar); `copy` writes the same bytes."""
    tensors = {
        "a": torch.randn(3, 4).to(torch.bfloat16),
        "b": torch.tensor([True, False, True]),
        "c": torch.tensor(2.5),
        "d": torch.randn(2, 2, dtype=torch.float64),
    }
    (tmp_path / "src").mkdir()
    save_file(tensors, tmp_path / "src" / "model.safetensors")
    reader = CheckpointReader(tmp_path / "src")
    for k, v in tensors.items():
        assert reader.read(k).dtype == v.dtype and torch.equal(reader.read(k), v)
    infos = [reader.info[k] for k in ("d", "a", "c")]
    (tmp_path / "out").mkdir()
    with ShardedWriter(tmp_path / "out", infos, max_shard_bytes=1 << 20) as writer:
        writer.copy("d", reader, "d")
        writer.write("a", tensors["a"])
        writer.copy("c", reader, "c")
        writer.finalize()
    assert load_file(tmp_path / "out" / "model.safetensors").keys() == {"d", "a", "c"}
    for k, v in load_file(tmp_path / "out" / "model.safetensors").items():
        assert torch.equal(v, tensors[k])
    with pytest.raises(ValueError, match="expected d"):
        ShardedWriter(tmp_path / "x", infos, 1 << 20).copy("a", reader, "a")


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda raw: raw[:-5], "beyond the file"),
        (lambda raw: raw[:8] + b"{not json" + raw[17:], "unreadable safetensors header"),
        (lambda raw: (10**9).to_bytes(8, "little") + raw[8:], "header length beyond the file"),
        (lambda raw: raw.replace(b'"F32"', b'"X32"'), "unsupported dtype X32"),
    ],
)
def test_reader_refuses_damaged_files(tmp_path, damage, needle):
    save_file({"w": torch.zeros(4, 4)}, tmp_path / "model.safetensors")
    path = tmp_path / "model.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=needle):
        CheckpointReader(tmp_path)


def test_hidden_router_init_separates_experts(pico, tmp_path, data_3dex):
    """router_init=hidden: rows = centred mean FFN input of each expert's prompts (real 3D-EX rows)."""
    from dataset.preprocess import main as preprocess

    assert preprocess(["--input", str(data_3dex / "Urban_test.csv"), "--output-dir", str(tmp_path / "data")]) == 0
    lines = (tmp_path / "data" / "all.jsonl").read_text().splitlines()
    files = []
    for i in range(2):
        files.append(tmp_path / f"p{i}.jsonl")
        files[-1].write_text("\n".join(lines[i * 10 : (i + 1) * 10]) + "\n")
    _merge(
        [pico["e0"], pico["e1"]],
        tmp_path / "moe",
        router_init="hidden",
        router_prompt_files=[str(f) for f in files],
        router_prompt_samples=10,
    )
    gate = _tensors(tmp_path / "moe")[router_key(1)]
    torch.testing.assert_close(gate.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(gate[0], -gate[1])  # two experts: centred rows point in opposite directions


def test_original_config_keys_are_accepted(tmp_path):
    path = tmp_path / "merge.json"
    path.write_text(
        json.dumps(
            {
                "experts": ["a", "b"],
                "output_dir": "o",
                "num_experts_per_tok": 1,
                "model_type": "llama",
                "router_layers": ["gate_proj", "up_proj", "down_proj"],
            }
        )
    )
    assert load_config(path, MergeConfig).top_k == 1


def test_original_expert_list_of_objects_is_accepted(tmp_path):
    """The original (mergoo) merge config: experts as {expert_name, model_id} objects, in order."""
    path = tmp_path / "merge.json"
    experts = [{"expert_name": f"expert_{i}", "model_id": f"ckpt/cluster-{i}"} for i in range(3)]
    path.write_text(
        json.dumps(
            {
                "model_type": "llama",
                "num_experts_per_tok": 2,
                "experts": experts,
                "router_layers": ["gate_proj", "up_proj", "down_proj"],
                "output_dir": "o",
            }
        )
    )
    assert load_config(path, MergeConfig).experts == ["ckpt/cluster-0", "ckpt/cluster-1", "ckpt/cluster-2"]
    path.write_text(json.dumps({"experts": [{"expert_name": "e", "model": "x"}], "output_dir": "o"}))
    with pytest.raises(ConfigError, match="experts"):
        load_config(path, MergeConfig)
