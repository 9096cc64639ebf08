"""The rules over a small generated corpus with faults reproduce every document's `expected`,
in Postgres through the chain and in the toolchain training data."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session

from invoicechain.ap.approval import store_master_policy
from invoicechain.ap.steps import run_chain
from training.toolchain_data import agreement_with_expected, write_toolchain_jsonl
from invoicechain.db.session import get_engine
from invoicechain.decisions import Fault
from invoicechain.master_data import load_master_data
from models.prompts import TOOLCHAIN_INSTRUCTIONS
from tests.factories import add_invoice
from training.data import check_record
from training.synth.corpus import document_record
from training.synth.plan import PROCESSING_DATE, plan_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """40 planned documents, half with a fault (every fault type at least once), as the generator writes them."""
    out = tmp_path_factory.mktemp("corpus")
    plan = plan_corpus(40, seed=5, fault_rate=0.5)
    assert set(plan.faults()) == {str(f) for f in Fault}
    for doc in plan.documents:
        (out / f"{doc.name}.json").write_text(json.dumps(document_record(doc)), encoding="utf-8")
    (out / "master_data.json").write_text(json.dumps(plan.master_data), encoding="utf-8")
    return out


def test_chain_in_postgres_reproduces_expected(settings, corpus):
    master = json.loads((corpus / "master_data.json").read_text())
    with Session(get_engine(settings), expire_on_commit=False) as session:
        load_master_data(session, master)
        store_master_policy(session, master)
        session.commit()
        wrong = []
        for path in sorted(corpus.glob("inv-*.json")):
            record = json.loads(path.read_text())
            inv = add_invoice(session, record["fields"])
            got = {step: o.decision for step, o in run_chain(session, inv, settings, today=PROCESSING_DATE)}
            session.commit()
            want = {step: d for step, d in record["expected"].items() if d}
            if got != want:
                wrong.append((path.stem, record["faults"], want, got))
    assert wrong == []


def test_toolchain_training_data(corpus):
    path = write_toolchain_jsonl(corpus, today=PROCESSING_DATE)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    expected_steps = 0
    for doc in corpus.glob("inv-*.json"):
        expected_steps += sum(1 for d in json.loads(doc.read_text())["expected"].values() if d)
    assert len(records) == expected_steps
    for rec in records:
        ok, problem = check_record(rec)
        assert ok is not None, problem
        assert rec["instruction"] in TOOLCHAIN_INSTRUCTIONS.values()
        context = json.loads(rec["input"])
        assert TOOLCHAIN_INSTRUCTIONS[context["step"]] == rec["instruction"]
        assert set(rec["output"]) == {"decision", "reasons"}
    # The same corpus gives the same file.
    first = path.read_bytes()
    assert write_toolchain_jsonl(corpus, today=PROCESSING_DATE).read_bytes() == first

    agreement = agreement_with_expected(corpus, today=PROCESSING_DATE)
    assert agreement["mismatches"] == []
    assert {step: c["share"] for step, c in agreement["steps"].items()} == {
        "validate_invoice": 1.0, "match_po": 1.0, "run_approval": 1.0, "trigger_payment": 1.0,
    }


def test_adapter_agreement_is_measured(corpus, tmp_path):
    from training.toolchain_data import adapter_agreement

    path = write_toolchain_jsonl(corpus, tmp_path / "held_out.jsonl", today=PROCESSING_DATE)
    # A stand-in adapter that knows validation only: it calls every invoice valid.
    def always_valid(step, context):
        return {"validate_invoice": {"decision": "VALID", "reasons": []}}.get(step, {"decision": "?"})

    result = adapter_agreement(path, always_valid)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    valid = sum(1 for r in records if r["output"]["decision"] == "VALID")
    validated = sum(1 for r in records if json.loads(r["input"])["step"] == "validate_invoice")
    assert result["total"] == len(records)
    assert result["steps"]["validate_invoice"]["agree"] == valid
    assert result["steps"]["validate_invoice"]["share"] == round(valid / validated, 4)
    assert result["steps"]["match_po"]["agree"] == 0
