"""Per-vendor memory: where one vendor's invoices print each field, learned from reviewers'
corrected invoices of that vendor, and read back on that vendor's next invoices.

A vendor prints every invoice from one template, so the place a field's value sits is
stable: "after the label `Doc Ref`", "in the cell below the header `Issued`", "on the line
after the vendor's name". `learn` tries each such cue on every corrected invoice and keeps,
per field, the cue that reproduces the corrected value on most of them (on at least
`MIN_SUPPORT` of the invoices that state the field). `apply` fires only on a document that
carries the vendor's name as printed on its corrected invoices: there each learned cue is
read and its value, normalised the way the schema compares values (dates ISO, amounts as
decimals), replaces the model's. A cue that reads nothing leaves the model's value.

Nothing is trained: a vendor's memory is a small JSON document, learned in milliseconds
from 10-20 corrected invoices, so it suits a CPU where a LoRA fine-tune per vendor is too
slow; it helps only the vendor it was learned from and cannot change any other document.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

from extraction.candidates import date_candidates, number_candidates
from invoicechain.schema import AMOUNT_FIELDS, DATE_FIELDS, SCALAR_FIELDS

#: Cells of a line: separated by a tab, a bar or two or more spaces.
CELL_SPLIT = re.compile(r"\t|\s*\|\s*|\s{2,}")
#: What separates a label from its value on one line.
LABEL_TAIL = ":#.-= "
#: A cue must reproduce the corrected value on at least this share of the invoices stating the field.
MIN_SUPPORT = 0.8
#: Words of a cell tried as a label before its value.
MAX_LABEL_WORDS = 3


def _cells(line: str) -> list[str]:
    return [c for c in CELL_SPLIT.split(line.strip()) if c]


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def read_value(name: str, span: str | None) -> str | None:
    """A printed span as the schema's value of field `name` (None when it holds none)."""
    if span is None:
        return None
    span = " ".join(span.split())
    if not span:
        return None
    if name in DATE_FIELDS:
        found = date_candidates(span)
        return found[0] if found else None
    if name in AMOUNT_FIELDS:
        found = [v for v in number_candidates(span) if not v.startswith("-")]
        return found[0] if found else None
    if name == "currency":
        return span.upper() if re.fullmatch(r"[A-Za-z]{3}", span) else None
    return span


def same_value(name: str, a: str | None, b) -> bool:
    """Whether a read value and a corrected value mean the same (the schema's comparison)."""
    if a is None or b is None:
        return False
    if name in AMOUNT_FIELDS:
        try:
            return Decimal(str(a)) == Decimal(str(b))
        except InvalidOperation:
            return False
    if name == "currency":
        return str(a).upper() == str(b).strip().upper()
    return " ".join(str(a).split()) == " ".join(str(b).split())


@dataclass(frozen=True)
class Cue:
    """Where a value is printed: `kind` after (label then value in one cell), below (the cell
    under a header cell), next_line (the line after a line that is only the label); `extent`
    token or cell for `after`."""

    kind: str
    label: str
    extent: str = "cell"

    def read(self, text: str) -> str | None:
        lines = _lines(text)
        key = self.label.casefold()
        for i, line in enumerate(lines):
            cells = _cells(line)
            for j, cell in enumerate(cells):
                if self.kind == "after" and cell.casefold().startswith(key) and len(cell) > len(key):
                    rest = cell[len(self.label):].lstrip(LABEL_TAIL)
                    if not rest:
                        continue
                    return rest.split()[0] if self.extent == "token" else rest
                if self.kind == "after" and cell.casefold() == key and j + 1 < len(cells):
                    return cells[j + 1].split()[0] if self.extent == "token" else cells[j + 1]
                if cell.casefold() != key or i + 1 >= len(lines):
                    continue
                if self.kind == "below":
                    below = _cells(lines[i + 1])
                    return below[j] if j < len(below) and len(below) == len(cells) else None
                if self.kind == "next_line" and len(cells) == 1:
                    return lines[i + 1].strip()
        return None

    def as_dict(self) -> dict:
        return {"kind": self.kind, "label": self.label, "extent": self.extent}


def candidate_cues(text: str) -> Iterable[Cue]:
    """Every cue the document's layout offers (labels are the document's own words)."""
    lines = _lines(text)
    seen = set()
    for i, line in enumerate(lines):
        cells = _cells(line)
        for j, cell in enumerate(cells):
            words = cell.split()
            options = [Cue("after", cell, e) for e in ("token", "cell")] if j + 1 < len(cells) else []
            options += [Cue("after", " ".join(words[:k]).rstrip(LABEL_TAIL) or words[0], e)
                        for k in range(1, min(MAX_LABEL_WORDS, len(words) - 1) + 1) for e in ("token", "cell")]
            if i + 1 < len(lines):
                options.append(Cue("below", cell))
                if len(cells) == 1:
                    options.append(Cue("next_line", cell))
            for cue in options:
                if cue not in seen:
                    seen.add(cue)
                    yield cue


