"""Grounded grammars against the plain schema grammar, without the model.

On N synthetic invoices (their text and ground truth) and the default base's tokenizer:

* the time to build and compile one document's grounded grammar;
* the token-mask time per step, walking the canonical tokens of each true answer;
* the share of true answers the grounded grammar admits (a value the document does not
  print as the answer states it could not be written).

    .venv/bin/python -m benchmarks.grounding [--n 64] [--seed 99]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--base", type=Path, default=None, help="base model folder (default: the configured base)")
    args = parser.parse_args(argv)

    import llguidance
    import llguidance.hf
    from llguidance.torch import allocate_token_bitmask, fill_next_token_bitmask
    from transformers import AutoTokenizer

    from benchmarks.extraction import sample_invoices
    from invoicechain.config import get_settings
    from extraction.grammar import JSON_OPTIONS, document_grammar
    from models.prompts import dump_output
    from extraction.schemas import invoice_json_schema
    from models.store import resolve_base

    tokenizer = AutoTokenizer.from_pretrained(args.base or resolve_base(get_settings()))
    ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer)
    schema = invoice_json_schema()
    plain = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_OPTIONS)
    invoices = sample_invoices(args.n, args.seed)
    bitmask = allocate_token_bitmask(1, ll_tokenizer.vocab_size)
    build_ms: list[float] = []
    mask_us = {"plain": [], "grounded": []}
    admitted = 0
    for text, fields in invoices:
        t0 = time.perf_counter()
        grounded = llguidance.LLMatcher.grammar_from_lark(document_grammar(schema, text))
        llguidance.LLMatcher(ll_tokenizer, grounded)
        build_ms.append(1000 * (time.perf_counter() - t0))
        tokens = tokenizer(dump_output(fields), add_special_tokens=False)["input_ids"]
        for name, grammar in (("plain", plain), ("grounded", grounded)):
            matcher = llguidance.LLMatcher(ll_tokenizer, grammar)
            ok = True
            for token in tokens:
                t0 = time.perf_counter()
                fill_next_token_bitmask(matcher, bitmask, 0)
                mask_us[name].append(1e6 * (time.perf_counter() - t0))
                if not matcher.consume_token(token):
                    ok = False
                    break
            if name == "grounded" and ok:
                admitted += 1
    print(f"\n{len(invoices)} synthetic invoices (seed {args.seed})\n")
    print("| measure | plain schema grammar | grounded grammar |\n|---|---:|---:|")
    print(f"| build + compile per document, median ms | 0 (once) | {statistics.median(build_ms):.1f} |")
    print(f"| token mask per step, mean µs | {statistics.mean(mask_us['plain']):.0f} | {statistics.mean(mask_us['grounded']):.0f} |")
    print(f"| true answers admitted | 100% | {100 * admitted / len(invoices):.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
