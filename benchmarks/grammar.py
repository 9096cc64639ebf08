"""Grammar libraries for InvoiceFields decoding: xgrammar against llguidance.

On the real tokenizer of the default base, for the strict InvoiceFields schema (all keys,
schema order, compact separators):

* tokenizer set-up and grammar compile time (cold);
* per-step token-mask time at batch 16 on CPU, walking 16 real target sequences (the
  canonical tokenisation of `dump_output(fields)`), one row at a time and with the
  library's parallel batch call;
* whether the grammar accepts every target token by token (targets contain quotes,
  backslashes and non-ASCII text, as invoices do);
* the share of target tokens that are forced (exactly one token allowed).

    .venv/bin/python -m benchmarks.grammar [--n 64] [--base DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BATCH = 16


def _targets(tokenizer, n: int, seed: int) -> list[list[int]]:
    from benchmarks.extraction import sample_invoices
    from models.prompts import answer_stop_id, dump_output

    stop = answer_stop_id(tokenizer)
    docs = sample_invoices(n, seed=seed)
    # Invoices carry quotes, backslashes and accents: make sure some targets do.
    extra = dict(docs[0][1], vendor_name='Müller & Söhne "Bau" GmbH', vendor_address="Halle 3\\B, Köln")
    docs.append(("", extra))
    return [tokenizer(dump_output(f), add_special_tokens=False)["input_ids"] + [stop] for _, f in docs]


class _XGrammar:
    name = "xgrammar 0.2.8"

    def __init__(self, tokenizer, vocab_size, stop, schema):
        import xgrammar as xgr

        self.xgr = xgr
        t0 = time.perf_counter()
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=[stop])
        self.setup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        compiler = xgr.GrammarCompiler(info, max_threads=os.cpu_count() or 1, cache_enabled=False)
        self.compiled = compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=True
        )
        self.compile_s = time.perf_counter() - t0
        self.vocab_size = vocab_size
        self.batch_matcher = xgr.BatchGrammarMatcher(max_threads=os.cpu_count() or 1)

    def matcher(self):
        return self.xgr.GrammarMatcher(self.compiled)

    def bitmask(self, n):
        return self.xgr.allocate_token_bitmask(n, self.vocab_size)

    def fill(self, matchers, bitmask):
        for i, m in enumerate(matchers):
            m.fill_next_token_bitmask(bitmask, i)

    def fill_batch(self, matchers, bitmask):
        self.batch_matcher.batch_fill_next_token_bitmask(matchers, bitmask)

    def accept(self, m, token) -> bool:
        return m.accept_token(token)


class _LLGuidance:
    name = "llguidance 1.9.1"

    def __init__(self, tokenizer, vocab_size, stop, schema):
        import llguidance
        import llguidance.hf
        import llguidance.torch as lt

        self.lt, self.ll = lt, llguidance
        t0 = time.perf_counter()
        self.tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=stop)
        self.setup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema),
            defaults={"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"},
        )
        first = llguidance.LLMatcher(self.tok, self.grammar)  # lexer/parser built on first use
        if first.is_error():
            raise RuntimeError(first.get_error())
        self.compile_s = time.perf_counter() - t0
        self.vocab_size = vocab_size
        self.executor = llguidance.LLExecutor(num_threads=os.cpu_count() or 1)

    def matcher(self):
        return self.ll.LLMatcher(self.tok, self.grammar)

    def bitmask(self, n):
        return self.lt.allocate_token_bitmask(n, self.vocab_size)

    def fill(self, matchers, bitmask):
        for i, m in enumerate(matchers):
            self.lt.fill_next_token_bitmask(m, bitmask, i)

    def fill_batch(self, matchers, bitmask):
        self.lt.fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(matchers)], bitmask)

    def accept(self, m, token) -> bool:
        return m.consume_token(token)


def _allowed(bitmask_row, vocab_size):
    import numpy as np

    bits = np.unpackbits(bitmask_row.numpy().view(np.uint8), bitorder="little")[:vocab_size]
    return bits


def measure(lib, targets: list[list[int]]) -> dict:
    """Walk the targets in batches of 16; time mask filling; check acceptance and forcing."""
    accepted = forced = total = 0
    seq_s = par_s = 0.0
    steps = 0
    for start in range(0, len(targets), BATCH):
        chunk = targets[start : start + BATCH]
        matchers = [lib.matcher() for _ in chunk]
        alive = [True] * len(chunk)
        mask = lib.bitmask(len(chunk))
        for pos in range(max(len(t) for t in chunk)):
            live = [i for i, t in enumerate(chunk) if alive[i] and pos < len(t)]
            if not live:
                break
            ms = [matchers[i] for i in live]
            t0 = time.perf_counter()
            lib.fill(ms, mask)
            seq_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            lib.fill_batch(ms, mask)
            par_s += time.perf_counter() - t0
            steps += 1
            for j, i in enumerate(live):
                token = chunk[i][pos]
                bits = _allowed(mask[j], lib.vocab_size)
                total += 1
                forced += int(bits.sum()) == 1
                if not bits[token] or not lib.accept(matchers[i], token):
                    alive[i] = False
        accepted += sum(alive)
    return {
        "library": lib.name,
        "setup_s": lib.setup_s,
        "compile_s": lib.compile_s,
        "mask_ms_seq": 1e3 * seq_s / steps,
        "mask_ms_par": 1e3 * par_s / steps,
        "accepted": accepted,
        "targets": len(targets),
        "forced": forced / max(1, total),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="invoices whose targets are walked")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--base", type=Path, default=None, help="base model folder (default: configured base)")
    args = parser.parse_args(argv)

    from transformers import AutoConfig, AutoTokenizer

    from invoicechain.config import get_settings
    from models.prompts import answer_stop_id
    from extraction.schemas import invoice_json_schema
    from models.store import resolve_base

    base = args.base or resolve_base(get_settings())
    tokenizer = AutoTokenizer.from_pretrained(base)
    vocab_size = AutoConfig.from_pretrained(base).vocab_size
    stop = answer_stop_id(tokenizer)
    schema = invoice_json_schema()
    targets = _targets(tokenizer, args.n, args.seed)
    rows = []
    for cls in (_XGrammar, _LLGuidance):
        rows.append(measure(cls(tokenizer, vocab_size, stop, schema), targets))

    print(f"\nschema: InvoiceFields (strict) · tokenizer: {base.name} ({vocab_size} tokens) "
          f"· batch {BATCH} · {os.cpu_count()} CPU threads · {len(targets)} targets, "
          f"{sum(map(len, targets)) / len(targets):.0f} tokens on average\n")
    print("| library | tokenizer set-up s | compile s | mask ms/step, loop | mask ms/step, parallel "
          "| targets accepted | forced tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['library']} | {r['setup_s']:.2f} | {r['compile_s']:.2f} | {r['mask_ms_seq']:.2f} "
              f"| {r['mask_ms_par']:.2f} | {r['accepted']}/{r['targets']} | {100 * r['forced']:.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
