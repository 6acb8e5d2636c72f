"""The one prompt builder: record -> prompt (inference) and record -> prompt + target (training).

The paper's format (the original code's, docs/original_code.md) is
`BOS + '"<context>" What is the definition of "<term>"?' + "\\n\\n"`, then the definition and EOS.
Training and inference both call `build_prompt`, so the inference prompt is always an exact prefix of
the training text (the original's differed: bug 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent
SEPARATOR = "\n\n"


@cache
def load_template(name: str = "word_interpretation") -> str:
    """Read `prompts/<name>.txt` (placeholders `{term}`, `{context}`, `{definition}`)."""
    path = TEMPLATE_DIR / f"{name}.txt"
    if not path.is_file():
        choices = sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt"))
        raise ValueError(f"unknown prompt template {name!r}; choose from {choices}")
    return path.read_text(encoding="utf-8").rstrip("\n")


def render_question(term: str, context: str, template: str = "word_interpretation") -> str:
    """Fill the template with one (term, context)."""
    return load_template(template).format(term=term.strip(), context=context.strip())


def build_prompt(
    term: str,
    context: str,
    *,
    bos_token: str = "",
    demos: Sequence[tuple[str, str, str]] = (),
    template: str = "word_interpretation",
) -> str:
    """Return the model input: optional BOS, k demos as (term, context, definition), then the question.

    Each demo is rendered exactly like a training example, so few-shot prompts stay in-distribution.
    """
    shots = "".join(render_question(t, c, template) + SEPARATOR + d.strip() + SEPARATOR for t, c, d in demos)
    return bos_token + shots + render_question(term, context, template) + SEPARATOR


def build_training_text(
    term: str,
    context: str,
    definition: str,
    *,
    bos_token: str = "",
    eos_token: str = "",
    template: str = "word_interpretation",
) -> tuple[str, str]:
    """Return (prompt, target) for supervised finetuning; loss goes on the target only."""
    return build_prompt(term, context, bos_token=bos_token, template=template), definition.strip() + eos_token


# Task name -> template file. Word interpretation is the main task (and the only one with demos).
TASK_TEMPLATES = {
    "word_interpretation": "word_interpretation",
    "context_synthesis": "context_synthesis",
    "definition_synthesis": "definition_synthesis",
    "wsd": "word_sense_disambiguation",
}
OPTION_LETTERS = "ABCD"


def format_options(options: Sequence[str]) -> str:
    """Render WSD options as `A. ...` lines."""
    return "\n".join(f"{OPTION_LETTERS[i]}. {o.strip()}" for i, o in enumerate(options))


def build_task_prompt(
    task: str,
    term: str,
    context: str = "",
    *,
    definition: str = "",
    options: Sequence[str] = (),
    bos_token: str = "",
    demos: Sequence[tuple[str, str, str]] = (),
) -> str:
    """Return the model input of any task; word interpretation is exactly `build_prompt`."""
    if task not in TASK_TEMPLATES:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TASK_TEMPLATES)}")
    if task == "word_interpretation":
        return build_prompt(term, context, bos_token=bos_token, demos=demos)
    if demos:
        raise ValueError(f"few-shot demos are defined for word_interpretation only, not {task}")
    if task == "wsd" and len(options) != len(OPTION_LETTERS):
        raise ValueError(f"wsd needs exactly {len(OPTION_LETTERS)} options, got {len(options)}")
    text = load_template(TASK_TEMPLATES[task]).format(
        term=term.strip(), context=context.strip(), definition=definition.strip(), options=format_options(options)
    )
    return bos_token + text + "\n"
