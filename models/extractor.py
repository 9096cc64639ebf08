"""Invoice fields from documents through the runtime: windows, batched answers, one result each.

`extract(runtime, texts, adapter)` cuts every document into windows (`models.windows`),
asks for all windows of all documents in shared batches (under each window's grounded
grammar, or the plain schema grammar), reads each answer's fields, confidence and
grounding, and finishes every document with `extraction.pipeline.finish`: windows
merged, amounts reconciled.

Confidence of a field is the lowest probability among the tokens that wrote its value
(closing quote and the separator token it shares included), under the masked,
renormalised distribution that was decoded: forced tokens count as 1. A null field's
confidence is that of writing `null`.
"""

from __future__ import annotations

import bisect
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from extraction.pipeline import finish, reconcile_merged
from models.prompts import EXTRACT_INSTRUCTION, render_prompt

if TYPE_CHECKING:
    from models.generation import Generation
    from models.runtime import ModelRuntime

log = logging.getLogger(__name__)


@dataclass
class ExtractionResult:
    """Invoice fields of one document, with how sure the model was and where each value is.

    `confidence` has one number per top-level field. `grounding` maps each scalar field to
    `{"start", "end"}` (a character span in the document text), `{"grounded": false}`, or
    None for a null value; `line_items` to a list of such maps per item field; `bank` to a
    map per bank field (or None). `adapter_version` is "name:version", None for the base.
    `model_ms` is this document's share of the batched generation time.
    """

    fields: dict
    confidence: dict[str, float]
    grounding: dict
    adapter_version: str | None
    model_ms: float
    windows: int = 1
    #: The raw JSON answer of each window, as generated.
    outputs: list[str] = field(default_factory=list)
    #: Changes made by amount reconciliation (`extraction.reconcile.Reconciled.as_dict()`), in order.
    reconciled: list[dict] = field(default_factory=list)
    #: Names of the reconciliation steps that changed the answer (`extraction.pipeline.finish`), in order.
    rules: list[str] = field(default_factory=list)
    #: What a per-vendor memory changed (`models.vendor_memory.recall`), None when none applied.
    memory: dict | None = None


def top_level_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character span of each top-level value in a compact JSON object."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    pos = 1 if text.startswith("{") else len(text)
    while pos < len(text) and text[pos] != "}":
        key, pos = decoder.raw_decode(text, pos)
        pos += 1  # ':'
        start = pos
        _, pos = decoder.raw_decode(text, pos)
        spans[key] = (start, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
    return spans


def field_confidence(gen: Generation) -> dict[str, float]:
    """Lowest token probability over each top-level value of a generation."""
    text = gen.text
    spans = top_level_spans(text)
    data = text.encode("utf-8")
    ascii_only = len(data) == len(text)

    def to_byte(i: int) -> int:
        return i if ascii_only else len(text[:i].encode("utf-8"))

    starts = gen.byte_offsets
    ends = starts[1:] + [len(data)]
    out = {}
    for key, (cs, ce) in spans.items():
        bs, be = to_byte(cs), to_byte(ce)
        # Tokens overlapping [bs, be], the separator token right after the value included.
        lo = max(0, bisect.bisect_right(starts, bs) - 1)
        probs = [gen.token_probs[k] for k in range(lo, len(starts)) if starts[k] <= be and ends[k] > bs]
        out[key] = round(min(probs), 6) if probs else 1.0
    return out


def window_requests(runtime: ModelRuntime, texts: list[str], adapter: str | None, schema: dict):
    """One generation request per window of every text, and the (document index, start, end)
    each belongs to."""
    requests, owners = [], []
    for doc_index, text in enumerate(texts):
        text = text or ""
        for s, e in runtime.windows(text):
            window = text[s:e]
            grammar = runtime.bank.compile_document(schema, window) if runtime.grounded else schema
            requests.append((adapter, render_prompt(runtime.tokenizer, EXTRACT_INSTRUCTION, window), grammar))
            owners.append((doc_index, s, e))
    return requests, owners


def answer_windows(runtime: ModelRuntime, requests: list, schema: dict) -> list[Generation]:
    """The answers to the window requests, in order.

    A grounded grammar the engine gave up on (a resource limit on an unusual text): that
    window is decoded again under the plain schema grammar.
    """
    gens = runtime.generate(requests) if requests else []
    retry = [i for i, g in enumerate(gens) if g.error is not None and requests[i][2] is not schema]
    if retry:
        log.warning("grounded decoding failed on %d window(s); decoding them with the plain schema", len(retry))
        again = runtime.generate([(requests[i][0], requests[i][1], schema) for i in retry])
        for i, g in zip(retry, again):
            gens[i] = g
    return gens


def window_parts(gens: list[Generation], owners: list, texts: list[str], schema: dict) -> list[list[dict]]:
    """Each document's windows as read: fields, confidence, grounding, span, answer text, time, version."""
    from pydantic import ValidationError

    from extraction.grounding import ground_fields
    from extraction.schemas import all_null_document
    from invoicechain.schema import InvoiceFields

    per_doc: list[list[dict]] = [[] for _ in texts]
    for gen, (doc_index, s, e) in zip(gens, owners):
        try:
            fields = InvoiceFields.model_validate(gen.value).model_dump(mode="json")
            confidence = field_confidence(gen)
        except (ValidationError, ValueError):
            # The grammar makes this unreachable; stay safe rather than fail a batch.
            log.error("constrained answer did not validate: %.200s", gen.text)
            fields = InvoiceFields.model_validate(all_null_document(schema)).model_dump(mode="json")
            confidence = {k: 0.0 for k in fields}
        per_doc[doc_index].append({
            "fields": fields, "confidence": confidence,
            "grounding": ground_fields(fields, texts[doc_index][s:e], offset=s),
            "span": (s, e), "text": gen.text, "ms": gen.model_ms, "version": gen.adapter_version,
        })
    return per_doc


def document_result(text: str | None, parts: list[dict], reconcile: bool) -> ExtractionResult:
    """One document's result from its windows: merged and, with `reconcile`, reconciled."""
    done = finish(parts, text or "", reconcile=reconcile)
    return ExtractionResult(
        fields=done.fields, confidence=done.confidence, grounding=done.grounding,
        adapter_version=parts[0]["version"], model_ms=round(sum(p["ms"] for p in parts), 3),
        windows=len(parts), outputs=[p["text"] for p in parts], reconciled=done.reconciled, rules=done.rules,
    )


def extract(runtime: ModelRuntime, texts: list[str], adapter: str | None) -> list[ExtractionResult]:
    """Invoice fields for every text: batched, constrained, greedy and deterministic."""
    from extraction.schemas import invoice_json_schema

    runtime.load()
    schema = invoice_json_schema()
    requests, owners = window_requests(runtime, texts, adapter, schema)
    gens = answer_windows(runtime, requests, schema)
    per_doc = window_parts(gens, owners, texts, schema)
    return [document_result(text, parts, runtime.reconcile) for text, parts in zip(texts, per_doc)]


def reconciled_changes(merged: dict, text: str) -> list:
    """Reconciliation on a merged answer, in place (`extraction.pipeline.reconcile_merged`): the changes."""
    return [c for _, changes in reconcile_merged(merged, text) for c in changes]
