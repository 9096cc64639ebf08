"""Extraction as an explicit pipeline, from a document's text to its fields.

    text
      -> document model      `Document`: lines, printed numbers and dates (read once),
                             date order, header and layout hints
      -> candidates          `extraction.candidates`: what each field could be, from the
                             lexicon's labels (`invoicechain.lexicon`)
      -> grammar             `extraction.grammar.GrammarBuilder`: one grounded grammar per
                             window, a value rule per field (`VALUE_RULES`, first match wins)
      -> decoding            the model runtime (`models.runtime`): the only step that needs
                             torch; it compiles the grammar and decodes under it
      -> grounding           `ground`: each value's character span in the text
      -> merge               `merge_windows`: a long document's windows as one answer
      -> reconciliation      `extraction.reconcile.RECONCILIATION_RULES`, named, in order
      -> fields + confidence + grounding + which rules fired (`Finished`)

Everything here is pure Python over the core: no torch, no database. `explain(text)` tells
which rules a document fires without running the model; `finish` adds the reconciliation
steps that changed the model's answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from extraction import candidates
from extraction.grammar import GrammarBuilder
from extraction.grounding import ground_fields
from extraction.reconcile import RECONCILIATION_RULES, run_rules
from invoicechain.schema import AMOUNT_FIELDS


@dataclass
class Document:
    """One document's text and what every later step reads from it, each read once."""

    text: str

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached_property
    def numbers(self) -> list[str]:
        """Every amount the text prints, canonical (`candidates.number_candidates`)."""
        return candidates.number_candidates(self.text)

    @cached_property
    def dates(self) -> candidates.DocumentDates:
        """Its dates, by the label printed before them (`candidates.document_dates`)."""
        return candidates.document_dates(self.text)

    @cached_property
    def date_order(self) -> str | None:
        """`dmy` or `mdy` where its numeric dates or its place show the order, else None."""
        return candidates.date_order(self.text)

    @cached_property
    def header(self) -> list[str]:
        """The first non-blank lines, where the vendor's name is printed."""
        return [ln.strip() for ln in self.lines if ln.strip()][: candidates.HEADER_LINES]

    @cached_property
    def unit_column(self) -> bool:
        """Whether a table header names a unit-of-measure column."""
        return any(candidates.unit_header(ln) for ln in self.lines)

    def hints(self) -> dict:
        """The document model in brief, for `explain`."""
        return {
            "lines": len(self.lines), "numbers": len(self.numbers), "dates": len(self.dates.printed),
            "date_order": self.date_order, "unit_column": self.unit_column,
            "labelled": {
                "due_date": self.dates.due, "invoice_date": self.dates.issue,
                "total_amount": candidates.labelled_totals(self.text),
                **{name: found for name in ("client_name", "payment_terms", "po_number")
                   if (found := candidates.labelled_text(self.text, name))},
                **candidates.labelled_bank_details(self.text),
            },
            "legal_names": candidates.legal_names(self.text),
        }


def grammar_for(document: Document, schema: dict) -> tuple[str, dict[str, str]]:
    """The document's grounded grammar and, by field, the value rule that gave its expression."""
    builder = GrammarBuilder(document.text)
    return builder.build(schema), dict(builder.applied)


def ground(fields: dict, text: str, offset: int = 0) -> dict:
    """Where each value is printed (`extraction.grounding.ground_fields`)."""
    return ground_fields(fields, text, offset=offset)


