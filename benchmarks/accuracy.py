"""Accuracy of the shipped adapters on data they were never trained on.

    .venv/bin/python -m benchmarks.accuracy synthetic   # extract: 200 synthetic invoices, seed 2026
    .venv/bin/python -m benchmarks.accuracy sroie       # extract: the 110 held-out SROIE receipts
    .venv/bin/python -m benchmarks.accuracy toolchain   # toolchain: agreement with the rules, seed 2026

`synthetic` generates a fresh corpus with a seed the training data never used and scores
every field with the schema's semantics (dates as dates, amounts as decimals, text after
whitespace normalisation; line items and bank details as wholes). `all docs` counts a
null predicted for a null field as right; `stated` counts only documents that state the
field. `sroie` maps company/address/date/total onto vendor_name/vendor_address/
invoice_date/total_amount and scores as `training.sroie.score`. `toolchain` asks the
toolchain adapter for each step's decision on the rules' own inputs and reports how
often it agrees with the rules' decision, per step.

Every run goes through `ModelRuntime`: batched, grammar-constrained greedy decoding,
exactly what the workers use, amount reconciliation included (`models.reconcile`);
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["synthetic", "sroie", "toolchain"])
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
    args = parser.parse_args(argv)
    result = {"synthetic": synthetic, "sroie": sroie, "toolchain": toolchain}[args.what](args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
