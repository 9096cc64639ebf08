"""The fixed, versioned evaluation set every `extract` adapter version is judged on.

`datasets/eval/extract.jsonl` holds one extraction record per document, each with a stable
`id` and its `source`: receipts from the held-out part of the SROIE 2019 training
receipts (`training.sroie.is_heldout`: never in any training recipe) and synthetic
invoices of a seed no training recipe uses (`SYNTH_SEED`, not in
`training.recipes.TRAIN_SEEDS`). `manifest.json` beside it records the version, the
counts and the file's sha256; every metric computed on the set carries that hash, and
two versions are only compared on the same hash (and the same documents).

Scores are kept per document (`per_document`: each field right or wrong), so a candidate
judged on a subset of the set is compared with the active version on exactly that
subset, from the active version's stored scores, without decoding it again.

    python -m training.evalset build            # (re)write datasets/eval from ../shared and the generator
    python -m training.evalset check            # the file matches its manifest
    python -m training.evalset score --adapter adapters/extract [--limit N] [--out FILE]
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from invoicechain.enums import AdapterName

ROOT = Path(__file__).resolve().parents[1]
EVAL_DIR = ROOT / "datasets" / "eval"
EVAL_FILE = "extract.jsonl"
MANIFEST = "manifest.json"
VERSION = 1
#: Documents of each source in version 1.
SROIE_COUNT = 60
SYNTH_COUNT = 40
#: Seed of the synthetic documents (the accuracy benchmark's seed; no training recipe uses it).
SYNTH_SEED = 2026
RECORD_KEYS = ("instruction", "input", "output")


class EvalSetError(RuntimeError):
    """The evaluation set is missing or does not match its manifest."""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def eval_path(root: Path | None = None) -> Path:
    return Path(root or EVAL_DIR) / EVAL_FILE


def manifest(root: Path | None = None) -> dict:
    path = Path(root or EVAL_DIR) / MANIFEST
    if not path.is_file():
        raise EvalSetError(f"no evaluation set manifest at {path}")
    return json.loads(path.read_text())


def load(root: Path | None = None) -> tuple[list[dict], dict]:
    """(records with `id` and `source`, manifest); the file's hash must be the manifest's."""
    path = eval_path(root)
    if not path.is_file():
        raise EvalSetError(f"no evaluation set at {path}")
    info = manifest(root)
    digest = file_sha256(path)
    if digest != info.get("sha256"):
        raise EvalSetError(f"{path} has sha256 {digest}, its manifest says {info.get('sha256')}")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return records, info


def info(root: Path | None = None) -> dict:
    """What identifies the set in a metric: name, version, sha256, document count."""
    m = manifest(root)
    return {"name": m["name"], "version": m["version"], "sha256": m["sha256"], "documents": m["documents"]}


def subset(records: Sequence[dict], limit: int | None) -> list[dict]:
    """The first `limit` records of each source, interleaved (a fixed, reproducible subset)."""
    if not limit or limit >= len(records):
        return list(records)
    by_source: dict[str, list[dict]] = {}
    for r in records:
        by_source.setdefault(r["source"], []).append(r)
    out: list[dict] = []
    i = 0
    while len(out) < limit:
        for group in by_source.values():
            if i < len(group) and len(out) < limit:
                out.append(group[i])
        i += 1
    return out


def build(out: Path | None = None, sroie_root: Path | None = None) -> dict:
    """Write the set and its manifest (deterministic: the same files on every machine)."""
    from training import sroie
    from training.recipes import TRAIN_SEEDS
    from training.synth.corpus import generate_corpus

    if SYNTH_SEED in TRAIN_SEEDS:
        raise EvalSetError(f"seed {SYNTH_SEED} is a training seed")
    out = Path(out or EVAL_DIR)
    out.mkdir(parents=True, exist_ok=True)
    receipts = [r for r in sroie.load_receipts(sroie_root or sroie.DEFAULT_DIR) if r.heldout]
    if len(receipts) < SROIE_COUNT:
        raise EvalSetError(f"only {len(receipts)} held-out SROIE receipts, {SROIE_COUNT} wanted")
    rows = []
    for r in receipts[:SROIE_COUNT]:
        rec = sroie.receipt_record(r)
        rows.append({"id": f"sroie-{r.stem}", "source": "sroie-heldout", **rec})
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_corpus(SYNTH_COUNT, SYNTH_SEED, Path(tmp), toolchain=False, processes=1)
        synth = [json.loads(x) for x in summary.extract_jsonl.read_text(encoding="utf-8").splitlines() if x.strip()]
    for i, rec in enumerate(synth[:SYNTH_COUNT]):
        rows.append({"id": f"synth-{SYNTH_SEED}-{i:03d}", "source": f"synthetic-seed-{SYNTH_SEED}",
                     **{k: rec[k] for k in RECORD_KEYS}})
    path = eval_path(out)
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    m = {"name": "extract-eval", "version": VERSION, "file": EVAL_FILE, "sha256": file_sha256(path),
         "documents": len(rows), "sources": counts, "synthetic_seed": SYNTH_SEED}
    (out / MANIFEST).write_text(json.dumps(m, indent=2) + "\n")
    return m


# --- scoring ------------------------------------------------------------------------------


def per_document(predictions: Sequence, records: Sequence[dict]) -> dict[str, list[int]]:
    """Each document's id -> one 0/1 per scored field (training.evaluate.EVAL_FIELDS order)."""
    from training.evaluate import EVAL_FIELDS, _as_dict, fields_equal

    out = {}
    for pred, rec in zip(predictions, records):
        p, g = _as_dict(pred), _as_dict(rec["output"]) or {}
        out[rec["id"]] = [int(p is not None and fields_equal(f, p.get(f), g.get(f))) for f in EVAL_FIELDS]
    return out


