"""Constrained answers in batches: requests grouped into decode batches, answers parsed.

`decode_in_batches` runs `models.decoding.decode_batch` over batches of at most
`batch_size` requests, grouped by adapter, then prompt length. A batch whose requests all
use one adapter is served through that adapter's merged weights when `merged_decoding`
is on (`models.adapters.AdapterSet.merged_weights`). Each answer is charged an equal
share of its batch's time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.adapters import AdapterSet

log = logging.getLogger(__name__)


@dataclass
class Generation:
    """One constrained answer: parsed value, text and token-level detail."""

    value: Any
    text: str
    token_ids: list[int]
    token_probs: list[float]
    byte_offsets: list[int]
    adapter_version: str | None
    model_ms: float
    closed: bool = False
    error: str | None = None  # the grammar engine failed on this answer (see decode_batch)


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:])


def contiguous_head_input(model) -> None:
    """Make the output head's input contiguous (idempotent).

    With `logits_to_keep=1` the head sees the last position of a wider forward pass, a
    strided view. `torch.matmul` cannot fold such a 3-d view against a transposed 2-d
    weight (tied embeddings) into one matrix product, so it expands the weight per row
    and copies it: 0.9 GB per decode step at batch 16 with SmolLM2, several times the cost
    of the rest of the step. A contiguous input takes the single-GEMM path.
    """
    head = model.get_output_embeddings()
    if head is not None and not getattr(head, "_contiguous_input", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._contiguous_input = True


def decode_in_batches(
    adapters: AdapterSet, bank, requests: list, *, device, pad_id: int, batch_size: int,
    merged_decoding: bool, fast_forward: bool,
) -> tuple[list, list[float]]:
    """Decoded answers to `requests` (`models.decoding.DecodeRequest`), in order, and each
    answer's share of its batch's time in milliseconds."""
    from models.decoding import decode_batch

    order = sorted(range(len(requests)), key=lambda i: (requests[i].adapter or "", len(requests[i].prompt_ids)))
    results: list = [None] * len(requests)
    shares: list[float] = [0.0] * len(requests)
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        t0 = time.perf_counter()
        group = [requests[i] for i in idx]
        merged = contextlib.nullcontext()
        served = {r.adapter for r in group}
        if merged_decoding and adapters.peft is not None and len(served) == 1 and None not in served:
            merged = adapters.merged_weights(served.pop())
            group = [dataclasses.replace(r, adapter=None) for r in group]
        with merged:
            batch = decode_batch(
                adapters.model, bank, group, device=device,
                pad_id=pad_id, fast_forward=fast_forward,
            )
        ms = 1000 * (time.perf_counter() - t0) / len(idx)
        for i, d in zip(idx, batch):
            results[i], shares[i] = d, ms
    return results, shares


def to_generation(decoded, label: str | None, ms: float) -> Generation:
    """A decoded answer (`models.decoding.Decoded`) with its parsed value."""
    try:
        value = json.loads(decoded.text) if decoded.error is None else None
    except ValueError:  # unreachable under the grammar; reported, never raised mid-batch
        log.error("constrained answer is not JSON: %.200s", decoded.text)
        value = None
    return Generation(value, decoded.text, decoded.token_ids, decoded.token_probs, decoded.byte_offsets, label, ms,
                      decoded.closed, decoded.error)
