"""The review-routing benchmark's arithmetic: what counts as wrong, flagged and stopped, and
the dev calibration staying inside its routing budget."""

from __future__ import annotations

from benchmarks.review_routing import calibrate, measure
from invoicechain.config import Settings

GOLD = {"invoice_id": "A-1", "vendor_name": "Acme GmbH", "invoice_date": "2024-03-05", "total_amount": "10.00",
        "currency": "EUR"}


def record(i: int, conf: float, wrong: dict | None = None, grounded: bool = True) -> dict:
    pred = {**GOLD, **(wrong or {})}
    return {"id": f"doc-{i}", "split": "dev", "gold": dict(GOLD), "scored": list(GOLD), "pred": pred,
            "confidence": {f: (conf if f in (wrong or {}) else 0.99) for f in GOLD},
            "grounding": {f: ({"start": 0, "end": 1} if grounded or f not in (wrong or {}) else {"grounded": False}) for f in GOLD},
            "reconciled": []}


def settings(**table) -> Settings:
    return Settings(review_confidence={"default": 0.0, **{f: 0.0 for f in GOLD}, **table})


def test_wrong_values_are_flagged_when_their_field_is_named_and_stopped_when_missing_or_routed():
    records = [
        record(0, 0.3, {"total_amount": "11.00"}),  # low confidence: flagged
        record(1, 0.9, {"invoice_id": "A-7"}, grounded=False),  # not in the document: flagged
        record(2, 0.9, {"vendor_name": None}),  # missing: the rules stop it
        record(3, 0.9, {"currency": "USD"}),  # confident and wrong: missed
        record(4, 0.99),
    ]
    m = measure(records, settings(total_amount=0.5))
    assert (m["invoices"], m["routed"], m["wrong"], m["flagged"], m["stopped"]) == (5, 2, 4, 2, 3)
    assert [(x["id"], x["field"]) for x in m["missed"]] == [("doc-3", "currency")]
    assert m["by_reason"] == {"LOW_CONFIDENCE": 1, "UNGROUNDED_FIELD": 1, "MISSING_FIELD": 1}
    assert m["to_person"] == 3  # two routed, one INVALID


def test_a_confident_total_that_does_not_add_up_is_stopped_as_invalid_not_routed():
    bad = record(0, 0.99, {"total_amount": "12.00", "subtotal": "10.00", "tax": "1.90"})
    bad["gold"].update(subtotal="10.00", tax="1.90", total_amount="11.90")
    m = measure([bad, record(1, 0.99)], settings(total_amount=0.5))
    assert (m["routed"], m["to_person"], m["wrong"], m["stopped"]) == (0, 1, 1, 1)
    assert m["by_reason"] == {"ARITHMETIC_MISMATCH": 1} and m["missed"] == []


def test_calibration_catches_what_the_budget_allows_and_nothing_more():
    wrong = [record(i, 0.2 + i / 100, {"total_amount": "99.00"}) for i in range(3)]
    confident_wrong = [record(10, 0.95, {"invoice_date": "2024-03-06"})]
    right = [record(20 + i, 0.99) for i in range(6)]
    dev = wrong + confident_wrong + right
    thresholds = calibrate(dev, Settings(), budget=0.3)
    assert 0.22 < thresholds["total_amount"] <= 0.23  # just above the highest wrong total's confidence
    assert thresholds["invoice_date"] == 0.0  # catching it would route everything: over the budget
    m = measure(dev, Settings(review_confidence={"default": 0.0, **thresholds}))
    assert m["routed"] == 3 and m["stopped"] == 3


def test_line_items_that_do_not_add_up_block_only_when_the_totals_do_not_either():
    from datetime import date

    from invoicechain.ap.validate import check_document

    lines = [{"description": "Bolts", "quantity": "2", "unit_price": "3.00", "amount": "7.00"},
             {"description": "Nuts", "quantity": "1", "unit_price": "1.00", "amount": "1.00"}]
    fields = {**GOLD, "subtotal": "8.40", "tax": "1.60", "total_amount": "10.00", "line_items": lines}
    blocking, warnings, facts = check_document(fields, Settings(), date(2024, 4, 1))
    assert blocking == [] and facts["arithmetic"]["lines_block"] is False
    assert [w["code"] for w in warnings] == ["ARITHMETIC_MISMATCH", "LINES_DONT_SUM"]
    assert "2 × 3.00 = 6.00" in warnings[0]["message"]

    blocking, warnings, facts = check_document({**fields, "total_amount": "12.00"}, Settings(), date(2024, 4, 1))
    assert warnings == [] and facts["arithmetic"]["lines_block"] is True
    assert [b["code"] for b in blocking] == ["ARITHMETIC_MISMATCH", "LINES_DONT_SUM", "ARITHMETIC_MISMATCH"]

    # an invoice read as a stopped routing candidate: VALID by its totals, so not INVALID
    rec = record(0, 0.99)
    rec["pred"].update(subtotal="8.40", tax="1.60", line_items=lines)
    m = measure([rec], settings())
    assert (m["to_person"], m["by_reason"]) == (0, {})
