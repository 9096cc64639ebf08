"""OCR throughput on this CPU: the scans and phone photos of the real-invoice set.

    .venv/bin/python -m benchmarks.ocr                 # every scan and photo in datasets/real-invoices
    .venv/bin/python -m benchmarks.ocr --limit 4 --dpi 150

Each document goes through `ingestion.ocr.read_scan` exactly as the ingest step runs it (PDF
pages rendered at `--dpi`, photos as taken); the engine is loaded once before timing. Prints
pages, seconds, pages per second, CPU seconds per page (all threads of the process: the figure
that does not depend on what else the machine runs) and the mean page confidence, per kind of
document and overall, with the load average while it ran.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REAL_DIR = ROOT / "datasets" / "real-invoices"


def main(argv=None) -> dict:
    from ingestion.ocr import engine, read_scan, sniff_image
    from invoicechain.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    parser.add_argument("--dpi", type=int, default=None, help="render resolution of PDF pages (default: the setting)")
    args = parser.parse_args(argv)

    settings = Settings(**({"ocr_dpi": args.dpi} if args.dpi else {}))
    rows = [r for r in csv.DictReader((REAL_DIR / "manifest.csv").open(newline="")) if r["kind"] in ("scan", "photo")]
    rows = rows[: args.limit] if args.limit else rows
    t_load = time.perf_counter()
    engine()
    load_s = time.perf_counter() - t_load
    per_kind: dict[str, dict] = {}
    for r in rows:
        data = (REAL_DIR / r["file"]).read_bytes()
        t0, c0 = time.perf_counter(), time.process_time()
        out = read_scan(data, sniff_image(data) or "application/pdf", settings)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        k = per_kind.setdefault(r["kind"], {"documents": 0, "pages": 0, "seconds": 0.0, "cpu": 0.0, "confidence": []})
        k["documents"] += 1
        k["pages"] += len(out.pages)
        k["seconds"] += seconds
        k["cpu"] += cpu
        k["confidence"] += [p.confidence for p in out.pages if p.confidence is not None]
        print(f"  {r['id']}: {len(out.pages)} page(s), {seconds:.1f} s, {out.code or 'read'}", file=sys.stderr, flush=True)
    total = {"documents": sum(k["documents"] for k in per_kind.values()), "pages": sum(k["pages"] for k in per_kind.values()),
             "seconds": sum(k["seconds"] for k in per_kind.values()), "cpu": sum(k["cpu"] for k in per_kind.values()),
             "confidence": [c for k in per_kind.values() for c in k["confidence"]]}
    print(f"\nOCR ({'rapidocr-onnxruntime'}, PDF pages at {settings.ocr_dpi} dpi) on {os.cpu_count()} CPU cores; "
          f"engine load {load_s:.1f} s (once per worker); load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| documents | count | pages | seconds | pages/s | s/page | CPU s/page | mean page confidence |\n"
          "|---|---|---|---|---|---|---|---|")
    for name, k in [*per_kind.items(), ("all", total)]:
        conf = sum(k["confidence"]) / len(k["confidence"]) if k["confidence"] else 0.0
        rate = k["pages"] / k["seconds"] if k["seconds"] else 0.0
        print(f"| {name} | {k['documents']} | {k['pages']} | {k['seconds']:.1f} | {rate:.3f} | "
              f"{k['seconds'] / max(1, k['pages']):.1f} | {k['cpu'] / max(1, k['pages']):.1f} | {conf:.3f} |")
    return {"per_kind": per_kind, "total": total, "load_s": load_s}


if __name__ == "__main__":
    main()
