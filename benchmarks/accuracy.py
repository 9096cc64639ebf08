"""Accuracy of the shipped adapters on data they were never trained on.

    .venv/bin/python -m benchmarks.accuracy synthetic   # extract: 200 synthetic invoices, seed 2026
    .venv/bin/python -m benchmarks.accuracy sroie       # extract: the 110 held-out SROIE receipts
    .venv/bin/python -m benchmarks.accuracy toolchain   # toolchain: agreement with the rules, seed 2026
    .venv/bin/python -m benchmarks.accuracy side-by-side --n 40   # extract: real invoices (held-out),
        # SROIE held-out and synthetic in one run, one normaliser, swaps and confidence calibration

`synthetic` generates a fresh corpus with a seed the training data never used and scores
every field with the schema's semantics (dates as dates, amounts as decimals, text after
whitespace normalisation; line items and bank details as wholes). `all docs` counts a
null predicted for a null field as right; `stated` counts only documents that state the
field. `sroie` maps company/address/date/total onto vendor_name/vendor_address/
invoice_date/total_amount and scores as `training.sroie.score`. `toolchain` asks the
toolchain adapter for each step's decision on the rules' own inputs and reports how
often it agrees with the rules' decision, per step.

Every run goes through `ModelRuntime`: batched, grammar-constrained greedy decoding,
exactly what the workers use, amount reconciliation included (`extraction.reconcile`);
`--no-reconcile` scores the answers as decoded. `--json FILE` also writes the full result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from invoicechain.schema import ANSWER_TOKENS  # noqa: E402

#: Never a training seed (training.recipes.TRAIN_SEEDS).
EVAL_SEED = 2026


def _runtime(args, adapter: str):
    from invoicechain.config import get_settings
    from models.runtime import ModelRuntime
    from models.store import resolve_base

    base = args.base or resolve_base(get_settings())
    runtime = ModelRuntime(Path(base), batch_size=args.batch, max_new_tokens=args.max_new_tokens,
                           grounded=not args.ungrounded, reconcile=not args.no_reconcile)
    path = args.adapter or ROOT / "adapters" / adapter
    runtime.load_adapter(adapter, Path(path), "benchmark")
    return runtime, path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def synthetic(args) -> dict:
    from training.evaluate import EVAL_FIELDS, evaluate_extraction
    from training.recipes import TRAIN_SEEDS
    from training.synth.corpus import generate_corpus

    if args.seed in TRAIN_SEEDS:
        raise SystemExit(f"seed {args.seed} is a training seed: pick another")
    runtime, path = _runtime(args, "extract")
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_corpus(args.n, args.seed, Path(tmp), toolchain=False)
        records = _read(summary.extract_jsonl)
    t0 = time.perf_counter()
    scores = evaluate_extraction(runtime, records, batch_size=args.batch,
                                 progress=lambda d, n: print(f"  {d}/{n}", file=sys.stderr, flush=True))
    scores["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\nExtract adapter `{path}` on {scores['count']} synthetic invoices (seed {args.seed}), "
          f"{scores['seconds']} s\n")
    raw = scores["as_decoded"]
    print("| field | exact match, all docs | exact match, where stated | as decoded (no reconciliation), all docs |\n|---|---|---|---|")
    for f in EVAL_FIELDS:
        print(f"| {f} | {_pct(scores['per_field'][f])} | {_pct(scores['per_field_stated'][f])} | {_pct(raw['per_field'][f])} |")
    print(f"| **all fields** | **{_pct(scores['field_exact_match'])}** | **{_pct(scores['stated_field_exact_match'])}** "
          f"| **{_pct(raw['field_exact_match'])}** |")
    print(f"\ndocuments with every field right: {_pct(scores['document_exact_match'])} "
          f"(as decoded: {_pct(raw['document_exact_match'])}); "
          f"documents changed by reconciliation: {scores['reconciled_documents']}")
    return scores


def sroie(args) -> dict:
    from training import sroie as sr

    from invoicechain.config import get_settings
    from models.store import resolve_base

    base = args.base or resolve_base(get_settings())
    path = args.adapter or ROOT / "adapters" / "extract"
    result = sr.score_adapter(Path(base), Path(path), limit=args.limit, batch_size=args.batch,
                              max_new_tokens=args.max_new_tokens, grounded=not args.ungrounded)
    print(f"\nExtract adapter `{path}` on {result.get('count')} held-out SROIE receipts, {result['seconds']} s\n")
    print("| SROIE field | schema field | accuracy |\n|---|---|---|")
    for gold, field in sr.FIELD_MAP.items():
        print(f"| {gold} | {field} | {_pct(result['per_field'][field])} |")
    print(f"| **mean** | | **{_pct(result['field_accuracy'])}** |")
    print(f"\nreceipts with all four fields right: {_pct(result['receipt_exact_match'])}")
    return result


def toolchain(args) -> dict:
    from training.evaluate import evaluate_toolchain
    from training.recipes import TRAIN_SEEDS, balanced_toolchain
    from training.synth.corpus import generate_corpus

    if args.seed in TRAIN_SEEDS:
        raise SystemExit(f"seed {args.seed} is a training seed: pick another")
    runtime, path = _runtime(args, "toolchain")
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_corpus(args.n, args.seed, Path(tmp))
        records = _read(summary.toolchain_jsonl)
    sets = {"every decision": records, "decision-balanced": balanced_toolchain(records)}
    out = {}
    for name, recs in sets.items():
        out[name] = evaluate_toolchain(runtime, recs, batch_size=args.batch)
    print(f"\nToolchain adapter `{path}` against the rules on synthetic invoices (seed {args.seed})\n")
    steps = sorted({s for r in out.values() for s in r["per_step"]})
    print("| cases | count | " + " | ".join(steps) + " | all |\n|---|---|" + "---|" * (len(steps) + 1))
    for name, r in out.items():
        cells = " | ".join(_pct(r["per_step"].get(s)) for s in steps)
        print(f"| {name} | {r['count']} | {cells} | **{_pct(r['decision_accuracy'])}** |")
    return out


# --- real documents, side by side: `real`, `side-by-side` ---------------------------------------
#
# The normaliser every set is scored with here (one for all three, so the columns compare):
# - names, addresses, invoice / PO numbers, IBANs: compared by their alphanumerics, case folded
#   ("Lieferant GmbH" = "LIEFERANT  GMBH", "RE-20190610/507" = "RE20190610507");
# - dates: as calendar dates (an ISO string or a date printed any way the schema reads);
# - amounts: to the cent, by absolute value (a credit note's sign is its document type's business);
# - currency: the ISO code.
# A field is scored on a document only where the gold states it (not null) and, on the real set,
# where the page prints it (`unprinted` in the gold file). Confidence is the runtime's own
# per-field confidence (`bank` for the IBAN).

REAL_DIR = ROOT / "datasets" / "real-invoices"
REAL_FIELDS = ("invoice_id", "vendor_name", "client_name", "invoice_date", "due_date", "currency",
               "subtotal", "tax", "total_amount", "po_number", "iban")
SROIE_FIELDS = ("vendor_name", "vendor_address", "invoice_date", "total_amount")
_AMOUNTS = {"subtotal", "tax", "total_amount", "discount", "shipping"}
_DATES = {"invoice_date", "due_date"}
COVERAGES = (0.8, 0.9, 1.0)


def normalise(field: str, value):
    """The comparable form of a value (see above); None for a null or empty value."""
    from decimal import Decimal, InvalidOperation

    if value in (None, "", [], {}):
        return None
    if field in _AMOUNTS:
        try:
            return abs(Decimal(str(value).replace(",", ""))).quantize(Decimal("0.01"))
        except (InvalidOperation, ValueError):
            return str(value)
    if field in _DATES:
        import datetime as dt

        try:
            return dt.date.fromisoformat(str(value)[:10])
        except ValueError:
            return str(value)
    if field == "currency":
        return str(value).strip().upper()
    key = "".join(ch for ch in str(value).casefold() if ch.isalnum())
    return key or None


def _value(fields: dict | None, field: str):
    if not fields:
        return None
    if field == "iban":
        return (fields.get("bank") or {}).get("iban")
    return fields.get(field)


def _confidence(confidence: dict | None, field: str) -> float:
    confidence = confidence or {}
    return float(confidence.get("bank" if field == "iban" else field, 0.0) or 0.0)


def document_text(data: bytes, name: str, settings=None) -> tuple[str, dict | None]:
    """The text the ingest step gives a document: its text layer, or OCR for a scan or photo."""
    from ingestion.ocr import garbled_text_layer, read_scan, sniff_image
    from invoicechain.pdf import pdf_text

    image = sniff_image(data)
    if image is None:
        text = pdf_text(data).text
        if text.strip() and not garbled_text_layer(text):
            return text, None
    outcome = read_scan(data, image or "application/pdf", settings)
    return (outcome.text if outcome.ok else ""), outcome.summary()


def real_records(split: str = "heldout", text_cache: Path | None = None) -> list[dict]:
    """Documents of the real-invoice set in `split` (heldout, dev or all) with their text and gold
    (`text_cache`: a folder keeping each document's text and OCR summary between runs)."""
    import csv

    from invoicechain.config import get_settings

    settings = get_settings()
    rows = list(csv.DictReader((REAL_DIR / "manifest.csv").open(newline="")))
    out = []
    for row in rows:
        if split != "all" and row["split"] != split:
            continue
        gold = json.loads((REAL_DIR / "gold" / f"{row['id']}.json").read_text(encoding="utf-8"))
        t0 = time.perf_counter()
        data = (REAL_DIR / row["file"]).read_bytes()
        cached = text_cache / f"{row['sha256']}.json" if text_cache else None
        if cached and cached.exists():
            text, ocr = json.loads(cached.read_text(encoding="utf-8"))
        else:
            text, ocr = document_text(data, row["file"], settings)
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps([text, ocr]), encoding="utf-8")
        fields = {f: v for f, v in gold["fields"].items() if f != "iban"}
        fields["bank"] = {"iban": gold["fields"].get("iban")}
        scored = [f for f in REAL_FIELDS if normalise(f, gold["fields"].get(f)) is not None and f not in gold["unprinted"]]
        out.append({"id": row["id"], "kind": row["kind"], "language": row["language"], "text": text, "gold": fields,
                    "scored": scored, "ocr": ocr, "read_s": round(time.perf_counter() - t0, 2)})
        print(f"  read {row['id']} ({row['kind']}, {len(text)} chars)", file=sys.stderr, flush=True)
    return out


