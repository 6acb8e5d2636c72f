"""Every shipped run_config/*.json validates fully through the config model of the stage it belongs to."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from run_config.loader import StageConfig, load_config, read_json_config
from tests.conftest import REPO_ROOT

RUN_CONFIG = REPO_ROOT / "run_config"

# stage -> the shipped files it reads. A new file fails below until it is listed here.
SHIPPED: dict[str, list[str]] = {
    "cluster": [
        "cluster_ablation_lexical.json",
        "cluster_ablation_none.json",
        "cluster_ablation_random.json",
        "cluster_minilm.json",
        "cluster_nv_embed_v2.json",
        "cluster_original_recipe.json",
    ],
    "deepspeed": ["ds_zero2.json", "ds_zero2_offload.json", "ds_zero3.json", "ds_zero3_offload.json"],
    "distill": ["dskd_llama3_8b.json", "dskd_smollm2_cpu.json"],
    "evaluate": ["evaluate.json", "evaluate_all_metrics_gpu.json", "evaluate_orig_compat.json"],
    "train": ["expert_llama3_8b.json", "train_smollm2_cpu.json", "train_smollm2_lora_cpu.json"],
    "original train": ["llama_config.json"],  # the original repo's format on purpose (training/finetune.py)
    "infer": [
        "infer_anthropic_random_icl.json",
        "infer_bon_oracle_3dex.json",
        "infer_bon_orm_3dex.json",
        "infer_demo_wordnet.json",
        "infer_dense_3dex.json",
        "infer_gemini_random_icl.json",
        "infer_moe_3dex.json",
        "infer_openai_retrieval_icl.json",
        "infer_vllm_moe_3dex.json",
    ],
    "merge": ["moe_merge_3dex.json"],
    "finetune-router": ["moe_finetune_router.json", "moe_learned_domain_router.json"],
    "paper": ["paper_full.json", "paper_toy.json"],
    "pipeline": ["pipeline_demo.json", "pipeline_toy.json"],
    "train-reward": ["train_reward_3dex.json"],
}
STAGE_OF = {name: stage for stage, names in SHIPPED.items() for name in names}


def stage_model(stage: str) -> type[StageConfig]:
    """The config model of a stage (imported late: most pull in torch)."""
    if stage == "paper":
        from scripts.experiment import ExperimentConfig

        return ExperimentConfig
    if stage == "pipeline":
        from scripts.pipeline import PipelineConfig

        return PipelineConfig
    if stage == "distill":
        from training.dskd.config import DSKDConfig

        return DSKDConfig
    from scripts.experiment import stage_models

    return stage_models()[stage.replace("-", "_").replace("train_reward", "reward")]


def table_models() -> dict[str, type[StageConfig]]:
    """The `tables.<script>` settings model of each paper script."""
    from scripts.fig4 import Fig4Settings
    from scripts.fig5 import Fig5Settings
    from scripts.table2 import Table2Settings
    from scripts.table3 import Table3Settings
    from scripts.table4 import Table4Settings
    from scripts.table7_8 import Table78Settings

    return {
        "table2": Table2Settings,
        "table3": Table3Settings,
        "table4": Table4Settings,
        "fig4": Fig4Settings,
        "fig5": Fig5Settings,
        "table7_8": Table78Settings,
    }


def check_deepspeed(path: Path, tmp_path: Path) -> None:
    """Our checks (no scheduler, "auto" optimizer), then DeepSpeed's own parser on the config as the HF Trainer
    fills its "auto" values: a key DeepSpeed does not read, or a value it rejects, fails."""
    from deepspeed.runtime import constants
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.zero.config import ZERO_OPTIMIZATION
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from training.deepspeed_config import load_deepspeed_config, zero_stage

    cfg = load_deepspeed_config(path)
    known = {v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str)} | {ZERO_OPTIMIZATION}
    assert sorted(set(cfg) - known) == [], f"{path.name}: keys DeepSpeed does not read"
    assert zero_stage(cfg) in (2, 3)
    if zero_stage(cfg) == 3:
        assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    hf = HfTrainerDeepSpeedConfig(cfg)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    hf.trainer_config_process(args)
    hf.trainer_config_finalize(args, SimpleNamespace(config=SimpleNamespace(hidden_size=64)), num_training_steps=10)
    DeepSpeedConfig(hf.config)  # zero_optimization goes through DeepSpeed's pydantic model (extra keys forbidden)


def check_own_keys(path: Path, model: type[StageConfig], data: dict[str, Any]) -> None:
    """Shipped configs use the toolkit's key names, not the original code's (which load_config translates)."""
    assert sorted(set(data) - set(model.model_fields)) == [], f"{path.name}: original key names"


def check_config(path: Path, stage: str, tmp_path: Path) -> None:
    if stage == "deepspeed":
        check_deepspeed(path, tmp_path)
        return
    model = stage_model(stage.removeprefix("original "))
    cfg = load_config(path, model)
    if not stage.startswith("original "):
        check_own_keys(path, model, read_json_config(path)[0])
    if stage in ("paper", "pipeline"):
        from scripts.experiment import check_sections, table_settings

        check_sections(cfg, str(path))  # each stage section against its stage's config
        for name, settings in table_models().items():
            table_settings(cfg, name, settings, str(path))
    if getattr(cfg, "deepspeed", None):  # a train config's DeepSpeed file is shipped and valid too
        assert STAGE_OF.get(Path(cfg.deepspeed).name) == "deepspeed", cfg.deepspeed
        check_deepspeed(REPO_ROOT / cfg.deepspeed, tmp_path)


@pytest.mark.parametrize("name", sorted({p.name for p in RUN_CONFIG.glob("*.json")} | set(STAGE_OF)), ids=lambda n: n)
def test_shipped_config_validates(name: str, tmp_path: Path) -> None:
    path = RUN_CONFIG / name
    assert path.is_file(), f"{name} is listed in SHIPPED but not shipped"
    assert name in STAGE_OF, f"{name}: add it to SHIPPED under the stage that reads it"
    check_config(path, STAGE_OF[name], tmp_path)


@pytest.mark.parametrize(
    "stage,text,message",
    [
        ("cluster", '{"input": "a", "output_dir": "o", "num_clusterz": 4}', "did you mean num_clusters"),
        ("pipeline", '{"work_dir": "w", "train": {"max_stepz": 1}}', "train.max_stepz: unknown key"),
        ("paper", '{"work_dir": "w", "tables": {"table2": {"bon_sample": 8}}}', "tables.table2.bon_sample"),
        ("deepspeed", '{"zero_optimization": {"stage": 2, "overlap_com": true}}', "overlap_com"),
        ("deepspeed", '{"zero_optimization": {"stage": 2}, "gradient_clippin": 1.0}', "gradient_clippin"),
    ],
)
def test_an_unknown_key_fails(stage: str, text: str, message: str, tmp_path: Path) -> None:
    """The checks above are strict: a misspelt key anywhere fails (top level, a stage section, a table, DeepSpeed)."""
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(Exception, match=message):
        check_config(path, stage, tmp_path)
