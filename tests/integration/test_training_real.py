"""A real LoRA on the default base (SmolLM2-135M): a handful of steps lower the eval loss."""

from __future__ import annotations

import pytest

from tests.factories import invoice_records
from training.sft import TrainConfig, train_lora


@pytest.mark.slow
def test_real_lora_lowers_eval_loss(base_model_dir, tmp_path):
    records = invoice_records(14, seed=5)
    config = TrainConfig(
        max_steps=6, batch_size=2, learning_rate=1e-3, lora_r=8, lora_alpha=16, warmup_ratio=0.0,
        eval_every=3, early_stopping_patience=None, attention_examples=1, device="cpu",
    )
    result = train_lora(config, records[:10], base_model_dir, tmp_path / "run", eval_records=records[10:])
    m = result.metrics
    assert result.stopped == "completed" and result.steps == 6
    assert [e["step"] for e in m["eval_history"]] == [0, 3, 6]
    assert m["eval_loss"] < m["eval_loss_first"]  # step 6 against the untrained step 0
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    att = (result.adapter_dir / "attention.json").read_text()
    assert '"label_mass"' in att