@dataclass
class VendorMemory:
    """One vendor's learned cues: `anchor` (its name as printed) and one cue per field."""

    anchor: str
    cues: dict[str, Cue] = field(default_factory=dict)
    support: dict[str, float] = field(default_factory=dict)
    invoices: int = 0

    def fires(self, text: str) -> bool:
        return self.anchor.casefold() in " ".join(text.split()).casefold()

    def apply(self, text: str, fields: dict | None) -> tuple[dict, list[str]]:
        """The fields with the learned ones read from `text` (and which fields changed); the
        fields as they were on a document of another vendor."""
        out = dict(fields or {})
        if not self.fires(text):
            return out, []
        changed = [] if same_value("vendor_name", self.anchor, out.get("vendor_name")) else ["vendor_name"]
        out["vendor_name"] = self.anchor  # the vendor's name as its corrected invoices print it
        for name, cue in self.cues.items():
            value = self.anchor if name == "vendor_name" else read_value(name, cue.read(text))
            if value is None:
                continue
            if not same_value(name, value, out.get(name)):
                changed.append(name)
            out[name] = value
        return out, changed

    def as_dict(self) -> dict:
        return {"anchor": self.anchor, "invoices": self.invoices, "support": self.support,
                "cues": {k: c.as_dict() for k, c in self.cues.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> VendorMemory:
        return cls(anchor=data["anchor"], cues={k: Cue(**c) for k, c in data.get("cues", {}).items()},
                   support=dict(data.get("support", {})), invoices=int(data.get("invoices", 0)))


def learn(records: Sequence[dict], fields: Sequence[str] = SCALAR_FIELDS) -> VendorMemory:
    """A vendor's memory from its corrected invoices (`{"input": text, "output": fields}`, one
    vendor: the corrected `vendor_name` must be printed on each)."""
    names = Counter((r.get("output") or {}).get("vendor_name") for r in records)
    names.pop(None, None)
    if not names:
        raise ValueError("the corrected invoices name no vendor")
    anchor = names.most_common(1)[0][0]
    memory = VendorMemory(anchor=anchor, invoices=len(records))
    docs = [r for r in records if memory.fires(r["input"])]
    for name in fields:
        stating = [r for r in docs if (r.get("output") or {}).get(name) not in (None, "")]
        if not stating:
            continue
        votes: Counter[Cue] = Counter()
        for r in stating:
            gold = r["output"][name]
            votes.update({cue for cue in candidate_cues(r["input"])
                          if same_value(name, read_value(name, cue.read(r["input"])), gold)})
        if not votes:
            continue
        best = max(votes.items(), key=lambda kv: (kv[1], kv[0].kind == "after", -len(kv[0].label)))
        share = best[1] / len(stating)
        if share >= MIN_SUPPORT:
            memory.cues[name], memory.support[name] = best[0], round(share, 3)
    return memory


def load_memories(path: Path | None) -> list[VendorMemory]:
    """The memories in `path` (as `invoicechain corrections vendors` writes them): none when
    the file is missing. Read again only when the file changes."""
    if path is None or not path.is_file():
        return []
    stat = path.stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _load(path: str, _mtime_ns: int, _size: int) -> list[VendorMemory]:
    import json

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [VendorMemory.from_dict(memory) for memory in data.values()]


def recall(memories: Sequence[VendorMemory], text: str, result) -> dict | None:
    """Apply the first memory that fires on `text` to an extraction result (its `fields`,
    `confidence` and `grounding`, in place). A field read by a cue gets the cue's support as
    its confidence and the span it was read from. Returns what was done (the vendor and the
    fields changed), or None when no memory knows this document's vendor."""
    for memory in memories:
        if not memory.fires(text):
            continue
        fields, changed = memory.apply(text, result.fields)
        result.fields = fields
        for name in changed:
            result.confidence[name] = 1.0 if name == "vendor_name" else memory.support.get(name, MIN_SUPPORT)
            raw = memory.anchor if name == "vendor_name" else memory.cues[name].read(text)
            start = _find(text, raw)
            result.grounding[name] = {"start": start, "end": start + len(raw)} if start >= 0 else {"grounded": False}
        return {"vendor": memory.anchor, "invoices": memory.invoices, "fields": changed}
    return None


def _find(text: str, raw: str | None) -> int:
    if not raw:
        return -1
    start = text.find(raw)
    return start if start >= 0 else text.casefold().find(raw.casefold())
