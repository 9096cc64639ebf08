"""`invoicechain process` on a synthetic set with faults: how often the whole chain, model
extraction included, reproduces the generator's expected decisions, per step.

    .venv/bin/python -m benchmarks.process            # 60 PDFs, seed 2026, 30% faults
    .venv/bin/python -m benchmarks.process --n 200

The corpus (with its master data) is generated with a seed the adapters were not trained
on, the master data is loaded into a fresh embedded database, and every PDF goes through
`invoicechain process` (ingest with pdfplumber, batched extraction with the shipped
`extract` adapter, the four toolchain steps in their configured modes). A step the
generator expects not to be reached counts as reproduced when the chain stopped before it.
Two columns separate the model's share of the errors from the rules': `from gold fields`
runs the same rules on the generator's exact fields.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STEPS = ("validate_invoice", "match_po", "run_approval", "trigger_payment")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    args = parser.parse_args(argv)

    from training.toolchain_data import agreement_with_expected
    from training.synth.corpus import generate_corpus

    work = Path(tempfile.mkdtemp(prefix="ic-process-"))
    corpus = work / "corpus"
    generate_corpus(args.n, args.seed, corpus, fault_rate=args.fault_rate, toolchain=False)
    env = dict(os.environ, INVOICECHAIN_DATA_DIR=str(work / "data"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if "INVOICECHAIN_MODEL_STORE" not in env:  # the provisioned base, not a new copy in the temporary data dir
        from invoicechain.config import get_settings

        env["INVOICECHAIN_MODEL_STORE"] = str(get_settings().resolved_model_store.resolve())
    env.pop("DATABASE_URL", None)
    env.pop("INVOICECHAIN_DATABASE_URL", None)
    from invoicechain.config import Settings
    from invoicechain.db.session import init_db, session_scope
    from invoicechain.master_data import load_master_data, read_master_data

    settings = Settings(data_dir=work / "data", database_url=None, redis_url=None)
    init_db(settings)
    with session_scope(settings) as session:
        load_master_data(session, read_master_data(corpus / "master_data.json"))
    cli = [sys.executable, "-m", "cli"]
    out = work / "process.jsonl"
    t0 = time.perf_counter()
    # The PDFs only: the corpus folder also holds each one's .txt, which `process` would read too.
    pdfs = sorted(str(p) for p in corpus.glob("inv-*.pdf"))
    subprocess.run(cli + ["process", *pdfs, "--out", str(out)], env=env, cwd=ROOT, check=True)
    seconds = time.perf_counter() - t0

    rows = {Path(r["source"]).stem: r for r in map(json.loads, out.read_text().splitlines())}
    per_step = {s: [0, 0] for s in STEPS}
    chains_right = 0
    for doc in sorted(corpus.glob("inv-*.json")):
        expected = json.loads(doc.read_text()).get("expected") or {}
        got = {s: v["decision"] for s, v in (rows.get(doc.stem) or {}).get("steps", {}).items()}
        all_ok = True
        for s in STEPS:
            if s not in expected:
                continue
            ok = got.get(s) == expected[s]
            per_step[s][0] += ok
            per_step[s][1] += 1
            all_ok &= ok
        chains_right += all_ok
    gold = agreement_with_expected(corpus)["steps"]
    n = len(rows)
    print(f"\n`invoicechain process` on {n} synthetic PDFs (seed {args.seed}, {args.fault_rate:.0%} faults), "
          f"{seconds:.0f} s ({seconds / max(1, n):.1f} s per invoice)\n")
    print("| step | expected decision reproduced | from gold fields |\n|---|---|---|")
    for s in STEPS:
        hit, total = per_step[s]
        g = gold[s]["share"]
        print(f"| {s} | {hit}/{total} = {100 * hit / max(1, total):.1f}% | {'-' if g is None else f'{100 * g:.1f}%'} |")
    print(f"| **whole chain** | **{chains_right}/{n} = {100 * chains_right / max(1, n):.1f}%** | |")


if __name__ == "__main__":
    main()
