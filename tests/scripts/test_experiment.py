"""The shared engine of the paper scripts: per-source test files, seed merging, config errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from dataset.records import Record
from run_config.errors import ConfigError, DataError
from run_config.loader import StageConfig, load_config
from scripts.experiment import (
    FULL_CONFIG,
    TOY_CONFIG,
    Experiment,
    ExperimentConfig,
    check_sections,
    combine_seeds,
    inputs_line,
    split_by_source,
    table_config,
    table_parser,
    table_settings,
    variant_name,
)


def _records(tmp_path, sources):
    path = tmp_path / "test.jsonl"
    rows = [
        Record(id=f"r{i}", term=f"t{i}", context=f"c {i}", definition=f"d {i}", source=s, split="test")
        for i, s in enumerate(sources)
    ]
    path.write_text("".join(r.to_json() + "\n" for r in rows), encoding="utf-8")
    return path


def test_split_by_source_keeps_order_and_adds_the_whole_split(tmp_path):
    test = _records(tmp_path, ["Urban", "WordNet", "Urban"])
    files = split_by_source(test, tmp_path / "out", ["WordNet", "Urban", "3D-EX"], "3D-EX")
    assert list(files) == ["WordNet", "Urban", "3D-EX"]
    assert [len(p.read_text().splitlines()) for p in files.values()] == [1, 2, 3]
    stamp = files["Urban"].stat().st_mtime_ns
    split_by_source(test, tmp_path / "out", ["WordNet", "Urban", "3D-EX"], "3D-EX")
    assert files["Urban"].stat().st_mtime_ns == stamp  # unchanged content is not rewritten


def test_split_by_source_names_the_missing_dataset(tmp_path):
    test = _records(tmp_path, ["Urban"])
    with pytest.raises(DataError, match="no test records of Oxford .sources present: Urban"):
        split_by_source(test, tmp_path / "out", ["Oxford"], None)


def test_combine_seeds_names_the_system_and_seed(tmp_path):
    runs = {}
    for seed in (21, 42):
        runs[seed] = tmp_path / f"p{seed}.jsonl"
        runs[seed].write_text(json.dumps({"id": "a", "prediction": "x", "model": "/ckpt", "seed": 0}) + "\n")
    rows = [json.loads(line) for line in combine_seeds("moe", runs, tmp_path / "all.jsonl").read_text().splitlines()]
    assert [(r["model"], r["seed"]) for r in rows] == [("moe", 21), ("moe", 42)]


def test_shipped_paper_configs_load_and_their_sections_are_valid():
    for path in (FULL_CONFIG, TOY_CONFIG):
        check_sections(load_config(path, ExperimentConfig), str(path))


def test_section_and_table_errors_name_the_file(tmp_path):
    cfg = load_config(TOY_CONFIG, ExperimentConfig, {"infer": {"n_sample": 4}, "tables": {"table9": {}}})
    with pytest.raises(ConfigError, match="infer.n_sample: unknown key .did you mean n_samples"):
        check_sections(cfg, "x.json")

    class Settings(StageConfig):
        partitions: list[str] = ["semantic"]

    with pytest.raises(ConfigError, match="x.json: tables.table9: unknown script"):
        table_settings(cfg, "table3", Settings, "x.json")
    cfg = load_config(TOY_CONFIG, ExperimentConfig, {"tables": {"table3": {"partitionz": []}}})
    with pytest.raises(ConfigError, match="x.json: tables.table3.partitionz"):
        table_settings(cfg, "table3", Settings, "x.json")


def test_toy_switch_picks_the_toy_config_and_refuses_a_second_config():
    parser = table_parser("table3", "doc")
    cfg, source = table_config(parser.parse_args(["--toy"]))
    assert source == str(TOY_CONFIG) and cfg.builtin == "wordnet"
    cfg, source = table_config(parser.parse_args([]))
    assert source == str(FULL_CONFIG) and cfg.launcher == "deepspeed"
    with pytest.raises(ConfigError, match="--toy and --config"):
        table_config(parser.parse_args(["--toy", "--config", str(FULL_CONFIG)]))


def test_inputs_line_counts_failed_rows_in_n(wordnet_lexicon, tmp_path):
    """Every aggregate script scores through `Experiment.score`, which prints N from evaluate's counts:
    failed generations are inside N (scored 0), not dropped."""
    from evaluation.evaluate import main as evaluate_main

    records = [json.loads(line) for line in (wordnet_lexicon / "test.jsonl").read_text().splitlines()[:10]]
    refs = tmp_path / "test.jsonl"
    refs.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = [{"id": r["id"], "prediction": r["definition"], "model": "dense", "seed": 42} for r in records]
    rows[0].update(prediction=None, error="HTTP 500")
    rows[1]["prediction"] = ""
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        evaluate_main(["--predictions", str(preds), "--references", str(refs), "--output-dir", str(tmp_path / "e")])
        == 0
    )
    scores = json.loads((tmp_path / "e" / "scores.json").read_text())
    assert inputs_line("dense", "WordNet", scores) == (
        "dense / WordNet: N = 10 inputs per seed; 1 failed and 1 empty predictions, each scored 0"
    )
    assert scores["bleu"] == pytest.approx(100.0 * 8 / 10)


def test_variant_name_adds_only_changed_keys():
    base = {"text_field": "term_context", "embedder": "minilm"}
    assert variant_name("semantic-N4", {"text_field": "term_context"}, base) == "semantic-N4"
    assert (
        variant_name("semantic-N4", {"text_field": "definition", "embedder": "a/b"}, base)
        == "semantic-N4-embedder=a_b-text_field=definition"
    )


def test_clusters_with_a_changed_key_get_their_own_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("scripts.experiment._call", lambda step, main, argv: calls.append(step))
    cfg = load_config(TOY_CONFIG, ExperimentConfig, {"work_dir": str(tmp_path), "cluster": {"plot": False}})
    exp = Experiment(cfg, "x.json")
    exp.__dict__["data"] = tmp_path  # the preprocessed data is not needed to name the folder
    default = exp.clusters("semantic", 4)
    assert default.name == "semantic-N4"
    assert exp.clusters("semantic", 4, text_field="term_context", plot=False) == default  # = the defaults
    other = exp.clusters("semantic", 4, text_field="instruction_definition")
    assert other.name == "semantic-N4-text_field=instruction_definition"
    written = json.loads((tmp_path / "configs" / f"cluster_{other.name}.json").read_text())
    assert written["text_field"] == "instruction_definition" and written["output_dir"] == str(other)
    assert calls == ["cluster semantic-N4", "cluster semantic-N4", f"cluster {other.name}"]


@pytest.mark.slow
@pytest.mark.skipif(
    not (Path(sys.executable).parent / "deepspeed").is_file(), reason="deepspeed launcher not installed"
)
def test_launcher_deepspeed_trains_through_the_real_launcher(tiny_paper, tmp_path, monkeypatch, capsys):
    """`launcher: deepspeed` runs the train step as `deepspeed --num_gpus N --module training.train` (2 CPU ranks;
    PYTHONPATH stands in for the editable install)."""
    from scripts.experiment import Experiment
    from tests.conftest import REPO_ROOT

    bin_dir = Path(sys.executable).parent
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    data = json.loads(tiny_paper.read_text())
    data.pop("_comment")
    data.update(work_dir=str(tmp_path / "w"), launcher="deepspeed", num_gpus=2, num_clusters=1)
    data["train"].update(deepspeed=str(REPO_ROOT / "run_config" / "ds_zero2.json"), max_steps=1)
    cfg = load_config(None, ExperimentConfig, data)
    out = Experiment(cfg, "test").dense(42)
    assert "deepspeed --num_gpus 2 --module training.train --config" in capsys.readouterr().out
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["plan"]["world_size"] == 2 and summary["global_step"] == 1


def test_launcher_deepspeed_finetunes_token_and_sequence_routers_through_the_launcher(tmp_path, monkeypatch):
    """`launcher: deepspeed` runs finetune-router as `deepspeed --num_gpus N --module training.moe.finetune_router`
    (the command train gets, module aside); learned-domain trains its classifier in this process."""
    from scripts import experiment

    launched, called = [], []
    monkeypatch.setattr(experiment, "_launch", lambda step, argv: launched.append(argv))
    monkeypatch.setattr(experiment, "_call", lambda step, main, argv: called.append(argv))
    monkeypatch.setattr(Experiment, "moe", lambda self, *a, **k: tmp_path / "moe" / "seed42")
    data = {"work_dir": str(tmp_path / "w"), "launcher": "deepspeed", "num_gpus": 2, "builtin": "wordnet"}
    exp = Experiment(load_config(TOY_CONFIG, ExperimentConfig, data), "test")
    exp.__dict__["data"] = tmp_path / "data"  # the prepared splits (not needed: nothing runs)
    exp.router("token", top_k=2)
    exp.router("learned-domain")
    (argv,) = launched
    assert argv[:6] == ["deepspeed", "--num_gpus", "2", "--module", "training.moe.finetune_router", "--config"]
    assert json.loads(Path(argv[6]).read_text())["policy"] == "token"
    assert len(called) == 1 and json.loads(Path(called[0][1]).read_text())["policy"] == "learned-domain"


@pytest.mark.slow
def test_no_step_validates_or_inits_routers_on_the_test_split(tiny_paper):
    """Every file a step validates on (train, finetune-router, train-reward) or initialises routers from is
    free of test-split records: the test split is only generated for and scored."""
    from dataset.records import load_records

    cfg = load_config(tiny_paper, ExperimentConfig)
    exp = Experiment(cfg, str(tiny_paper))
    dense = exp.dense(42)
    exp.router("learned-domain")
    exp.reward_model("dense", dense)
    configs = {p.name: json.loads(p.read_text()) for p in (Path(cfg.work_dir) / "configs").glob("*.json")}
    checked = 0
    for name, data in configs.items():
        for key in ("valid_file", "valid", "router_prompt_files"):
            for path in [data[key]] if isinstance(data.get(key), str) else data.get(key) or []:
                assert {r.split for r in load_records(path)} <= {"train", "valid"}, (name, key, path)
                checked += 1
    experts = Path(cfg.work_dir) / "experts" / "semantic-N2" / "seed42"
    summaries = [json.loads((experts / f"expert-{k}" / "train_summary.json").read_text()) for k in range(2)]
    assert all(s["warnings"] == [] for s in summaries)
    assert checked >= 3 and {"train_dense_seed42.json", "reward_dense_seed42.json"} <= set(configs)


def test_section_values_are_type_checked_without_the_keys_each_step_adds():
    cfg = load_config(
        TOY_CONFIG,
        ExperimentConfig,
        {"cluster": {"num_clusters": "4"}, "train": {"learning_rate": 1e-4}, "infer": {"max_new_tokens": 0}},
    )
    with pytest.raises(ConfigError) as e:
        check_sections(cfg, "x.json")
    assert e.value.problems == [
        'x.json: cluster.num_clusters: input should be a valid integer, got "4"',
        "x.json: infer.max_new_tokens: input should be greater than or equal to 1, got 0",
    ]


def test_multi_node_hostfile_is_checked_up_front_and_reaches_the_launcher(tmp_path, monkeypatch):
    """`launcher: deepspeed` with `hostfile` / `num_nodes`: a malformed hostfile is refused when the experiment
    is built (file and line), and each train step's command is DeepSpeed's multi-node launch."""
    import scripts.experiment as experiment

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=8\nnode-b slots=8\n", encoding="utf-8")
    nodes = {"work_dir": str(tmp_path / "w"), "launcher": "deepspeed", "hostfile": str(hostfile), "num_nodes": 2}
    with pytest.raises(ConfigError, match="num_nodes 2 needs a hostfile"):
        load_config(TOY_CONFIG, ExperimentConfig, {**nodes, "hostfile": None})
    with pytest.raises(ConfigError, match="hostfile and num_nodes need launcher deepspeed"):
        load_config(TOY_CONFIG, ExperimentConfig, {**nodes, "launcher": "none"})
    launched = []
    monkeypatch.setattr(experiment, "_launch", lambda step, argv: launched.append(argv))
    exp = Experiment(load_config(TOY_CONFIG, ExperimentConfig, nodes), "test")
    exp._train("train_dense_seed42", {"model_name_or_path": "m", "output_dir": str(tmp_path / "dense")})
    config = str(tmp_path / "w" / "configs" / "train_dense_seed42.json")
    assert launched == [
        ["deepspeed", "--hostfile", str(hostfile), "--num_nodes", "2", "--num_gpus", "8"]
        + ["--module", "training.train", "--config", config]
    ]
    hostfile.write_text("node-a slots=8\nnode-b\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"{hostfile}:2: hostfile: 'node-b' is not `HOST slots=N`"):
        Experiment(load_config(TOY_CONFIG, ExperimentConfig, nodes), "test")
    hostfile.write_text("node-a slots=8\n", encoding="utf-8")
    with pytest.raises(DataError, match="num_nodes: 2 nodes asked for, the hostfile lists 1"):
        Experiment(load_config(TOY_CONFIG, ExperimentConfig, nodes), "test")
