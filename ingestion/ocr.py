"""OCR for scans and photos: PDFs without a text layer and PNG / JPEG / TIFF uploads.

The engine is Tesseract (`tesseract-ocr` with the language packs of `settings.ocr_languages`,
through pytesseract): it reads the Latin alphabets of European invoices with their umlauts,
accents and currency signs. Where Tesseract is not installed, RapidOCR on ONNX Runtime
(`rapidocr-onnxruntime`, models in the wheel) reads instead; its recognition alphabet has no
umlauts or euro sign, so a scan read by it loses those. `Document.ocr["engine"]` records which
engine read the document. Pages are rendered with pypdfium2; the words the engine finds are
grouped into reading-order lines (skew removed first, so a photo taken at
an angle still gives one line per printed line), columns kept apart by two spaces, pages
separated by a form feed: the rest of the pipeline sees the same kind of text as from a PDF's
text layer (`invoicechain.pdf`).

Every outcome is a decision with one clear sentence, never an exception:

- ``read_scan`` returns an ``OcrOutcome``: text and per-page confidence, or a reason code
  (``OCR_TOO_MANY_PAGES``, ``OCR_TIME_LIMIT``, ``OCR_UNREADABLE``, ``OCR_IMAGE_TOO_SMALL``,
  ``OCR_IMAGE_TOO_LARGE``, ``CORRUPT_IMAGE``, ``OCR_UNAVAILABLE``) and whether the invoice ends
  ``needs_ocr`` (a person can still read it) or ``failed`` (the file itself is broken).
"""

from __future__ import annotations

import functools
import io
import logging
import math
import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from invoicechain.decisions import InvoiceStatus
from invoicechain.enums import OcrEngine

log = logging.getLogger(__name__)

PAGE_BREAK = "\f"
#: Tesseract's page segmentation: one block of text, read line by line (the words' boxes then
#: go through `group_lines`, which keeps columns apart).
TESSERACT_PSM = 6
#: A page leaning less than this is read as it is.
MIN_DESKEW_DEGREES = 0.3
#: Characters of table rules and scan dust that Tesseract reads as words at a word's edge.
RULE_CHARS = "|[]{}_—"

#: Uploads read as images, by magic number (the declared type is a hint only).
IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
IMAGE_TYPES = frozenset(kind for _, kind in IMAGE_MAGIC)
IMAGE_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/tiff": ".tif"}
#: The smallest side (pixels) an image may have to hold readable text.
MIN_SIDE_PX = 32


def sniff_image(data: bytes) -> str | None:
    """The image type of `data` by its magic number, or None."""
    for magic, kind in IMAGE_MAGIC:
        if data.startswith(magic):
            return kind
    return None


@dataclass
class PageOcr:
    page: int
    confidence: float | None  # mean recognition score of the page's words; None: no word found
    words: int
    seconds: float
    width: int
    height: int
    engine: str | None = None


@dataclass
class OcrOutcome:
    text: str = ""
    page_count: int = 0
    pages: list[PageOcr] = field(default_factory=list)
    code: str | None = None  # None: read
    message: str | None = None
    terminal: str | None = None  # "needs_ocr" | "failed" when not read
    seconds: float = 0.0
    engine: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is None

    def summary(self) -> dict[str, Any]:
        """What the document row stores (Document.ocr)."""
        confidences = [p.confidence for p in self.pages if p.confidence is not None]
        return {
            "engine": self.engine,
            "pages": [{"page": p.page, "confidence": None if p.confidence is None else round(p.confidence, 4),
                       "words": p.words, "seconds": round(p.seconds, 2), "width": p.width, "height": p.height, "engine": p.engine}
                      for p in self.pages],
            "confidence": round(min(confidences), 4) if confidences else None,
            "seconds": round(self.seconds, 2),
            "code": self.code,
            "message": self.message,
        }


def _refuse(code: str, message: str, terminal: str = InvoiceStatus.NEEDS_OCR, **kw) -> OcrOutcome:
    return OcrOutcome(code=code, message=message, terminal=terminal, **kw)


# --- the engine, once per process ------------------------------------------------------------

_rapidocr = None
_engine_lock = threading.Lock()


def engine():
    """The RapidOCR engine (loaded once per process, thread-safe to call)."""
    global _rapidocr
    with _engine_lock:
        if _rapidocr is None:
            from rapidocr_onnxruntime import RapidOCR

            _rapidocr = RapidOCR()
        return _rapidocr


