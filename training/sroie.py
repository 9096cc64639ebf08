"""Real receipts (SROIE 2019, task 3) as extraction records, a fixed held-out split and its scorer.

Each receipt is `NNN.txt` (OCR lines) with `NNN.json` gold `{company, date, address,
total}`. They map onto the invoice schema as company -> vendor_name, address ->
vendor_address, date -> invoice_date (ISO; receipts are Malaysian, so day-first unless
that is impossible), total -> total_amount (plain decimal string); every other field is
null. The held-out part is chosen by a hash of the file stem, so it never changes and
is never trained on.

    python -m training.sroie export --out DIR     # DIR/train.jsonl, DIR/heldout.jsonl
    python -m training.sroie stats                # token lengths with the default base
    python -m training.sroie score --adapter DIR  # held-out field accuracy through the runtime
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from invoicechain.schema import ANSWER_TOKENS
from models.prompts import extract_record
from invoicechain.enums import AdapterName

#: Where the SROIE training receipts are looked for unless a path is given (every function and
#: command takes one: `root=` / `--src`).
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sroie-train"


class ReceiptsNotFound(FileNotFoundError):
    """The receipts folder is missing or holds no receipt."""
HELDOUT_FRACTION = 0.2
#: Gold keys and the schema fields they fill.
FIELD_MAP = {"company": "vendor_name", "address": "vendor_address", "date": "invoice_date", "total": "total_amount"}

_MONTHS = {m: i for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1
)}


# --- normalisation ------------------------------------------------------------------------


def _year(y: str) -> int:
    return int(y) + 2000 if len(y) == 2 else int(y)


def _safe_date(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def parse_receipt_date(text: str | None) -> date | None:
    """A receipt date in any of the SROIE spellings; day-first, month-first only when day-first is impossible."""
    if not text:
        return None
    s = text.strip().strip("()").strip().upper()
    if m := re.fullmatch(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})", s):
        return _safe_date(int(m[1]), int(m[2]), int(m[3]))
    if m := re.fullmatch(r"(\d{1,2})[-/. ]([A-Z]{3})[A-Z]*[-/. ,]+(\d{2}|\d{4})", s):
        return _safe_date(_year(m[3]), _MONTHS.get(m[2], 0), int(m[1])) if m[2] in _MONTHS else None
    if m := re.fullmatch(r"([A-Z]{3})[A-Z]*\.? (\d{1,2}),? (\d{2}|\d{4})", s):
        return _safe_date(_year(m[3]), _MONTHS[m[1]], int(m[2])) if m[1] in _MONTHS else None
    if m := re.fullmatch(r"(\d{8})", s):
        if s[:2] in ("19", "20") and (d := _safe_date(int(s[:4]), int(s[4:6]), int(s[6:]))):
            return d
        return _safe_date(int(s[4:]), int(s[2:4]), int(s[:2]))
    if m := re.fullmatch(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{2}|\d{4})", s):
        a, b, y = int(m[1]), int(m[2]), _year(m[3])
        return _safe_date(y, b, a) or _safe_date(y, a, b)
    return None


def parse_amount(text: str | None) -> Decimal | None:
    """An amount with or without currency marks and thousands separators ("RM 1,007.50", "$8.20")."""
    if text is None:
        return None
    s = re.sub(r"(?i)^(RM|MYR|\$|SGD|USD)\s*", "", str(text).strip()).replace(",", "").strip()
    if not re.fullmatch(r"-?\d+(\.\d+)?", s):
        return None
    try:
        return Decimal(s)
    except InvalidOperation:
        return None


def normalise_text(text: str | None) -> str | None:
    """Whitespace collapsed, case folded: how company names and addresses are compared."""
    if text is None:
        return None
    s = " ".join(str(text).split()).casefold()
    return s or None


def _text_field(value: str | None, limit: int = 200) -> str | None:
    if not value or not value.strip():
        return None
    return " ".join(value.split())[:limit]


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    stem: str
    text: str
    gold: dict
    #: Stem that decides the split: the first of the receipts this one duplicates.
    group: str = ""

    @property
    def heldout(self) -> bool:
        return is_heldout(self.group or self.stem)


def is_heldout(stem: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """True for receipts in the fixed held-out part (the top `fraction` of a sha256 of the stem)."""
    h = int(hashlib.sha256(stem.encode()).hexdigest()[:8], 16)
    return h >= int((1 - fraction) * 2**32)


def duplicate_groups(receipts: Sequence[Receipt]) -> dict[str, str]:
    """Each stem's group: receipts with the same OCR text or the same gold labels share one.

    The set holds a few receipts scanned twice; splitting by group keeps both copies on
    the same side, so no held-out receipt is ever trained on.
    """
    parent = {r.stem: r.stem for r in receipts}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[tuple, str] = {}
    for r in receipts:
        for key in (("text", " ".join(r.text.split()).casefold()), ("gold", json.dumps(r.gold, sort_keys=True))):
            if key in first:
                a, b = find(first[key]), find(r.stem)
                parent[max(a, b)] = min(a, b)
            else:
                first[key] = r.stem
    return {r.stem: find(r.stem) for r in receipts}


def load_receipts(root: Path = DEFAULT_DIR) -> list[Receipt]:
    """Every receipt with both its OCR text and its gold labels, sorted by stem.

    Raises `ReceiptsNotFound` when `root` is not a folder of receipts (`NNN.txt` + `NNN.json`).
    """
    root = Path(root)
    if not root.is_dir():
        raise ReceiptsNotFound(f"no SROIE receipts folder at {root}; give the folder of NNN.txt + NNN.json files")
    out = []
    for txt in sorted(root.glob("*.txt")):
        gold_file = txt.with_suffix(".json")
        if not gold_file.is_file():
            continue
        lines = [ln.strip() for ln in txt.read_text(encoding="utf-8", errors="replace").splitlines()]
        text = "\n".join(ln for ln in lines if ln)
        out.append(Receipt(txt.stem, text, json.loads(gold_file.read_text(encoding="utf-8"))))
    groups = duplicate_groups(out)
    return [Receipt(r.stem, r.text, r.gold, groups[r.stem]) for r in out]


def receipt_fields(gold: dict) -> dict:
    """Gold labels as a full invoice-schema object (unstated fields null)."""
    from invoicechain.schema import InvoiceFields

    d = parse_receipt_date(gold.get("date"))
    amount = parse_amount(gold.get("total"))
    fields = InvoiceFields(
        vendor_name=_text_field(gold.get("company")),
        vendor_address=_text_field(gold.get("address")),
        invoice_date=d.isoformat() if d else None,
        total_amount=f"{amount:f}" if amount is not None else None,
    )
    return fields.model_dump(mode="json")


def receipt_record(receipt: Receipt) -> dict:
    """The extraction training record of a receipt (same prompt as inference)."""
    rec = extract_record(receipt.text, receipt_fields(receipt.gold))
    return rec


def split_records(root: Path = DEFAULT_DIR) -> tuple[list[dict], list[dict]]:
    """(train, heldout) records; the held-out part is fixed by the file stems."""
    train, held = [], []
    for r in load_receipts(root):
        (held if r.heldout else train).append(receipt_record(r))
    return train, held


def export(out: Path, root: Path = DEFAULT_DIR, tokenizer=None, max_length: int | None = None) -> dict:
    """Write out/train.jsonl and out/heldout.jsonl; with a tokenizer, records over max_length are left out."""
    from models.prompts import encode_example
    from training.data import write_jsonl

    out = Path(out)
    receipts = load_receipts(root)
    train, held, dropped = [], [], []
    for r in receipts:
        rec = receipt_record(r)
        if tokenizer is not None and max_length is not None:
            n = len(encode_example(tokenizer, rec).input_ids)
            if n > max_length:
                dropped.append((r.stem, n))
                continue
        (held if r.heldout else train).append(rec)
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(held, out / "heldout.jsonl")
    return {"train": len(train), "heldout": len(held), "dropped_over_length": dropped, "out": str(out)}


# --- scoring ------------------------------------------------------------------------------


def _get(fields, name: str):
    if fields is None:
        return None
    if hasattr(fields, "model_dump"):
        fields = fields.model_dump(mode="json")
    return fields.get(name)


def field_match(name: str, predicted, gold) -> bool:
    """One SROIE field: names/addresses after whitespace+case normalisation, dates as dates, totals as decimals."""
    if name == "invoice_date":
        return parse_receipt_date(predicted) == parse_receipt_date(gold)
    if name == "total_amount":
        return parse_amount(predicted) == parse_amount(gold)
    return normalise_text(predicted) == normalise_text(gold)


def score(predictions: Sequence, gold_records: Sequence[dict]) -> dict:
    """Per-field and overall accuracy of predicted fields against held-out records' gold outputs.

    `predictions[i]` is a dict (or InvoiceFields) for `gold_records[i]`, or None when
    the model produced nothing usable (counted wrong).
    """
    if len(predictions) != len(gold_records):
        raise ValueError(f"{len(predictions)} predictions for {len(gold_records)} records")
    fields = list(FIELD_MAP.values())
    hits = {f: 0 for f in fields}
    all_right = 0
    for pred, rec in zip(predictions, gold_records):
        ok = [field_match(f, _get(pred, f), rec["output"].get(f)) for f in fields]
        for f, good in zip(fields, ok):
            hits[f] += good
        all_right += all(ok)
    n = max(1, len(gold_records))
    per_field = {f: hits[f] / n for f in fields}
    return {
        "count": len(gold_records),
        "per_field": per_field,
        "field_accuracy": sum(per_field.values()) / len(fields),
        "receipt_exact_match": all_right / n,
    }


def stats(tokenizer, root: Path = DEFAULT_DIR) -> dict:
    """Counts and token lengths (prompt + answer) of the train and held-out parts."""
    from training.data import encode_records, token_stats

    train, held = split_records(root)
    gold_missing = {
        f: sum(1 for r in train + held if r["output"][f] is None) for f in FIELD_MAP.values()
    }
    return {
        "train": token_stats(encode_records(tokenizer, train)),
        "heldout": token_stats(encode_records(tokenizer, held)),
        "null_gold_fields": gold_missing,
    }


def score_adapter(
    base_dir: Path, adapter_dir: Path | None, root: Path = DEFAULT_DIR, limit: int | None = None,
    device: str = "auto", batch_size: int = 8, max_new_tokens: int = ANSWER_TOKENS, grounded: bool = True,
) -> dict:
    """Extract the held-out receipts with the runtime (with the adapter, or the bare base) and score them."""
    import time

    from models.runtime import ModelRuntime

    _, held = split_records(root)
    held = held[:limit] if limit else held
    runtime = ModelRuntime(Path(base_dir), device=device, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           grounded=grounded)
    name = AdapterName.EXTRACT
    if adapter_dir is not None:
        runtime.load_adapter(name, Path(adapter_dir), "heldout-eval")
    else:
        name = None  # the base model alone
    t0 = time.perf_counter()
    preds = []
    for i in range(0, len(held), batch_size):
        chunk = held[i : i + batch_size]
        preds.extend(r.fields for r in runtime.extract([r["input"] for r in chunk], adapter=name))
    result = score(preds, held)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["adapter"] = str(adapter_dir) if adapter_dir else None
    return result


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.sroie", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="write train.jsonl and heldout.jsonl")
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--src", type=Path, default=DEFAULT_DIR)
    ex.add_argument("--base", type=Path, default=None, help="tokenizer folder for the length filter")
    ex.add_argument("--max-seq-len", type=int, default=None)
    st = sub.add_parser("stats", help="data statistics with the base tokenizer")
    st.add_argument("--src", type=Path, default=DEFAULT_DIR)
    st.add_argument("--base", type=Path, default=None)
    sc = sub.add_parser("score", help="extract the held-out receipts with an adapter and score them")
    sc.add_argument("--adapter", type=Path, default=None, help="adapter folder; none scores the bare base")
    sc.add_argument("--src", type=Path, default=DEFAULT_DIR)
    sc.add_argument("--base", type=Path, default=None)
    sc.add_argument("--limit", type=int, default=None, help="score only the first N held-out receipts")
    sc.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    tokenizer = None
    if args.cmd == "score":
        base = args.base
        if base is None:
            from invoicechain.config import get_settings
            from models.store import resolve_base

            base = resolve_base(get_settings())
        print(json.dumps(score_adapter(base, args.adapter, args.src, args.limit, args.device), indent=2))
        return
    if args.cmd == "stats" or args.base is not None or getattr(args, "max_seq_len", None):
        from transformers import AutoTokenizer

        base = args.base
        if base is None:
            from invoicechain.config import get_settings
            from models.store import resolve_base

            base = resolve_base(get_settings())
        tokenizer = AutoTokenizer.from_pretrained(base)
    if args.cmd == "export":
        info = export(args.out, args.src, tokenizer, args.max_seq_len)
        info["dropped_over_length"] = len(info["dropped_over_length"])
        print(json.dumps(info, indent=2))
    else:
        print(json.dumps(stats(tokenizer, args.src), indent=2))


if __name__ == "__main__":
    main()
