"""The LoRA adapters served over one base model, by name.

`AdapterSet` holds the served model: the plain base until the first adapter is loaded,
then the peft model wrapping it (and the plain base again once the last one is unloaded:
peft cannot hold zero adapters). Each name serves one version; loading another version
under a name replaces it. `refresh` follows the registry's active versions, `using`
activates one adapter for a block, `merged_weights` serves one through merged weights.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass
class _Adapter:
    internal: str
    version: str
    path: str
    from_registry: bool


def _internal_name(name: str, version: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{name}__v{version}")


class AdapterSet:
    """Named LoRA adapters over one base model, loaded, swapped and unloaded in place.

    `lock` is the runtime's lock (re-entrant): every change to the served model holds it.
    `load_base()` loads the base (once) and hands it over through `attach`; it is called
    before the first adapter is loaded. `base_fingerprint()` identifies the base, for the
    registry's adapters trained on another one.
    """

    def __init__(self, lock, load_base: Callable[[], None], base_fingerprint: Callable[[], str]):
        self._lock = lock
        self._load_base = load_base
        self._base_fingerprint = base_fingerprint
        self.model = None  # the base, or the peft model wrapping it
        self.peft = None
        self._dtype = None
        self._adapters: dict[str, _Adapter] = {}
        self.merged: dict[str, list] = {}  # adapter internal name -> [(base linear, merged weight)]
        self._last_poll = float("-inf")
        self._warned_fingerprints: set[tuple[str, int]] = set()

    def attach(self, model, dtype: Any) -> None:
        """Serve `model` (the loaded base, in `dtype`) with no adapter."""
        self.model, self._dtype = model, dtype

    def get(self, name: str | None) -> _Adapter | None:
        """What serves `name`: its loaded adapter, or None (the base) for None or an unknown name."""
        return self._adapters.get(name) if name else None

    # --- loading and unloading -----------------------------------------------------------

    def load(self, name: str, path: Path | str, version: str, *, from_registry: bool = False) -> None:
        """Load (or replace) the adapter served under `name`; the old version is unloaded."""
        with self._lock:
            self._load_base()
            version = str(version)
            old = self._adapters.get(name)
            if old is not None and old.version == version and old.path == str(path):
                return
            internal = _internal_name(name, version)
            if old is not None and old.internal == internal:
                internal += "_r"  # same version number from another path: keep both names distinct
            with warnings.catch_warnings():
                # peft asks transformers about gradient checkpointing through a deprecated name.
                warnings.simplefilter("ignore", FutureWarning)
                if self.peft is None:
                    from peft import PeftModel

                    self.peft = PeftModel.from_pretrained(
                        self.model, str(path), adapter_name=internal, autocast_adapter_dtype=False
                    )
                    self.peft.eval()
                    self.model = self.peft
                else:
                    self.peft.load_adapter(str(path), adapter_name=internal, autocast_adapter_dtype=False)
            self._match_dtype(internal)
            self._adapters[name] = _Adapter(internal, version, str(path), from_registry)
            if old is not None:
                self._drop(old.internal)
            log.info("adapter %s version %s loaded from %s", name, version, path)

    def _match_dtype(self, internal: str) -> None:
        """Cast the new adapter's weights to the serving dtype."""
        for param_name, param in self.peft.named_parameters():
            if f".{internal}." in param_name and param.dtype != self._dtype:
                param.data = param.data.to(self._dtype)

    def _drop(self, internal: str) -> None:
        self.merged.pop(internal, None)
        remaining = [a.internal for a in self._adapters.values() if a.internal != internal]
        if not remaining:
            # peft cannot hold zero adapters: unwrap back to the plain base.
            self.model = self.peft.unload()
            self.peft = None
            return
        self.peft.set_adapter(remaining[0])
        self.peft.delete_adapter(internal)

    def unload(self, name: str) -> None:
        """Stop serving `name` (it then runs the base model)."""
        with self._lock:
            old = self._adapters.pop(name, None)
            if old is not None:
                self._drop(old.internal)

    @property
    def versions(self) -> dict[str, str]:
        """Loaded adapters: name -> version."""
        return {name: a.version for name, a in self._adapters.items()}

    def label(self, name: str | None) -> str | None:
        """The label of what serves `name`: "name:version", or None for the base model."""
        a = self.get(name)
        return f"{name}:{a.version}" if a else None

    # --- the registry --------------------------------------------------------------------

    def refresh(self, session_factory, poll_s: float, force: bool = False) -> dict[str, str | None]:
        """Serve the registry's active versions (checked at most every `poll_s` seconds).

        `session_factory()` must return a context manager yielding a database session.
        Returns the changes made: name -> new version, or None for an unloaded name.
        """
        now = time.monotonic()
        if not force and now - self._last_poll < poll_s:
            return {}
        self._last_poll = now
        from models import registry

        with session_factory() as session:
            active = {
                name: (str(v.version), v.path, v.base_fingerprint)
                for name, v in registry.active_versions(session).items()
            }
        changes: dict[str, str | None] = {}
        with self._lock:
            for name, (version, path, fingerprint) in active.items():
                if fingerprint != self._base_fingerprint():
                    key = (name, int(version))
                    if key not in self._warned_fingerprints:
                        self._warned_fingerprints.add(key)
                        log.warning("adapter %s v%s was trained on another base; not loaded", name, version)
                    continue
                current = self._adapters.get(name)
                if current is not None and current.version == version and current.path == path:
                    continue
                self.load(name, path, version, from_registry=True)
                changes[name] = version
            for name, a in list(self._adapters.items()):
                if a.from_registry and name not in active:
                    self.unload(name)
                    changes[name] = None
        return changes

    # --- serving -------------------------------------------------------------------------

    @contextlib.contextmanager
    def using(self, name: str | None):
        """The served model with `name`'s adapter active (the base for None or unknown names)."""
        with self._lock:
            self._load_base()
            a = self.get(name)
            if self.peft is None:
                yield self.model
            elif a is None:
                with self.peft.disable_adapter():
                    yield self.peft
            else:
                self.peft.set_adapter(a.internal)
                yield self.peft

    @contextlib.contextmanager
    def merged_weights(self, internal: str):
        """Serve one adapter through merged weights for the duration of the block.

        Every LoRA-wrapped linear layer of the base gets `W + scale * B @ A` (computed in
        float32, stored in the serving dtype, built once per adapter version) while peft's
        adapters are disabled: a forward pass is then one matrix product per layer instead
        of three plus the scaling, about a quarter of a decode step on CPU. The base weights
        are put back on exit; nothing is merged in place, so no rounding accumulates.
        """
        import torch

        swaps = self.merged.get(internal)
        if swaps is None:
            from peft.tuners.lora import LoraLayer

            swaps = []
            with torch.no_grad():
                for module in self.peft.modules():
                    if isinstance(module, LoraLayer) and internal in module.lora_A:
                        base = module.get_base_layer()
                        delta = module.get_delta_weight(internal).float()
                        merged = (base.weight.float() + delta).to(base.weight.dtype)
                        swaps.append((base, torch.nn.Parameter(merged, requires_grad=False)))
            self.merged[internal] = swaps
        originals = [(base, base.weight) for base, _ in swaps]
        try:
            for base, merged in swaps:
                base.weight = merged
            with self.peft.disable_adapter():
                yield
        finally:
            for base, weight in originals:
                base.weight = weight
