"""Drop folder: a scanner or a person drops files into a folder; each file is taken once it is
stable (size and modification time unchanged for `settings.watch_stable_s`), stored as an
invoice (unique by content hash with every other entry path), and moved to `done/`, or to
`failed/` with a `<name>.reason.txt` beside it saying why.

A file taken but not yet moved when the watcher dies is taken again at the next start: it is
the same document, so the same invoice, and it is moved then. While the extraction queue is
over its limit (backpressure) the watcher takes nothing and waits.
"""

from __future__ import annotations

import glob
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ingestion import backpressure
from ingestion.intake import Enqueue, Taken, take_document
from invoicechain.config import Settings, get_settings

log = logging.getLogger(__name__)

DONE, FAILED = "done", "failed"
#: Names that are never taken: hidden files and files still being written by common tools.
IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".swp", ".reason.txt")


def _ignored(path: Path) -> bool:
    name = path.name
    return name.startswith((".", "~")) or name.lower().endswith(IGNORED_SUFFIXES)


def _unique(target: Path) -> Path:
    if not target.exists():
        return target
    stem, suffix = target.stem, target.suffix
    for n in range(1, 100_000):
        candidate = target.with_name(f"{stem}.{n}{suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(target)


@dataclass
class FolderReport:
    taken: list[Taken] = field(default_factory=list)
    paused: bool = False

    @property
    def done(self) -> int:
        return sum(1 for t in self.taken if t.invoice_id)

    @property
    def failed(self) -> int:
        return sum(1 for t in self.taken if not t.invoice_id)


@dataclass
class DropFolder:
    """The state of one watched folder: what was seen, and since when it is unchanged."""

    root: Path
    settings: Settings = field(default_factory=get_settings)
    enqueue: Enqueue | None = None
    clock: Callable[[], float] = time.monotonic
    _seen: dict[Path, tuple[tuple[int, int], float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        for sub in (DONE, FAILED):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def candidates(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_file() and not _ignored(p))

    def stable(self) -> list[Path]:
        """Files unchanged for watch_stable_s (first sight starts the clock)."""
        now = self.clock()
        ready, present = [], set()
        for path in self.candidates():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            present.add(path)
            signature = (st.st_size, st.st_mtime_ns)
            known = self._seen.get(path)
            if known is None or known[0] != signature:
                self._seen[path] = (signature, now)
                if self.settings.watch_stable_s > 0:
                    continue
            if now - self._seen[path][1] >= self.settings.watch_stable_s:
                ready.append(path)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return ready

    def take(self, path: Path) -> Taken:
        """Store one file and move it to done/ or failed/ (with its reason file)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            taken = Taken(path.name, reason=f"{path.name} cannot be read: {exc}")
        else:
            taken = take_document(data, path.name, source="folder",
                                  intake={"channel": "folder", "folder": str(self.root), "filename": path.name},
                                  enqueue=self.enqueue, settings=self.settings)
        target = _unique(self.root / (DONE if taken.invoice_id else FAILED) / path.name)
        shutil.move(str(path), target)
        if not taken.invoice_id:
            target.with_name(target.name + ".reason.txt").write_text((taken.reason or "not taken") + "\n", encoding="utf-8")
        else:
            log.info("%s -> invoice %s%s", path.name, taken.invoice_id, "" if taken.created else " (duplicate)")
        self._seen.pop(path, None)
        return taken

    def scan(self) -> FolderReport:
        """Take every stable file once (nothing while backpressure holds)."""
        report = FolderReport()
        ready = self.stable()
        if ready and backpressure.pressure(self.settings).over:
            report.paused = True
            return report
        for path in ready:
            report.taken.append(self.take(path))
        return report

    def watch(self, *, stop: Callable[[], bool] = lambda: False, on_report: Callable[[FolderReport], None] | None = None) -> None:
        """Scan at every change in the folder, and while files settle, until `stop()`."""
        import threading

        from watchfiles import watch

        tick_ms = max(100, int(self.settings.watch_stable_s * 500) or 100)
        stop_event = threading.Event()
        report = self.scan()
        if on_report and report.taken:
            on_report(report)
        for _changes in watch(self.root, recursive=False, yield_on_timeout=True, rust_timeout=tick_ms,
                              stop_event=stop_event, debounce=50):
            report = self.scan()
            if on_report and (report.taken or report.paused):
                on_report(report)
            if stop():
                stop_event.set()
                break


def expand(patterns: Iterable[str | Path]) -> Iterator[Path]:
    """Files named by paths, folders (their files, recursively) and glob patterns, each once."""
    seen: set[Path] = set()
    for pattern in patterns:
        text = str(pattern)
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))] if glob.has_magic(text) else [Path(text)]
        for match in matches:
            files = sorted(p for p in match.rglob("*") if p.is_file()) if match.is_dir() else [match]
            for path in files:
                if path.is_file() and not _ignored(path) and path.resolve() not in seen:
                    seen.add(path.resolve())
                    yield path
