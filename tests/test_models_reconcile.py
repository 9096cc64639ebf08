"""Reconciliation: a broken row or total is mended only by printed numbers, never guessed; numbers, names
and addresses are held to what their labels and shapes say."""

from __future__ import annotations

import copy

from models.grounding import ground_fields
from models.reconcile import (
    reconcile,
    reconcile_address,
    reconcile_identifiers,
    reconcile_rows,
    reconcile_run_on_text,
    reconcile_shapes,
    reconcile_subtotal,
    reconcile_totals,
    undo,
)

TWO_COLUMN = """ACME Supplies Ltd
Invoice 4711
Description  Qty  Price  Amount
Laptop bag 14in  4  25.99  103.96
HDMI cable 5m  8  12.50  100.00
Net amount  203.96
Bank details  Freight  20,15
Bank: UniCredit  VAT 0%  0,00
IBAN: IT28 I750 0068 1221 0232 4933 366  TOTAL  EUR 224,11
"""


def fields(**kw) -> dict:
    base = {
        "subtotal": "203.96", "discount": None, "shipping": None, "tax": "0.00", "total_amount": "224.11",
        "line_items": [
            {"description": "Laptop bag 14in", "quantity": "4", "unit_price": "25.99", "amount": "103.96"},
            {"description": "HDMI cable 5m", "quantity": "8", "unit_price": "12.50", "amount": "100.00"},
        ],
    }
    base.update(kw)
    return base


def run(f: dict, text: str):
    return reconcile(f, text, ground_fields(f, text))


def test_a_balanced_answer_is_left_as_it_is():
    f = fields(shipping="20.15")
    before = copy.deepcopy(f)
    assert run(f, TWO_COLUMN) == []
    assert f == before


def test_shipping_missed_beside_a_second_column_is_taken_from_the_print():
    f = fields()
    changes = run(f, TWO_COLUMN)
    assert f["shipping"] == "20.15"
    assert [(c.field, c.before, c.after) for c in changes] == [("shipping", None, "20.15")]


def test_a_discount_read_as_tax_moves_to_the_discount():
    text = "Total HT  147,64\nRemise 2 %  -2,95\nNet à payer  144,69 EUR\n"
    f = {"subtotal": "147.64", "discount": None, "shipping": None, "tax": "2.95", "total_amount": "144.69"}
    changes = reconcile_totals(f, text)
    assert (f["discount"], f["tax"]) == ("2.95", None)
    assert [c.field for c in changes] == ["tax", "discount"]


