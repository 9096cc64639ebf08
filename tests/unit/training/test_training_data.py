"""Training data: validation with line numbers, fingerprints, splits and batch layouts."""

from __future__ import annotations

import json

import pytest

from models.prompts import EXTRACT_INSTRUCTION, extract_record
from tests.factories import invoice_records
from training.data import (
    IGNORE_INDEX,
    DatasetError,
    collate,
    dataset_fingerprint,
    encode_records,
    load_datasets,
    load_jsonl,
    plan_epoch,
    split_train_eval,
    write_jsonl,
)


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_bad_lines_are_reported_with_line_numbers_and_reasons(tmp_path):
    good = json.dumps(invoice_records(1)[0])
    lines = [
        good,                                                            # 1 ok
        "{not json",                                                     # 2
        json.dumps({"instruction": "x", "input": "y"}),                  # 3 no output
        json.dumps([1, 2]),                                              # 4 not an object
        json.dumps({"instruction": 5, "input": "y", "output": "z"}),     # 5 wrong type
        "",                                                              # 6 blank: ignored
        json.dumps({"instruction": "x", "input": "y", "output": 3}),     # 7 output type
        json.dumps({"instruction": EXTRACT_INSTRUCTION, "input": "y",
                    "output": {"total_amount": "twelve"}}),              # 8 off-schema answer
        json.dumps({"instruction": "x", "input": ["a"], "output": "z"}), # 9 input type
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as err:
        load_jsonl(path)
    problems = dict(err.value.problems)
    assert sorted(problems) == [2, 3, 4, 5, 7, 8, 9]
    assert "malformed JSON" in problems[2]
    assert "'output'" in problems[3] and "missing" in problems[3]
    assert "object" in problems[4]
    assert "'instruction'" in problems[5]
    assert "'output'" in problems[7]
    assert "total_amount" in problems[8]
    assert "'input'" in problems[9]
    assert "line 2" in str(err.value)


def test_empty_and_missing_files_are_rejected(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError) as err:
        load_jsonl(empty)
    assert err.value.problems == [(0, "file is empty: no records")]
    with pytest.raises(DatasetError) as err:
        load_jsonl(tmp_path / "nope.jsonl")
    assert "not found" in err.value.problems[0][1]


def test_over_long_records_are_rejected_given_a_tokenizer(tmp_path, tiny_tokenizer):
    recs = invoice_records(3)
    recs[1] = dict(recs[1], input=recs[1]["input"] + " padding words" * 400)
    path = write_jsonl(recs, tmp_path / "long.jsonl")
    loaded = load_jsonl(path)  # no limit without a tokenizer
    assert len(loaded) == 3
    limit = max(len(e) for e in encode_records(tiny_tokenizer, [loaded[0], loaded[2]]))
    with pytest.raises(DatasetError) as err:
        load_jsonl(path, tiny_tokenizer, max_length=limit)
    [(line, why)] = err.value.problems
    assert line == 2 and f"over the maximum of {limit}" in why


def test_several_files_name_the_file_of_each_problem(tmp_path):
    a = write_jsonl(invoice_records(2), tmp_path / "a.jsonl")
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps(invoice_records(1)[0]) + "\n{oops\n")
    with pytest.raises(DatasetError) as err:
        load_datasets([a, b])
    assert err.value.problems == [(2, "b.jsonl: malformed JSON: Expecting property name enclosed in double quotes at column 2")]
    assert len(load_datasets([a, a])) == 4


def test_extract_answers_are_canonicalised_to_schema_order(tmp_path):
    rec = {"instruction": EXTRACT_INSTRUCTION, "input": "Total 5.00",
           "output": {"total_amount": "5.00", "invoice_id": "A1"}}
    path = write_jsonl([rec], tmp_path / "one.jsonl")
    [loaded] = load_jsonl(path)
    keys = list(loaded["output"])
    assert keys[0] == "invoice_id" and keys.index("total_amount") > keys.index("tax")
    assert loaded["output"]["vendor_name"] is None and loaded["output"]["line_items"] == []


def test_fingerprint_and_split_are_deterministic():
    recs = invoice_records(50)
    assert dataset_fingerprint(recs) == dataset_fingerprint([dict(r) for r in recs])
    assert dataset_fingerprint(recs) != dataset_fingerprint(recs[::-1])
    train, evals = split_train_eval(recs, 0.2, seed=1)
    assert len(train) + len(evals) == 50 and 3 <= len(evals) <= 20
    assert split_train_eval(recs, 0.2, seed=1) == (train, evals)
    # A record stays on its side when more data arrives.
    _, evals_more = split_train_eval(recs + invoice_records(20, seed=9), 0.2, seed=1)
    assert all(e in evals_more for e in evals)
    assert len(split_train_eval(recs[:3], 0.0)[1]) == 1  # always something to evaluate on


def test_length_grouped_batches_pad_little(tiny_tokenizer):
    examples = encode_records(tiny_tokenizer, invoice_records(64))
    plan = plan_epoch(examples, "length", batch_size=8, max_seq_len=4096, seed=0)
    assert sorted(i for b in plan for row in b for i in row) == list(range(64))
    padded = sum(len(b) * max(len(examples[r[0]]) for r in b) for b in plan)
    real = sum(len(e) for e in examples)
    naive = len(examples) * max(len(e) for e in examples)
    assert padded < naive and (padded - real) / real < 0.1


def test_collate_masks_prompt_and_padding(tiny_tokenizer):
    examples = encode_records(tiny_tokenizer, invoice_records(4))
    batch = collate(examples, [[0], [1], [2]], pad_id=0, packed=False)
    for row, idx in enumerate([0, 1, 2]):
        e = examples[idx]
        n = len(e)
        assert batch.input_ids[row, :n].tolist() == e.input_ids
        assert batch.attention_mask[row, :n].all() and not batch.attention_mask[row, n:].any()
        assert (batch.labels[row, n:] == IGNORE_INDEX).all()
        assert batch.labels[row, : n].tolist() == e.labels
    assert batch.answer_tokens == sum(e.answer_tokens for e in examples[:3])

    packed = collate(examples, [[0, 1], [2]], pad_id=0, packed=True)
    assert packed.attention_mask is None
    n0, n1 = len(examples[0]), len(examples[1])
    assert packed.position_ids[0, :n0].tolist() == list(range(n0))
    assert packed.position_ids[0, n0 : n0 + n1].tolist() == list(range(n1))
    assert packed.labels[0, n0].item() == IGNORE_INDEX  # no target across the boundary