def sroie_records(limit: int | None = None) -> list[dict]:
    """The fixed held-out part of SROIE train (`training.sroie.is_heldout`): never in a training recipe."""
    from training import sroie as sr

    out = []
    for r in sr.load_receipts():
        if not r.heldout:
            continue
        gold = sr.receipt_fields(r.gold)
        scored = [f for f in SROIE_FIELDS if normalise(f, gold.get(f)) is not None]
        out.append({"id": r.stem, "kind": "receipt", "language": "en", "text": r.text, "gold": gold, "scored": scored})
    return out[:limit] if limit else out


def synthetic_records(n: int, seed: int) -> list[dict]:
    from training.recipes import TRAIN_SEEDS
    from training.synth.corpus import generate_corpus

    if seed in TRAIN_SEEDS:
        raise SystemExit(f"seed {seed} is a training seed: pick another")
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_corpus(n, seed, Path(tmp), toolchain=False)
        records = _read(summary.extract_jsonl)
    out = []
    for i, r in enumerate(records):
        gold = r["output"] if isinstance(r["output"], dict) else json.loads(r["output"])
        scored = [f for f in REAL_FIELDS if normalise(f, _value(gold, f)) is not None]
        out.append({"id": f"synthetic-{i}", "kind": "pdf", "language": "", "text": r["input"], "gold": gold, "scored": scored})
    return out


