"""LoRA: adapters saved, merged export equal to base + adapters; QLoRA refuses clearly without CUDA."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.train import tiny_args
from training.train import main


def test_lora_adapters_and_merged_export_agree(tiny_llama, urban_splits, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    train, valid = urban_splits
    out = tmp_path / "lora"
    assert (
        main(
            tiny_args(
                tiny_llama,
                train,
                valid,
                out,
                "--use-lora",
                "--lora-r",
                "4",
                "--lora-alpha",
                "8",
                "--learning-rate",
                "5e-2",
                "--max-steps",
                "2",
                "--eval-times",
                "1",
            )
        )
        == 0
    )
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4
    ids = torch.tensor([[1, 200, 300, 400, 500, 600]])
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        adapted = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
        adapter_logits = adapted(ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-4)  # the adapters learned something
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_qlora_without_cuda_is_a_clear_error(tiny_llama, urban_splits, tmp_path, capsys):
    train, valid = urban_splits
    assert main(tiny_args(tiny_llama, train, valid, tmp_path / "q", "--use-lora", "--qlora")) == 2
    assert "QLoRA needs a CUDA GPU" in capsys.readouterr().err
