"""Which files a command reads: supported types only, each document once (a PDF and the
`.txt` twin beside it are one document: the PDF is read)."""

from __future__ import annotations

from pathlib import Path

#: What `extract` and `process` read, by suffix.
DOCUMENT_SUFFIXES = (".pdf", ".txt")


class UnsupportedDocument(ValueError):
    """A file of a type the command cannot read; the message says what to do."""


def unsupported_message(path: Path) -> str:
    kind = path.suffix.lower() or "(no suffix)"
    return (f"{path}: {kind} documents are not supported; give PDF or .txt files "
            "(save Word or other documents as PDF first)")


def collect_documents(paths: list[Path]) -> list[Path]:
    """The documents named by files and folders, in order, each once.

    A folder gives its PDF and .txt files; an explicitly named file of another type raises
    `UnsupportedDocument`. A `.txt` whose PDF twin (same name) is also taken is left out.
    """
    picked: list[Path] = []
    refused = []
    for p in paths:
        if p.is_dir():
            picked.extend(sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in DOCUMENT_SUFFIXES))
        elif p.suffix.lower() in DOCUMENT_SUFFIXES:
            picked.append(p)
        else:
            refused.append(p)
    if refused:
        raise UnsupportedDocument("\n".join(unsupported_message(p) for p in refused))
    seen: set[Path] = set()
    unique: list[Path] = []
    for p in picked:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    pdf_stems = {p.resolve().with_suffix("") for p in unique if p.suffix.lower() == ".pdf"}
    return [p for p in unique if not (p.suffix.lower() == ".txt" and p.resolve().with_suffix("") in pdf_stems)]


#: What `submit` sends to the API, by suffix, with the content type it is sent as
#: (`.txt` goes as pasted text).
SUBMIT_TYPES = {".pdf": "application/pdf", ".xml": "application/xml", ".png": "image/png", ".jpg": "image/jpeg",
                ".jpeg": "image/jpeg", ".tif": "image/tiff", ".tiff": "image/tiff", ".txt": "text/plain"}


def submit_message(path: Path) -> str:
    kind = path.suffix.lower() or "(no suffix)"
    return (f"{path}: {kind} documents are not accepted; give PDF, e-invoice XML, PNG/JPEG/TIFF or .txt files "
            "(save Word or other documents as PDF first)")


def collect_submissions(patterns: list[str]) -> tuple[list[Path], list[Path]]:
    """The documents `submit` sends for files, folders (recursively) and glob patterns, each once,
    and the files of other types found in folders or globs (left out).

    A file named explicitly that is missing or of another type raises `UnsupportedDocument`;
    a `.txt` whose PDF twin (same name) is also sent is left out: the PDF is the document."""
    from ingestion.dropfolder import expand

    problems = []
    for pattern in patterns:
        path = Path(pattern)
        if any(ch in pattern for ch in "*?["):
            continue
        if not path.exists():
            problems.append(f"{path}: no such file or folder")
        elif path.is_file() and path.suffix.lower() not in SUBMIT_TYPES:
            problems.append(submit_message(path))
    if problems:
        raise UnsupportedDocument("\n".join(problems))
    files = list(expand(patterns))
    taken = [p for p in files if p.suffix.lower() in SUBMIT_TYPES]
    skipped = [p for p in files if p.suffix.lower() not in SUBMIT_TYPES]
    pdf_stems = {p.resolve().with_suffix("") for p in taken if p.suffix.lower() == ".pdf"}
    taken = [p for p in taken if not (p.suffix.lower() == ".txt" and p.resolve().with_suffix("") in pdf_stems)]
    return taken, skipped


def read_document(path: Path) -> str:
    """The text of a PDF (its text layer) or of a UTF-8 .txt file; ValueError says why not."""
    from invoicechain.pdf import PdfError, pdf_text

    if path.suffix.lower() == ".pdf":
        try:
            return pdf_text(path).text
        except PdfError as exc:
            raise ValueError(str(exc)) from exc
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise ValueError(f"{path.name} is binary, not text: give the PDF, or a UTF-8 text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path.name} is not UTF-8 text: save it as UTF-8, or give the PDF") from None


class Progress:
    """`label i/n` on stderr: redrawn in place on a terminal, one line per step elsewhere
    (logs, CI); it always ends on `n/n` and a newline, whatever happened to the documents."""

    def __init__(self, total: int, label: str = "extracting"):
        import sys

        self.total, self.label, self.done = total, label, 0
        self.stream = sys.stderr
        self.tty = self.stream.isatty()
        self._draw()

    def _draw(self) -> None:
        text = f"{self.label} {self.done}/{self.total}"
        if self.tty:
            self.stream.write("\r" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self._draw()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_) -> None:
        if self.done < self.total:
            self.done = self.total
            self._draw()
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