def run_extraction(runtime, records: list[dict], batch: int) -> None:
    """Adds `pred` and `confidence` to every record (empty text: nothing predicted)."""
    todo = [r for r in records if r["text"].strip()]
    for r in records:
        r.setdefault("pred", None)
        r.setdefault("confidence", {})
    t0 = time.perf_counter()
    for i in range(0, len(todo), batch):
        chunk = todo[i : i + batch]
        for r, res in zip(chunk, runtime.extract([r["text"] for r in chunk], adapter="extract")):
            r["pred"], r["confidence"] = getattr(res, "fields", None), getattr(res, "confidence", {}) or {}
        print(f"  extracted {min(i + batch, len(todo))}/{len(todo)}", file=sys.stderr, flush=True)
    for r in records:
        r["extract_s"] = round((time.perf_counter() - t0) / max(1, len(todo)), 2)


def calibration(pairs: list[tuple[float, bool]], bins: int = 10) -> dict:
    """Accuracy of the most confident 80% / 90% / 100% of field values, and the expected calibration error."""
    ranked = sorted(pairs, key=lambda p: -p[0])
    out = {"pairs": len(pairs)}
    for cov in COVERAGES:
        k = max(1, round(cov * len(ranked))) if ranked else 0
        out[f"accuracy_at_{int(cov * 100)}"] = (sum(ok for _, ok in ranked[:k]) / k) if k else None
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [(c, ok) for c, ok in pairs if lo <= c < hi or (b == bins - 1 and c == 1.0)]
        if members:
            conf = sum(c for c, _ in members) / len(members)
            acc = sum(ok for _, ok in members) / len(members)
            ece += len(members) / len(pairs) * abs(conf - acc)
    out["ece"] = ece if pairs else None
    return out