def test_the_adjustments_are_read_by_their_labels_where_that_balances_the_totals():
    text = ("Nettobetrag EUR 1.087,33\nBankverbindung  Nachlass 3 %  -32,62\nBank: Volksbank  Fracht  79,62\n"
            "IBAN: DE97 0093 4605 2115 0850 61  MwSt. 0 %  0,00\nGesamtbetrag  EUR 1.134,33\n")
    f = {"subtotal": "1087.33", "discount": None, "shipping": None, "tax": "32.62", "total_amount": "1134.33"}
    changes = reconcile_totals(f, text)
    assert f == {"subtotal": "1087.33", "discount": "32.62", "shipping": "79.62", "tax": "0.00", "total_amount": "1134.33"}
    assert {c.field for c in changes} == {"discount", "shipping", "tax"}
    # one amount written twice under the wrong fields
    text = "Total HT  2 395,80\nRemise 5 %  -119,79\nNet à payer  2 276,01 EUR\n"
    f = {"subtotal": "2395.80", "discount": None, "shipping": "119.79", "tax": "119.79", "total_amount": "2276.01"}
    reconcile_totals(f, text)
    assert (f["discount"], f["shipping"], f["tax"]) == ("119.79", None, None)
    # a credit note's tax keeps its printed sign (moving it to the discount would balance too)
    text = "Subtotal  -1.980,94\nVAT 19%  -376,38\nInvoice total  € -2.357,32\n"
    f = {"subtotal": "-1980.94", "discount": None, "shipping": None, "tax": "376.38", "total_amount": "-2357.32"}
    reconcile_totals(f, text)
    assert (f["discount"], f["tax"]) == (None, "-376.38")
    # balanced already: a tax printed as zero under its label is zero, not unstated
    text = "Subtotaal  2,917.00\nKorting 2%  -58.34\nBTW 0%  0.00\nTe betalen  EUR 2,858.66\n"
    f = {"subtotal": "2917.00", "discount": "58.34", "shipping": None, "tax": None, "total_amount": "2858.66"}
    assert [(c.field, c.after) for c in reconcile_totals(f, text)] == [("tax", "0.00")]
    # the subtotal read again as the total: the printed total the labelled adjustments make
    text = ("Summe netto  574,20\nNachlass 5 %  -28,71\nPorto und Verpackung  63,00\nMwSt. 19 %  115,61\n"
            "Summe brutto  724,10 EUR\n")
    f = {"subtotal": "574.20", "discount": None, "shipping": None, "tax": "28.71", "total_amount": "574.20"}
    changes = reconcile_totals(f, text)
    assert f == {"subtotal": "574.20", "discount": "28.71", "shipping": "63.00", "tax": "115.61", "total_amount": "724.10"}
    assert changes[0].field == "total_amount"
    # ... but never a total the document does not print
    f = {"subtotal": "574.20", "discount": None, "shipping": None, "tax": "28.71", "total_amount": "574.20"}
    reconcile_totals(f, text.replace("724,10", "724,00"))
    assert f["total_amount"] == "574.20"
    # two different amounts under one label: no reading by labels
    text = "Subtotal  100.00\nVAT 10% on 100.00  10.00\nShipping  5.00\nTotal  115.00\n"
    f = {"subtotal": "100.00", "discount": None, "shipping": "10.00", "tax": "5.00", "total_amount": "115.00"}
    assert reconcile_totals(f, text) == [] and f["tax"] == "5.00"


def test_a_total_that_includes_its_tax_is_not_balanced_by_force():
    receipt = "TOTAL  RM 100.00\nGST 6% included  5.66\nCASH  100.00\n"
    f = {"subtotal": "100.00", "discount": None, "shipping": None, "tax": "5.66", "total_amount": "100.00"}
    assert reconcile_totals(f, receipt) == []
    assert f["discount"] is None and f["tax"] == "5.66"


def test_a_wrong_total_on_the_invoice_is_not_hidden():
    """The invoice's own arithmetic error (total off by 10; "10" printed in a date, a line
    amount equal to the gap) must reach validation, not be balanced away."""
    text = ("Date 07/10/2026  Due 07.11.2026\nWidget  1  10.00  10.00\nGadget  2  96.98  193.96\n"
            "Subtotal  203.96\nVAT 0%  0.00\nTotal  213.96\n")
    f = fields(total_amount="213.96", line_items=[
        {"description": "Widget", "quantity": "1", "unit_price": "10.00", "amount": "10.00"},
        {"description": "Gadget", "quantity": "2", "unit_price": "96.98", "amount": "193.96"},
    ])
    assert run(f, text) == []
    assert f["shipping"] is None and f["discount"] is None


def test_two_ways_to_balance_means_no_change():
    text = "Subtotal 100.00\nService fee 5.00\nInsurance 5.00\nTotal 105.00\n"
    # shipping or tax could each take a printed 5.00: which one is not for arithmetic to say
    f = {"subtotal": "100.00", "discount": None, "shipping": None, "tax": None, "total_amount": "105.00"}
    assert reconcile_totals(f, text) == []


def test_of_two_ways_to_balance_the_label_of_the_printed_amount_decides():
    text = "Bank: Wells Fargo Bank  Subtotal  274.73\nSWIFT: QFDLUSKN  Shipping  11.70\nTotal due  $286.43\n"
    f = {"subtotal": "274.73", "discount": None, "shipping": None, "tax": None, "total_amount": "286.43"}
    changes = reconcile_totals(f, text)
    assert (f["shipping"], f["tax"]) == ("11.70", None)
    assert [(c.field, c.before, c.after) for c in changes] == [("shipping", None, "11.70")]
    f = {"subtotal": "274.73", "discount": None, "shipping": None, "tax": None, "total_amount": "286.43"}
    reconcile_totals(f, text.replace("Shipping", "Sales Tax 4.26%"))
    assert (f["shipping"], f["tax"]) == (None, "11.70")


