"""The data behind the shipped default adapters, rebuilt deterministically.

    python -m training.recipes extract --out data/extract.jsonl
    python -m training.recipes extract-more --out data/extract-more.jsonl
    python -m training.recipes extract-polish --out data/extract-polish.jsonl
    python -m training.recipes extract-refine --out data/extract-refine.jsonl
    python -m training.recipes extract-hone --out data/extract-hone.jsonl
    python -m training.recipes extract-temper --out data/extract-temper.jsonl
    python -m training.recipes toolchain --out data/toolchain.jsonl

`extract`: 220 synthetic invoices (seed 1, at most 1,024 tokens each, every layout) and the
516 training receipts of SROIE (the 110 held-out receipts are never included).
`extract-more`: the second stage of the extract adapter, trained from the first stage's
weights: synthetic invoices of another seed (3) up to MORE_TOKENS training tokens in all,
each at most 1,536 tokens (the runtime's window), mixed with a fixed 150 of the SROIE
training receipts so that the receipts are not forgotten.
`extract-polish`: the third stage, trained from the second stage's weights at a lower
learning rate: the same recipe on a third seed (5), POLISH_TOKENS training tokens.
`extract-refine`, `extract-hone` and `extract-temper`: stages 4 to 6, the same recipe on seeds
7, 9 and 11.
`toolchain`: a decision-balanced sample of the rules' decisions on the same synthetic
corpus: every minority decision (INVALID, NO_MATCH, PARTIAL, PENDING_APPROVAL, HELD) and
as many majority ones, so the adapter does not learn to answer the common case only.

The training commands that produced `adapters/extract` and `adapters/toolchain` are in
each adapter's README. Evaluation always uses a different synthetic seed (see
`benchmarks/accuracy.py`).
"""

from __future__ import annotations

import json
import random
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from invoicechain.decisions import Decision
from invoicechain.enums import AdapterName

#: Seed of the synthetic training corpus; evaluation uses benchmarks.accuracy.EVAL_SEED.
TRAIN_SEED = 1
#: Seed of the second-stage synthetic corpus (extract-more).
MORE_SEED = 3
MORE_CORPUS_SIZE = 1200
MORE_TOKENS = 640_000
MORE_MAX_TOKENS = 1536
MORE_SROIE = 150
#: Seed, size and token budget of the third-stage corpus (extract-polish).
POLISH_SEED = 5
POLISH_CORPUS_SIZE = 900
POLISH_TOKENS = 450_000
POLISH_SROIE = 100
#: Stage 4: a fourth seed, trained from stage 3's weights.
REFINE_SEED = 7
REFINE_CORPUS_SIZE = 800
REFINE_TOKENS = 400_000
REFINE_SROIE = 100
#: Stage 5: a fifth seed, trained from stage 4's weights.
HONE_SEED = 9
HONE_CORPUS_SIZE = 800
HONE_TOKENS = 400_000
HONE_SROIE = 100
#: Stage 6: a sixth seed, trained from stage 5's weights.
TEMPER_SEED = 11
TEMPER_CORPUS_SIZE = 800
TEMPER_TOKENS = 400_000
TEMPER_SROIE = 100
TRAIN_SEEDS = (TRAIN_SEED, MORE_SEED, POLISH_SEED, REFINE_SEED, HONE_SEED, TEMPER_SEED)
#: Extract stages after the first: recipe name -> (corpus size, seed, token budget, SROIE receipts).
LATER_STAGES = {
    "extract-more": (MORE_CORPUS_SIZE, MORE_SEED, MORE_TOKENS, MORE_SROIE),
    "extract-polish": (POLISH_CORPUS_SIZE, POLISH_SEED, POLISH_TOKENS, POLISH_SROIE),
    "extract-refine": (REFINE_CORPUS_SIZE, REFINE_SEED, REFINE_TOKENS, REFINE_SROIE),
    "extract-hone": (HONE_CORPUS_SIZE, HONE_SEED, HONE_TOKENS, HONE_SROIE),
    "extract-temper": (TEMPER_CORPUS_SIZE, TEMPER_SEED, TEMPER_TOKENS, TEMPER_SROIE),
}
CORPUS_SIZE = 500
SYNTH_EXTRACT = 220
MAX_TOKENS = 1024
MINORITY = {Decision.INVALID, Decision.NO_MATCH, Decision.PARTIAL, Decision.PENDING_APPROVAL, Decision.HELD, Decision.REJECTED}


