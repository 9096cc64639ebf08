"""Wiring of the model runtime into a process: provisioning, registry seeding, hot reload.

Workers call `load_runtime(settings)` once per process (after fork) and
`refresh_runtime(runtime, settings)` before each use; the refresh touches the database
at most every `settings.adapter_poll_s` seconds and swaps in newly promoted adapters.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from invoicechain.config import Settings
    from models.runtime import ModelRuntime

log = logging.getLogger(__name__)


def _session_factory(settings: Settings):
    from invoicechain.db.session import session_scope

    return lambda: session_scope(settings)


def seed_registry(settings: Settings) -> list:
    """Register the shipped default adapters for names the registry does not know yet."""
    from invoicechain.db.session import session_scope
    from models import registry

    with session_scope(settings) as session:
        return [(row.name, row.version) for row in registry.seed_defaults(session, settings=settings)]


def ensure_models(settings: Settings) -> Path:
    """Provision the configured base (when it is the default) and seed the adapter registry."""
    from models.store import resolve_base

    base = resolve_base(settings)
    seed_registry(settings)
    return base


def load_shipped_adapters(runtime: ModelRuntime, adapters_dir: Path) -> list[str]:
    """Load every adapter folder under adapters_dir straight from disk (no database)."""
    from models.registry import is_adapter_dir

    loaded = []
    root = Path(adapters_dir)
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and is_adapter_dir(p)):
            runtime.load_adapter(folder.name, folder, version="shipped")
            loaded.append(folder.name)
    return loaded


def load_runtime(settings: Settings, use_registry: bool = True) -> ModelRuntime:
    """A runtime on the configured base with the registry's active adapters loaded.

    Without the registry (`use_registry=False`: no database at hand) the adapters shipped
    in settings.adapters_dir are loaded directly.
    """
    from models.runtime import ModelRuntime

    runtime = ModelRuntime.from_settings(settings)
    runtime.load()
    if use_registry:
        seed_registry(settings)
        runtime.refresh_adapters(_session_factory(settings), force=True)
    else:
        load_shipped_adapters(runtime, settings.adapters_dir)
    return runtime


def refresh_runtime(runtime: ModelRuntime, settings: Settings) -> dict:
    """Pick up newly promoted adapters (throttled by settings.adapter_poll_s)."""
    runtime.adapter_poll_s = settings.adapter_poll_s
    try:
        return runtime.refresh_adapters(_session_factory(settings))
    except Exception:  # a registry hiccup must not stop extraction with the loaded adapters
        log.exception("adapter refresh failed; keeping the loaded adapters")
        return {}
