"""PDF text with pdfplumber, layout kept: the text both ingestion and training see.

Layout mode keeps columns apart (a label and its value stay on one line), but pads with
runs of spaces that cost model tokens; runs are shortened to two spaces, which still
marks a column break. Pages are separated by a form feed.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

PAGE_BREAK = "\f"
_SPACE_RUN = re.compile(r" {2,}")
_BLANK_LINES = re.compile(r"\n{3,}")


class PdfError(Exception):
    """The file cannot be read as a PDF; `reason` is a code, the message one sentence."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PdfText:
    text: str
    page_count: int

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())


def normalise_layout_text(raw: str) -> str:
    """Trim the padding that layout mode adds, keeping line structure and column breaks."""
    lines = [_SPACE_RUN.sub("  ", line.rstrip()) for line in raw.splitlines()]
    # Layout mode indents everything by the page margin: drop the common indent.
    indents = [len(line) - len(line.lstrip(" ")) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    text = "\n".join(line[cut:] if line.strip() else "" for line in lines)
    return _BLANK_LINES.sub("\n\n", text).strip("\n")


def pdf_text(source: bytes | str | Path, max_pages: int = 50) -> PdfText:
    """Text of a PDF; raises PdfError for encrypted, corrupt or empty files."""
    import pdfplumber
    from pdfminer.pdfdocument import PDFPasswordIncorrect

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise PdfError("not_pdf", "The file does not start with a PDF header.")
    if _encrypted(data):
        raise PdfError("encrypted_pdf", "The PDF is encrypted with a password (encrypted_pdf); send it unprotected.")
    try:
        with pdfplumber.open(io.BytesIO(data)) as pdf:
            pages = pdf.pages
            texts = []
            for page in pages[:max_pages]:
                texts.append(normalise_layout_text(page.extract_text(layout=True) or ""))
            return PdfText(PAGE_BREAK.join(texts), len(pages))
    except PDFPasswordIncorrect as exc:
        raise PdfError("encrypted_pdf", "The PDF is encrypted with a password (encrypted_pdf); send it unprotected.") from exc
    except PdfError:
        raise
    except Exception as exc:  # pdfminer raises many types for damaged files
        name = type(exc).__name__
        if "Encrypt" in name or "Password" in name or "encrypt" in str(exc).lower():
            raise PdfError("encrypted_pdf", "The PDF is encrypted with a password (encrypted_pdf); send it unprotected.") from exc
        raise PdfError("corrupt", f"The PDF is damaged and cannot be read ({name}).") from exc


def _encrypted(data: bytes) -> bool:
    """True for a PDF that opens only with a password (one encrypted with an empty user
    password, as many generators do to restrict printing, is read as usual)."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        return bool(reader.is_encrypted) and not reader.decrypt("")
    except Exception:  # damaged beyond pypdf: pdfminer gives the verdict
        return False
