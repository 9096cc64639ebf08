"""Training data: JSONL loading and validation, fingerprints, splits and token-efficient batches.

A record is `{"instruction": str, "input": str, "output": object | str}` (see
`models.prompts`). Bad data is rejected before any training starts: every problem is
collected with its line number, and the whole set is raised as one `DatasetError`.

Batches come in two layouts, both without padding every example to the maximum:

- ``"length"``: examples of similar length share a batch (sorted inside shuffled
  chunks), padded only to the longest in their batch;
- ``"pack"``: several examples are concatenated in one row; the position ids restart at
  0 for each example and no attention mask is passed, so the model builds a
  block-diagonal causal mask and no token attends across an example boundary.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from models.prompts import EXTRACT_INSTRUCTION, encode_example

REQUIRED_KEYS = ("instruction", "input", "output")
IGNORE_INDEX = -100
BatchLayout = Literal["length", "pack"]


class DatasetError(ValueError):
    """Training data that cannot be used, with every problem found: (line number, reason).

    Line 0 stands for the file as a whole (missing, empty).
    """

    def __init__(self, problems: list[tuple[int, str]], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        head = "; ".join(f"line {n}: {why}" if n else why for n, why in self.problems[:10])
        more = f" (+{len(self.problems) - 10} more)" if len(self.problems) > 10 else ""
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{len(self.problems)} problem(s) in training data: {head}{more}")


# --- loading and validation ---------------------------------------------------------------


def _canonical_extract_output(output: dict) -> dict:
    """An extraction answer in schema order with every field present (what decoding emits)."""
    from invoicechain.schema import InvoiceFields

    return InvoiceFields.model_validate(output).model_dump(mode="json")


def check_record(obj: Any) -> tuple[dict | None, str | None]:
    """Validate one parsed line: the usable record, or None and the reason it is rejected."""
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        return None, "missing key(s): " + ", ".join(repr(k) for k in missing)
    instruction, input_text, output = obj["instruction"], obj["input"], obj["output"]
    if not isinstance(instruction, str) or not instruction.strip():
        return None, f"'instruction' must be a non-empty string, got {type(instruction).__name__}"
    if input_text is None:
        input_text = ""
    if not isinstance(input_text, str):
        return None, f"'input' must be a string, got {type(input_text).__name__}"
    if isinstance(output, str):
        if not output.strip():
            return None, "'output' is an empty string"
    elif isinstance(output, dict):
        if instruction == EXTRACT_INSTRUCTION:
            from pydantic import ValidationError

            try:
                output = _canonical_extract_output(output)
            except ValidationError as exc:
                errs = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]
                )
                return None, f"'output' does not fit the invoice schema: {errs}"
    else:
        return None, f"'output' must be an object or a string, got {type(output).__name__}"
    return {"instruction": instruction, "input": input_text, "output": output}, None


def parse_jsonl(lines: Iterable[str]) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """Parse JSONL text: (line number, record) pairs and (line number, reason) problems."""
    records: list[tuple[int, dict]] = []
    problems: list[tuple[int, str]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines carry nothing; common at the end of files
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((lineno, f"malformed JSON: {exc.msg} at column {exc.colno}"))
            continue
        record, why = check_record(obj)
        if why:
            problems.append((lineno, why))
        else:
            records.append((lineno, record))
    return records, problems


def check_lengths(
    numbered: Sequence[tuple[int, dict]], tokenizer, max_length: int
) -> list[tuple[int, str]]:
    """Records whose prompt + answer does not fit in max_length tokens, with their sizes."""
    problems = []
    for lineno, record in numbered:
        n = len(encode_example(tokenizer, record).input_ids)
        if n > max_length:
            problems.append((lineno, f"record is {n} tokens, over the maximum of {max_length}"))
    return problems


def load_jsonl(path: str | Path, tokenizer=None, max_length: int | None = None) -> list[dict]:
    """Load and validate a JSONL training file; raises DatasetError listing every bad line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError([(0, f"file not found: {path}")], source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError([(0, f"not UTF-8 text: {exc.reason}")], source=str(path)) from exc
    numbered, problems = parse_jsonl(text.splitlines())
    if not numbered and not problems:
        problems.append((0, "file is empty: no records"))
    if tokenizer is not None and max_length is not None:
        problems.extend(check_lengths(numbered, tokenizer, max_length))
    if problems:
        raise DatasetError(sorted(problems), source=str(path))
    return [r for _, r in numbered]


def load_datasets(paths: Sequence[str | Path], tokenizer=None, max_length: int | None = None) -> list[dict]:
    """Load several JSONL files into one record list; problems name their file when there are several."""
    records: list[dict] = []
    problems: list[tuple[int, str]] = []
    for path in paths:
        try:
            records.extend(load_jsonl(path, tokenizer, max_length))
        except DatasetError as exc:
            prefix = f"{Path(path).name}: " if len(paths) > 1 else ""
            problems.extend((n, prefix + why) for n, why in exc.problems)
    if problems:
        raise DatasetError(problems, source=", ".join(str(p) for p in paths))
    if not records:
        raise DatasetError([(0, "no training data given")])
    return records


def write_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    """Write records as JSONL (one compact object per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
    return path


# --- fingerprints and splits --------------------------------------------------------------


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def dataset_fingerprint(records: Sequence[dict]) -> str:
    """sha256 of the records as canonical JSON (order matters: it fixes the data order)."""
    h = hashlib.sha256()
    for r in records:
        h.update(_canonical_json(r).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def split_train_eval(
    records: Sequence[dict], eval_fraction: float = 0.1, seed: int = 0, min_eval: int = 1
) -> tuple[list[dict], list[dict]]:
    """Deterministic train/eval split by a hash of each record's content.

    A record lands on the same side whatever else is in the set, so adding data never
    moves evaluation records into training. At least `min_eval` records are held out
    when there are two or more records.
    """
    keyed = [
        (hashlib.sha256(f"{seed}:{_canonical_json(r)}".encode()).hexdigest(), i, r)
        for i, r in enumerate(records)
    ]
    cut = int(eval_fraction * 2**32)
    eval_idx = {i for key, i, _ in keyed if int(key[:8], 16) < cut}
    want = min(min_eval, len(records) - 1) if len(records) > 1 else 0
    if len(eval_idx) < want:
        # Top up with the smallest hashes so the choice stays content-determined.
        for _key, i, _ in sorted(keyed):
            if len(eval_idx) >= want:
                break
            eval_idx.add(i)
    train = [r for i, r in enumerate(records) if i not in eval_idx]
    evals = [r for i, r in enumerate(records) if i in eval_idx]
    return train, evals


# --- encoding and batching ----------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One encoded record: token ids and labels (-100 on prompt tokens)."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def answer_tokens(self) -> int:
        # Labels are shifted by one inside the loss: the first token can never be a target.
        return sum(1 for x in self.labels[1:] if x != IGNORE_INDEX)


def encode_records(tokenizer, records: Sequence[dict], max_length: int | None = None) -> list[Example]:
    """Tokenise records with the shared prompt format (answer-only labels)."""
    out = []
    for r in records:
        enc = encode_example(tokenizer, r, max_length)
        out.append(Example(list(enc.input_ids), list(enc.labels)))
    return out


def length_grouped_order(
    lengths: Sequence[int], batch_size: int, seed: int, chunk_batches: int = 32
) -> list[list[int]]:
    """Batches of example indices with similar lengths, in a seeded random order.

    Indices are shuffled, cut into chunks of `chunk_batches` batches, sorted by length
    inside each chunk and split into batches; the batches are then shuffled. Padding
    stays small while the order still varies from epoch to epoch.
    """
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = max(batch_size * chunk_batches, batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(idx), chunk):
        part = sorted(idx[start : start + chunk], key=lambda i: lengths[i], reverse=True)
        batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def packed_order(lengths: Sequence[int], row_tokens: int, rows_per_batch: int, seed: int) -> list[list[list[int]]]:
    """Batches of rows, each row a list of example indices whose lengths fit in row_tokens.

    First-fit over the shuffled examples, so rows are well filled and the packing still
    changes with the seed.
    """
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in idx:
        n = lengths[i]
        for r, left in enumerate(room):
            if n <= left:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(row_tokens - n)
    rng.shuffle(rows)
    return [rows[j : j + rows_per_batch] for j in range(0, len(rows), rows_per_batch)]


def plan_epoch(
    examples: Sequence[Example], layout: BatchLayout, batch_size: int, max_seq_len: int, seed: int
) -> list[list[list[int]]]:
    """The data order of one epoch: batches, each a list of rows, each a list of example indices.

    In the "length" layout every row holds one example.
    """
    lengths = [len(e) for e in examples]
    if layout == "pack":
        return packed_order(lengths, max_seq_len, batch_size, seed)
    return [[[i] for i in b] for b in length_grouped_order(lengths, batch_size, seed)]


@dataclass
class Batch:
    """Tensors for one forward pass, plus the counts the loop needs."""

    input_ids: Any  # LongTensor [B, T]
    labels: Any  # LongTensor [B, T]
    position_ids: Any  # LongTensor [B, T]
    attention_mask: Any | None  # LongTensor [B, T], None when packed (the mask comes from position ids)
    tokens: int  # real (non-padding) tokens
    answer_tokens: int  # tokens that carry a loss

    def to(self, device) -> Batch:
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(
            mv(self.input_ids), mv(self.labels), mv(self.position_ids), mv(self.attention_mask),
            self.tokens, self.answer_tokens,
        )


#: Batch widths are rounded up to a multiple of this: a few distinct shapes instead of one per
#: batch, so the CPU kernels' per-shape caches (oneDNN primitives) stay small and warm.
PAD_MULTIPLE = 64


def collate(
    examples: Sequence[Example], rows: Sequence[Sequence[int]], pad_id: int, packed: bool,
    pad_multiple: int = PAD_MULTIPLE,
) -> Batch:
    """Build a batch from rows of example indices, padding on the right to the longest row
    (rounded up to `pad_multiple`).

    Packed rows restart their position ids at 0 for each example; the padding tail of a
    packed row is given its own positions from 0 so that it forms a separate sequence
    and real tokens never attend to it.
    """
    import torch

    ids_rows, lab_rows, pos_rows, mask_rows = [], [], [], []
    for row in rows:
        ids: list[int] = []
        labs: list[int] = []
        pos: list[int] = []
        for i in row:
            e = examples[i]
            ids += e.input_ids
            # The first token of each example must not be a target of the previous one.
            labs += [IGNORE_INDEX] + e.labels[1:]
            pos += list(range(len(e)))
        ids_rows.append(ids)
        lab_rows.append(labs)
        pos_rows.append(pos)
    width = max(len(r) for r in ids_rows)
    width = -(-width // pad_multiple) * pad_multiple
    tokens = sum(len(r) for r in ids_rows)
    for ids, labs, pos in zip(ids_rows, lab_rows, pos_rows):
        n = len(ids)
        pad = width - n
        mask_rows.append([1] * n + [0] * pad)
        ids += [pad_id] * pad
        labs += [IGNORE_INDEX] * pad
        pos += list(range(pad)) if packed else list(range(n, n + pad))
    labels = torch.tensor(lab_rows, dtype=torch.long)
    return Batch(
        input_ids=torch.tensor(ids_rows, dtype=torch.long),
        labels=labels,
        position_ids=torch.tensor(pos_rows, dtype=torch.long),
        attention_mask=None if packed else torch.tensor(mask_rows, dtype=torch.long),
        tokens=tokens,
        answer_tokens=int((labels[:, 1:] != IGNORE_INDEX).sum()),
    )


def token_stats(examples: Sequence[Example]) -> dict:
    """Length statistics of encoded examples (tokens in total, prompt, answer)."""
    import statistics

    if not examples:
        return {"count": 0}
    lengths = sorted(len(e) for e in examples)
    answers = sorted(sum(1 for x in e.labels if x != IGNORE_INDEX) for e in examples)

    def pct(xs: list[int], q: float) -> int:
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    return {
        "count": len(examples),
        "tokens_total": sum(lengths),
        "length_mean": round(statistics.fmean(lengths), 1),
        "length_p50": pct(lengths, 0.5),
        "length_p95": pct(lengths, 0.95),
        "length_max": lengths[-1],
        "length_min": lengths[0],
        "answer_mean": round(statistics.fmean(answers), 1),
        "answer_max": answers[-1],
    }
