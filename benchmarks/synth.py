"""Time the synthetic corpus generator: 1,000 invoices by default, target under 3 minutes.

    .venv/bin/python benchmarks/synth.py [--n 1000] [--seed 1] [--processes 2] [--out DIR]

Prints a markdown table: planning, rendering and reading back every PDF, writing the files
(the corpus proper), and separately the accounts-payable rules writing `toolchain.jsonl`
when they are installed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processes", type=int, default=None, help="rendering workers (default: the generator's)")
    parser.add_argument("--out", type=Path, default=None, help="keep the corpus here (default: a temporary folder)")
    parser.add_argument("--no-toolchain", action="store_true", help="skip timing toolchain.jsonl")
    args = parser.parse_args()

    from training.synth.corpus import generate_corpus, write_toolchain

    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        out = args.out or Path(tmp) / "corpus"
        summary = generate_corpus(args.n, args.seed, out, processes=args.processes, toolchain=False)
        toolchain_s = None
        if not args.no_toolchain:
            started = time.perf_counter()
            if write_toolchain(out) is not None:
                toolchain_s = time.perf_counter() - started
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6

    rows = [
        ("machine", f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"),
        ("documents", f"{summary.documents} ({summary.clean} clean, {summary.pages} pages)"),
        ("layouts", ", ".join(f"{k} {v}" for k, v in sorted(summary.layouts.items()))),
        ("text chars, median / max", f"{summary.median_chars} / {summary.max_chars}"),
        ("corpus size", f"{size_mb:.1f} MB"),
        ("generate (plan, render, read back, write)", f"{summary.seconds:.1f} s on {summary.processes} process(es)"),
        ("per document", f"{1000 * summary.seconds / summary.documents:.0f} ms"),
        ("toolchain.jsonl (accounts-payable rules)", "not installed" if toolchain_s is None and not args.no_toolchain
         else ("skipped" if toolchain_s is None else f"{toolchain_s:.1f} s")),
        ("target", f"under 180 s for 1,000: {'met' if summary.seconds * 1000 / summary.documents < 180 else 'missed'}"),
    ]
    print(f"## Synthetic corpus, n={args.n}, seed={args.seed}\n")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