@functools.lru_cache(maxsize=8)
def tesseract_languages(wanted: str) -> str | None:
    """The installed part of `wanted` ('deu+eng'), as Tesseract's -l argument; None when
    Tesseract or every wanted language pack is missing."""
    try:
        import pytesseract

        installed = set(pytesseract.get_languages(config=""))
    except Exception as exc:  # no tesseract binary on PATH, or it cannot run
        log.warning("Tesseract is not available (%s): scans are read with RapidOCR", exc)
        return None
    langs = [lang for lang in wanted.split("+") if lang in installed]
    if not langs:
        log.warning("none of the Tesseract languages %s is installed: scans are read with RapidOCR", wanted)
    return "+".join(langs) or None


def choose_engine(settings) -> tuple[str, str | None]:
    """(engine, Tesseract languages) that read scans with these settings."""
    if settings.ocr_engine == OcrEngine.TESSERACT:
        langs = tesseract_languages(settings.ocr_languages)
        if langs:
            return OcrEngine.TESSERACT, langs
    engine()
    return OcrEngine.RAPIDOCR, None


def _rapidocr_words(rgb) -> list[Word]:
    import numpy as np

    result, _ = engine()(np.asarray(rgb))
    return [Word(str(text), float(score), [list(map(float, p)) for p in box]) for box, text, score in (result or [])
            if str(text).strip()]


def deskew(rgb, words: list[Word]):
    """The page turned level: the skew of the text lines RapidOCR found (its boxes follow the
    lines at any angle), taken out by a rotation. Tesseract reads lines that lean more than a
    degree or two badly; a photo taken at an angle leans more."""
    degrees = math.degrees(_skew(words))
    if abs(degrees) < MIN_DESKEW_DEGREES:
        return rgb
    from PIL import Image

    return rgb.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")


def _tesseract_words(rgb, langs: str) -> list[Word]:
    import pytesseract

    data = pytesseract.image_to_data(rgb, lang=langs, config=f"--psm {TESSERACT_PSM}",
                                     output_type=pytesseract.Output.DICT)
    words = []
    for text, conf, x, y, w, h in zip(data["text"], data["conf"], data["left"], data["top"],
                                      data["width"], data["height"]):
        text = str(text).strip().strip(RULE_CHARS)
        if text and float(conf) >= 0:
            words.append(Word(text, float(conf) / 100, [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]))
    return words


# --- words into lines ------------------------------------------------------------------------


@dataclass
class Word:
    text: str
    score: float
    box: list[list[float]]  # four corners, clockwise from top-left


def _skew(words: list[Word]) -> float:
    """The page's skew (radians): the median slope of the words' top edges (long words only)."""
    slopes = []
    for w in words:
        (x0, y0), (x1, y1) = w.box[0], w.box[1]
        if x1 - x0 > 40:
            slopes.append(math.atan2(y1 - y0, x1 - x0))
    return statistics.median(slopes) if slopes else 0.0


def group_lines(words: list[Word]) -> list[str]:
    """Words in reading order: lines top to bottom, words left to right; a wide gap between two
    words on a line (a column break) becomes two spaces, as pdfplumber's layout text does."""
    if not words:
        return []
    angle = _skew(words)
    cos, sin = math.cos(-angle), math.sin(-angle)
    items = []
    for w in words:
        pts = [(x * cos - y * sin, x * sin + y * cos) for x, y in w.box]  # rotated level
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        height = max(1.0, max(ys) - min(ys))
        items.append({"w": w, "x0": min(xs), "x1": max(xs), "yc": (min(ys) + max(ys)) / 2, "h": height})
    items.sort(key=lambda it: it["yc"])
    med_h = statistics.median(it["h"] for it in items)
    lines: list[list[dict]] = []
    for it in items:
        if lines:
            line = lines[-1]
            line_y = statistics.fmean(x["yc"] for x in line)
            if abs(it["yc"] - line_y) <= 0.5 * max(med_h, it["h"] * 0.8):
                line.append(it)
                continue
        lines.append([it])
    out: list[str] = []
    prev_y = None
    for line in lines:
        line.sort(key=lambda it: it["x0"])
        y = statistics.fmean(x["yc"] for x in line)
        if prev_y is not None and y - prev_y > 2.2 * med_h:
            out.append("")  # a paragraph gap, as in layout text
        prev_y = y
        parts = [line[0]["w"].text]
        for a, b in zip(line, line[1:]):
            char_w = (a["x1"] - a["x0"]) / max(1, len(a["w"].text))
            gap = b["x0"] - a["x1"]
            parts.append("  " if gap > max(2.5 * char_w, 0.8 * med_h) else " ")
            parts.append(b["w"].text)
        out.append("".join(parts).strip())
    return out