def test_an_adjustment_that_is_no_printed_amount_and_breaks_the_totals_is_dropped():
    text = "Terms: Net 30\nSubtotal  203.99\nVAT 0%  0.00\nTotal  203.99\n"
    for wrong in ("30", "203.99"):  # a number of days; the total read again
        f = {"subtotal": "203.99", "discount": None, "shipping": wrong, "tax": "0.00", "total_amount": "203.99"}
        changes = reconcile_totals(f, text)
        assert f["shipping"] is None, wrong
        assert [(c.field, c.before, c.after) for c in changes] == [("shipping", wrong, None)]
    # a printed amount is never dropped: the invoice's own arithmetic may be wrong
    text = "Subtotal  203.99\nShipping  12.50\nTotal  203.99\n"
    f = {"subtotal": "203.99", "discount": None, "shipping": "12.50", "tax": None, "total_amount": "203.99"}
    assert reconcile_totals(f, text) == [] and f["shipping"] == "12.50"


def test_a_quantity_read_from_the_description_is_corrected_from_its_line():
    f = fields(line_items=[
        {"description": "Laptop bag 14in", "quantity": "14", "unit_price": "25.99", "amount": "103.96"},
        {"description": "HDMI cable 5m", "quantity": "8", "unit_price": "12.50", "amount": "100.00"},
    ], shipping="20.15")
    changes = run(f, TWO_COLUMN)
    assert f["line_items"][0]["quantity"] == "4"
    assert [(c.field, c.before, c.after) for c in changes] == [("line_items[0].quantity", "14", "4")]


def mend_row(text: str, description: str, quantity: str, unit_price: str, amount: str) -> dict:
    """One item as decoded, after row reconciliation against `text`."""
    f = {"line_items": [{"description": description, "quantity": quantity, "unit_price": unit_price, "amount": amount}]}
    reconcile_rows(f, text, ground_fields(f, text))
    return f["line_items"][0]


def test_a_credit_note_row_keeps_its_sign():
    text = "Bubble wrap 1.5m x 100m  -1  56,20  -56,20\n"
    assert mend_row(text, "Bubble wrap 1.5m x 100m", "-56.20", "56.20", "-56.20")["quantity"] == "-1"


def test_rows_that_cannot_be_checked_or_mended_stay_as_read():
    text = "Consulting, March  12  110.00  1,250.00\nSetup fee  450.00\n"
    items = [
        # 12 x 110 != 1250 (a line discount?), and no other printed number balances it
        {"description": "Consulting, March", "quantity": "12", "unit_price": "110.00", "amount": "1250.00"},
        # a null column: nothing to check
        {"description": "Setup fee", "quantity": None, "unit_price": None, "amount": "450.00"},
    ]
    f = {"line_items": copy.deepcopy(items)}
    assert reconcile_rows(f, text, ground_fields(f, text)) == []
    assert f["line_items"] == items


def test_receipt_rows_take_their_figures_from_the_line_below():
    text = "KF MODELLING CLAY KIDDY FISH\n1 PC  9.00  9.00\nTOTAL 9.00\n"
    assert mend_row(text, "KF MODELLING CLAY KIDDY FISH", "9.00", "9.00", "9.00")["quantity"] == "1"


def test_the_runtime_regrounds_a_mended_field_and_trusts_it_as_much_as_the_totals():
    from models.runtime import ModelRuntime

    f = fields()
    merged = {"fields": f, "grounding": ground_fields(f, TWO_COLUMN),
              "confidence": {"subtotal": 0.9, "total_amount": 0.8, "shipping": 0.99, "line_items": 0.7}}
    changes = ModelRuntime._reconcile(merged, TWO_COLUMN)
    assert [c.field for c in changes] == ["shipping"]
    span = merged["grounding"]["shipping"]
    assert TWO_COLUMN[span["start"] : span["end"]] == "20,15"
    assert merged["confidence"]["shipping"] == 0.8


