"""The review desk's reading of an invoice: where each field's value sits on the page,
the page as an image, and which actions and decision overrides apply to it now.

Grounding spans are character ranges in the stored document text (pdfplumber layout
text, pages separated by a form feed). A span is put on the page by finding the same
words, in reading order, among pdfplumber's word boxes of that page: the n-th
occurrence in the text is the n-th occurrence among the words.
"""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from invoicechain.decisions import STEP_DECISIONS, TOOLCHAIN_STEPS, Decision, InvoiceStatus, Step
from invoicechain.pdf import PAGE_BREAK

#: Resolution of rendered pages (pixels per inch); boxes are page fractions, so any works.
PAGE_DPI = 110


class PageRenderError(RuntimeError):
    """The page cannot be rendered (no such page, no PDF, renderer missing)."""


@dataclass(frozen=True)
class Box:
    """A rectangle on a page, as fractions of the page's width and height."""

    page: int  # 1-based
    x0: float
    top: float
    x1: float
    bottom: float

    def as_dict(self) -> dict:
        return {"page": self.page, "x0": round(self.x0, 5), "top": round(self.top, 5),
                "x1": round(self.x1, 5), "bottom": round(self.bottom, 5)}


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _occurrence_index(page_text: str, local_start: int, value: str) -> int:
    """How many earlier occurrences of `value` (whitespace-insensitive) the page text holds."""
    tokens = value.split()
    if not tokens:
        return 0
    pattern = re.compile(r"\s*".join(re.escape(t) for t in tokens))
    return sum(1 for m in pattern.finditer(page_text[:local_start + 1]) if m.start() < local_start)


def _word_runs(words: list[dict], target: str) -> list[tuple[int, int]]:
    """Index ranges of consecutive words whose texts joined give `target` (no spaces)."""
    runs = []
    for i in range(len(words)):
        acc, j = "", i
        while j < len(words) and len(acc) < len(target):
            acc += words[j]["text"]
            j += 1
            if not target.startswith(acc):
                break
        if acc == target:
            runs.append((i, j))
    if not runs:  # a value printed inside a longer word, e.g. "EUR" in "EUR1,204.00"
        runs = [(i, i + 1) for i, w in enumerate(words) if target and target in w["text"]]
    return runs


def _merge_lines(words: list[dict], page_no: int, width: float, height: float) -> list[Box]:
    """One box per printed line of the matched words."""
    lines: list[list[dict]] = []
    for w in words:
        if lines and abs(lines[-1][-1]["top"] - w["top"]) < 2:
            lines[-1].append(w)
        else:
            lines.append([w])
    return [
        Box(page_no, min(w["x0"] for w in ln) / width, min(w["top"] for w in ln) / height,
            max(w["x1"] for w in ln) / width, max(w["bottom"] for w in ln) / height)
        for ln in lines
    ]


def span_boxes(pdf_bytes: bytes, text: str, grounding: dict | None) -> dict[str, list[dict]]:
    """Field name → boxes on the page for every scalar field with a grounding span.

    Bank fields are named `bank.<field>`; line items `line_items.<n>.<field>`.
    """
    import pdfplumber

    spans: dict[str, tuple[int, int]] = {}
    for name, g in (grounding or {}).items():
        if isinstance(g, dict) and "start" in g and "end" in g:
            spans[name] = (int(g["start"]), int(g["end"]))
        elif name == "bank" and isinstance(g, dict):
            for sub, sg in g.items():
                if isinstance(sg, dict) and "start" in sg:
                    spans[f"bank.{sub}"] = (int(sg["start"]), int(sg["end"]))
        elif name == "line_items" and isinstance(g, list):
            for n, item in enumerate(g):
                for sub, sg in (item or {}).items():
                    if isinstance(sg, dict) and "start" in sg:
                        spans[f"line_items.{n}.{sub}"] = (int(sg["start"]), int(sg["end"]))
    if not spans or not text:
        return {}
    out: dict[str, list[dict]] = {}
    page_starts = [0] + [m.end() for m in re.finditer(PAGE_BREAK, text)]
    with pdfplumber.open(io.BytesIO(pdf_bytes)) as pdf:
        words_by_page: dict[int, list[dict]] = {}
        for name, (start, end) in spans.items():
            if not 0 <= start < end <= len(text):
                continue
            page_idx = text.count(PAGE_BREAK, 0, start)
            if page_idx >= len(pdf.pages):
                continue
            page = pdf.pages[page_idx]
            if page_idx not in words_by_page:
                words_by_page[page_idx] = page.extract_words(keep_blank_chars=False)
            words = words_by_page[page_idx]
            value = text[start:end]
            page_text = text[page_starts[page_idx]:].split(PAGE_BREAK, 1)[0]
            runs = _word_runs(words, _squash(value))
            if not runs:
                continue
            nth = min(_occurrence_index(page_text, start - page_starts[page_idx], value), len(runs) - 1)
            i, j = runs[nth]
            boxes = _merge_lines(words[i:j], page_idx + 1, float(page.width), float(page.height))
            out[name] = [b.as_dict() for b in boxes]
    return out


