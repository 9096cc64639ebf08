"""Vendor resolution, PO lookup (exact, separators, typos, unknown) and the 2-/3-way line checks."""

from __future__ import annotations

import pytest

from invoicechain.ap.embeddings import model_dir, similarity_matrix
from invoicechain.ap.match_po import match_po
from invoicechain.ap.validate import validate_invoice
from invoicechain.ap.vendors import resolve_vendor
from invoicechain.decisions import Decision, Reason
from tests.factories import TODAY, add_invoice, invoice_fields, lines_for


def test_minilm_comes_from_the_installed_package():
    assert (model_dir() / "model.safetensors").exists()
    sims = similarity_matrix(["Hexagon screws M8 x 40, box of 100"], ["Hex bolts M8x40 (100)", "Coffee beans 1kg espresso"])[0]
    assert sims[0] > 0.6 > sims[1]


@pytest.mark.parametrize(
    "printed, method, vendor",
    [
        ("Acme Industrial Supplies GmbH", "exact", "V001"),
        ("ACME INDUSTRIAL SUPPLIES GMBH", "exact", "V001"),
        ("ACME Industrial", "alias", "V001"),
        ("Acme Industrial Supplies", "normalized", "V001"),  # legal form left out
        ("Sunrise Office Products Limited", "normalized", "V005"),  # legal form spelled out
        ("Kessler and Sohn", "normalized", "V004"),
        ("Acme Industral Supplies GmbH", "fuzzy", "V001"),  # a typo
        ("Blue Harbour Consulting", "fuzzy", "V003"),
        ("ACME Industrial Supplies Hamburg", "embedding", "V001"),
        ("Globex Corporation", "none", None),
        ("Industrial Supplies", "none", None),  # too vague to name one vendor
    ],
)
def test_vendor_resolution(session, printed, method, vendor):
    match = resolve_vendor(session, printed)
    assert (match.method, getattr(match.vendor, "id", None)) == (method, vendor)


def _match(session, settings, **kw):
    inv = add_invoice(session, invoice_fields(**kw))
    return match_po(session, inv, settings, today=TODAY)


@pytest.mark.parametrize(
    "printed, found, codes",
    [
        ("PO-2026-0153", "exact", [Reason.PO_MATCHED]),
        ("po 2026 0153", "normalized", [Reason.PO_RESOLVED_FUZZY, Reason.PO_MATCHED]),  # separators typed differently
        ("PO-2026-053", "fuzzy", [Reason.PO_RESOLVED_FUZZY, Reason.PO_MATCHED]),  # a dropped digit
        ("PO-2026-0158", "fuzzy", [Reason.PO_RESOLVED_FUZZY, Reason.PO_MATCHED]),  # a changed digit
        ("PO-2O26-0153", "fuzzy", [Reason.PO_RESOLVED_FUZZY, Reason.PO_MATCHED]),  # letter O for zero
    ],
)
def test_po_numbers_that_still_match(session, settings, printed, found, codes):
    result = _match(session, settings, po_number=printed, lines=lines_for("PO-2026-0153"))
    assert result.decision == Decision.MATCHED
    assert result.codes == codes
    assert result.facts["po_ref"]["found"] == found and result.facts["po"]["number"] == "PO-2026-0153"


def test_unknown_po_names_candidates_but_does_not_guess(session, settings):
    result = _match(session, settings, po_number="PO-7731-0042", lines=lines_for("PO-2026-0153"))
    assert result.decision == Decision.NO_MATCH and result.codes == [Reason.PO_NOT_FOUND]
    # The best candidate is the PO with the same goods and amount.
    assert result.facts["candidates"][0]["po_number"] == "PO-2026-0153"
    assert "Closest open PO of the vendor: PO-2026-0153" in result.reasons[0]["message"]


def test_a_typo_never_lands_on_another_vendors_po(session, settings):
    # PO-2026-0301 belongs to Nordwind; one edit away, but the invoice is Acme's.
    result = _match(session, settings, po_number="PO-2026-0391", lines=lines_for("PO-2026-0153"))
    assert result.decision == Decision.NO_MATCH and result.codes == [Reason.PO_NOT_FOUND]
    exact_other = _match(session, settings, po_number="PO-2026-0301", invoice_id="ACM-9", lines=lines_for("PO-2026-0153"))
    assert exact_other.decision == Decision.NO_MATCH and Reason.VENDOR_MISMATCH in exact_other.codes


def test_line_checks(session, settings):
    over_price = _match(session, settings, lines=lines_for("PO-2026-0153", price_factor=1.05))
    assert over_price.decision == Decision.PARTIAL
    assert over_price.codes.count(Reason.PRICE_OVER_TOLERANCE) == 2
    assert "12.50" in over_price.reasons[0]["message"] and "2.0%" in over_price.reasons[0]["message"]

    within = _match(session, settings, invoice_id="A2", lines=lines_for("PO-2026-0153", price_factor=1.015))
    assert within.decision == Decision.MATCHED

    over_qty = _match(session, settings, invoice_id="A3", lines=lines_for("PO-2026-0153", qty={1: 12}))
    assert over_qty.decision == Decision.PARTIAL
    assert {Reason.QUANTITY_OVER_PO, Reason.QUANTITY_OVER_RECEIPT} <= set(over_qty.codes)

    partly_received = _match(session, settings, invoice_id="A4", po_number="PO-2026-0154")
    assert partly_received.codes == [Reason.QUANTITY_OVER_RECEIPT]
    assert "over the 6 received" in partly_received.reasons[0]["message"]

    reworded = [
        {"description": "Hexagon screws M8 x 40, box of 100", "quantity": "10", "unit_price": "12.50", "amount": "125.00"},
        {"description": "Work gloves, cut resistant, size 9", "quantity": "5", "unit_price": "24.00", "amount": "120.00"},
    ]
    assert _match(session, settings, invoice_id="A5", lines=reworded).decision == Decision.MATCHED

    extra = lines_for("PO-2026-0153") + [
        {"description": "Coffee beans 1kg espresso", "quantity": "1", "unit_price": "0.50", "amount": "0.50"}
    ]
    result = _match(session, settings, invoice_id="A6", lines=extra)
    assert result.decision == Decision.PARTIAL and result.codes == [Reason.QUANTITY_OVER_PO]

    usd = _match(session, settings, invoice_id="A7", currency="USD")
    assert usd.decision == Decision.NO_MATCH and usd.codes == [Reason.CURRENCY_MISMATCH]


