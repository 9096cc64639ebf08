"""Per-vendor memory: learned from one vendor's corrected invoices, it reads that vendor's next
invoices right, leaves every other document as the model read it, and keeps the model's value
where its cue reads nothing."""

from __future__ import annotations

import random

import pytest

from benchmarks.corrections import SEED, STATED, score, vendor_invoice
from models.vendor_memory import VendorMemory, learn
from tests.factories import invoice_records


@pytest.fixture(scope="module")
def invoices():
    rng = random.Random(SEED)
    return [vendor_invoice(i, rng) for i in range(25)]


def test_learned_from_15_corrected_invoices_it_reads_the_next_10(invoices):
    memory = learn(invoices[:15])
    assert memory.anchor == "KESTREL MARINE SUPPLIES LTD" and memory.invoices == 15
    assert memory.cues["invoice_id"].as_dict() == {"kind": "below", "label": "Doc Ref", "extent": "cell"}
    assert memory.cues["client_name"].label == "Account"
    held_out = invoices[15:]
    wrong = {f: None for f in STATED}
    after = [memory.apply(d["input"], wrong)[0] for d in held_out]
    assert score(after, held_out)["fields"] == 1.0
    # It survives a round trip through JSON (how it is stored).
    again = VendorMemory.from_dict(memory.as_dict())
    assert [again.apply(d["input"], wrong)[0] for d in held_out] == after


def test_it_leaves_other_vendors_documents_alone_and_keeps_values_it_cannot_read(invoices):
    memory = learn(invoices[:15])
    other = invoice_records(3, seed=1)
    for record in other:
        fields, changed = memory.apply(record["input"], record["output"])
        assert fields == record["output"] and changed == []
    # The vendor's layout without the totals block: the model's totals stay.
    doc = invoices[20]
    text = doc["input"].split("\nGoods")[0]
    model = {**doc["output"], "total_amount": "1.00", "invoice_id": "X"}
    fields, changed = memory.apply(text, model)
    assert fields["total_amount"] == "1.00" and fields["invoice_id"] == doc["output"]["invoice_id"]
    assert "invoice_id" in changed and "total_amount" not in changed


def test_it_learns_only_cues_most_corrected_invoices_agree_on(invoices):
    mixed = [dict(r, output={**r["output"], "po_number": f"PO-{i}"}) for i, r in enumerate(invoices[:10])]
    memory = learn(mixed)
    assert "po_number" not in memory.cues and "invoice_id" in memory.cues
    with pytest.raises(ValueError, match="name no vendor"):
        learn([{"input": "x", "output": {"vendor_name": None}}])


def test_the_extract_worker_applies_the_memory_file_to_its_vendors_documents_only(invoices, tmp_path, monkeypatch):
    import json

    from invoicechain import config
    from models.runtime import ExtractionResult
    from workers.tasks import _recall_vendors

    memory = learn(invoices[:15])
    path = tmp_path / "vendor-memory.json"
    path.write_text(json.dumps({memory.anchor: memory.as_dict()}))
    monkeypatch.setenv("INVOICECHAIN_VENDOR_MEMORY_FILE", str(path))
    config.get_settings.cache_clear()
    try:
        ours, other = invoices[20], invoice_records(1, seed=3)[0]
        todo = {"a": ours["input"], "b": other["input"]}
        results = [ExtractionResult(fields={**r["output"], "invoice_id": "WRONG"}, confidence={"invoice_id": 0.9},
                                    grounding={}, adapter_version=None, model_ms=1.0) for r in (ours, other)]
        _recall_vendors(todo, results)
    finally:
        config.get_settings.cache_clear()
    mine, theirs = results
    assert mine.fields["invoice_id"] == ours["output"]["invoice_id"]
    assert mine.memory == {"vendor": memory.anchor, "invoices": 15, "fields": ["invoice_id"]}
    assert mine.confidence["invoice_id"] == memory.support["invoice_id"]
    span = mine.grounding["invoice_id"]
    assert ours["input"][span["start"]:span["end"]] == ours["output"]["invoice_id"]
    # Another vendor's document is left as the model read it.
    assert theirs.fields["invoice_id"] == "WRONG" and theirs.memory is None