def render_page(pdf_path: Path, page: int, cache_dir: Path, dpi: int = PAGE_DPI) -> bytes:
    """PNG of one page (1-based), rendered once with poppler's pdftoppm and kept in `cache_dir`."""
    if page < 1:
        raise PageRenderError("Pages are numbered from 1.")
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"page-{page}-{dpi}.png"
    if target.is_file():
        return target.read_bytes()
    stem = cache_dir / f"render-{page}-{dpi}"
    try:
        proc = subprocess.run(
            ["pdftoppm", "-png", "-r", str(dpi), "-f", str(page), "-l", str(page), "-singlefile", str(pdf_path), str(stem)],
            capture_output=True, text=True, timeout=60,
        )
    except FileNotFoundError as exc:
        raise PageRenderError("pdftoppm (poppler-utils) is not installed.") from exc
    except subprocess.TimeoutExpired as exc:
        raise PageRenderError("Rendering the page took too long.") from exc
    produced = stem.with_suffix(".png")
    if proc.returncode != 0 or not produced.is_file():
        raise PageRenderError(f"Page {page} cannot be rendered: {(proc.stderr or '').strip()[:200] or 'no such page'}.")
    produced.replace(target)
    return target.read_bytes()


# --- what a person may do now --------------------------------------------------------------


def override_options(status: str, decisions: dict[str, str | None]) -> dict[str, list[str]]:
    """Step → the decisions a reviewer may set now: only steps the chain has reached, never the
    decision a step already has, never APPROVED for the approval step (that goes through the
    approvers), nothing once the invoice is rejected or paid out, nothing while it runs."""
    if status not in (InvoiceStatus.NEEDS_REVIEW, InvoiceStatus.PENDING_APPROVAL, InvoiceStatus.INVALID,
                      InvoiceStatus.PAYMENT_HELD):
        return {}
    out: dict[str, list[str]] = {}
    for step in TOOLCHAIN_STEPS:
        if step not in decisions:
            break  # the chain has not reached this step; later ones neither
        current = decisions.get(step)
        choices = [str(d) for d in STEP_DECISIONS[step] if str(d) != current]
        if step == Step.APPROVAL:
            choices = [d for d in choices if d != Decision.APPROVED]
        if step == Step.PAYMENT and status != InvoiceStatus.PAYMENT_HELD:
            choices = []
        if choices:
            out[str(step)] = choices
    return out


def allowed_actions(status: str, decisions: dict[str, str | None]) -> dict:
    """Which of confirm / correct / approve / reject / override apply to an invoice in `status`."""
    waiting = status in (InvoiceStatus.NEEDS_REVIEW, InvoiceStatus.PENDING_APPROVAL)
    correctable = status in (InvoiceStatus.NEEDS_REVIEW, InvoiceStatus.PENDING_APPROVAL, InvoiceStatus.INVALID,
                             InvoiceStatus.PAYMENT_HELD, InvoiceStatus.FAILED)
    return {
        "confirm": status == InvoiceStatus.NEEDS_REVIEW,
        "correct": correctable and Step.EXTRACT in decisions,
        "approve": status == InvoiceStatus.PENDING_APPROVAL,
        "reject": waiting,
        "overrides": override_options(status, decisions),
    }