def test_the_extract_step_records_each_change_with_its_reason(settings):
    from sqlmodel import select

    from invoicechain import pipeline
    from invoicechain.db.session import session_scope
    from invoicechain.db.tables import Invoice, StepRun
    from invoicechain.decisions import Step
    from models.runtime import ExtractionResult, ModelRuntime

    sub = pipeline.submit_document(TWO_COLUMN.encode(), "two-column.txt", "text/plain", settings=settings)
    invoice_id = sub.invoice.id
    assert pipeline.run_ingest(invoice_id, settings).proceed
    text = pipeline.extraction_inputs([invoice_id], settings)[invoice_id]
    f = fields(invoice_id="4711", po_number="4711")  # the invoice number read as the PO number too
    merged = {"fields": f, "grounding": ground_fields(f, text), "confidence": {"subtotal": 0.9, "total_amount": 0.9}}
    changes = ModelRuntime._reconcile(merged, text)
    result = ExtractionResult(fields=f, confidence=merged["confidence"], grounding=merged["grounding"],
                              adapter_version="extract:1", model_ms=1.0,
                              reconciled=[c.as_dict() for c in changes])
    assert pipeline.save_extraction(invoice_id, result, t0=0.0, settings=settings).proceed
    with session_scope(settings) as session:
        run = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == Step.EXTRACT)).one()
        assert [r["code"] for r in run.reasons] == ["RECONCILED_AMOUNT", "RECONCILED_IDENTIFIER"]
        assert "shipping: null -> 20.15" in run.reasons[0]["message"]
        assert "po_number: 4711 -> null (printed only as invoice_id)" in run.reasons[1]["message"]
        assert run.model_output["reconciled"] == [c.as_dict() for c in changes]
        saved = session.get(Invoice, invoice_id).fields
        assert (saved["shipping"], saved["invoice_id"], saved["po_number"]) == ("20.15", "4711", None)


def test_undo_gives_back_the_answer_as_decoded():
    from models.reconcile import undo

    decoded = fields(discount="20.15", line_items=[
        {"description": "Laptop bag 14in", "quantity": "14", "unit_price": "25.99", "amount": "103.96"},
        {"description": "HDMI cable 5m", "quantity": "8", "unit_price": "12.50", "amount": "100.00"},
    ])
    f = copy.deepcopy(decoded)
    changes = run(f, TWO_COLUMN)
    assert [c.field for c in changes] == ["line_items[0].quantity", "discount", "shipping"]
    assert undo(f, [c.as_dict() for c in changes]) == decoded


def test_of_several_mends_the_one_read_left_to_right_is_taken():
    """12 x 12 != 117.84: 9.82 balances the row as quantity or as unit price; the row prints
    quantity, unit price, amount, so it is the unit price."""
    text = "Tea assortment (100 bags)  12  9,82  117,84\n"
    item = mend_row(text, "Tea assortment (100 bags)", "12", "12", "117.84")
    assert (item["quantity"], item["unit_price"]) == ("12", "9.82")


def test_true_answers_are_never_changed_faulty_invoices_included(tmp_path):
    """On the generator's true answers (60% faults, arithmetic errors among them), nothing to mend."""
    import json

    from training.synth.corpus import generate_corpus

    summary = generate_corpus(60, 778, tmp_path, fault_rate=0.6, processes=1, toolchain=False)
    records = [json.loads(line) for line in summary.extract_jsonl.read_text().splitlines()]
    assert len(records) == 60
    assert any("arithmetic" in str(k).lower() and n > 0 for k, n in summary.faults.items()), summary.faults
    for r in records:
        answer = r["output"] if isinstance(r["output"], dict) else json.loads(r["output"])
        assert run(copy.deepcopy(answer), r["input"]) == [], r["input"][:200]


TWO_PAGES = """Article  Qty  Price  Amount
Laptop bag 14in  4  25.99  103.96
Subtotal carried forward  103.96
Page 1 of 2
Brought forward  103.96
HDMI cable 5m  8  12.50  100.00
Total net  203.96
VAT 0%  0.00
TOTAL  203.96
"""


def test_a_subtotal_carried_forward_gives_way_to_the_printed_sum_of_the_lines():
    f = fields(subtotal="103.96", total_amount="203.96")
    changes = reconcile_subtotal(f, TWO_PAGES)
    assert f["subtotal"] == "203.96"
    assert [(c.field, c.before, c.after) for c in changes] == [("subtotal", "103.96", "203.96")]


