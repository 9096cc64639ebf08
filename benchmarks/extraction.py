"""Batched, schema-constrained extraction against the one-at-a-time sampling recipe.

Both run on the same invoices and the same model (the configured base with the `extract`
adapter when one is shipped or registered, else the base alone):

* **constrained**: `ModelRuntime.extract` -- batches of `--batch` documents, greedy,
  decoded under the InvoiceFields grammar with a KV cache.
* **sampling**: one `model.generate` per document with temperature 0.7, top-p 0.95 and
  512 new tokens, the output parsed as JSON (the first `{...}` block).

For each: documents per second and the share of outputs that parse AND validate against
`invoicechain.schema.InvoiceFields`. Prints a markdown table.

    .venv/bin/python -m benchmarks.extraction                    # 64 invoices, sampling on 16 of them
    .venv/bin/python -m benchmarks.extraction --sampling-n 64    # sampling on all 64 (~15 min more)
    .venv/bin/python -m benchmarks.extraction --n 8              # a quick look

One-at-a-time sampling is slow (up to 512 tokens per document, no batching), so by
default it runs on the first 16 of the invoices: documents per second is a rate, and 16
documents keep the default run within about ten minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --- invoices ------------------------------------------------------------------------------


def sample_invoices(n: int, seed: int = 1234) -> list[tuple[str, dict]]:
    """`n` synthetic invoice texts with their expected fields.

    The corpus is generated once per (n, seed) into .data/bench-corpus and read back from
    its extract.jsonl (the document text as ingestion sees it, and the ground truth).
    """
    from invoicechain.schema import InvoiceFields
    from training.synth import generate_corpus

    out = ROOT / ".data" / "bench-corpus" / f"n{n}-seed{seed}"
    records_file = out / "extract.jsonl"
    if not records_file.is_file():
        generate_corpus(n, seed, out, processes=1, toolchain=False)
    records = [json.loads(line) for line in records_file.read_text(encoding="utf-8").splitlines() if line]
    return [(r["input"], InvoiceFields.model_validate(r["output"]).model_dump(mode="json")) for r in records[:n]]


# --- the two recipes -----------------------------------------------------------------------

_JSON_BLOCK = re.compile(r"\{.*\}", re.S)


def is_valid_invoice_json(text: str) -> bool:
    """True when the text (or its first {...} block) parses and validates as InvoiceFields."""
    from pydantic import ValidationError

    from invoicechain.schema import InvoiceFields

    match = _JSON_BLOCK.search(text)
    if not match:
        return False
    try:
        InvoiceFields.model_validate(json.loads(match.group(0)))
    except (ValueError, ValidationError):
        return False
    return True


def run_sampling(runtime, texts: list[str], adapter: str | None, seed: int = 0) -> tuple[float, list[str]]:
    """One `generate` per document, sampling (T=0.7, top-p 0.95, 512 new tokens)."""
    import torch

    from models.prompts import EXTRACT_INSTRUCTION, answer_stop_id, render_prompt

    tok = runtime.tokenizer
    outputs = []
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with runtime.using_adapter(adapter) as model, torch.inference_mode():
        for text in texts:
            prompt = render_prompt(tok, EXTRACT_INSTRUCTION, text)
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False).to(runtime.device)
            out = model.generate(
                **enc, do_sample=True, temperature=0.7, top_p=0.95, max_new_tokens=512,
                eos_token_id=answer_stop_id(tok), pad_token_id=tok.pad_token_id,
            )
            outputs.append(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return time.perf_counter() - t0, outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="number of invoices (default 64)")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the constrained run")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--base", type=Path, default=None, help="base model folder (default: configured base)")
    parser.add_argument("--adapter", type=Path, default=None, help="extract adapter folder (default: registry/shipped)")
    parser.add_argument("--sampling-n", type=int, default=16,
                        help="invoices (the first of the --n) for the one-at-a-time sampling run; 0 skips it")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: OMP_NUM_THREADS, else every core)")
    args = parser.parse_args(argv)

    import torch

    from invoicechain.config import get_settings
    from models.runtime import ModelRuntime
    from models.store import resolve_base

    torch.set_num_threads(args.threads or int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count() or 1)
    settings = get_settings()
    base = args.base or resolve_base(settings)
    runtime = ModelRuntime.from_settings(settings, base_dir=base)
    runtime.batch_size = args.batch
    adapter_dir = args.adapter or (settings.adapters_dir / "extract")
    adapter = None
    if (Path(adapter_dir) / "adapter_config.json").is_file():
        runtime.load_adapter("extract", adapter_dir, version="bench")
        adapter = "extract"
    docs = sample_invoices(args.n, seed=args.seed)
    texts = [t for t, _ in docs]
    runtime.warm_up()

    t0 = time.perf_counter()
    results = runtime.extract(texts, adapter="extract")
    constrained_s = time.perf_counter() - t0
    # The raw answers are checked, not the parsed fields: every window's text must parse and validate.
    constrained_valid = sum(all(is_valid_invoice_json(o) for o in r.outputs) for r in results)
    windows = sum(r.windows for r in results)
    print(f"constrained: {args.n} documents in {constrained_s:.1f} s", file=sys.stderr, flush=True)

    rows = [("batched constrained (greedy, batch %d)" % args.batch, args.n, constrained_s, constrained_valid)]
    sampling_n = min(args.sampling_n, args.n)
    if sampling_n > 0:
        sampling_s, outs = run_sampling(runtime, texts[:sampling_n], adapter)
        rows.append(("one-at-a-time generate (T=0.7, top-p 0.95, 512 tok)", sampling_n, sampling_s,
                     sum(is_valid_invoice_json(o) for o in outs)))

    print(f"\nbase: {base} · adapter: {adapter or 'none (base model)'} · device: {runtime.device} "
          f"· dtype: {str(runtime.dtype).removeprefix('torch.')} · threads: {torch.get_num_threads()} "
          f"· windows: {windows}\n")
    print("| recipe | docs | seconds | docs/s | valid JSON |")
    print("|---|---:|---:|---:|---:|")
    for name, n, secs, valid in rows:
        print(f"| {name} | {n} | {secs:.1f} | {n / secs:.3f} | {100 * valid / n:.0f}% |")
    if len(rows) == 2:
        print(f"\nspeed-up: {(rows[0][1] / rows[0][2]) / (rows[1][1] / rows[1][2]):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
