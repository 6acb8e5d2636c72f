"""Print the config reference (every key of every stage config: type, default, meaning) as Markdown.

docs/config_reference.md is this output, written whole by `python scripts/config_reference.py --write`;
`tests/scripts/test_config_reference.py` fails when the page differs from it.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path

import pydantic_core
from pydantic_core import PydanticUndefined

from run_config.loader import StageConfig
from run_config.runtime import atomic_open

ROOT = Path(__file__).resolve().parent.parent

PAGE = ROOT / "docs" / "config_reference.md"
INTRO = """# Config reference

Every key of every stage config: type, default and meaning, generated from the typed config models by
`python scripts/config_reference.py --write` (do not edit this page by hand; a test keeps it current).
`python main.py <stage> --help` shows the same per stage. Each key is also a kebab-case flag
(`learning_rate` -> `--learning-rate`) and `--set key=value` overrides any key; see
[the README](../README.md#run-configs) for how configs load.
"""


def config_models() -> list[tuple[str, type[StageConfig]]]:
    """(command, config model) of every stage, in pipeline order."""
    from clustering.config import AssignConfig, ClusterConfig
    from dataset.config import PreprocessConfig
    from evaluation.config import EvaluateConfig
    from evaluation.report import ReportConfig
    from inference.config import InferConfig
    from inference.reward.config import RewardConfig
    from scripts.experiment import ExperimentConfig
    from scripts.fig4 import Fig4Settings
    from scripts.fig5 import Fig5Settings
    from scripts.pipeline import PipelineConfig
    from scripts.table2 import IclModel, Table2Settings
    from scripts.table3 import Table3Settings
    from scripts.table4 import Table4Settings
    from scripts.table7_8 import Table78Settings
    from training.dskd.config import DSKDConfig
    from training.moe.config import ConvertConfig, FinetuneRouterConfig, MergeConfig
    from training.sft.config import TrainConfig

    return [
        ("preprocess", PreprocessConfig),
        ("cluster", ClusterConfig),
        ("python -m clustering.assign", AssignConfig),
        ("train", TrainConfig),
        ("`distill` (= `train --objective dskd`)", DSKDConfig),
        ("merge", MergeConfig),
        ("convert", ConvertConfig),
        ("finetune-router", FinetuneRouterConfig),
        ("train-reward", RewardConfig),
        ("infer", InferConfig),
        ("evaluate", EvaluateConfig),
        ("python -m evaluation.report", ReportConfig),
        ("pipeline", PipelineConfig),
        ("scripts/table*.py, scripts/fig*.py", ExperimentConfig),
        ("`scripts/table2.py` (`tables.table2`)", Table2Settings),
        ("`tables.table2.icl_models` items", IclModel),
        ("`scripts/table3.py` (`tables.table3`)", Table3Settings),
        ("`scripts/table4.py` (`tables.table4`)", Table4Settings),
        ("`scripts/fig4.py` (`tables.fig4`)", Fig4Settings),
        ("`scripts/fig5.py` (`tables.fig5`)", Fig5Settings),
        ("`scripts/table7_8.py` (`tables.table7_8`)", Table78Settings),
    ]


def type_name(annotation: object) -> str:
    """A short readable type: `int | None`, `list[str]`, `"a" | "b"`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: typing.Any) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default is PydanticUndefined else field.default
    return f"`{json.dumps(pydantic_core.to_jsonable_python(value))}`".replace("|", "\\|")


def reference() -> str:
    """The Markdown of every stage's keys."""
    parts = []
    for command, model in config_models():
        doc = (model.__doc__ or "").strip().split("\n")[0]
        label = command if "`" in command else f"`{command}`"
        lines = [
            f"## {label} ({model.__name__})",
            "",
            doc,
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            text = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {type_name(field.annotation)} | {default_text(field)} | {text} |")
        if model.legacy_keys:
            legacy = ", ".join(f"`{k}`→`{v}`" if v else f"`{k}` (ignored)" for k, v in model.legacy_keys.items())
            lines += ["", f"Original LM-Lexicon keys accepted: {legacy}."]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def page() -> str:
    """The whole of docs/config_reference.md."""
    return INTRO + "\n" + reference()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {PAGE.relative_to(ROOT)} (else print it)")
    args = parser.parse_args(argv)
    text = page()
    if not args.write:
        print(text, end="")
        return 0
    with atomic_open(PAGE) as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