def test_a_subtotal_is_left_alone_when_the_sum_is_not_printed_apart_from_the_rows():
    one_row = "Laptop bag 14in  4  25.99  103.96\nService fee  10.00\nSubtotal  113.96\nTOTAL  113.96\n"
    f = fields(subtotal="113.96", line_items=fields()["line_items"][:1])
    assert reconcile_subtotal(f, one_row) == []  # the fee is no item, and 103.96 is printed only on its row
    f = fields(subtotal="203.96")
    assert reconcile_subtotal(f, TWO_COLUMN) == []  # already the sum
    assert reconcile_subtotal(fields(subtotal="100.00", line_items=[{**fields()["line_items"][0], "amount": None}]),
                              TWO_COLUMN) == []  # a row without an amount: no sum to check against


HEADER = """Perry, Lee and Brown LLC  Rechnung Nr.:  RE20265307
Datum:  30. September 2026
Lieferschein:  LS248008
Kunden-Nr.:  070208
Ihre Bestellung:  4502373840
USt-IdNr.: DE811907980  Tel. +49 30 1234567
RECHNUNG RE20265307
Pos.  Artikel  Menge  Preis  Betrag
"""


def test_a_number_printed_only_under_another_numbers_label_is_no_po_or_invoice_number():
    for wrong in ("RE20265307", "LS248008", "070208", "2026", "DE811907980"):
        f = {"invoice_id": "RE20265307", "po_number": wrong}
        changes = reconcile_identifiers(f, HEADER)
        assert f == {"invoice_id": "RE20265307", "po_number": None}, wrong
        assert [(c.field, c.before, c.after) for c in changes] == [("po_number", wrong, None)]
    f = {"invoice_id": "4502373840", "po_number": "4502373840"}  # a PO number read as the invoice number
    reconcile_identifiers(f, HEADER)
    assert f == {"invoice_id": None, "po_number": "4502373840"}
    # tax registration numbers in other languages' wording are no PO numbers either
    for label, number in (("VAT Reg. No.:", "GB123456789"), ("N° TVA intracom.", "FR40303265045"),
                          ("Btw-nummer:", "NL853749620B01"), ("P. IVA", "IT01234567890"),
                          ("GST/HST No.", "123456789RT0001"), ("ABN", "51 824 753 556"), ("EIN:", "12-3456789")):
        f = {"invoice_id": "RE20265307", "po_number": number}
        reconcile_identifiers(f, HEADER + f"{label} {number}\n")
        assert f["po_number"] is None, label
    # an item code at the start of a line item's row, terms that are a tax number
    f = {"invoice_id": "RE20265307", "po_number": "34023", "payment_terms": "No. 988134110RT0001"}
    changes = reconcile_identifiers(f, HEADER + "34023  Steel shelving unit 1800x900  2  285.00  570.00\n"
                                    "GST/HST No. 988134110RT0001\nTerms:  30 dagen netto\n")
    assert f == {"invoice_id": "RE20265307", "po_number": None, "payment_terms": None}
    assert [c.reason for c in changes] == ["printed only as line item", "printed only as tax_id"]
    bank = {"iban": None, "bic": None, "account_number": "IE0312471S", "routing_number": None}
    f = {"invoice_id": "RE20265307", "po_number": None, "bank": dict(bank)}
    changes = reconcile_identifiers(f, HEADER + "VAT Reg. No.: IE0312471S\n")
    assert f["bank"] == {**bank, "account_number": None}
    assert undo(f, [c.as_dict() for c in changes])["bank"] == bank
    f = {"invoice_id": "RE20265307", "po_number": None, "bank": {**bank, "account_number": "D28040"}}
    reconcile_identifiers(f, HEADER + "Account no.:  D28040\n")  # may be a bank account: kept
    assert f["bank"]["account_number"] == "D28040"
    f = {"invoice_id": "RE20265307", "po_number": "30 dagen netto", "payment_terms": "30 dagen netto"}
    reconcile_identifiers(f, HEADER + "Terms:  30 dagen netto\n")
    assert f == {"invoice_id": "RE20265307", "po_number": None, "payment_terms": "30 dagen netto"}
    # its own label, or a value printed without a known label, stays as read
    for kept in ({"invoice_id": "RE20265307", "po_number": "4502373840"}, {"invoice_id": "Perry", "po_number": None}):
        f = dict(kept)
        assert reconcile_identifiers(f, HEADER) == [] and f == kept


