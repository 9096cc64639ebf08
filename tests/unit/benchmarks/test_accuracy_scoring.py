"""The accuracy benchmark's normaliser, swap count and confidence calibration, and the
real-invoice set's manifest (hashes, licences, fixed split)."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from decimal import Decimal
from pathlib import Path

import pytest

from benchmarks.accuracy import REAL_FIELDS, calibration, normalise, score_records

REAL = Path(__file__).resolve().parents[3] / "datasets" / "real-invoices"


@pytest.mark.parametrize("field, a, b", [
    ("vendor_name", "Lieferant GmbH", "LIEFERANT  GMBH"),
    ("client_name", "Anita Oliver", "AnitaOliver"),
    ("invoice_id", "RE-20190610/507", "RE20190610507"),
    ("invoice_date", "2018-03-05", "2018-03-05T00:00:00"),
    ("total_amount", "1005.55", "1005.550"),
    ("total_amount", "-8.79", "8.79"),
    ("currency", "eur", "EUR"),
])
def test_the_normaliser_keeps_what_matters(field, a, b):
    assert normalise(field, a) == normalise(field, b)


def test_the_normaliser_tells_different_values_apart():
    assert normalise("total_amount", "1005.55") == Decimal("1005.55") != normalise("total_amount", "1005.56")
    assert normalise("invoice_date", "2018-03-05") == dt.date(2018, 3, 5) != normalise("invoice_date", "2018-05-03")
    assert normalise("vendor_name", "Lieferant GmbH") != normalise("vendor_name", "Lieferant AG")
    assert normalise("vendor_name", "") is None and normalise("tax", None) is None


def _rec(gold, pred, conf, scored=("vendor_name", "client_name", "total_amount")):
    return {"id": "x", "gold": gold, "pred": pred, "confidence": conf, "scored": list(scored)}


def test_swapped_issuer_and_customer_are_counted_and_scored_wrong():
    gold = {"vendor_name": "Acme GmbH", "client_name": "Karl Coyote", "total_amount": "10.00"}
    swapped = {"vendor_name": "Karl Coyote", "client_name": "Acme GmbH", "total_amount": "10.00"}
    result = score_records([_rec(gold, swapped, {"vendor_name": 0.4, "client_name": 0.4, "total_amount": 0.9}),
                            _rec(gold, dict(gold), {"vendor_name": 0.9, "client_name": 0.9, "total_amount": 0.9})],
                           ("vendor_name", "client_name", "total_amount"))
    assert result["swaps"] == 1
    assert result["per_field"] == {"vendor_name": 0.5, "client_name": 0.5, "total_amount": 1.0}
    assert result["mean_field_accuracy"] == pytest.approx(2 / 3)
    assert {(e["field"], e["confidence"]) for e in result["errors"]} == {("vendor_name", 0.4), ("client_name", 0.4)}


def test_calibration_ranks_by_confidence():
    pairs = [(0.95, True)] * 8 + [(0.9, True), (0.2, False)]
    c = calibration(pairs)
    assert c["accuracy_at_80"] == 1.0 and c["accuracy_at_90"] == 1.0 and c["accuracy_at_100"] == 0.9
    # bins: 0.95 x8 right, 0.9 right, 0.2 wrong -> |0.95-1|*0.8 + |0.9-1|*0.1 + |0.2-0|*0.1
    assert c["ece"] == pytest.approx(0.04 + 0.01 + 0.02)


def test_a_field_not_stated_or_not_printed_is_not_scored():
    gold = {"vendor_name": "Acme", "client_name": None, "total_amount": "1.00"}
    result = score_records([_rec(gold, {"vendor_name": "Acme", "client_name": "Someone"}, {}, scored=("vendor_name",))],
                           ("vendor_name", "client_name", "total_amount"))
    assert result["counts"] == {"vendor_name": 1, "client_name": 0, "total_amount": 0}
    assert result["per_field"]["client_name"] is None and result["mean_field_accuracy"] == 1.0


def test_the_real_invoice_set_is_complete_licensed_and_split_before_use():
    rows = list(csv.DictReader((REAL / "manifest.csv").open(newline="")))
    assert len(rows) >= 60
    assert {"de", "fr", "en"} <= {r["language"] for r in rows}
    assert sum(r["kind"] in ("scan", "photo") for r in rows) >= 12
    for r in rows:
        assert r["licence"] and r["source"].startswith("https://github.com/") and r["split"] in ("dev", "heldout")
        assert hashlib.sha256((REAL / r["file"]).read_bytes()).hexdigest() == r["sha256"], r["id"]
        gold = json.loads((REAL / "gold" / f"{r['id']}.json").read_text(encoding="utf-8"))
        assert set(gold["fields"]) <= set(REAL_FIELDS) and set(gold["unprinted"]) <= set(REAL_FIELDS)
        if r["derived_from"]:  # a scan or photo shares its source's split
            assert r["split"] == next(s["split"] for s in rows if s["id"] == r["derived_from"])
    # The split comes from the group alone (fixed before any result), and groups never straddle it.
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["split"])
        want = "dev" if int(hashlib.sha256(r["group"].encode()).hexdigest()[:8], 16) % 3 == 0 else "heldout"
        assert r["split"] == want
    assert all(len(s) == 1 for s in by_group.values())
    assert sum(r["split"] == "heldout" for r in rows) >= 0.6 * len(rows)
