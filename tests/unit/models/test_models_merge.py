"""Merging an adapter into its base: plain transformers loads it, logits match within 1e-4."""

from __future__ import annotations

import json

from tests.factories import make_lora_adapter


def test_merged_logits_equal_the_adapter_model(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.merge import merge_adapter
    from models.prompts import EXTRACT_INSTRUCTION, render_prompt
    from models.store import base_fingerprint

    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "adapter", seed=5)
    out = merge_adapter(tiny_model_dir, adapter, tmp_path / "merged")

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template  # the tokenizer travels with the merged weights
    assert not (out / "adapter_config.json").exists()
    assert json.loads((out / "merge.json").read_text())["base_fingerprint"] == base_fingerprint(tiny_model_dir)

    prompts = [render_prompt(tokenizer, EXTRACT_INSTRUCTION, t) for t in ("Invoice INV-1 total 12.50", "ACME GmbH")]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with_adapter = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), str(adapter)).eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = with_adapter(**batch).logits
        got = merged(**batch).logits
        base = plain(**batch).logits
    assert (got - expected).abs().max().item() < 1e-4
    assert (base - expected).abs().max().item() > 1e-2  # the adapter does change the model
