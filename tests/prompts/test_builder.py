"""The shared prompt builder."""

from __future__ import annotations

import pytest

from prompts.builder import build_prompt, build_training_text


def test_paper_format():
    prompt, target = build_training_text(" bark ", "a dog barked", "make a noise ", bos_token="<s>", eos_token="</s>")
    assert prompt == '<s>"a dog barked" What is the definition of "bark"?\n\n'
    assert target == "make a noise</s>"


def test_inference_prompt_is_prefix_of_training_text():
    prompt = build_prompt("bank", "she sat on the bank", bos_token="<|begin_of_text|>")
    p, t = build_training_text("bank", "she sat on the bank", "sloping land", bos_token="<|begin_of_text|>")
    assert (p + t).startswith(prompt) and p == prompt


def test_demos_rendered_like_training_examples():
    prompt = build_prompt("b", "ctx b", demos=[("a", "ctx a", "def a")])
    demo_p, demo_t = build_training_text("a", "ctx a", "def a")
    assert prompt.startswith(demo_p + demo_t + "\n\n")


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown prompt template"):
        build_prompt("a", "b", template="nope")


def test_task_templates_match_the_original_texts():
    from prompts.builder import build_task_prompt

    ctx = build_task_prompt("context_synthesis", "bank", "she sat on the bank")
    assert ctx.startswith("Assume that you are a professional data annotator.\n\nPlease write ten long sentences")
    assert ctx.endswith("Word: bank\n\nReference text: she sat on the bank\n\ngenerated sentences:\n")
    d = build_task_prompt("definition_synthesis", "bank", definition="sloping land")
    assert d.endswith("Word: bank\n\nReference definition: sloping land\n\nCompiled definitions:\n")
    w = build_task_prompt("wsd", "bank", "she sat on the bank", options=["w", "x", "y", "z"])
    assert w.startswith("Please choose the right option from A, B, C, and D.\n")
    assert "\nA. w\nB. x\nC. y\nD. z\n" in w
    assert build_task_prompt("word_interpretation", "a", "b c", bos_token="<s>") == build_prompt(
        "a", "b c", bos_token="<s>"
    )
    with pytest.raises(ValueError, match="unknown task"):
        build_task_prompt("translate", "a")
    with pytest.raises(ValueError, match="demos"):
        build_task_prompt("wsd", "a", "b", options="abcd", demos=[("x", "y", "z")])
