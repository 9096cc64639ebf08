"""Untrusted input, made safe once for every way in (API, inbox, CLI): filenames, text, JSON."""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath, PureWindowsPath

#: Deepest JSON nesting a request body may have (the field schema needs 4).
MAX_JSON_DEPTH = 32
MAX_FILENAME_CHARS = 200

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_FILENAME_BAD = re.compile(r"[\x00-\x1f\x7f<>:\"/\\|?*]")


def clean_filename(name: str | None, default: str = "upload") -> str:
    """A display name safe to store and show: no directories, control characters, or
    reserved characters, at most MAX_FILENAME_CHARS; `default` when nothing is left."""
    name = unicodedata.normalize("NFC", name or "")
    name = PureWindowsPath(PurePosixPath(name.replace("\x00", "")).name).name  # drop any directory part
    name = _FILENAME_BAD.sub("_", name).strip(" .")
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 10 else ""
        name = (stem if dot else name)[: MAX_FILENAME_CHARS - len(ext) - 1] + ("." + ext if ext else "")
    return name or default


def control_characters(text: str) -> list[str]:
    """The control characters (other than tab, newline, carriage return and form feed) in `text`."""
    return sorted({f"U+{ord(c):04X}" for c in _CONTROL.findall(text)})


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text nests arrays/objects deeper than `limit` (strings are skipped)."""
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False