def _corpus(folder: Path) -> tuple[Path, Path]:
    from training.synth.corpus import generate_corpus

    summary = generate_corpus(CORPUS_SIZE, TRAIN_SEED, folder)
    if summary.toolchain_jsonl is None:
        raise RuntimeError("the accounts-payable rules are needed to label toolchain records")
    return summary.extract_jsonl, summary.toolchain_jsonl


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def extract_records(tokenizer, corpus: Path, sroie_root: Path | None = None) -> list[dict]:
    """Synthetic records that fit in MAX_TOKENS (a fixed random 220) followed by the SROIE training split."""
    from models.prompts import encode_example
    from training import sroie

    synth = [r for r in _read(corpus) if len(encode_example(tokenizer, r).input_ids) <= MAX_TOKENS]
    random.Random(7).shuffle(synth)
    train, _held = sroie.split_records(sroie_root or sroie.DEFAULT_DIR)
    return synth[:SYNTH_EXTRACT] + train


def extract_more_records(tokenizer, corpus: Path, sroie_root: Path | None = None,
                         tokens: int = MORE_TOKENS, receipts_count: int = MORE_SROIE) -> list[dict]:
    """Synthetic records of at most MORE_MAX_TOKENS, in corpus order, until `tokens`, plus
    a fixed `receipts_count` of the SROIE training receipts; shuffled together."""
    from models.prompts import encode_example
    from training import sroie

    out, used = [], 0
    for r in _read(corpus):
        n = len(encode_example(tokenizer, r).input_ids)
        if n > MORE_MAX_TOKENS:
            continue
        if used + n > tokens:
            break
        out.append(r)
        used += n
    train, _held = sroie.split_records(sroie_root or sroie.DEFAULT_DIR)
    receipts = list(train)
    random.Random(11).shuffle(receipts)
    out += receipts[:receipts_count]
    random.Random(13).shuffle(out)
    return out


def _decision(record: dict) -> str | None:
    out = record["output"]
    out = json.loads(out) if isinstance(out, str) else out
    return out.get("decision") if isinstance(out, dict) else None


def balanced_toolchain(records: Sequence[dict], seed: int = 7) -> list[dict]:
    """Every minority decision, and an equal number of majority ones spread over the steps."""
    minority = [r for r in records if _decision(r) in MINORITY]
    by_step: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if _decision(r) not in MINORITY:
            by_step[r["instruction"]].append(r)
    rng = random.Random(seed)
    per_step = max(1, len(minority) // max(1, len(by_step)))
    majority = []
    for key in sorted(by_step):
        group = by_step[key]
        rng.shuffle(group)
        majority.extend(group[:per_step])
    out = minority + majority
    rng.shuffle(out)
    return out


def _tokenizer(base: Path | None):
    from transformers import AutoTokenizer

    if base is None:
        from invoicechain.config import get_settings
        from models.store import resolve_base

        base = resolve_base(get_settings())
    return AutoTokenizer.from_pretrained(base)


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from training.data import write_jsonl

    parser = argparse.ArgumentParser(prog="python -m training.recipes", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=[AdapterName.EXTRACT, *LATER_STAGES, AdapterName.TOOLCHAIN])
    parser.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    parser.add_argument("--base", type=Path, default=None, help="tokenizer folder (default: the configured base)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.kind in LATER_STAGES:
            from training.synth.corpus import generate_corpus

            size, seed, tokens, receipts = LATER_STAGES[args.kind]
            summary = generate_corpus(size, seed, Path(tmp), toolchain=False)
            records = extract_more_records(_tokenizer(args.base), summary.extract_jsonl,
                                           tokens=tokens, receipts_count=receipts)
        else:
            extract_path, toolchain_path = _corpus(Path(tmp))
            if args.kind == AdapterName.EXTRACT:
                records = extract_records(_tokenizer(args.base), extract_path)
            else:
                records = balanced_toolchain(_read(toolchain_path))
    write_jsonl(records, args.out)
    print(f"{len(records)} records -> {args.out}")


if __name__ == "__main__":
    main()
