"""Build the real-invoice set from its public sources (sources.yaml) into files/, gold/ and manifest.csv.

    .venv/bin/python datasets/real-invoices/build.py --mirrors DIR   # DIR/<owner>+<name>/repo: bare git mirrors
    .venv/bin/python datasets/real-invoices/build.py --check          # hashes of the shipped files match the manifest

For each source document: the original bytes are read from the repository at the recorded
commit and their sha256 recorded; a ZUGFeRD / Factur-X PDF gets its gold from the embedded CII
XML (`ingestion.einvoice`) and the model's input is the PDF without that attachment; other
documents take their gold from hand_gold.yaml. A gold field whose value is not printed on the
page (checked against the page text) is listed in `unprinted` and not scored. Scans and photos
are made from the PDFs by degrade.py (run after this script). The split is fixed from the
document's group (documents showing the same invoice share a group), never from results.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import subprocess
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: The header fields scored on this set (bank.iban written as `iban`).
SCORED_FIELDS = ("invoice_id", "vendor_name", "client_name", "invoice_date", "due_date", "currency",
                 "subtotal", "tax", "total_amount", "po_number", "iban")
AMOUNT_FIELDS = ("subtotal", "tax", "total_amount")
DATE_FIELDS = ("invoice_date", "due_date")
#: Signs a currency may be printed as (besides its ISO code).
CURRENCY_SIGNS = {"EUR": ("€",), "USD": ("$",), "GBP": ("£",), "CHF": ("CHF", "Fr."), "JPY": ("¥",)}
MANIFEST_COLUMNS = ("id", "file", "source", "licence", "sha256", "source_sha256", "language", "kind", "gold",
                    "group", "split", "derived_from")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_of(group: str) -> str:
    """One third of the groups for looking at errors (dev), two thirds held out for reporting."""
    return "dev" if int(sha256(group.encode())[:8], 16) % 3 == 0 else "heldout"


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


_NUMBER = re.compile(r"-?\d[\d.,' ]*\d|\d")


def printed_amounts(text: str) -> set[Decimal]:
    """Every value a printed number can stand for (1.234,56 and 1,234.56 both read)."""
    out: set[Decimal] = set()
    for match in _NUMBER.finditer(text):
        raw = match.group().replace(" ", "").replace("'", "")
        variants = {raw.replace(",", ""), raw.replace(".", "").replace(",", ".")}
        for v in variants:
            try:
                out.add(abs(Decimal(v)).quantize(Decimal("0.01")))
            except (InvalidOperation, ValueError):
                pass
    return out


def _dates(text: str) -> set[str]:
    import datetime as dt

    out: set[str] = set()
    for y, m, d in re.findall(r"\b(\d{4})[-./](\d{1,2})[-./](\d{1,2})\b", text):
        out.add(f"{y}-{int(m):02d}-{int(d):02d}")
    for a, b, y in re.findall(r"\b(\d{1,2})[./-](\d{1,2})[./-](\d{2,4})\b", text):
        y = int(y) + (2000 if len(y) == 2 else 0)
        for d, m in ((a, b), (b, a)):
            try:
                out.add(dt.date(y, int(m), int(d)).isoformat())
            except ValueError:
                pass
    return out


def is_printed(field: str, value, text: str) -> bool:
    if value in (None, ""):
        return True
    if field in AMOUNT_FIELDS:
        return abs(Decimal(value)).quantize(Decimal("0.01")) in printed_amounts(text)
    if field in DATE_FIELDS:
        if value in _dates(text):
            return True
        # month-name dates (11. Juli 2014, February 17, 2026): the day and the year both printed
        y, m, d = value.split("-")
        return bool(re.search(rf"\b0?{int(d)}\b\.?\s*[A-Za-zÄÖÜäöüéû]+\.?\s*{y}", text)) or \
            bool(re.search(rf"[A-Za-zéû]+\.?\s+0?{int(d)},?\s+{y}", text))
    if field == "currency":
        return value in text or any(sign in text for sign in CURRENCY_SIGNS.get(value, ()))
    return _alnum(str(value)) in _alnum(text)


def gold_from_xml(pdf: bytes) -> tuple[dict, dict]:
    from ingestion.einvoice import embedded_xml, parse_einvoice

    xml = embedded_xml(pdf)
    if xml is None:
        raise SystemExit("no embedded e-invoice XML")
    fields, meta = parse_einvoice(xml)
    gold = {f: fields.get(f) for f in SCORED_FIELDS if f != "iban"}
    gold["iban"] = (fields.get("bank") or {}).get("iban")
    return gold, {"type_code": meta.get("type_code"), "profile": meta.get("profile"), "xml_sha256": sha256(xml)}


def page_text(data: bytes) -> str:
    from invoicechain.pdf import pdf_text

    return pdf_text(data).text


def gold_record(doc_id: str, gold: dict, text: str, extra: dict | None = None) -> dict:
    unprinted = [f for f in SCORED_FIELDS if not is_printed(f, gold.get(f), text)]
    return {"id": doc_id, "fields": gold, "unprinted": unprinted, **(extra or {})}


def group_of(doc_id: str, gold: dict) -> str:
    """Documents that print the same invoice (number and total) share a group and so a split."""
    if gold.get("invoice_id") and gold.get("total_amount"):
        return f"{gold['invoice_id']}|{gold['total_amount']}"
    return doc_id


def git_show(mirrors: Path, repo: str, commit: str, path: str) -> bytes:
    git_dir = mirrors / repo.replace("/", "+") / "repo"
    return subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"],
                          check=True, capture_output=True).stdout


def build(mirrors: Path) -> list[dict]:
    from ingestion.einvoice import strip_attachments

    spec = yaml.safe_load((HERE / "sources.yaml").read_text())
    hand = yaml.safe_load((HERE / "hand_gold.yaml").read_text())
    (HERE / "files").mkdir(exist_ok=True)
    (HERE / "gold").mkdir(exist_ok=True)
    rows = []
    for doc in spec["documents"]:
        repo = spec["repos"][doc["repo"]]
        commit = doc.get("commit") or repo["commit"]
        original = git_show(mirrors, doc["repo"], commit, doc["path"])
        if doc["gold"] == "xml":
            gold, extra = gold_from_xml(original)
            data = strip_attachments(original)
        else:
            gold = {f: hand[doc["id"]].get(f) for f in SCORED_FIELDS if f in hand[doc["id"]]}
            extra, data = {}, original
        name = f"files/{doc['id']}.pdf"
        (HERE / name).write_bytes(data)
        record = gold_record(doc["id"], gold, page_text(data), extra)
        (HERE / "gold" / f"{doc['id']}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        group = group_of(doc["id"], gold)
        rows.append({
            "id": doc["id"], "file": name,
            "source": f"https://github.com/{doc['repo']}/blob/{commit}/{doc['path']}",
            "licence": repo["licence"], "sha256": sha256(data), "source_sha256": sha256(original),
            "language": doc["language"], "kind": "pdf", "gold": doc["gold"], "group": group,
            "split": split_of(group), "derived_from": "",
        })
    return rows


def write_manifest(rows: list[dict]) -> None:
    with (HERE / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_manifest() -> list[dict]:
    with (HERE / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def check() -> int:
    bad = [r["id"] for r in read_manifest() if sha256((HERE / r["file"]).read_bytes()) != r["sha256"]]
    print(f"{len(read_manifest())} documents, {len(bad)} with a wrong hash {bad or ''}")
    return 1 if bad else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirrors", type=Path, help="folder of bare git mirrors, <owner>+<name>/repo")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    if not args.mirrors:
        parser.error("--mirrors is required to build")
    rows = build(args.mirrors)
    derived = [r for r in read_manifest() if r["derived_from"]] if (HERE / "manifest.csv").exists() else []
    write_manifest(rows + derived)
    print(f"{len(rows)} source documents written; run degrade.py for the scans and photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
