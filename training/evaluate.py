"""Evaluation of a trained adapter through the real inference path.

Extraction: each eval record's document goes through `ModelRuntime.extract` with the new
adapter (the same batched, schema-constrained decoding the workers use) and the fields
are compared with the record's answer, field by field, with the schema's semantics:
dates as dates, amounts as decimals, text exact after whitespace normalisation.
Toolchain: `ModelRuntime.propose` is asked for each step decision and compared with the
record's decision.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from invoicechain.schema import ANSWER_TOKENS, AMOUNT_FIELDS, DATE_FIELDS, SCALAR_FIELDS, InvoiceFields
from invoicechain.enums import AdapterName

#: Fields scored for extraction: every scalar field, then the line items and the bank details as wholes.
EVAL_FIELDS: tuple[str, ...] = (*SCALAR_FIELDS, "line_items", "bank")
_LINE_AMOUNTS = ("quantity", "unit_price", "amount")


def _as_dict(fields: Any) -> dict | None:
    if fields is None:
        return None
    if hasattr(fields, "model_dump"):
        return fields.model_dump(mode="json")
    if isinstance(fields, str):
        try:
            fields = json.loads(fields)
        except ValueError:
            return None
    return fields if isinstance(fields, dict) else None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = " ".join(str(v).split())
    return s or None


def _decimal(v: Any) -> Decimal | str | None:
    if v is None:
        return None
    try:
        return Decimal(str(v).strip())
    except (InvalidOperation, ValueError):
        return _text(v)  # unparsable: compare as text, so garbage never equals a number


def _date(v: Any) -> date | str | None:
    if v is None:
        return None
    try:
        return date.fromisoformat(str(v).strip())
    except ValueError:
        return _text(v)


def normalise_value(name: str, v: Any) -> Any:
    """A field value in the form it is compared in."""
    if name in DATE_FIELDS:
        return _date(v)
    if name in AMOUNT_FIELDS:
        return _decimal(v)
    if name == "currency":
        t = _text(v)
        return t.upper() if t else None
    if name == "line_items":
        items = v or []
        out = []
        for it in items if isinstance(items, list) else []:
            it = it if isinstance(it, dict) else {}
            out.append(
                (_text(it.get("description")), *(_decimal(it.get(k)) for k in _LINE_AMOUNTS))
            )
        return tuple(out)
    if name == "bank":
        b = v if isinstance(v, dict) else {}
        vals = tuple(_text(b.get(k)) for k in ("iban", "bic", "account_number", "routing_number"))
        # No bank block and a block of nulls say the same thing.
        return None if all(x is None for x in vals) else tuple(
            x.replace(" ", "").upper() if (x and i == 0) else x for i, x in enumerate(vals)
        )
    return _text(v)


def fields_equal(name: str, predicted: Any, gold: Any) -> bool:
    """Whether two values of one schema field mean the same."""
    return normalise_value(name, predicted) == normalise_value(name, gold)


def score_extraction(predictions: Sequence[Any], gold: Sequence[Any]) -> dict:
    """Field exact match, per field and overall, of predicted fields against gold answers.

    `field_exact_match` counts every (document, field) pair, nulls included: a value
    invented for a field the document does not state is an error too.
    `stated_field_exact_match` counts only fields the gold answer states;
    `document_exact_match` is the share of documents with every field right. A
    prediction of None (nothing usable came back) gets every field wrong.
    """
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions for {len(gold)} gold answers")
    hits = {f: 0 for f in EVAL_FIELDS}
    stated_hits = {f: 0 for f in EVAL_FIELDS}
    stated = {f: 0 for f in EVAL_FIELDS}
    docs_right = 0
    for pred, ref in zip(predictions, gold):
        p, g = _as_dict(pred), _as_dict(ref) or {}
        all_ok = True
        for f in EVAL_FIELDS:
            is_stated = normalise_value(f, g.get(f)) not in (None, ())
            ok = p is not None and fields_equal(f, p.get(f), g.get(f))
            hits[f] += ok
            all_ok &= ok
            if is_stated:
                stated[f] += 1
                stated_hits[f] += ok
        docs_right += all_ok
    n = len(gold)
    total_stated = sum(stated.values())
    return {
        "count": n,
        "field_exact_match": sum(hits.values()) / (n * len(EVAL_FIELDS)) if n else 0.0,
        "stated_field_exact_match": sum(stated_hits.values()) / total_stated if total_stated else None,
        "document_exact_match": docs_right / n if n else 0.0,
        "per_field": {f: hits[f] / n if n else 0.0 for f in EVAL_FIELDS},
        "per_field_stated": {f: (stated_hits[f] / stated[f]) if stated[f] else None for f in EVAL_FIELDS},
    }


def is_extract_record(record: dict) -> bool:
    from models.prompts import EXTRACT_INSTRUCTION

    return record.get("instruction") == EXTRACT_INSTRUCTION


def toolchain_step(record: dict) -> str | None:
    """The toolchain step a record trains, from its instruction (None for other records)."""
    from models.prompts import TOOLCHAIN_INSTRUCTIONS

    for step, text in TOOLCHAIN_INSTRUCTIONS.items():
        if record.get("instruction") == text:
            return str(step)
    return None


def _decision_of(output: Any) -> str | None:
    out = _as_dict(output) if not isinstance(output, dict) else output
    if out is None:
        return None
    d = out.get("decision")
    if d is None and hasattr(output, "decision"):
        d = output.decision
    return str(d) if d is not None else None


def _load_runtime(base_dir: Path, adapter: str, adapter_dir: Path, device: str, version: int | str | None, **limits):
    from models.runtime import ModelRuntime

    runtime = ModelRuntime(base_dir, device=device, **limits)
    runtime.load_adapter(adapter, adapter_dir, version if version is not None else "candidate")
    return runtime


def evaluate_extraction(
    runtime,
    records: Sequence[dict],
    adapter: str = AdapterName.EXTRACT,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Extract every record's document with the runtime and score against the record's answer."""
    from extraction.reconcile import undo

    recs = [r for r in records if is_extract_record(r)]
    preds: list[Any] = []
    decoded: list[Any] = []
    t0 = time.perf_counter()
    for i in range(0, len(recs), batch_size):
        chunk = recs[i : i + batch_size]
        results = runtime.extract([r["input"] for r in chunk], adapter=adapter)
        for res in results:
            fields = getattr(res, "fields", None)
            changes = getattr(res, "reconciled", None) or []
            preds.append(fields)
            decoded.append(undo(fields, changes) if fields is not None and changes else fields)
        if progress:
            progress(len(preds), len(recs))
    gold = [r["output"] for r in recs]
    scores = score_extraction(preds, gold)
    scores["seconds"] = round(time.perf_counter() - t0, 2)
    # The same answers before amount reconciliation (extraction.reconcile): the model's own share.
    scores["as_decoded"] = score_extraction(decoded, gold)
    scores["reconciled_documents"] = sum(p is not d for p, d in zip(preds, decoded))
    return scores


