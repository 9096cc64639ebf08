"""Training data for the toolchain adapter from a synthetic corpus.

The rules run, as of the corpus's latest invoice date, on each document's ground-truth fields against the corpus's master data,
in a temporary SQLite database migrated like the real one, through the same `run_chain`
the service uses. Every step the chain reaches becomes one record: the context built by
`context.build_context` in, the rules' decision and reason codes out. Documents are
processed in name order in one database, so an invoice repeated later in a corpus is
caught as a duplicate exactly as it would be in service.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlmodel import Session

from invoicechain.config import Settings, get_settings
from invoicechain.decisions import InvoiceStatus

TOOLCHAIN_FILE = "toolchain.jsonl"
MASTER_DATA_FILE = "master_data.json"


@dataclass
class StepExample:
    """One step the chain reached for one document."""

    document: str
    step: str
    context: dict
    decision: str
    reasons: list[str]
    expected: str | None  # the generator's expected decision for this step, when it states one


def corpus_documents(corpus_dir: Path) -> list[Path]:
    """The labelled documents of a corpus (JSON files with `fields`), in name order."""
    out = []
    for path in sorted(Path(corpus_dir).glob("*.json")):
        if path.name == MASTER_DATA_FILE:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "fields" in data:
            out.append(path)
    return out


def corpus_date(documents: list[Path]) -> date:
    """The day a corpus is processed "as of": its latest invoice date (today when it has none).

    Fixed by the corpus, so the same corpus always gives the same records (contexts show
    "today" and payment dates depend on it).
    """
    from invoicechain.ap.findings import parse_date

    days = []
    for path in documents:
        fields = json.loads(path.read_text(encoding="utf-8")).get("fields") or {}
        day = parse_date(fields.get("invoice_date"))
        if day:
            days.append(day)
    return max(days) if days else date.today()


def toolchain_examples(corpus_dir: Path, *, today: date | None = None, settings: Settings | None = None) -> list[StepExample]:
    """Run the rules over every document of a corpus; one example per step reached."""
    from invoicechain.ap.approval import store_master_policy
    from invoicechain.ap.steps import run_chain
    from invoicechain.db.session import get_engine, init_db
    from invoicechain.db.tables import Document, Invoice
    from invoicechain.master_data import load_master_data

    corpus_dir = Path(corpus_dir)
    master = json.loads((corpus_dir / MASTER_DATA_FILE).read_text(encoding="utf-8"))
    documents = corpus_documents(corpus_dir)
    today = today or corpus_date(documents)
    base = settings or get_settings()
    examples: list[StepExample] = []
    with tempfile.TemporaryDirectory(prefix="ic-toolchain-") as tmp:
        work = base.model_copy(
            update={
                "database_url": f"sqlite:///{Path(tmp) / 'toolchain.db'}",
                "data_dir": Path(tmp),
                # The records teach the rules' decisions: the adapter is never consulted here.
                "validate_mode": "rules",
                "match_po_mode": "rules",
                "approval_mode": "rules",
                "payment_mode": "rules",
            }
        )
        init_db(work)
        engine = get_engine(work)
        try:
            with Session(engine, expire_on_commit=False) as session:
                load_master_data(session, master)
                store_master_policy(session, master)
                session.commit()
                for path in documents:
                    data = json.loads(path.read_text(encoding="utf-8"))
                    digest = hashlib.sha256(path.name.encode()).hexdigest()
                    doc = Document(sha256=digest, filename=path.name, content_type="application/json", size=0, path=path.name)
                    session.add(doc)
                    session.flush()
                    invoice = Invoice(document_id=doc.id, fields=data["fields"], source="synthetic", status=InvoiceStatus.PROCESSING)
                    session.add(invoice)
                    session.flush()
                    expected = data.get("expected") or {}
                    for step, outcome in run_chain(session, invoice, work, today=today):
                        examples.append(
                            StepExample(
                                document=path.stem,
                                step=step,
                                context=outcome.context,
                                decision=outcome.decision,
                                reasons=list(outcome.rules_output["reasons"]),
                                expected=expected.get(step),
                            )
                        )
                    session.commit()
        finally:
            engine.dispose()
    return examples


def write_toolchain_jsonl(corpus_dir: Path, out: Path | None = None, *, today: date | None = None) -> Path:
    """Write DIR/toolchain.jsonl: one toolchain-adapter record per step the chain reaches."""
    from models.prompts import toolchain_record

    corpus_dir = Path(corpus_dir)
    out = Path(out) if out else corpus_dir / TOOLCHAIN_FILE
    examples = toolchain_examples(corpus_dir, today=today)
    tmp = out.with_suffix(out.suffix + ".part")
    with tmp.open("w", encoding="utf-8") as fh:
        for ex in examples:
            record = toolchain_record(ex.step, ex.context, {"decision": ex.decision, "reasons": ex.reasons})
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out


def agreement_with_expected(corpus_dir: Path, *, today: date | None = None) -> dict:
    """How often the rules reproduce each document's `expected` decisions, per step.

    A step the generator expects not to be reached (`null`) counts as reproduced when the
    chain stopped before it.
    """
    from invoicechain.decisions import TOOLCHAIN_STEPS

    corpus_dir = Path(corpus_dir)
    examples = toolchain_examples(corpus_dir, today=today)
    reached: dict[str, dict[str, str]] = {}
    for ex in examples:
        reached.setdefault(ex.document, {})[ex.step] = ex.decision
    per_step = {str(s): {"total": 0, "reproduced": 0} for s in TOOLCHAIN_STEPS}
    mismatches = []
    for path in corpus_documents(corpus_dir):
        expected = json.loads(path.read_text(encoding="utf-8")).get("expected") or {}
        got = reached.get(path.stem, {})
        for step in per_step:
            if step not in expected:
                continue
            per_step[step]["total"] += 1
            if got.get(step) == expected[step]:
                per_step[step]["reproduced"] += 1
            else:
                mismatches.append({"document": path.stem, "step": step, "expected": expected[step], "got": got.get(step)})
    for counts in per_step.values():
        counts["share"] = round(counts["reproduced"] / counts["total"], 4) if counts["total"] else None
    return {"steps": per_step, "mismatches": mismatches}


def adapter_agreement(records_path: Path, proposer, *, limit: int | None = None) -> dict:
    """How often the toolchain adapter (`proposer(step, context)`) agrees with the rules' decisions
    in a toolchain JSONL file (e.g. the `toolchain.jsonl` of a held-out corpus), per step."""
    from models.prompts import TOOLCHAIN_INSTRUCTIONS

    step_of = {instruction: step for step, instruction in TOOLCHAIN_INSTRUCTIONS.items()}
    per_step: dict[str, dict] = {}
    with Path(records_path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                break
            record = json.loads(line)
            step = str(step_of[record["instruction"]])
            context = json.loads(record["input"])
            answer = proposer(step, context)
            counts = per_step.setdefault(step, {"total": 0, "agree": 0, "reasons_agree": 0})
            counts["total"] += 1
            if isinstance(answer, dict) and answer.get("decision") == record["output"]["decision"]:
                counts["agree"] += 1
                if sorted(answer.get("reasons") or []) == sorted(record["output"].get("reasons") or []):
                    counts["reasons_agree"] += 1
    for counts in per_step.values():
        counts["share"] = round(counts["agree"] / counts["total"], 4) if counts["total"] else None
    total = sum(c["total"] for c in per_step.values())
    agree = sum(c["agree"] for c in per_step.values())
    return {"steps": per_step, "total": total, "share": round(agree / total, 4) if total else None}
