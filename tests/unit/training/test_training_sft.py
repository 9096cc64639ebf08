"""LoRA fine-tuning on a tiny random Llama: the loss falls, only answer tokens count, packed
batches equal separate ones, attention metrics and plots are written (a killed run resuming:
tests/integration/test_training_resume.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.factories import invoice_records, tiny_config
from training.data import IGNORE_INDEX, collate, encode_records
from training.sft import answer_loss_sum, train_lora


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_loss_goes_down_and_outputs_are_written(tiny_model_dir, tmp_path):
    seen = []
    result = train_lora(tiny_config(), invoice_records(40), tiny_model_dir, tmp_path / "run", progress=seen.append)
    m = result.metrics
    assert result.stopped == "completed" and result.steps == 12 == result.total_steps
    assert m["eval_loss"] < m["eval_loss_first"]
    first, last = m["history"][:3], m["history"][-3:]
    assert sum(h["loss"] for h in last) < sum(h["loss"] for h in first)
    assert [p["step"] for p in seen if "step" in p][-1] == 12
    assert {"step", "total_steps", "loss", "eval_loss", "tokens_per_s", "epoch"} <= set(seen[-1])
    adapter = result.adapter_dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "metrics.json", "attention.json",
                 "plots/loss.png", "plots/attention_entropy.png", "plots/attention_label_mass.png"):
        assert (adapter / name).is_file(), name
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((adapter / "metrics.json").read_text())["steps"] == 12
    # The base is named by its folder, not by this machine's path.
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == Path(tiny_model_dir).name
    assert not (tmp_path / "run" / "checkpoints").exists()  # a finished run keeps the adapter only

    # Rerunning a finished run (a job cut off during its evaluation) trains nothing again.
    again = train_lora(tiny_config(), invoice_records(40), tiny_model_dir, tmp_path / "run", progress=seen.append)
    assert again.resumed_from_step == 12 and again.metrics["history"] == m["history"]
    assert again.eval_records == result.eval_records


def test_loss_counts_answer_tokens_only(tiny):
    """The loss equals a manual cross-entropy over answer tokens, whatever the prompt targets are."""
    import torch
    import torch.nn.functional as F

    model, tok = tiny
    examples = encode_records(tok, invoice_records(3))
    batch = collate(examples, [[0], [1], [2]], tok.pad_token_id, packed=False)
    with torch.no_grad():
        loss_sum, n = answer_loss_sum(model, batch)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    per_token = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        batch.input_ids[:, 1:].reshape(-1), reduction="none",
    ).view(batch.input_ids.shape[0], -1)
    answer = batch.labels[:, 1:] != IGNORE_INDEX
    real = batch.attention_mask[:, 1:].bool()
    assert n == int(answer.sum()) == batch.answer_tokens
    assert torch.allclose(loss_sum, per_token[answer].sum(), rtol=1e-4)
    # The prompt positions do carry a (large) loss in the model: masking is what removes it.
    assert per_token[real & ~answer].sum() > 0.5 * per_token[answer].sum()

    # Changing the target of one answer token changes the loss.
    pos = int(torch.nonzero(answer[0])[0]) + 1
    batch.labels[0, pos] = (batch.labels[0, pos] + 1) % logits.shape[-1]
    with torch.no_grad():
        changed, _ = answer_loss_sum(model, batch)
    assert float(changed) != float(loss_sum)


def test_prompt_gradients_do_not_reach_the_loss_from_prompt_targets(tiny):
    """The loss only depends on the logits of positions that predict answer tokens."""
    import torch

    model, tok = tiny
    [ex] = encode_records(tok, invoice_records(1))
    batch = collate([ex], [[0]], tok.pad_token_id, packed=False)
    captured = {}

    def hook(_module, _inputs, output):
        output.retain_grad()
        captured["h"] = output

    handle = model.model.norm.register_forward_hook(hook)
    try:
        loss, _ = answer_loss_sum(model, batch)
        loss.backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    grad = captured["h"].grad[0].abs().sum(-1)  # per position
    prompt_len = sum(1 for x in ex.labels if x == IGNORE_INDEX)
    # The last prompt position predicts the first answer token; earlier ones predict prompt tokens.
    assert torch.all(grad[: prompt_len - 1] == 0)
    assert torch.all(grad[prompt_len - 1 : len(ex) - 1] > 0)
    assert torch.all(grad[len(ex) - 1 :] == 0)  # the last token and the padding predict nothing


def test_packed_rows_equal_separate_examples(tiny):
    """Position ids restart per example and attention never crosses examples in a packed row."""
    import torch

    model, tok = tiny
    examples = encode_records(tok, invoice_records(3))
    with torch.no_grad():
        separate = sum(float(answer_loss_sum(model, collate(examples, [[i]], 0, packed=False))[0]) for i in range(3))
        packed, n = answer_loss_sum(model, collate(examples, [[0, 1, 2]], 0, packed=True))
    assert n == sum(e.answer_tokens for e in examples)
    assert math.isclose(float(packed), separate, rel_tol=1e-4)


def test_attention_metrics_have_layer_by_head_shape_and_bounds(tiny_model_dir, tmp_path):
    result = train_lora(tiny_config(max_steps=4, eval_every=2), invoice_records(30), tiny_model_dir, tmp_path / "r")
    history = json.loads((result.adapter_dir / "attention.json").read_text())
    assert [h["step"] for h in history] == [0, 2, 4]
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    layers, heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    for h in history:
        bound = math.log(h["max_seq_len"])
        for key in ("entropy", "topk", "label_mass"):
            assert len(h[key]) == layers and all(len(row) == heads for row in h[key])
        assert all(0.0 <= v <= bound + 1e-4 for row in h["entropy"] for v in row)
        assert all(0.0 < v <= 1.0 + 1e-5 for row in h["topk"] for v in row)
        assert all(0.0 < v <= 1.0 + 1e-5 for row in h["label_mass"] for v in row)
        assert h["seconds"] > 0
    assert result.metrics["attention_seconds"] > 0
    from PIL import Image

    with Image.open(result.adapter_dir / "plots" / "attention_entropy.png") as img:
        assert img.size[0] > 100 and img.size[1] > 100


def test_label_tokens_are_found_in_the_document(tiny):
    from training.attention import label_token_positions

    _, tok = tiny
    rec = invoice_records(1)[0]
    positions = label_token_positions(tok, rec)
    ids = tok(__import__("models.prompts", fromlist=["x"]).render_prompt(tok, rec["instruction"], rec["input"]),
              add_special_tokens=False)["input_ids"]
    text = "".join(tok.decode([ids[p]]) for p in positions)
    for word in ("Invoice", "Date", "Due", "PO", "Total"):
        assert word in text
    assert "INV-0000" not in text


def test_cancel_stops_at_the_next_step_and_keeps_a_checkpoint(tiny_model_dir, tmp_path):
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 3

    result = train_lora(tiny_config(), invoice_records(30), tiny_model_dir, tmp_path / "c", should_cancel=should_cancel)
    assert result.stopped == "cancelled" and result.steps == 3 and result.adapter_dir is None
    assert (tmp_path / "c" / "checkpoints" / "latest.json").is_file()


def test_early_stopping_on_eval_loss(tiny_model_dir, tmp_path):
    # A learning rate far too high makes the eval loss worse at once.
    cfg = tiny_config(max_steps=30, eval_every=1, early_stopping_patience=2, learning_rate=5.0,
                      attention_metrics=False, max_grad_norm=None)
    result = train_lora(cfg, invoice_records(30), tiny_model_dir, tmp_path / "e")
    assert result.stopped == "early_stopped" and result.steps < 30
    losses = [e["eval_loss"] for e in result.metrics["eval_history"]]
    # Improvements under 1e-4 do not count as progress.
    assert min(losses) <= result.metrics["best_eval_loss"] < min(losses) + 1e-4


def test_rerun_with_other_settings_refuses_the_old_checkpoints(tiny_model_dir, tmp_path):
    out = tmp_path / "x"
    train_lora(tiny_config(attention_metrics=False), invoice_records(30), tiny_model_dir, out,
               should_cancel=lambda: True)
    with pytest.raises(ValueError, match="different run"):
        train_lora(tiny_config(lora_r=4, attention_metrics=False), invoice_records(30), tiny_model_dir, out)


def test_init_adapter_continues_from_its_weights_and_shape(tiny_model_dir, tmp_path):
    """Continued training starts from the given adapter: its rank and targets, its weights."""
    import torch
    from safetensors.torch import load_file

    from training.sft import add_lora, init_adapter_shape, load_base, trainable_state

    first = train_lora(tiny_config(max_steps=4), invoice_records(24), tiny_model_dir, tmp_path / "first")
    saved = load_file(str(first.adapter_dir / "adapter_model.safetensors"))

    config = init_adapter_shape(tiny_config(lora_r=2, target_modules=["q_proj"], init_adapter=str(first.adapter_dir)))
    assert config.lora_r == 8 and config.lora_alpha == 16
    assert {m.rsplit(".", 1)[-1] for m in config.target_modules} == {
        "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}
    model, _tok = load_base(tiny_model_dir, "cpu")
    state = trainable_state(add_lora(model, config))
    assert len(state) == len(saved)
    for name, value in state.items():
        key = name.replace(".default.", ".")
        assert torch.equal(value, saved[key].float()), name

    # A continued run starts where the first ended: its first eval loss is below the first run's first.
    again = train_lora(tiny_config(max_steps=4, init_adapter=str(first.adapter_dir)), invoice_records(24),
                       tiny_model_dir, tmp_path / "again")
    assert again.metrics["eval_loss_first"] < first.metrics["eval_loss_first"]

    with pytest.raises(ValueError, match="holds no adapter_config.json"):
        init_adapter_shape(tiny_config(init_adapter=str(tmp_path)))