def test_an_address_loses_the_company_name_before_it_and_the_phone_after_it():
    cases = [
        ({"vendor_name": "ACME SDN BHD", "vendor_address": "14 JALAN MANIS 4 TAMAN SEGAR 56100 KL TEL: 03-91334364"},
         "14 JALAN MANIS 4 TAMAN SEGAR 56100 KL"),
        ({"vendor_name": "AIK HUAT HARDWARE", "vendor_address":
          "ENTERPRISE (SETIA ALAM) SDN BHD 822737-X NO. 17-G, JALAN SETIA INDAH (X) U13/X, 40170 SHAH ALAM,"},
         "NO. 17-G, JALAN SETIA INDAH (X) U13/X, 40170 SHAH ALAM,"),
        ({"vendor_name": "Fiere Verpakkingen BV", "vendor_address": "Fiere Verpakkingen BV, Wesselweg 53, 3461QU Nijlande"},
         "Wesselweg 53, 3461QU Nijlande"),
    ]
    for f, after in cases:
        changes = reconcile_address(f, "")
        assert f["vendor_address"] == after and changes[0].after == after
    # a label inside what is not yet a whole address, or nothing around it: left as read
    for kept in ("BENTONG-2, GST REG NO 000184401920 JALAN TRAS BATU 1, 28700 BENTONG", "Wesselweg 53, 3461QU Nijlande"):
        f = {"vendor_name": "X", "vendor_address": kept}
        assert reconcile_address(f, "") == [] and f["vendor_address"] == kept


def test_a_name_or_terms_that_run_into_another_fields_label_end_before_it():
    f = {"vendor_name": "Thierry Communication SAS", "client_name": "Guérin SAS Numéro de facture",
         "payment_terms": "Direct bij ontvangst Subtotaal"}
    changes = reconcile_run_on_text(f, "")
    assert f == {"vendor_name": "Thierry Communication SAS", "client_name": "Guérin SAS", "payment_terms": "Direct bij ontvangst"}
    assert [c.field for c in changes] == ["client_name", "payment_terms"]
    f = {"client_name": "N° TVA intracom. FR32775594349", "po_number": "Zahlbar bis: 2026-07-31", "invoice_id": "RE-1"}
    reconcile_run_on_text(f, "")
    assert f == {"client_name": None, "po_number": None, "invoice_id": "RE-1"}
    for terms in ("Base imponible", "Payment due: 2026-10-02", "Zahlbar bis"):  # a label, no terms
        f = {"payment_terms": terms}
        reconcile_run_on_text(f, "")
        assert f["payment_terms"] is None, terms
    for kept in ("30 gg data fattura", "Payment due within 30 days", "Net 30"):
        f = {"payment_terms": kept}
        assert reconcile_run_on_text(f, "") == [] and f["payment_terms"] == kept


def test_names_and_numbers_keep_their_shapes():
    f = {"vendor_name": "COPY ANDERSSON OFFICE SUPPLIES HB", "client_name": "Z = 0% 4.00", "invoice_id": "RECHNUNG",
         "po_number": "PO-55817", "bank": {"iban": None, "bic": None, "account_number": "Konto", "routing_number": None}}
    changes = reconcile_shapes(f, "")
    assert f == {"vendor_name": "ANDERSSON OFFICE SUPPLIES HB", "client_name": None, "invoice_id": None,
                 "po_number": "PO-55817", "bank": {"iban": None, "bic": None, "account_number": None, "routing_number": None}}
    assert [c.field for c in changes] == ["vendor_name", "client_name", "invoice_id", "bank.account_number"]
    for name in ("KOPIE", "Gutschrift"):
        f = {"vendor_name": name}
        reconcile_shapes(f, "")
        assert f["vendor_name"] is None, name
    f = {"vendor_name": "Invoiceware GmbH", "client_name": "Käster"}
    assert reconcile_shapes(f, "") == []
