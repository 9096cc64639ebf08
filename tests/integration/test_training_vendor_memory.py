"""Reviewers' corrections accumulate per vendor: 12 invoices of one vendor, each misread and
corrected through the review path on Postgres, teach that vendor's memory, which then reads
the vendor's next invoice right (`invoicechain corrections vendors` writes the memories)."""

from __future__ import annotations

import json
import random

from typer.testing import CliRunner

from benchmarks.corrections import SEED, STATED, vendor_invoice
from invoicechain.ap import review
from models.vendor_memory import VendorMemory
from tests.factories import add_invoice
from training.corrections import vendor_memories


def test_corrected_invoices_of_a_vendor_teach_its_memory(session, settings, tmp_path):
    rng = random.Random(SEED)
    invoices = [vendor_invoice(i, rng) for i in range(13)]
    for doc in invoices[:12]:
        truth = doc["output"]
        misread = {**truth, "invoice_id": "CO-1", "invoice_date": None, "total_amount": truth["subtotal"]}
        inv = add_invoice(session, misread, text=doc["input"], status="needs_review")
        fixes = {k: truth[k] for k in ("invoice_id", "invoice_date", "total_amount")}
        review.apply_correction(session, inv, "rita", fixes, None, "misread", settings=settings)
    session.commit()

    assert vendor_memories(session, min_invoices=13) == {}  # too few corrected invoices yet
    memories = vendor_memories(session, min_invoices=10)
    assert list(memories) == ["KESTREL MARINE SUPPLIES LTD"]
    memory = VendorMemory.from_dict(memories["KESTREL MARINE SUPPLIES LTD"])
    assert memory.invoices == 12 and {"invoice_id", "invoice_date", "total_amount"} <= set(memory.cues)

    nxt = invoices[12]
    fields, changed = memory.apply(nxt["input"], {f: None for f in STATED})
    assert {f: fields[f] for f in STATED} == {f: nxt["output"][f] for f in STATED}
    assert "invoice_id" in changed

    from cli.corrections import app

    out = tmp_path / "vendors.json"
    result = CliRunner().invoke(app, ["vendors", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "KESTREL MARINE SUPPLIES LTD: 12 corrected invoice(s)" in result.output
    assert json.loads(out.read_text()) == memories
