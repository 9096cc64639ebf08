"""The model runtime: one base model, several named LoRA adapters, batched constrained decoding.

`ModelRuntime` loads the base once (lazily, on first use), wraps it in a peft model as
soon as an adapter is loaded, and serves:

* `extract(texts)`: invoice fields for many documents in one batched, greedy,
  grammar-constrained generation, with per-field confidence and grounding;
* `generate_json(requests)`: any JSON schema, per request adapter, one mixed batch;
* `propose(step, context)`: a toolchain decision constrained to the step's decisions
  and the reason codes.

A name with no adapter loaded runs the base model, still constrained.

The runtime is the front of these modules, each one responsibility:

* `models.adapters`: the adapter set (load, replace, unload, follow the registry, serve
  one adapter through merged weights);
* `models.generation`: requests grouped into decode batches (`models.decoding`), answers;
* `models.windows`: the window rule, how a long document is cut into windows;
* `models.extractor`: windows to answers to one `ExtractionResult` per document (merge
  and reconciliation through `extraction.pipeline`), and how confidence is read;
* `models.toolchain`: toolchain decisions.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from extraction.pipeline import merge_windows  # noqa: F401  (re-exported)
from invoicechain.enums import AdapterName
from invoicechain.schema import ANSWER_TOKENS
from models import extractor, toolchain, windows
from models.adapters import AdapterSet
from models.extractor import ExtractionResult, field_confidence, top_level_spans  # noqa: F401  (re-exported)
from models.generation import Generation, contiguous_head_input, decode_in_batches, to_generation
from models.prompts import EXTRACT_INSTRUCTION, answer_stop_id, render_prompt

log = logging.getLogger(__name__)


class ModelRuntime:
    """A base causal LM with named LoRA adapters, serving batched constrained generation."""

    def __init__(
        self,
        base_dir: Path,
        device: str = "auto",
        *,
        dtype: Any = "auto",
        max_new_tokens: int = ANSWER_TOKENS,
        max_input_tokens: int = 3072,
        batch_size: int = 16,
        window_overlap: int = 128,
        adapter_poll_s: float = 5.0,
        fast_forward: bool = True,
        grounded: bool = True,
        merged_decoding: bool = True,
        reconcile: bool = True,
    ):
        self.base_dir = Path(base_dir)
        self._requested_device = device
        self._requested_dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.batch_size = max(1, batch_size)
        self.window_overlap = window_overlap
        self.adapter_poll_s = adapter_poll_s
        self.fast_forward = fast_forward
        self.grounded = grounded
        self.merged_decoding = merged_decoding
        self.reconcile = reconcile
        self._lock = threading.RLock()
        self._tokenizer = None
        self._bank = None
        self._device = None
        self._dtype = None
        self._fingerprint: str | None = None
        self._adapter_set = AdapterSet(self._lock, self.load, lambda: self.base_fingerprint)

    @classmethod
    def from_settings(cls, settings, base_dir: Path | None = None) -> ModelRuntime:
        """A runtime on the configured base with the configured limits."""
        from models.store import resolve_base

        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        return cls(
            base_dir or resolve_base(settings),
            device=settings.device,
            max_new_tokens=settings.max_new_tokens,
            max_input_tokens=settings.max_input_tokens,
            batch_size=settings.extract_batch_size,
            adapter_poll_s=settings.adapter_poll_s,
            grounded=settings.grounded_decoding,
            merged_decoding=settings.merged_decoding,
            reconcile=settings.reconcile_amounts,
        )

    # --- loading -------------------------------------------------------------------------

    def load(self) -> None:
        """Load tokenizer and base model (once)."""
        with self._lock:
            if self._adapter_set.model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from models.attention import register_packed_attention
            from models.matchers import GrammarBank
            from models.store import pick_device, pick_dtype

            device = pick_device(requested=self._requested_device)
            dtype = self._requested_dtype
            if dtype in (None, "auto"):
                dtype = pick_dtype(device)
            elif isinstance(dtype, str):
                dtype = getattr(torch, dtype)
            t0 = time.perf_counter()
            tokenizer = AutoTokenizer.from_pretrained(self.base_dir)
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    self.base_dir, dtype=dtype, attn_implementation=register_packed_attention()
                )
            except (ValueError, ImportError):  # an architecture without sdpa support
                model = AutoModelForCausalLM.from_pretrained(self.base_dir, dtype=dtype)
            model.to(device).eval()
            contiguous_head_input(model)
            vocab = model.get_output_embeddings().weight.shape[0]
            self._bank = GrammarBank(tokenizer, vocab, answer_stop_id(tokenizer))
            self._tokenizer, self._device, self._dtype = tokenizer, device, dtype
            self._adapter_set.attach(model, dtype)
            log.info("loaded base %s on %s (%s) in %.1fs", self.base_dir, device, dtype, time.perf_counter() - t0)

    def warm_up(self) -> None:
        """Load everything the first extraction needs (model, grammar, token table)."""
        from extraction.schemas import invoice_json_schema

        self.load()
        self._bank.compile(invoice_json_schema())
        _ = self._bank.token_bytes

    @property
    def tokenizer(self):
        self.load()
        return self._tokenizer

    @property
    def model(self):
        """The model as served: the peft model when adapters are loaded, else the base."""
        self.load()
        return self._adapter_set.model

    @property
    def device(self) -> str:
        self.load()
        return self._device

    @property
    def dtype(self):
        self.load()
        return self._dtype

    @property
    def bank(self):
        """The grammar bank (`models.matchers.GrammarBank`) of the base's tokenizer."""
        self.load()
        return self._bank

    @property
    def base_fingerprint(self) -> str:
        if self._fingerprint is None:
            from models.store import base_fingerprint

            self._fingerprint = base_fingerprint(self.base_dir)
        return self._fingerprint

    # --- adapters (models.adapters) ------------------------------------------------------

    def load_adapter(self, name: str, path: Path | str, version: str, *, _from_registry: bool = False) -> None:
        """Load (or replace) the adapter served under `name`; the old version is unloaded."""
        self._adapter_set.load(name, path, version, from_registry=_from_registry)

    def unload_adapter(self, name: str) -> None:
        """Stop serving `name` (it then runs the base model)."""
        self._adapter_set.unload(name)

    @property
    def adapters(self) -> dict[str, str]:
        """Loaded adapters: name -> version."""
        return self._adapter_set.versions

    def adapter_version(self, name: str | None) -> str | None:
        """The label of what serves `name`: "name:version", or None for the base model."""
        return self._adapter_set.label(name)

    def refresh_adapters(self, session_factory, force: bool = False) -> dict[str, str | None]:
        """Serve the registry's active versions (checked at most every adapter_poll_s seconds).

        `session_factory()` must return a context manager yielding a database session.
        Returns the changes made: name -> new version, or None for an unloaded name.
        """
        return self._adapter_set.refresh(session_factory, self.adapter_poll_s, force=force)

    def using_adapter(self, name: str | None):
        """The served model with `name`'s adapter active (the base for None or unknown names), as a
        context manager."""
        return self._adapter_set.using(name)

    @property
    def _merged(self) -> dict[str, list]:
        """Merged weights built so far: adapter internal name -> [(base linear, merged weight)]."""
        return self._adapter_set.merged

    # --- generation ----------------------------------------------------------------------

    def _encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def generate(
        self, requests: list[tuple[str | None, str, Any]], max_new_tokens: int | None = None
    ) -> list[Generation]:
        """Constrained greedy answers for (adapter name or None, full prompt text, JSON schema
        or a grammar compiled by the runtime's grammar bank)."""
        from models.decoding import DecodeRequest
        from models.matchers import CompiledSchema
        from extraction.schemas import schema_key

        self.load()
        compiled = {}
        decode_requests, labels = [], []
        for adapter, prompt, schema in requests:
            if isinstance(schema, CompiledSchema):
                key = schema.key
                compiled[key] = schema
            else:
                key = schema_key(schema)
                if key not in compiled:
                    compiled[key] = self._bank.compile(schema)
            a = self._adapter_set.get(adapter)
            labels.append(f"{adapter}:{a.version}" if a else None)
            decode_requests.append(
                DecodeRequest(self._encode(prompt), compiled[key], a.internal if a else None,
                              max_new_tokens or self.max_new_tokens)
            )
        decoded, shares = self._decode_all(decode_requests)
        return [to_generation(d, label, ms) for d, label, ms in zip(decoded, labels, shares)]

    def generate_json(
        self, requests: list[tuple[str | None, str, dict]], max_new_tokens: int | None = None
    ) -> list[Any]:
        """Parsed JSON answers for (adapter name or None, full prompt text, JSON schema), one batch.

        The prompt text is the complete model input, e.g. from `models.prompts.render_prompt`.
        Requests for different adapters share batches through peft's `adapter_names`.
        """
        return [g.value for g in self.generate(requests, max_new_tokens)]

    def _decode_all(self, requests):
        """Decode in batches of batch_size (grouped by adapter, then prompt length)."""
        pad_id = self._tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self._bank.stop_token_id
        with self._lock:
            return decode_in_batches(
                self._adapter_set, self._bank, requests, device=self._device, pad_id=pad_id,
                batch_size=self.batch_size, merged_decoding=self.merged_decoding, fast_forward=self.fast_forward,
            )

    # --- extraction (models.windows, models.extractor) -----------------------------------

    def windows(self, text: str) -> list[tuple[int, int]]:
        """Character ranges of the windows a document is read in (the rule: `models.windows`)."""
        tok = self.tokenizer
        overhead = len(self._encode(render_prompt(tok, EXTRACT_INSTRUCTION, "x")))
        budget = windows.document_budget(self.max_input_tokens, overhead)
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return windows.cut_windows(text, [s for s, _ in offsets], budget, self.window_overlap)

    def extract(self, texts: list[str], adapter: str = AdapterName.EXTRACT) -> list[ExtractionResult]:
        """Invoice fields for every text: batched, constrained, greedy and deterministic."""
        return extractor.extract(self, texts, adapter)

    @staticmethod
    def _reconcile(merged: dict, text: str) -> list:
        """Reconciliation on a merged answer, in place (`extraction.pipeline.reconcile_merged`): the changes."""
        return extractor.reconciled_changes(merged, text)

    # --- toolchain (models.toolchain) ----------------------------------------------------

    def propose_many(self, items: list[tuple[str, dict]], adapter: str = AdapterName.TOOLCHAIN) -> list[dict]:
        """Toolchain decisions for many (step, context) pairs in one batch."""
        return toolchain.propose_many(self, items, adapter)

    def propose(self, step: str, context: dict, adapter: str = AdapterName.TOOLCHAIN) -> dict:
        """The toolchain adapter's decision for one step: {"decision": ..., "reasons": [codes]}."""
        return self.propose_many([(step, context)], adapter=adapter)[0]