# --- repairs ---------------------------------------------------------------------------------

_WHOLE = re.compile(r"(?<![0-9.,])[0-9]{2,4}(?![0-9.,])")
_DECIMAL_SEPARATOR = re.compile(r"[0-9]([.,])[0-9]{2}(?![0-9])")


def restore_lost_points(text: str) -> str:
    """Put back a decimal point OCR dropped in a table row: a line that holds no quantity x unit
    price = amount reading, but does once one whole number gets the line's decimal separator one
    or two places from its end (`Travel time  h  15  119.44  179.16` -> `1.5`), is rewritten so;
    only where exactly one such change balances the line."""
    from extraction.candidates import balanced_readings

    out = []
    for line in text.split("\n"):
        sep = _DECIMAL_SEPARATOR.search(line)
        if sep and len(_WHOLE.findall(line)) and not balanced_readings(line):
            fixed = {
                line[: m.start()] + m.group(0)[:-places] + sep.group(1) + m.group(0)[-places:] + line[m.end():]
                for m in _WHOLE.finditer(line) for places in (1, 2)
            }
            fixed = [candidate for candidate in fixed if balanced_readings(candidate)]
            if len(fixed) == 1:
                line = fixed[0]
        out.append(line)
    return "\n".join(out)


# --- pages -----------------------------------------------------------------------------------


def balanced_rows(text: str) -> int:
    """How many lines of `text` read as a table row whose quantity x unit price = amount: a
    reading's self-check, no truth needed."""
    from extraction.candidates import balanced_readings

    return sum(1 for line in text.split("\n") if balanced_readings(line))


def ocr_page(image, page: int = 1, engine_name: str = OcrEngine.RAPIDOCR, langs: str | None = None,
             min_confidence: float = 0.0) -> tuple[str, PageOcr]:
    """Text and confidence of one page image (a PIL image).

    With Tesseract, RapidOCR reads the page first: its line boxes give the skew Tesseract's
    reading is made on, and its own reading is kept instead of Tesseract's where that one has
    more table rows that add up (Tesseract misread a figure of a warped photo), or where
    Tesseract found no word or read under `min_confidence`. Otherwise Tesseract's reading is
    kept: its alphabet has the umlauts, accents and currency signs, and it keeps word spaces."""
    t0 = time.perf_counter()
    rgb = image.convert("RGB")
    rapid = _rapidocr_words(rgb)
    readings = [(OcrEngine.RAPIDOCR, rapid)]
    if engine_name == OcrEngine.TESSERACT and langs:
        readings.insert(0, (OcrEngine.TESSERACT, _tesseract_words(deskew(rgb, rapid), langs)))
    scored = []
    for name, words in readings:
        text = restore_lost_points("\n".join(group_lines(words)))
        conf = statistics.fmean(w.score for w in words) if words else None
        usable = conf is not None and conf >= min_confidence
        scored.append((usable, balanced_rows(text), name, text, conf, len(words)))
    # the first (Tesseract) wins ties: max() keeps the first of equal keys
    usable, _, used, text, conf, count = max(scored, key=lambda r: (r[0], r[1]))
    return text, PageOcr(page, conf, count, time.perf_counter() - t0, rgb.width, rgb.height, used)


def _open_image(data: bytes, max_pixels: int):
    """The frames of an image upload (a TIFF may hold several pages), or an OcrOutcome refusing it."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # checked below with our own limit, before decoding
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > max_pixels:
            return _refuse("OCR_IMAGE_TOO_LARGE", f"The image is {width}x{height} pixels, over the "
                           f"{max_pixels}-pixel limit (INVOICECHAIN_OCR_MAX_PIXELS).", InvoiceStatus.FAILED)
        frames = []
        for index in range(getattr(img, "n_frames", 1)):
            img.seek(index)
            frames.append(img.convert("RGB"))
        return frames
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        return _refuse("CORRUPT_IMAGE", f"The image is damaged and cannot be decoded ({type(exc).__name__}).", InvoiceStatus.FAILED)


def _pdf_pages(data: bytes):
    """(page count, a function rendering page i at a dpi) of a PDF, or an OcrOutcome refusing it."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as exc:  # pdfium raises PdfiumError for damaged or encrypted files
        return _refuse("CORRUPT", f"The PDF cannot be rendered for OCR ({type(exc).__name__}).", InvoiceStatus.FAILED)

    def render(i: int, dpi: int):
        return pdf[i].render(scale=dpi / 72).to_pil()

    return len(pdf), render