def score_records(records: list[dict], fields: tuple[str, ...]) -> dict:
    """Per-field accuracy, their mean, issuer/customer swaps and confidence calibration."""
    hits = {f: 0 for f in fields}
    counts = {f: 0 for f in fields}
    pairs: list[tuple[float, bool]] = []
    per_field_pairs: dict[str, list] = {f: [] for f in fields}
    swaps, wrong = 0, []
    for r in records:
        for f in fields:
            if f not in r["scored"]:
                continue
            ok = normalise(f, _value(r["pred"], f)) == normalise(f, _value(r["gold"], f))
            hits[f] += ok
            counts[f] += 1
            conf = _confidence(r["confidence"], f)
            pairs.append((conf, ok))
            per_field_pairs[f].append((conf, ok))
            if not ok:
                wrong.append({"id": r["id"], "field": f, "gold": _value(r["gold"], f), "pred": _value(r["pred"], f),
                              "confidence": round(conf, 3)})
        gv, gc = normalise("vendor_name", _value(r["gold"], "vendor_name")), normalise("client_name", _value(r["gold"], "client_name"))
        pv, pc = normalise("vendor_name", _value(r["pred"], "vendor_name")), normalise("client_name", _value(r["pred"], "client_name"))
        if gv and gc and gv != gc and ((pv and pv == gc) or (pc and pc == gv)):
            swaps += 1
    per_field = {f: (hits[f] / counts[f]) if counts[f] else None for f in fields}
    stated = [v for v in per_field.values() if v is not None]
    return {
        "documents": len(records),
        "per_field": per_field,
        "counts": counts,
        "mean_field_accuracy": sum(stated) / len(stated) if stated else None,
        "pooled_field_accuracy": sum(hits.values()) / sum(counts.values()) if sum(counts.values()) else None,
        "swaps": swaps,
        "calibration": calibration(pairs),
        "calibration_per_field": {f: calibration(p) for f, p in per_field_pairs.items() if p},
        "errors": wrong,
    }