def test_validation_findings(session, settings):
    def check(**kw):
        inv = add_invoice(session, invoice_fields(**kw))
        return validate_invoice(session, inv, settings, today=TODAY)

    ok = check()
    assert ok.decision == Decision.VALID and ok.reasons == []
    lines = lines_for("PO-2026-0153")
    lines[0] = {**lines[0], "amount": "130.00"}
    # Lines that do not add up while subtotal + tax = total: the amount to pay is consistent,
    # so the line findings are warnings; with totals that do not add up either, they block.
    bad_line = check(invoice_id="B1", lines=lines, subtotal="245.00", tax="46.55", total_amount="291.55")
    assert bad_line.decision == Decision.VALID
    assert bad_line.codes == [Reason.ARITHMETIC_MISMATCH, Reason.LINES_DONT_SUM]
    assert "10 × 12.50 = 125.00" in bad_line.reasons[0]["message"]
    bad_all = check(invoice_id="B1b", lines=lines, subtotal="245.00", tax="46.55", total_amount="299.00")
    assert bad_all.decision == Decision.INVALID
    assert bad_all.codes == [Reason.ARITHMETIC_MISMATCH, Reason.LINES_DONT_SUM, Reason.ARITHMETIC_MISMATCH]
    assert "10 × 12.50 = 125.00" in bad_all.reasons[0]["message"]
    assert check(invoice_id="B2", due_date="2026-03-01").codes == [Reason.DUE_BEFORE_ISSUE]
    assert check(invoice_id="B3", issued=TODAY.replace(month=6)).codes == [Reason.DATE_TOO_FAR]
    assert check(invoice_id="B4", currency="EUX").codes == [Reason.UNKNOWN_CURRENCY]
    assert check(invoice_id="B5", vendor="Globex Corporation").codes == [Reason.UNKNOWN_VENDOR]
    assert check(invoice_id="B6", vendor="Kessler & Sohn KG", iban=None).codes == [Reason.VENDOR_BLOCKED]
    missing = check(invoice_id=None, currency=None)
    assert missing.codes == [Reason.MISSING_FIELD] * 2 and missing.facts["missing"] == ["invoice_id", "currency"]
    # A discount printed negative is still subtracted.
    discounted = check(invoice_id="B7", discount="-45.00", total_amount="246.55")
    assert discounted.decision == Decision.VALID
    # Same vendor, amount and date as a posted invoice, under another number.
    again = check(invoice_id="B8", issued=TODAY.replace(month=1, day=20), po_number=None,
                  lines=[{"description": "Bolts", "quantity": "1", "unit_price": "420.17", "amount": "420.17"}])
    assert again.codes == [Reason.DUPLICATE_INVOICE] and "same total 500.00" in again.reasons[0]["message"]


def test_duplicates_of_accepted_invoices(session, settings):
    from invoicechain.ap.steps import run_chain

    first = add_invoice(session, invoice_fields(invoice_id="ACM-3000"))
    run_chain(session, first, settings, today=TODAY)
    # The same invoice number with other spacing, printed under an alias of the vendor.
    second = add_invoice(session, invoice_fields(invoice_id="ACM 3000", vendor="ACME Industrial"))
    result = validate_invoice(session, second, settings, today=TODAY)
    assert result.decision == Decision.INVALID and result.codes == [Reason.DUPLICATE_INVOICE]
    assert first.id in result.reasons[0]["message"]
    # A rejected earlier invoice does not block its resubmission.
    first.status = "rejected"
    session.flush()
    assert validate_invoice(session, second, settings, today=TODAY).decision == Decision.VALID



_FORK_SCRIPT = """
import json, multiprocessing
from invoicechain.ap import embeddings

def child(queue):
    queue.put((embeddings._model is not None, embeddings.embed(["Freight, 2 pallets"])[0]))

assert embeddings.preload() is True
model = embeddings._model
ctx = multiprocessing.get_context("fork")
queue = ctx.Queue()
proc = ctx.Process(target=child, args=(queue,))
proc.start()
loaded_before_use, vector = queue.get(timeout=120)
proc.join(timeout=60)
assert embeddings.preload() is True and embeddings._model is model
parent = embeddings.embed(["Freight, 2 pallets"])[0]
print(json.dumps({"exitcode": proc.exitcode, "loaded": loaded_before_use,
                  "diff": max(abs(a - b) for a, b in zip(vector, parent))}))
"""


def test_a_worker_parent_loads_minilm_once_for_its_forked_pool():
    """As `invoicechain worker` does: `preload` in a fresh parent, then fork; the child embeds
    with the parent's weights (no second load, no hang) and gets the parent's vectors."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["exitcode"] == 0
    assert result["loaded"] is True
    assert result["diff"] < 1e-6
