"""OCR on this CPU: speed and fidelity on the scans and phone photos of the real-invoice set.

    .venv/bin/python -m benchmarks.ocr                          # every scan and photo, the configured engine
    .venv/bin/python -m benchmarks.ocr --engine rapidocr-onnxruntime --split dev
    .venv/bin/python -m benchmarks.ocr --limit 4 --dpi 150

Each document goes through `ingestion.ocr.read_scan` exactly as the ingest step runs it (PDF
pages rendered at `--dpi`, photos as taken); the engine is loaded once before timing. Prints,
per kind of document and overall: pages, seconds, pages per second, CPU seconds per page (the
process's threads and the OCR subprocesses: the figure that does not depend on what else the
machine runs), the mean page confidence, and the **word recall**: the share of the words of
the source PDF's text layer (each scan and photo is rendered from a PDF of the set,
`derived_from`) found in the OCR text, counted with multiplicity, words of two characters or
more, edge punctuation stripped; `special` counts the words holding an umlaut, accent or
currency sign, and how many of those were read exactly.
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import re
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REAL_DIR = ROOT / "datasets" / "real-invoices"
EDGE = ".,:;()[]|"
SPECIAL = re.compile(r"[€£äöüÄÖÜßéèêàâçôûÉ]")


def _words(text: str) -> collections.Counter:
    return collections.Counter(w for w in (t.strip(EDGE) for t in text.split()) if len(w) >= 2)


def word_recall(source: str, read: str) -> tuple[int, int, int, int]:
    """(source words found, source words, special words found, special words) of one document."""
    src, got = _words(source), _words(read)
    special = [w for w in src if SPECIAL.search(w)]
    return (sum(min(c, got[w]) for w, c in src.items()), sum(src.values()),
            sum(1 for w in special if got[w]), len(special))


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv=None) -> dict:
    from ingestion.ocr import choose_engine, read_scan, sniff_image
    from invoicechain.config import Settings
    from invoicechain.enums import OcrEngine
    from invoicechain.pdf import pdf_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    parser.add_argument("--dpi", type=int, default=None, help="render resolution of PDF pages (default: the setting)")
    parser.add_argument("--engine", choices=[e.value for e in OcrEngine], default=None,
                        help="OCR engine (default: the setting)")
    parser.add_argument("--split", choices=["dev", "heldout", "all"], default="all")
    args = parser.parse_args(argv)

    settings = Settings(**({"ocr_dpi": args.dpi} if args.dpi else {}), **({"ocr_engine": args.engine} if args.engine else {}))
    manifest = {r["id"]: r for r in csv.DictReader((REAL_DIR / "manifest.csv").open(newline=""))}
    rows = [r for r in manifest.values() if r["kind"] in ("scan", "photo") and args.split in ("all", r["split"])]
    rows = rows[: args.limit] if args.limit else rows
    t_load = time.perf_counter()
    engine_name, _ = choose_engine(settings)
    load_s = time.perf_counter() - t_load
    per_kind: dict[str, dict] = {}
    for r in rows:
        data = (REAL_DIR / r["file"]).read_bytes()
        t0, c0 = time.perf_counter(), _cpu()
        out = read_scan(data, sniff_image(data) or "application/pdf", settings)
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        source = pdf_text((REAL_DIR / manifest[r["derived_from"]]["file"]).read_bytes()).text
        recall = word_recall(source, out.text)
        k = per_kind.setdefault(r["kind"], {"documents": 0, "pages": 0, "seconds": 0.0, "cpu": 0.0, "confidence": [],
                                            "recall": [0, 0, 0, 0]})
        k["documents"] += 1
        k["pages"] += len(out.pages)
        k["seconds"] += seconds
        k["cpu"] += cpu
        k["confidence"] += [p.confidence for p in out.pages if p.confidence is not None]
        k["recall"] = [a + b for a, b in zip(k["recall"], recall)]
        print(f"  {r['id']}: {len(out.pages)} page(s), {seconds:.1f} s, {out.code or 'read'}, "
              f"word recall {recall[0] / max(1, recall[1]):.3f}", file=sys.stderr, flush=True)
    total = {"documents": sum(k["documents"] for k in per_kind.values()), "pages": sum(k["pages"] for k in per_kind.values()),
             "seconds": sum(k["seconds"] for k in per_kind.values()), "cpu": sum(k["cpu"] for k in per_kind.values()),
             "confidence": [c for k in per_kind.values() for c in k["confidence"]],
             "recall": [sum(k["recall"][i] for k in per_kind.values()) for i in range(4)]}
    print(f"\nOCR ({engine_name}, PDF pages at {settings.ocr_dpi} dpi, split {args.split}) on {os.cpu_count()} CPU "
          f"cores; engine check {load_s:.1f} s (once per worker); load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| documents | count | pages | seconds | pages/s | s/page | CPU s/page | mean page confidence | word recall | special words read |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for name, k in [*per_kind.items(), ("all", total)]:
        conf = sum(k["confidence"]) / len(k["confidence"]) if k["confidence"] else 0.0
        rate = k["pages"] / k["seconds"] if k["seconds"] else 0.0
        found, words, sfound, swords = k["recall"]
        print(f"| {name} | {k['documents']} | {k['pages']} | {k['seconds']:.1f} | {rate:.3f} | "
              f"{k['seconds'] / max(1, k['pages']):.1f} | {k['cpu'] / max(1, k['pages']):.1f} | {conf:.3f} | "
              f"{found / max(1, words):.1%} | {sfound}/{swords} |")
    return {"per_kind": per_kind, "total": total, "load_s": load_s, "engine": engine_name}


if __name__ == "__main__":
    main()
