"""SROIE receipts as extraction records: date and amount parsing, the fixed held-out split, the scorer."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from invoicechain.schema import InvoiceFields
from models.prompts import EXTRACT_INSTRUCTION
from tests.factories import SROIE_SAMPLE, tiny_config
from training import sroie
from training.data import load_jsonl


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("25/12/2018", date(2018, 12, 25)),
        ("02/03/2018", date(2018, 3, 2)),  # day first: Malaysian receipts
        ("12/28/2017", date(2017, 12, 28)),  # month first only where day first is impossible
        ("12-01-19", date(2019, 1, 12)),
        ("18/03/18", date(2018, 3, 18)),
        ("05 MAR 2018", date(2018, 3, 5)),
        ("28 MAR 18", date(2018, 3, 28)),
        ("24-MAR-2018", date(2018, 3, 24)),
        ("02/JAN/2017", date(2017, 1, 2)),
        ("2018-03-23", date(2018, 3, 23)),
        ("2018/02/22", date(2018, 2, 22)),
        ("20180304", date(2018, 3, 4)),
        ("25032018", date(2018, 3, 25)),
        ("11.02.18", date(2018, 2, 11)),
        ("(06/12/2016)", date(2016, 12, 6)),
        ("OCT 3, 2016", date(2016, 10, 3)),
        ("5/3/2018", date(2018, 3, 5)),
        ("", None),
        ("not a date", None),
    ],
)
def test_receipt_dates(text, expected):
    assert sroie.parse_receipt_date(text) == expected


def test_receipt_amounts():
    assert sroie.parse_amount("RM 1,007.50") == Decimal("1007.50")
    assert sroie.parse_amount("$8.20") == Decimal("8.20")
    assert sroie.parse_amount("-1.73") == Decimal("-1.73")
    assert sroie.parse_amount("") is None and sroie.parse_amount("abc") is None


def test_every_receipt_converts_to_a_valid_record():
    receipts = sroie.load_receipts(SROIE_SAMPLE)
    assert len(receipts) == 20
    for r in receipts:
        rec = sroie.receipt_record(r)
        assert rec["instruction"] == EXTRACT_INSTRUCTION and rec["input"]
        fields = InvoiceFields.model_validate(rec["output"])
        assert fields.vendor_name
        assert fields.invoice_id is None and fields.line_items == [] and fields.currency is None
    first = sroie.receipt_record(receipts[0])["output"]
    assert first["vendor_name"] == "BOOK TA .K (TAMAN DAYA) SDN BHD"
    assert first["invoice_date"] == "2018-12-25" and first["total_amount"] == "9.00"


def test_heldout_split_is_fixed_and_disjoint(tmp_path):
    receipts = sroie.load_receipts(SROIE_SAMPLE)
    held = [r.stem for r in receipts if r.heldout]
    assert 0.15 < len(held) / len(receipts) < 0.25
    assert held == [r.stem for r in sroie.load_receipts(SROIE_SAMPLE) if r.heldout]  # no randomness
    # Receipts scanned twice share a group, and so a side of the split.
    assert any(r.group != r.stem for r in receipts)
    info = sroie.export(tmp_path, root=SROIE_SAMPLE)
    train = load_jsonl(tmp_path / "train.jsonl")
    heldout = load_jsonl(tmp_path / "heldout.jsonl")
    assert info["train"] == len(train) and info["heldout"] == len(heldout) == len(held)
    train_inputs = {r["input"] for r in train}
    train_answers = {json.dumps(r["output"], sort_keys=True) for r in train}
    assert not any(r["input"] in train_inputs for r in heldout)
    assert not any(json.dumps(r["output"], sort_keys=True) in train_answers for r in heldout)


def test_export_leaves_out_over_long_receipts(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    info = sroie.export(tmp_path, root=SROIE_SAMPLE, tokenizer=tok, max_length=1200)
    assert info["dropped_over_length"] and all(n > 1200 for _, n in info["dropped_over_length"])
    assert info["train"] + info["heldout"] + len(info["dropped_over_length"]) == len(sroie.load_receipts(SROIE_SAMPLE))


def test_scorer_compares_by_field_semantics():
    _, held = sroie.split_records(SROIE_SAMPLE)
    gold = held[:4]
    preds = [dict(g["output"]) for g in gold]
    preds[0]["vendor_name"] = "  " + preds[0]["vendor_name"].lower() + " "  # case/space: still right
    preds[1]["invoice_date"] = "1999-01-01"  # wrong date
    preds[2]["total_amount"] = str(Decimal(preds[2]["total_amount"]) * 1) + "0"  # 9.000 == 9.00
    preds[3] = None  # nothing came back
    s = sroie.score(preds, gold)
    assert s["count"] == 4
    assert s["per_field"]["vendor_name"] == 0.75
    assert s["per_field"]["invoice_date"] == 0.5
    assert s["per_field"]["total_amount"] == 0.75
    assert s["receipt_exact_match"] == 0.5
    with pytest.raises(ValueError):
        sroie.score(preds[:2], gold)


def test_cli_export(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "training.sroie", "export", "--out", str(tmp_path), "--src", str(SROIE_SAMPLE)],
        capture_output=True, text=True, check=True, cwd=sroie.Path(sroie.__file__).resolve().parents[1],
    )
    info = json.loads(out.stdout)
    assert (tmp_path / "train.jsonl").is_file() and info["heldout"] > 0


def test_score_adapter_runs_the_heldout_receipts_through_the_runtime(tiny_model_dir, tmp_path):
    from training.sft import train_lora

    train, _ = sroie.split_records(SROIE_SAMPLE)
    result = train_lora(tiny_config(max_steps=1, eval_every=0, attention_metrics=False, max_seq_len=4096),
                        train[:4], tiny_model_dir, tmp_path / "run", eval_records=train[4:5])
    # A few new tokens are enough to check the wiring; a random model would ramble to the limit.
    scores = sroie.score_adapter(tiny_model_dir, result.adapter_dir, root=SROIE_SAMPLE, limit=1, device="cpu", max_new_tokens=24)
    assert scores["count"] == 1 and scores["adapter"] == str(result.adapter_dir)
    assert set(scores["per_field"]) == {"vendor_name", "vendor_address", "invoice_date", "total_amount"}
    assert 0.0 <= scores["field_accuracy"] <= 1.0


def test_a_missing_receipts_folder_is_a_clear_error(tmp_path):
    with pytest.raises(sroie.ReceiptsNotFound, match="no SROIE receipts folder"):
        sroie.load_receipts(tmp_path / "absent")
