"""Field exact match with the schema's semantics, and decision accuracy."""

from __future__ import annotations

from training.evaluate import EVAL_FIELDS, empty_fields, fields_equal, score_extraction


def gold() -> dict:
    f = empty_fields()
    f.update(invoice_id="INV-7", vendor_name="ACME  GmbH", invoice_date="2024-03-05", total_amount="1234.50",
             currency="EUR", line_items=[{"description": "Bolt", "quantity": "2", "unit_price": "1.5", "amount": "3.00"}],
             bank={"iban": "DE89 3704 0044 0532 0130 00", "bic": None, "account_number": None, "routing_number": None})
    return f


def test_values_compare_by_field_type():
    assert fields_equal("total_amount", "1234.5", "1234.50")
    assert not fields_equal("total_amount", "1234.51", "1234.50")
    assert not fields_equal("total_amount", "abc", "1234.50")
    assert fields_equal("invoice_date", "2024-03-05", "2024-03-05")
    assert not fields_equal("invoice_date", "2024-03-06", "2024-03-05")
    assert fields_equal("vendor_name", " ACME\nGmbH ", "ACME GmbH")
    assert not fields_equal("vendor_name", "acme gmbh", "ACME GmbH")  # exact, not case-folded
    assert fields_equal("currency", "eur", "EUR")
    assert fields_equal("bank", None, {"iban": None, "bic": None})
    assert fields_equal("bank", {"iban": "DE89370400440532013000"}, {"iban": "DE89 3704 0044 0532 0130 00"})
    assert fields_equal("line_items", [{"description": "Bolt", "quantity": "2.0", "unit_price": "1.50", "amount": "3"}],
                        [{"description": "Bolt", "quantity": "2", "unit_price": "1.5", "amount": "3.00"}])
    assert not fields_equal("line_items", [], [{"description": "Bolt"}])


def test_score_counts_every_field_and_stated_fields():
    g = gold()
    right = dict(g, total_amount="1234.5")
    wrong = dict(g, invoice_id="INV-8", tax="10.00")  # one wrong value, one invented value
    s = score_extraction([right, wrong, None], [g, g, g])
    n = len(EVAL_FIELDS)
    assert s["count"] == 3
    assert s["field_exact_match"] == (n + (n - 2) + 0) / (3 * n)
    assert s["document_exact_match"] == 1 / 3
    assert s["per_field"]["invoice_id"] == 1 / 3 and s["per_field"]["tax"] == 1 / 3
    assert s["per_field"]["vendor_name"] == 2 / 3
    assert s["per_field_stated"]["tax"] is None  # the gold never states a tax
    stated = 7  # invoice_id, vendor_name, invoice_date, currency, total_amount, line_items, bank
    assert s["stated_field_exact_match"] == (stated + stated - 1) / (3 * stated)


def test_predictions_as_models_or_json_text():
    from invoicechain.schema import InvoiceFields

    g = gold()
    as_model = InvoiceFields.model_validate(g)
    import json

    s = score_extraction([as_model, json.dumps(g), "not json"], [g, g, g])
    assert s["document_exact_match"] == 2 / 3