def evaluate_toolchain(runtime, records: Sequence[dict], adapter: str = AdapterName.TOOLCHAIN, batch_size: int = 16) -> dict:
    """Decision accuracy of the runtime's proposals against the records' decisions, overall and per step."""
    items, wanted = [], []
    for r in records:
        step = toolchain_step(r)
        if step is None:
            continue
        items.append((step, json.loads(r["input"]) if r.get("input") else {}))
        wanted.append(_decision_of(r["output"]))
    t0 = time.perf_counter()
    proposals: list[Any] = []
    for i in range(0, len(items), batch_size):
        proposals.extend(runtime.propose_many(items[i : i + batch_size], adapter=adapter))
    per_step: dict[str, list[int]] = {}
    for (step, _), want, got in zip(items, wanted, proposals):
        hit = per_step.setdefault(step, [0, 0])
        decision = _decision_of(got)
        hit[0] += int(decision is not None and decision == want)
        hit[1] += 1
    right = sum(h[0] for h in per_step.values())
    total = sum(h[1] for h in per_step.values())
    return {
        "count": total,
        "decision_accuracy": right / total if total else 0.0,
        "per_step": {s: h[0] / h[1] for s, h in per_step.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }


def evaluate_adapter(
    base_dir: str | Path,
    adapter: str,
    adapter_dir: str | Path,
    records: Sequence[dict],
    device: str = "auto",
    version: int | str | None = None,
    max_records: int | None = None,
    runtime=None,
    max_new_tokens: int = ANSWER_TOKENS,
    max_input_tokens: int = 3072,
) -> dict:
    """Evaluate a freshly trained adapter on eval records through the real runtime.

    Records are scored by kind: extraction records by field exact match, toolchain
    records by decision accuracy. The headline `field_exact_match` (the promotion
    metric) is the extraction score, or the decision accuracy for a toolchain-only set.
    """
    recs = list(records)[:max_records] if max_records else list(records)
    runtime = runtime or _load_runtime(
        Path(base_dir), adapter, Path(adapter_dir), device, version,
        max_new_tokens=max_new_tokens, max_input_tokens=max_input_tokens,
    )
    out: dict[str, Any] = {}
    if any(is_extract_record(r) for r in recs):
        out["extraction"] = evaluate_extraction(runtime, recs, adapter=adapter)
        out["field_exact_match"] = out["extraction"]["field_exact_match"]
    if any(toolchain_step(r) for r in recs):
        out[AdapterName.TOOLCHAIN] = evaluate_toolchain(runtime, recs, adapter=adapter)
        out["decision_accuracy"] = out[AdapterName.TOOLCHAIN]["decision_accuracy"]
        out.setdefault("field_exact_match", out["decision_accuracy"])
    return out


def empty_fields() -> dict:
    """An all-null answer (what an untrained model that says nothing would score)."""
    return InvoiceFields().model_dump(mode="json")
