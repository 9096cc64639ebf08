"""Attention metrics on eval examples: entropy and top-k concentration per layer and head, and
how much attention the answer tokens pay to the field labels printed on the document.

Attention weights only exist in the eager attention implementation; training runs with
SDPA. The probe switches the model to eager for its own forward passes and back again,
and times itself so the cost shows in the run's metrics.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from invoicechain.lexicon import lexicon
from models.prompts import encode_example, render_prompt

#: Words that label invoice fields on documents (the lexicon's `label_words`); matched
#: case-insensitively as whole words.
FIELD_LABELS: tuple[str, ...] = lexicon().words("label_words")
TOP_K = 5

_LABEL_RE = re.compile(r"(?<![A-Za-z0-9])" + lexicon().alternation("label_words") + r"(?![A-Za-z0-9])", re.IGNORECASE)


def label_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of field-label words in a text."""
    return [m.span() for m in _LABEL_RE.finditer(text)]


def label_token_positions(tokenizer, record: dict) -> list[int]:
    """Prompt token positions that overlap a field label inside the document text.

    Only the document part of the prompt is searched: the instruction and system text
    also mention "invoice", but they are the same for every record.
    """
    prompt = render_prompt(tokenizer, record["instruction"], record.get("input", "") or "")
    doc = record.get("input", "") or ""
    start = prompt.rfind(doc) if doc else -1
    if start < 0:
        return []
    spans = [(start + a, start + b) for a, b in label_spans(doc)]
    if not spans:
        return []
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    positions = []
    for pos, (a, b) in enumerate(enc["offset_mapping"]):
        if b > a and any(a < sb and b > sa for sa, sb in spans):
            positions.append(pos)
    return positions


@dataclass
class _ProbeExample:
    input_ids: list[int]
    answer_positions: list[int]  # positions of answer tokens (they act as queries)
    label_positions: list[int]
    prompt_len: int


def attention_stats(attn, answer_positions: Sequence[int], label_positions: Sequence[int], top_k: int = TOP_K) -> dict:
    """Per-head statistics of one layer's attention probabilities [H, T, T] for one example.

    entropy: mean over query positions of -sum p log p (nats; row i is at most log(i+1));
    topk: mean over queries of the mass on the k largest keys; label_mass: mean over
    answer queries of the mass on label-token keys.
    """
    import torch

    p = attn.float()
    # Rows of a bf16 model sum to 1 only within bf16 rounding; renormalise before the logs.
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-30)
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)  # [H, T]
    k = min(top_k, p.shape[-1])
    topk = p.topk(k, dim=-1).values.sum(-1)  # [H, T]
    if answer_positions and label_positions:
        q = torch.tensor(list(answer_positions), dtype=torch.long)
        kpos = torch.tensor(list(label_positions), dtype=torch.long)
        mass = p[:, q][:, :, kpos].sum(-1).mean(-1)  # [H]
    else:
        mass = torch.zeros(p.shape[0])
    return {"entropy": ent.mean(-1), "topk": topk.mean(-1), "label_mass": mass}


class AttentionProbe:
    """Runs a few eval records through the model with attention weights and summarises them."""

    def __init__(self, tokenizer, records: Sequence[dict], device: str, top_k: int = TOP_K):
        self.device = device
        self.top_k = top_k
        self.examples: list[_ProbeExample] = []
        for r in records:
            enc = encode_example(tokenizer, r)
            prompt_len = enc.prompt_len
            self.examples.append(
                _ProbeExample(
                    input_ids=list(enc.input_ids),
                    answer_positions=list(range(prompt_len, len(enc.input_ids))),
                    label_positions=[p for p in label_token_positions(tokenizer, r) if p < prompt_len],
                    prompt_len=prompt_len,
                )
            )

    def measure(self, model) -> dict:
        """Metrics as nested lists [layer][head], averaged over the probe's examples (eager attention)."""
        import torch

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        previous = base.config._attn_implementation
        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        label_fraction = []
        max_len = 0
        try:
            base.set_attn_implementation("eager")
            with torch.no_grad():
                for ex in self.examples:
                    ids = torch.tensor([ex.input_ids], device=self.device)
                    out = model(input_ids=ids, output_attentions=True, use_cache=False, logits_to_keep=1)
                    max_len = max(max_len, len(ex.input_ids))
                    label_fraction.append(len(ex.label_positions) / max(1, ex.prompt_len))
                    per_layer = [
                        attention_stats(a[0].cpu(), ex.answer_positions, ex.label_positions, self.top_k)
                        for a in out.attentions
                    ]
                    for key in ("entropy", "topk", "label_mass"):
                        stacked = torch.stack([s[key] for s in per_layer])  # [L, H]
                        sums[key] = sums.get(key, 0) + stacked
        finally:
            base.set_attn_implementation(previous)
            if was_training:
                model.train()
        n = max(1, len(self.examples))
        result = {k: (v / n).tolist() for k, v in sums.items()}
        result.update(
            {
                "examples": len(self.examples),
                "max_seq_len": max_len,
                "entropy_bound": math.log(max_len) if max_len else 0.0,
                "top_k": self.top_k,
                # What a head would put on labels if it attended uniformly over the prompt.
                "label_fraction_of_prompt": sum(label_fraction) / n if label_fraction else 0.0,
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        return result


def layer_means(matrix: Sequence[Sequence[float]]) -> list[float]:
    return [sum(row) / len(row) for row in matrix] if matrix else []


def log_to_tensorboard(writer, metrics: dict, step: int) -> None:
    """Per-layer means of each attention metric as scalars."""
    for key in ("entropy", "topk", "label_mass"):
        if key not in metrics:
            continue
        for layer, value in enumerate(layer_means(metrics[key])):
            writer.add_scalar(f"attention/{key}/layer_{layer:02d}", value, step)
    writer.add_scalar("attention/seconds", metrics.get("seconds", 0.0), step)