def merge_windows(parts: list[dict]) -> dict:
    """Merge the per-window extractions of one document.

    Each part holds `fields`, `confidence`, `grounding` and its character `span`. A scalar
    field is taken from the window that states it with the highest confidence; line items
    are concatenated in window order, less an item a window repeats from the overlap with
    the one before it.
    """
    if len(parts) == 1:
        p = parts[0]
        return {"fields": p["fields"], "confidence": p["confidence"], "grounding": p["grounding"]}
    fields, confidence, grounding = {}, {}, {}
    for key in parts[0]["fields"]:
        if key == "line_items":
            continue
        best = None
        for p in parts:
            if p["fields"][key] is not None and (best is None or p["confidence"][key] > best["confidence"][key]):
                best = p
        if best is None:
            fields[key] = None
            confidence[key] = max(p["confidence"][key] for p in parts)
            grounding[key] = None
        else:
            fields[key] = best["fields"][key]
            confidence[key] = best["confidence"][key]
            grounding[key] = best["grounding"][key]
    items, item_grounding, contributing = [], [], []
    previous: list[tuple[dict, dict]] = []
    previous_span = None
    for p in parts:
        kept: list[tuple[dict, dict]] = []
        overlap = (p["span"][0], previous_span[1]) if previous_span else None
        for item, g in zip(p["fields"]["line_items"], p["grounding"]["line_items"]):
            if overlap and any(item == old and _in_overlap(g, og, overlap) for old, og in previous):
                continue
            kept.append((item, g))
        if kept:
            contributing.append(p["confidence"]["line_items"])
        items += [i for i, _ in kept]
        item_grounding += [g for _, g in kept]
        previous = list(zip(p["fields"]["line_items"], p["grounding"]["line_items"]))
        previous_span = p["span"]
    fields["line_items"] = items
    confidence["line_items"] = min(contributing) if contributing else max(p["confidence"]["line_items"] for p in parts)
    grounding["line_items"] = item_grounding
    order = list(parts[0]["fields"])
    return {
        "fields": {k: fields[k] for k in order},
        "confidence": {k: confidence[k] for k in order},
        "grounding": {k: grounding[k] for k in order},
    }


def _in_overlap(g: dict, old_g: dict, overlap: tuple[int, int]) -> bool:
    lo, hi = overlap
    a, b = g.get("description") or {}, old_g.get("description") or {}
    if "start" not in a or "start" not in b:
        return True  # ungrounded: equality is all there is to go on
    return lo <= a["start"] < hi and lo <= b["start"] < hi


def reconcile_merged(merged: dict, text: str) -> list[tuple[str, list]]:
    """The reconciliation steps on a merged answer, in place: each step's name and its changes.

    A changed field is grounded again; a changed total-block field takes the lower of the
    subtotal's and the total's confidence (the change is only as sure as the figures it was
    balanced against); line items and identifiers keep their confidence.
    """
    fields, confidence = merged["fields"], merged["confidence"]
    fired = run_rules(fields, text, merged["grounding"])
    changes = [c for _, cs in fired for c in cs]
    if not changes:
        return fired
    fresh = ground_fields(fields, text)
    for change in changes:
        top = re.split(r"[\[.]", change.field, maxsplit=1)[0]  # `line_items[0].amount`, `bank.account_number`
        merged["grounding"][top] = fresh[top]
        if top not in AMOUNT_FIELDS:  # line items keep theirs; a dropped identifier keeps the model's
            continue
        anchors = [confidence[k] for k in ("subtotal", "total_amount") if confidence.get(k) is not None]
        if anchors:
            confidence[top] = min(anchors)
    return fired


@dataclass
class Finished:
    """A document's answer after the pipeline's last steps."""

    fields: dict
    confidence: dict[str, float]
    grounding: dict
    #: Changes made by reconciliation (`Reconciled.as_dict()`), in order.
    reconciled: list[dict] = field(default_factory=list)
    #: Names of the reconciliation steps that changed something, in order.
    rules: list[str] = field(default_factory=list)


def finish(parts: list[dict], text: str, reconcile: bool = True) -> Finished:
    """Merge a document's windows and reconcile the answer (`RECONCILIATION_RULES`)."""
    merged = merge_windows(parts)
    fired = reconcile_merged(merged, text or "") if reconcile else []
    return Finished(
        fields=merged["fields"], confidence=merged["confidence"], grounding=merged["grounding"],
        reconciled=[c.as_dict() for _, cs in fired for c in cs], rules=[name for name, cs in fired if cs],
    )


def explain(text: str, schema: dict | None = None, fields: dict | None = None) -> dict:
    """Which rules a document fires: its document model in brief, the value rule of each
    field's grammar, and, given an answer (`fields`), the reconciliation steps that would
    change it (the answer itself is left alone)."""
    import copy

    from extraction.schemas import invoice_json_schema

    document = Document(text or "")
    _, applied = grammar_for(document, schema or invoice_json_schema())
    out = {"document": document.hints(), "grammar": applied,
           "reconciliation_rules": [rule.name for rule in RECONCILIATION_RULES]}
    if fields is not None:
        fired = run_rules(copy.deepcopy(fields), document.text)
        out["reconciliation"] = [{"rule": name, "changes": [c.as_dict() for c in cs]} for name, cs in fired if cs]
    return out
