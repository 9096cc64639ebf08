"""The model runtime: one base model, several named LoRA adapters, batched constrained decoding.

`ModelRuntime` loads the base once (lazily, on first use), wraps it in a peft model as
soon as an adapter is loaded, and serves:

* `extract(texts)`: invoice fields for many documents in one batched, greedy,
  grammar-constrained generation, with per-field confidence and grounding;
* `generate_json(requests)`: any JSON schema, per request adapter, one mixed batch;
* `propose(step, context)`: a toolchain decision constrained to the step's decisions
  and the reason codes.

A name with no adapter loaded runs the base model, still constrained.

Long documents: the window rule
-------------------------------
A document is read in windows when its prompt would exceed `max_input_tokens`:

1. The document budget is `max_input_tokens` minus the prompt's own tokens (chat
   template and instruction) minus a small margin.
2. Windows are cut on token boundaries, each holding at most the budget; a window that
   does not reach the end of the document is shortened to end after the last line break
   in its final quarter, so table rows are not split.
3. Consecutive windows overlap by `window_overlap` tokens (at most a quarter of the
   budget), and the next window starts at the beginning of a line inside that overlap.
4. Every window is extracted on its own (all windows of all documents share the batches).
5. Merging: each scalar field takes the non-null value with the highest confidence
   (ties: the earliest window) together with its grounding; `bank` likewise as one
   value; `line_items` are concatenated in window order, dropping an item of a later
   window when the previous window produced an equal item and both lie in the overlap
   (or are ungrounded): it is the same row read twice.

Confidence of a field is the lowest probability among the tokens that wrote its value
(closing quote and the separator token it shares included), under the masked,
renormalised distribution that was decoded: forced tokens count as 1. A null field's
confidence is that of writing `null`.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import logging
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invoicechain.schema import ANSWER_TOKENS
from models.prompts import (
    EXTRACT_INSTRUCTION,
    TOOLCHAIN_INSTRUCTIONS,
    answer_stop_id,
    dump_output,
    render_prompt,
)

log = logging.getLogger(__name__)

#: Tokens kept free between the prompt and max_input_tokens when windowing.
_WINDOW_MARGIN = 8
#: New tokens a toolchain decision may take.
_DECISION_TOKENS = 96


@dataclass
class ExtractionResult:
    """Invoice fields of one document, with how sure the model was and where each value is.

    `confidence` has one number per top-level field. `grounding` maps each scalar field to
    `{"start", "end"}` (a character span in the document text), `{"grounded": false}`, or
    None for a null value; `line_items` to a list of such maps per item field; `bank` to a
    map per bank field (or None). `adapter_version` is "name:version", None for the base.
    `model_ms` is this document's share of the batched generation time.
    """

    fields: dict
    confidence: dict[str, float]
    grounding: dict
    adapter_version: str | None
    model_ms: float
    windows: int = 1
    #: The raw JSON answer of each window, as generated.
    outputs: list[str] = field(default_factory=list)
    #: Changes made by amount reconciliation (`models.reconcile.Reconciled.as_dict()`), in order.
    reconciled: list[dict] = field(default_factory=list)


@dataclass
class Generation:
    """One constrained answer: parsed value, text and token-level detail."""

    value: Any
    text: str
    token_ids: list[int]
    token_probs: list[float]
    byte_offsets: list[int]
    adapter_version: str | None
    model_ms: float
    closed: bool = False
    error: str | None = None  # the grammar engine failed on this answer (see decode_batch)


@dataclass
class _Adapter:
    internal: str
    version: str
    path: str
    from_registry: bool


def _internal_name(name: str, version: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{name}__v{version}")


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:])


def contiguous_head_input(model) -> None:
    """Make the output head's input contiguous (idempotent).

    With `logits_to_keep=1` the head sees the last position of a wider forward pass, a
    strided view. `torch.matmul` cannot fold such a 3-d view against a transposed 2-d
    weight (tied embeddings) into one matrix product, so it expands the weight per row
    and copies it: 0.9 GB per decode step at batch 16 with SmolLM2, several times the cost
    of the rest of the step. A contiguous input takes the single-GEMM path.
    """
    head = model.get_output_embeddings()
    if head is not None and not getattr(head, "_contiguous_input", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._contiguous_input = True


def top_level_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character span of each top-level value in a compact JSON object."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    pos = 1 if text.startswith("{") else len(text)
    while pos < len(text) and text[pos] != "}":
        key, pos = decoder.raw_decode(text, pos)
        pos += 1  # ':'
        start = pos
        _, pos = decoder.raw_decode(text, pos)
        spans[key] = (start, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
    return spans


def field_confidence(gen: Generation) -> dict[str, float]:
    """Lowest token probability over each top-level value of a generation."""
    text = gen.text
    spans = top_level_spans(text)
    data = text.encode("utf-8")
    ascii_only = len(data) == len(text)

    def to_byte(i: int) -> int:
        return i if ascii_only else len(text[:i].encode("utf-8"))

    starts = gen.byte_offsets
    ends = starts[1:] + [len(data)]
    out = {}
    for key, (cs, ce) in spans.items():
        bs, be = to_byte(cs), to_byte(ce)
        # Tokens overlapping [bs, be], the separator token right after the value included.
        lo = max(0, bisect.bisect_right(starts, bs) - 1)
        probs = [gen.token_probs[k] for k in range(lo, len(starts)) if starts[k] <= be and ends[k] > bs]
        out[key] = round(min(probs), 6) if probs else 1.0
    return out


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
        self._merged: dict[str, list] = {}  # adapter internal name -> [(base linear, merged weight)]
        self._lock = threading.RLock()
        self._model = None  # the base, or the peft model wrapping it
        self._peft = None
        self._tokenizer = None
        self._bank = None
        self._device = None
        self._dtype = None
        self._adapters: dict[str, _Adapter] = {}
        self._last_poll = float("-inf")
        self._fingerprint: str | None = None
        self._warned_fingerprints: set[tuple[str, int]] = set()

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
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from models.attention import register_packed_attention
            from models.grammar import GrammarBank
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
            self._tokenizer, self._model, self._device, self._dtype = tokenizer, model, device, dtype
            log.info("loaded base %s on %s (%s) in %.1fs", self.base_dir, device, dtype, time.perf_counter() - t0)

    def warm_up(self) -> None:
        """Load everything the first extraction needs (model, grammar, token table)."""
        from models.schemas import invoice_json_schema

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
        return self._model

    @property
    def device(self) -> str:
        self.load()
        return self._device

    @property
    def dtype(self):
        self.load()
        return self._dtype

    @property
    def base_fingerprint(self) -> str:
        if self._fingerprint is None:
            from models.store import base_fingerprint

            self._fingerprint = base_fingerprint(self.base_dir)
        return self._fingerprint

    # --- adapters ------------------------------------------------------------------------

    def load_adapter(self, name: str, path: Path | str, version: str, *, _from_registry: bool = False) -> None:
        """Load (or replace) the adapter served under `name`; the old version is unloaded."""
        with self._lock:
            self.load()
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
                if self._peft is None:
                    from peft import PeftModel

                    self._peft = PeftModel.from_pretrained(
                        self._model, str(path), adapter_name=internal, autocast_adapter_dtype=False
                    )
                    self._peft.eval()
                    self._model = self._peft
                else:
                    self._peft.load_adapter(str(path), adapter_name=internal, autocast_adapter_dtype=False)
            self._match_adapter_dtype(internal)
            self._adapters[name] = _Adapter(internal, version, str(path), _from_registry)
            if old is not None:
                self._drop(old.internal)
            log.info("adapter %s version %s loaded from %s", name, version, path)

    def _match_adapter_dtype(self, internal: str) -> None:
        for param_name, param in self._peft.named_parameters():
            if f".{internal}." in param_name and param.dtype != self._dtype:
                param.data = param.data.to(self._dtype)

    def _drop(self, internal: str) -> None:
        self._merged.pop(internal, None)
        remaining = [a.internal for a in self._adapters.values() if a.internal != internal]
        if not remaining:
            # peft cannot hold zero adapters: unwrap back to the plain base.
            self._model = self._peft.unload()
            self._peft = None
            return
        self._peft.set_adapter(remaining[0])
        self._peft.delete_adapter(internal)

    def unload_adapter(self, name: str) -> None:
        """Stop serving `name` (it then runs the base model)."""
        with self._lock:
            old = self._adapters.pop(name, None)
            if old is not None:
                self._drop(old.internal)

    @property
    def adapters(self) -> dict[str, str]:
        """Loaded adapters: name -> version."""
        return {name: a.version for name, a in self._adapters.items()}

    def adapter_version(self, name: str | None) -> str | None:
        """The label of what serves `name`: "name:version", or None for the base model."""
        a = self._adapters.get(name) if name else None
        return f"{name}:{a.version}" if a else None

    def refresh_adapters(self, session_factory, force: bool = False) -> dict[str, str | None]:
        """Serve the registry's active versions (checked at most every adapter_poll_s seconds).

        `session_factory()` must return a context manager yielding a database session.
        Returns the changes made: name -> new version, or None for an unloaded name.
        """
        now = time.monotonic()
        if not force and now - self._last_poll < self.adapter_poll_s:
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
                if fingerprint != self.base_fingerprint:
                    key = (name, int(version))
                    if key not in self._warned_fingerprints:
                        self._warned_fingerprints.add(key)
                        log.warning("adapter %s v%s was trained on another base; not loaded", name, version)
                    continue
                current = self._adapters.get(name)
                if current is not None and current.version == version and current.path == path:
                    continue
                self.load_adapter(name, path, version, _from_registry=True)
                changes[name] = version
            for name, a in list(self._adapters.items()):
                if a.from_registry and name not in active:
                    self.unload_adapter(name)
                    changes[name] = None
        return changes

    @contextlib.contextmanager
    def using_adapter(self, name: str | None):
        """The served model with `name`'s adapter active (the base for None or unknown names)."""
        with self._lock:
            self.load()
            a = self._adapters.get(name) if name else None
            if self._peft is None:
                yield self._model
            elif a is None:
                with self._peft.disable_adapter():
                    yield self._peft
            else:
                self._peft.set_adapter(a.internal)
                yield self._peft

    @contextlib.contextmanager
    def _merged_weights(self, internal: str):
        """Serve one adapter through merged weights for the duration of the block.

        Every LoRA-wrapped linear layer of the base gets `W + scale * B @ A` (computed in
        float32, stored in the serving dtype, built once per adapter version) while peft's
        adapters are disabled: a forward pass is then one matrix product per layer instead
        of three plus the scaling, about a quarter of a decode step on CPU. The base weights
        are put back on exit; nothing is merged in place, so no rounding accumulates.
        """
        import torch

        swaps = self._merged.get(internal)
        if swaps is None:
            from peft.tuners.lora import LoraLayer

            swaps = []
            with torch.no_grad():
                for module in self._peft.modules():
                    if isinstance(module, LoraLayer) and internal in module.lora_A:
                        base = module.get_base_layer()
                        delta = module.get_delta_weight(internal).float()
                        merged = (base.weight.float() + delta).to(base.weight.dtype)
                        swaps.append((base, torch.nn.Parameter(merged, requires_grad=False)))
            self._merged[internal] = swaps
        originals = [(base, base.weight) for base, _ in swaps]
        try:
            for base, merged in swaps:
                base.weight = merged
            with self._peft.disable_adapter():
                yield
        finally:
            for base, weight in originals:
                base.weight = weight

    # --- generation ----------------------------------------------------------------------

    def _encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def generate(
        self, requests: list[tuple[str | None, str, Any]], max_new_tokens: int | None = None
    ) -> list[Generation]:
        """Constrained greedy answers for (adapter name or None, full prompt text, JSON schema
        or a grammar compiled by the runtime's grammar bank)."""
        from models.decoding import DecodeRequest
        from models.grammar import CompiledSchema
        from models.schemas import schema_key

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
            a = self._adapters.get(adapter) if adapter else None
            labels.append(f"{adapter}:{a.version}" if a else None)
            decode_requests.append(
                DecodeRequest(self._encode(prompt), compiled[key], a.internal if a else None,
                              max_new_tokens or self.max_new_tokens)
            )
        decoded, shares = self._decode_all(decode_requests)
        out = []
        for d, label, ms in zip(decoded, labels, shares):
            try:
                value = json.loads(d.text) if d.error is None else None
            except ValueError:  # unreachable under the grammar; reported, never raised mid-batch
                log.error("constrained answer is not JSON: %.200s", d.text)
                value = None
            out.append(Generation(value, d.text, d.token_ids, d.token_probs, d.byte_offsets, label, ms, d.closed,
                                  d.error))
        return out

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
        from models.decoding import decode_batch

        order = sorted(range(len(requests)), key=lambda i: (requests[i].adapter or "", len(requests[i].prompt_ids)))
        results: list = [None] * len(requests)
        shares: list[float] = [0.0] * len(requests)
        pad_id = self._tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self._bank.stop_token_id
        with self._lock:
            for lo in range(0, len(order), self.batch_size):
                idx = order[lo : lo + self.batch_size]
                t0 = time.perf_counter()
                group = [requests[i] for i in idx]
                merged = contextlib.nullcontext()
                served = {r.adapter for r in group}
                if self.merged_decoding and self._peft is not None and len(served) == 1 and None not in served:
                    merged = self._merged_weights(served.pop())
                    group = [dataclasses.replace(r, adapter=None) for r in group]
                with merged:
                    batch = decode_batch(
                        self._model, self._bank, group, device=self._device,
                        pad_id=pad_id, fast_forward=self.fast_forward,
                    )
                ms = 1000 * (time.perf_counter() - t0) / len(idx)
                for i, d in zip(idx, batch):
                    results[i], shares[i] = d, ms
        return results, shares

    # --- extraction ----------------------------------------------------------------------

    def windows(self, text: str) -> list[tuple[int, int]]:
        """Character ranges of the windows a document is read in (see the module docstring)."""
        tok = self.tokenizer
        overhead = len(self._encode(render_prompt(tok, EXTRACT_INSTRUCTION, "x")))
        budget = max(32, self.max_input_tokens - overhead - _WINDOW_MARGIN)
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        n = len(offsets)
        if n <= budget:
            return [(0, len(text))]
        starts = [s for s, _ in offsets]
        overlap = min(self.window_overlap, budget // 4)
        out: list[tuple[int, int]] = []
        first_tok, first_char = 0, 0
        while True:
            end_tok = first_tok + budget
            if end_tok >= n:
                out.append((first_char, len(text)))
                return out
            end_char = starts[end_tok]
            cut = text.rfind("\n", first_char + 3 * (end_char - first_char) // 4, end_char)
            if cut != -1:  # keep lines whole
                end_char = cut + 1
            out.append((first_char, end_char))
            end_tok = bisect.bisect_left(starts, end_char)
            next_tok = max(first_tok + 1, end_tok - overlap)
            # Start the next window at the first line start inside the overlap.
            line = text.find("\n", max(0, starts[next_tok] - 1), max(0, end_char - 1))
            next_char = line + 1 if line != -1 else starts[next_tok]
            first_tok = max(first_tok + 1, bisect.bisect_left(starts, next_char))
            first_char = next_char

    def extract(self, texts: list[str], adapter: str = "extract") -> list[ExtractionResult]:
        """Invoice fields for every text: batched, constrained, greedy and deterministic."""
        from pydantic import ValidationError

        from invoicechain.schema import InvoiceFields
        from models.grounding import ground_fields
        from models.schemas import all_null_document, invoice_json_schema

        self.load()
        schema = invoice_json_schema()
        requests, owners = [], []
        doc_windows = []
        for doc_index, text in enumerate(texts):
            text = text or ""
            spans = self.windows(text)
            doc_windows.append(spans)
            for s, e in spans:
                window = text[s:e]
                grammar = self._bank.compile_document(schema, window) if self.grounded else schema
                requests.append((adapter, render_prompt(self._tokenizer, EXTRACT_INSTRUCTION, window), grammar))
                owners.append((doc_index, s, e))
        gens = self.generate(requests) if requests else []
        # A grounded grammar the engine gave up on (a resource limit on an unusual text):
        # that window is decoded again under the plain schema grammar.
        retry = [i for i, g in enumerate(gens) if g.error is not None and requests[i][2] is not schema]
        if retry:
            log.warning("grounded decoding failed on %d window(s); decoding them with the plain schema", len(retry))
            again = self.generate([(requests[i][0], requests[i][1], schema) for i in retry])
            for i, g in zip(retry, again):
                gens[i] = g
        per_doc: list[list[dict]] = [[] for _ in texts]
        for gen, (doc_index, s, e) in zip(gens, owners):
            try:
                fields = InvoiceFields.model_validate(gen.value).model_dump(mode="json")
                confidence = field_confidence(gen)
            except (ValidationError, ValueError):
                # The grammar makes this unreachable; stay safe rather than fail a batch.
                log.error("constrained answer did not validate: %.200s", gen.text)
                fields = InvoiceFields.model_validate(all_null_document(schema)).model_dump(mode="json")
                confidence = {k: 0.0 for k in fields}
            per_doc[doc_index].append({
                "fields": fields, "confidence": confidence,
                "grounding": ground_fields(fields, texts[doc_index][s:e], offset=s),
                "span": (s, e), "text": gen.text, "ms": gen.model_ms, "version": gen.adapter_version,
            })
        results = []
        for text, parts in zip(texts, per_doc):
            merged = merge_windows(parts)
            changes = self._reconcile(merged, text or "") if self.reconcile else []
            results.append(ExtractionResult(
                fields=merged["fields"], confidence=merged["confidence"], grounding=merged["grounding"],
                adapter_version=parts[0]["version"], model_ms=round(sum(p["ms"] for p in parts), 3),
                windows=len(parts), outputs=[p["text"] for p in parts], reconciled=[c.as_dict() for c in changes],
            ))
        return results

    @staticmethod
    def _reconcile(merged: dict, text: str) -> list:
        """Amount reconciliation (`models.reconcile`) on a merged answer, in place.

        A changed field is grounded again; a changed total-block field takes the lower of
        the subtotal's and the total's confidence (the change is only as sure as the
        figures it was balanced against); line items and identifiers keep their confidence.
        """
        from invoicechain.schema import AMOUNT_FIELDS
        from models.grounding import ground_fields
        from models.reconcile import reconcile

        fields, confidence = merged["fields"], merged["confidence"]
        changes = reconcile(fields, text, merged["grounding"])
        if not changes:
            return changes
        fresh = ground_fields(fields, text)
        for change in changes:
            top = re.split(r"[\[.]", change.field, maxsplit=1)[0]  # `line_items[0].amount`, `bank.account_number`
            merged["grounding"][top] = fresh[top]
            if top not in AMOUNT_FIELDS:  # line items keep theirs; a dropped identifier keeps the model's
                continue
            anchors = [confidence[k] for k in ("subtotal", "total_amount") if confidence.get(k) is not None]
            if anchors:
                confidence[top] = min(anchors)
        return changes

    # --- toolchain -----------------------------------------------------------------------

    def propose_many(self, items: list[tuple[str, dict]], adapter: str = "toolchain") -> list[dict]:
        """Toolchain decisions for many (step, context) pairs in one batch."""
        from models.schemas import decision_json_schema

        self.load()
        requests = [
            (adapter, render_prompt(self._tokenizer, TOOLCHAIN_INSTRUCTIONS[step], dump_output(context)),
             decision_json_schema(step))
            for step, context in items
        ]
        values = self.generate_json(requests, max_new_tokens=_DECISION_TOKENS)
        return [{"decision": v["decision"], "reasons": list(v["reasons"])} for v in values]

    def propose(self, step: str, context: dict, adapter: str = "toolchain") -> dict:
        """The toolchain adapter's decision for one step: {"decision": ..., "reasons": [codes]}."""
        return self.propose_many([(step, context)], adapter=adapter)[0]


def merge_windows(parts: list[dict]) -> dict:
    """Merge the per-window extractions of one document (rule in the module docstring)."""
    if len(parts) == 1:
        p = parts[0]
        return {"fields": p["fields"], "confidence": p["confidence"], "grounding": p["grounding"]}
    fields, confidence, grounding = {}, {}, {}
    for key in parts[0]["fields"]:
        if key == "line_items":
            continue
        best = None
        for p in parts:
            if p["fields"][key] is not None and (best is None or p["confidence"][key] > best["confidence"][key]):
                best = p
        if best is None:
            fields[key] = None
            confidence[key] = max(p["confidence"][key] for p in parts)
            grounding[key] = None
        else:
            fields[key] = best["fields"][key]
            confidence[key] = best["confidence"][key]
            grounding[key] = best["grounding"][key]
    items, item_grounding, contributing = [], [], []
    previous: list[tuple[dict, dict]] = []
    previous_span = None
    for p in parts:
        kept: list[tuple[dict, dict]] = []
        overlap = (p["span"][0], previous_span[1]) if previous_span else None
        for item, g in zip(p["fields"]["line_items"], p["grounding"]["line_items"]):
            if overlap and any(item == old and _in_overlap(g, og, overlap) for old, og in previous):
                continue
            kept.append((item, g))
        if kept:
            contributing.append(p["confidence"]["line_items"])
        items += [i for i, _ in kept]
        item_grounding += [g for _, g in kept]
        previous = list(zip(p["fields"]["line_items"], p["grounding"]["line_items"]))
        previous_span = p["span"]
    fields["line_items"] = items
    confidence["line_items"] = min(contributing) if contributing else max(p["confidence"]["line_items"] for p in parts)
    grounding["line_items"] = item_grounding
    order = list(parts[0]["fields"])
    return {
        "fields": {k: fields[k] for k in order},
        "confidence": {k: confidence[k] for k in order},
        "grounding": {k: grounding[k] for k in order},
    }


def _in_overlap(g: dict, old_g: dict, overlap: tuple[int, int]) -> bool:
    lo, hi = overlap
    a, b = g.get("description") or {}, old_g.get("description") or {}
    if "start" not in a or "start" not in b:
        return True  # ungrounded: equality is all there is to go on
    return lo <= a["start"] < hi and lo <= b["start"] < hi