def summarise(per_doc: dict[str, list[int]], ids: Sequence[str] | None = None) -> dict:
    """Field exact match overall and per field over `ids` (default: every scored document)."""
    from training.evaluate import EVAL_FIELDS

    ids = list(per_doc) if ids is None else [i for i in ids if i in per_doc]
    n = len(ids)
    per_field = {f: (sum(per_doc[i][k] for i in ids) / n if n else 0.0) for k, f in enumerate(EVAL_FIELDS)}
    total = sum(sum(per_doc[i]) for i in ids)
    return {
        "documents": n,
        "field_exact_match": total / (n * len(EVAL_FIELDS)) if n else 0.0,
        "per_field": per_field,
        "document_exact_match": sum(all(per_doc[i]) for i in ids) / n if n else 0.0,
    }


def score_runtime(runtime, records: Sequence[dict], adapter: str = AdapterName.EXTRACT, batch_size: int = 8,
                  progress=None) -> dict:
    """Extract every record's document and score it: the registry's `eval` metrics block."""
    import time

    t0 = time.perf_counter()
    preds = []
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        results = runtime.extract([r["input"] for r in chunk], adapter=adapter)
        preds.extend(getattr(res, "fields", None) for res in results)
        if progress:
            progress(len(preds), len(records))
    docs = per_document(preds, records)
    return {**summarise(docs), "per_document": docs, "seconds": round(time.perf_counter() - t0, 1)}


def score_adapter(base_dir: Path, adapter_dir: Path, limit: int | None = None, device: str = "auto",
                  root: Path | None = None, runtime=None, progress=None, **limits) -> dict:
    """The eval-set metrics block of one adapter folder: set identity, summary, per-document scores."""
    from training.evaluate import _load_runtime

    records, m = load(root)
    recs = subset(records, limit)
    runtime = runtime or _load_runtime(Path(base_dir), AdapterName.EXTRACT, Path(adapter_dir), device, "eval", **limits)
    scores = score_runtime(runtime, recs, progress=progress)
    return {"set": {"name": m["name"], "version": m["version"], "sha256": m["sha256"],
                    "documents": m["documents"]}, "subset": limit if limit and limit < len(records) else None,
            **scores}


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.evalset", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="write datasets/eval")
    sub.add_parser("check", help="verify the file against its manifest")
    sc = sub.add_parser("score", help="score an adapter folder on the set")
    sc.add_argument("--adapter", type=Path, default=ROOT / "adapters" / AdapterName.EXTRACT)
    sc.add_argument("--base", type=Path, default=None)
    sc.add_argument("--limit", type=int, default=None)
    sc.add_argument("--out", type=Path, default=None, help="write the metrics block as JSON here")
    sc.add_argument("--into-metrics", action="store_true",
                    help="store the block as `eval_set` in the adapter folder's metrics.json")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        print(json.dumps(build(), indent=2))
    elif args.cmd == "check":
        records, m = load()
        print(f"{m['name']} v{m['version']}: {len(records)} documents, sha256 {m['sha256']}")
    else:
        from invoicechain.config import get_settings
        from models.store import resolve_base

        settings = get_settings()
        base = args.base or resolve_base(settings)
        block = score_adapter(base, args.adapter, limit=args.limit, device=settings.device,
                              max_new_tokens=settings.max_new_tokens, max_input_tokens=settings.max_input_tokens,
                              progress=lambda d, n: print(f"  {d}/{n}", file=sys.stderr, flush=True))
        text = json.dumps(block, indent=2)
        if args.out:
            args.out.write_text(text + "\n")
        if args.into_metrics:
            path = args.adapter / "metrics.json"
            data = json.loads(path.read_text()) if path.is_file() else {}
            data["eval_set"] = block
            path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(f"field_exact_match {block['field_exact_match']:.4f} on {block['documents']} documents "
              f"of {block['set']['name']} v{block['set']['version']} ({block['set']['sha256'][:12]}), "
              f"{block['seconds']} s")


if __name__ == "__main__":
    main()