def read_scan(data: bytes, content_type: str, settings=None) -> OcrOutcome:
    """OCR of a scanned PDF or an image upload, within the configured page and time limits."""
    from invoicechain.config import get_settings

    settings = settings or get_settings()
    t0 = time.perf_counter()
    if not settings.ocr_enabled:
        return _refuse("OCR_DISABLED", "The document has no text layer and OCR is turned off (INVOICECHAIN_OCR_ENABLED).")
    if content_type in IMAGE_TYPES:
        frames = _open_image(data, settings.ocr_max_pixels)
        if isinstance(frames, OcrOutcome):
            return frames
        count = len(frames)
        get_page = lambda i: frames[i]  # noqa: E731
    else:
        pages = _pdf_pages(data)
        if isinstance(pages, OcrOutcome):
            return pages
        count, render = pages
        get_page = lambda i: render(i, settings.ocr_dpi)  # noqa: E731
    if count == 0:
        return _refuse("OCR_UNREADABLE", "The document has no pages to read.")
    if count > settings.ocr_max_pages:
        return _refuse("OCR_TOO_MANY_PAGES", f"The scan has {count} pages; OCR reads documents of at most "
                       f"{settings.ocr_max_pages} pages (INVOICECHAIN_OCR_MAX_PAGES).", page_count=count)
    try:
        engine_name, langs = choose_engine(settings)
    except Exception as exc:  # the engine's package or its native runtime is missing
        log.error("OCR engine unavailable: %s", exc)
        return _refuse("OCR_UNAVAILABLE", f"The OCR engine cannot be loaded ({type(exc).__name__}).", page_count=count)
    texts: list[str] = []
    out = OcrOutcome(page_count=count, engine=engine_name)
    for i in range(count):
        if time.perf_counter() - t0 > settings.ocr_time_limit_s:
            return _refuse("OCR_TIME_LIMIT", f"OCR stopped after {settings.ocr_time_limit_s:g} s at page {i + 1} of "
                           f"{count} (INVOICECHAIN_OCR_TIME_LIMIT_S).", page_count=count, pages=out.pages,
                           seconds=time.perf_counter() - t0, engine=engine_name)
        image = get_page(i)
        if min(image.size) < MIN_SIDE_PX:
            return _refuse("OCR_IMAGE_TOO_SMALL", f"Page {i + 1} is {image.width}x{image.height} pixels: too small "
                           "to hold readable text.", page_count=count, seconds=time.perf_counter() - t0,
                           engine=engine_name)
        text, page = ocr_page(image, i + 1, engine_name, langs, settings.ocr_min_confidence)
        out.pages.append(page)
        texts.append(text)
    out.seconds = time.perf_counter() - t0
    out.text = PAGE_BREAK.join(texts)
    readable = [p for p in out.pages if p.confidence is not None and p.confidence >= settings.ocr_min_confidence]
    if not out.text.strip() or not readable:
        best = max((p.confidence for p in out.pages if p.confidence is not None), default=None)
        detail = "no text was found" if best is None else f"the best page's OCR confidence is {best:.2f}"
        return _refuse("OCR_UNREADABLE", f"OCR could not read the document: {detail}.", page_count=count,
                       pages=out.pages, seconds=out.seconds, text=out.text, engine=engine_name)
    return out


# --- script check ----------------------------------------------------------------------------

#: Scripts the extraction reads (its lexicon's languages are written in these).
SUPPORTED_SCRIPTS = frozenset({"LATIN"})


def dominant_script(text: str) -> tuple[str | None, float]:
    """The script most letters of `text` are written in, and its share of the letters."""
    import unicodedata

    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            script = name.split(" ")[0] if name else "UNKNOWN"
            if script == "CJK" or script in ("HIRAGANA", "KATAKANA"):
                script = "CJK"
            counts[script] = counts.get(script, 0) + 1
    total = sum(counts.values())
    if not total:
        return None, 0.0
    script = max(counts, key=counts.get)
    return script, counts[script] / total


def unsupported_script(text: str) -> str | None:
    """A sentence when the document is written mostly in a script the extraction cannot read."""
    script, share = dominant_script(text)
    if script is None or script in SUPPORTED_SCRIPTS or share < 0.5:
        return None
    return (f"The document is written in {script.title()} script ({share:.0%} of its letters); extraction reads "
            "documents in Latin script only.")


def garbled_text_layer(text: str) -> bool:
    """A text layer whose fonts carry no character map: pdfminer gives `(cid:N)` for most glyphs."""
    cids = text.count("(cid:")
    return cids > 20 and cids * 6 > len(text.replace(" ", "")) * 0.5