def side_by_side(args) -> dict:
    """One run: the real-invoice set (held-out split), SROIE train's held-out part, synthetic."""
    wanted = args.sets.split(",")
    runtime, path = _runtime(args, "extract")
    sets: dict[str, tuple[list[dict], tuple[str, ...]]] = {}
    t_all = time.perf_counter()
    if "real" in wanted:
        sets[f"real ({args.split})"] = (real_records(args.split, args.text_cache), REAL_FIELDS)
    if "sroie" in wanted:
        sets["SROIE held-out"] = (sroie_records(args.limit), SROIE_FIELDS)
    if "synthetic" in wanted:
        sets[f"synthetic (seed {args.seed})"] = (synthetic_records(args.n, args.seed), REAL_FIELDS)
    results = {}
    for name, (records, fields) in sets.items():
        t0 = time.perf_counter()
        run_extraction(runtime, records, args.batch)
        results[name] = score_records(records, fields)
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        if name.startswith("real"):
            by_kind = {}
            for kind in sorted({r["kind"] for r in records}):
                sub = score_records([r for r in records if r["kind"] == kind], fields)
                by_kind[kind] = {"documents": sub["documents"], "mean_field_accuracy": sub["mean_field_accuracy"]}
            results[name]["by_kind"] = by_kind
        # Each set's figures as soon as they are known (a long run's finished sets are kept).
        r = results[name]
        print(f"{name}: {r['documents']} docs, mean of fields {_pct(r['mean_field_accuracy'])}, "
              f"swaps {r['swaps']}, {r['seconds']} s", file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    names = list(results)
    all_fields = [f for f in dict.fromkeys(REAL_FIELDS + SROIE_FIELDS) if any(results[n]["counts"].get(f) for n in names)]
    print(f"\nExtract adapter `{path}`, one run, {round(time.perf_counter() - t_all)} s "
          f"(normaliser: benchmarks.accuracy.normalise)\n")
    print("| field | " + " | ".join(f"{n} ({results[n]['documents']} docs)" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for f in all_fields:
        cells = []
        for n in names:
            acc, cnt = results[n]["per_field"].get(f), results[n]["counts"].get(f, 0)
            cells.append("-" if acc is None else f"{_pct(acc)} ({cnt})")
        print(f"| {f} | " + " | ".join(cells) + " |")
    print("| **mean of fields** | " + " | ".join(f"**{_pct(results[n]['mean_field_accuracy'])}**" for n in names) + " |")
    print("| all scored values | " + " | ".join(_pct(results[n]["pooled_field_accuracy"]) for n in names) + " |")
    print("| issuer/customer swaps | " + " | ".join(str(results[n]["swaps"]) for n in names) + " |")
    print("\nConfidence calibration (all scored field values of each set, ranked by the runtime's confidence)\n")
    print("| set | values | accuracy at 80% coverage | at 90% | at 100% | expected calibration error |\n|---|---|---|---|---|---|")
    for n in names:
        c = results[n]["calibration"]
        print(f"| {n} | {c['pairs']} | {_pct(c['accuracy_at_80'])} | {_pct(c['accuracy_at_90'])} | "
              f"{_pct(c['accuracy_at_100'])} | {c['ece']:.3f} |" if c["ece"] is not None else f"| {n} | 0 | - | - | - | - |")
    for n in names:
        if "by_kind" in results[n]:
            kinds = ", ".join(f"{k}: {_pct(v['mean_field_accuracy'])} ({v['documents']} docs)" for k, v in results[n]["by_kind"].items())
            print(f"\n{n} by kind of document: {kinds}")
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["synthetic", "sroie", "toolchain", "side-by-side"])
    parser.add_argument("--adapter", type=Path, default=None, help="adapter folder (default: the shipped one)")
    parser.add_argument("--base", type=Path, default=None, help="base model folder (default: the configured base)")
    parser.add_argument("--n", type=int, default=200, help="synthetic documents (synthetic, toolchain)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--limit", type=int, default=None, help="sroie: only the first N held-out receipts")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=ANSWER_TOKENS)
    parser.add_argument("--ungrounded", action="store_true",
                        help="decode with the plain schema grammar, not grounded in each document")
    parser.add_argument("--no-reconcile", action="store_true",
                        help="score the model's answers as decoded, without amount reconciliation")
    parser.add_argument("--json", type=Path, default=None, help="also write the full result here")
    parser.add_argument("--sets", default="real,sroie,synthetic",
                        help="side-by-side: which sets, comma-separated (real, sroie, synthetic)")
    parser.add_argument("--split", default="heldout", choices=["heldout", "dev", "all"],
                        help="side-by-side: the real-invoice split (report on heldout; look at errors on dev)")
    parser.add_argument("--text-cache", type=Path, default=None,
                        help="side-by-side: keep the real documents' text (OCR included) here between runs")
    args = parser.parse_args(argv)
    result = {"synthetic": synthetic, "sroie": sroie, "toolchain": toolchain, "side-by-side": side_by_side}[args.what](args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
