"""Writing a corpus: plan it, render each document to PDF, read it back, write the files.

For each document `DIR/NAME.pdf`, `DIR/NAME.txt` (the text of `invoicechain.pdf.pdf_text`,
what ingestion sees) and `DIR/NAME.json` (`fields`, `layout`, `faults`, `expected`); then
`DIR/extract.jsonl` (one extract training record per document, in document order),
`DIR/master_data.json`, and `DIR/toolchain.jsonl` from the accounts-payable rules when
`training.toolchain_data` is installed.

Every document is checked before it is written: each ground-truth value must be found in
its text (see `training.synth.grounding`), otherwise generation stops with an error.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from training.synth.document import InvoiceDoc

DOCUMENT_FILE = re.compile(r"^inv-\d{5,}\.(pdf|txt|json)$")


class GroundTruthError(RuntimeError):
    """A rendered document does not show a value its ground truth claims."""


@dataclass
class CorpusSummary:
    out: Path
    documents: int
    pages: int
    layouts: dict[str, int]
    faults: dict[str, int]
    clean: int
    seconds: float
    median_chars: int
    max_chars: int
    processes: int
    master_data: Path
    extract_jsonl: Path
    toolchain_jsonl: Path | None = None
    master_counts: dict[str, int] = field(default_factory=dict)

    def markdown(self) -> str:
        """A short markdown report of the corpus."""
        rows = [
            "| what | value |",
            "|---|---|",
            f"| documents | {self.documents} ({self.clean} clean) |",
            f"| pages | {self.pages} |",
            f"| text chars (median / max) | {self.median_chars} / {self.max_chars} |",
            f"| layouts | {', '.join(f'{k} {v}' for k, v in sorted(self.layouts.items()))} |",
            f"| faults | {', '.join(f'{k} {v}' for k, v in sorted(self.faults.items())) or 'none'} |",
            f"| master data | {', '.join(f'{k} {v}' for k, v in self.master_counts.items())} |",
            f"| seconds | {self.seconds:.1f} on {self.processes} process(es) |",
        ]
        return "\n".join(rows)


def render_document(doc: InvoiceDoc) -> tuple[bytes, str, int]:
    """(PDF bytes, its text as ingestion reads it, page count) for a planned document."""
    from invoicechain.pdf import pdf_text
    from training.synth.layouts import render

    pdf = render(doc)
    text = pdf_text(pdf)
    return pdf, text.text, text.page_count


def document_record(doc: InvoiceDoc) -> dict:
    """The `NAME.json` content: ground truth, layout, faults and the decisions each step should reach."""
    from invoicechain.decisions import expected_for

    fields = doc.fields()
    return {
        "fields": fields,
        "layout": doc.layout,
        "faults": list(doc.faults),
        "expected": expected_for(list(doc.faults), has_po=fields["po_number"] is not None),
    }


def write_document(out: Path, doc: InvoiceDoc) -> tuple[str, dict, int]:
    """Render, check and write one document's three files; returns (text, fields, pages)."""
    from training.synth.grounding import ungrounded

    pdf, text, pages = render_document(doc)
    record = document_record(doc)
    missing = ungrounded(record["fields"], text, doc.style)
    if missing:
        raise GroundTruthError(f"{doc.name} ({doc.layout}): values not found in its text: {missing}")
    (out / f"{doc.name}.pdf").write_bytes(pdf)
    (out / f"{doc.name}.txt").write_text(text, encoding="utf-8", newline="")
    (out / f"{doc.name}.json").write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return text, record["fields"], pages


def _default_processes(n: int) -> int:
    # Worker start-up costs about a second; small corpora are faster in one process.
    if n < 60 or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(2, multiprocessing.cpu_count()))


def write_toolchain(out: Path) -> Path | None:
    """Run the accounts-payable rules over the corpus when that module is installed.

    The rules judge dates relative to a processing day; the corpus's own (fixed) day keeps
    `toolchain.jsonl` as reproducible as the rest of the corpus.
    """
    import importlib.util
    import inspect

    from training.synth.plan import PROCESSING_DATE

    if importlib.util.find_spec("training.toolchain_data") is None:
        return None
    from training.toolchain_data import write_toolchain_jsonl

    if "today" in inspect.signature(write_toolchain_jsonl).parameters:
        return write_toolchain_jsonl(out, today=PROCESSING_DATE)
    return write_toolchain_jsonl(out)


def generate_corpus(
    n: int,
    seed: int,
    out: Path,
    fault_rate: float = 0.3,
    layouts: list[str] | None = None,
    processes: int | None = None,
    toolchain: bool = True,
) -> CorpusSummary:
    """Generate `n` documents with seed `seed` into `out`; the same arguments give the same files.

    `processes`: rendering workers (default: 2 for larger corpora, else 1). `toolchain`: also
    write `toolchain.jsonl` when the accounts-payable rules are installed.
    """
    from models.prompts import extract_record
    from training.synth.plan import plan_corpus

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_corpus(n, seed, fault_rate, layouts)
    names = {d.name for d in plan.documents}
    # Files of an earlier, larger corpus in the same folder would mix with this one.
    for stale in out.iterdir():
        if DOCUMENT_FILE.match(stale.name) and stale.name.rsplit(".", 1)[0] not in names:
            stale.unlink()

    processes = processes or _default_processes(n)
    work = partial(write_document, out)
    if processes > 1:
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes) as pool:
            results = pool.map(work, plan.documents, chunksize=max(1, min(16, n // (processes * 8))))
    else:
        results = [work(doc) for doc in plan.documents]

    extract_path = out / "extract.jsonl"
    with extract_path.open("w", encoding="utf-8", newline="\n") as fh:
        for text, fields, _ in results:
            fh.write(json.dumps(extract_record(text, fields), ensure_ascii=False) + "\n")
    master_path = out / "master_data.json"
    master_path.write_text(json.dumps(plan.master_data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    toolchain_path = write_toolchain(out) if toolchain else None

    lengths = sorted(len(text) for text, _, _ in results)
    return CorpusSummary(
        out=out,
        documents=n,
        pages=sum(pages for _, _, pages in results),
        layouts=dict(plan.layouts()),
        faults=dict(plan.faults()),
        clean=sum(1 for d in plan.documents if not d.faults),
        seconds=time.perf_counter() - started,
        median_chars=lengths[len(lengths) // 2],
        max_chars=lengths[-1],
        processes=processes,
        master_data=master_path,
        extract_jsonl=extract_path,
        toolchain_jsonl=toolchain_path,
        master_counts={key: len(plan.master_data[key]) for key in ("vendors", "purchase_orders", "posted_invoices")},
    )

