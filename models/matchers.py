"""Token masks for JSON-schema-constrained decoding, on llguidance.

llguidance was chosen over xgrammar by measurement (`benchmarks/grammar.py`, on the
default base's tokenizer and the strict InvoiceFields schema): both fill a batch of 16
masks in well under a millisecond, but xgrammar 0.2.8 rejects escaped characters inside
length-bounded strings (a `27" monitor` line item cannot be written), lets special
tokens appear inside strings and takes 1-3 s to compile the schema, while llguidance
accepts every target, compiles lazily in milliseconds and only admits the canonical
tokenisation of forced text (keys, punctuation), so about a quarter of the tokens of an
answer are forced: never sampled, and fed to the model together with the token before
them (see `models.decoding`).

The grammars themselves are text, built by the extraction pipeline (`extraction.grammar`);
this module compiles them for one tokenizer and fills the masks. Masks are bitmasks (int32
words, one bit per token id) filled for the whole batch in parallel threads, then expanded
on the logits' device.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from extraction.grammar import JSON_OPTIONS, document_grammar
from extraction.schemas import all_null_document, schema_key

log = logging.getLogger(__name__)

#: Lexer fuel per token mask (llguidance's default is 200,000, about 14 ms). A grounded
#: grammar offers many printed values at once; on about 3% of synthetic invoices the true
#: answer ran out of the default fuel ("too many expressions constructed") at a long
#: printed value. Ten times as much admits every answer we tried (the slowest mask seen:
#: 25 ms) and still ends a runaway step in about 150 ms.
STEP_LEXER_FUEL = 2_000_000


@dataclass(frozen=True)
class CompiledSchema:
    """A schema's llguidance grammar plus the token budget its closing needs."""

    key: str
    grammar: str
    #: Tokens that always suffice to finish an answer from any point (see `closing_reserve`).
    reserve: int


class GrammarBank:
    """Grammars for one tokenizer: compiled once per schema, matchers made per sequence."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_id: int, threads: int | None = None):
        import llguidance
        import llguidance.hf

        self._ll = llguidance
        self.vocab_size = vocab_size
        self.stop_token_id = stop_token_id
        self.ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=stop_token_id)
        self.executor = llguidance.LLExecutor(num_threads=threads or max(1, min(8, os.cpu_count() or 1)))
        self.limits = llguidance.LLParserLimits(step_lexer_fuel=STEP_LEXER_FUEL)
        self._hf_tokenizer = tokenizer
        self._compiled: dict[str, CompiledSchema] = {}
        self._lock = threading.Lock()
        self._token_bytes: list[bytes] | None = None
        self._structural: dict[str, Any] = {}

    def compile(self, schema: dict) -> CompiledSchema:
        """The grammar of a JSON schema (cached by its canonical text)."""
        key = schema_key(schema)
        with self._lock:
            hit = self._compiled.get(key)
        if hit is not None:
            return hit
        grammar = self._ll.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_OPTIONS)
        probe = self.matcher_for(grammar)
        if probe.is_error():
            raise ValueError(f"schema does not compile to a grammar: {probe.get_error()}")
        compiled = CompiledSchema(key, grammar, self.closing_reserve(schema))
        with self._lock:
            self._compiled[key] = compiled
        return compiled

    def compile_document(self, schema: dict, text: str) -> CompiledSchema:
        """The grammar of a strict schema grounded in one document (see `document_grammar`).

        Falls back to the schema's plain grammar if the grounded one does not compile.
        """
        import hashlib

        base = self.compile(schema)
        lark = document_grammar(schema, text)
        try:
            grammar = self._ll.LLMatcher.grammar_from_lark(lark)
            probe = self.matcher_for(grammar)
            error = probe.get_error() if probe.is_error() else None
        except ValueError as exc:
            error = str(exc)
        if error:
            log.warning("grounded grammar did not compile, decoding with the plain schema: %.300s", error)
            return base
        digest = hashlib.sha256(lark.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return CompiledSchema(f"{base.key}#{digest}", grammar, base.reserve)

    def closing_reserve(self, schema: dict) -> int:
        """Tokens kept back to close an answer: the all-null document plus slack.

        From any point of an answer, the shortest way out (close the open string, null
        every remaining nullable field, close open arrays and objects) is no longer than
        the document with every nullable field null, plus the rest of one array item.
        """
        from models.prompts import dump_output

        text = dump_output(all_null_document(schema))
        return len(self._hf_tokenizer(text, add_special_tokens=False)["input_ids"]) + 24

    def matcher(self, compiled: CompiledSchema):
        return self.matcher_for(compiled.grammar)

    def matcher_for(self, grammar: str):
        """A matcher of a compiled grammar under this bank's parser limits."""
        return self._ll.LLMatcher(self.ll_tokenizer, grammar, limits=self.limits)

    def allocate_bitmask(self, rows: int):
        import torch

        return torch.full((rows, (self.vocab_size + 31) // 32), -1, dtype=torch.int32)

    def fill_bitmasks(self, matchers: list, bitmask) -> None:
        """Fill row i of `bitmask` with the allowed next tokens of matchers[i] (in parallel)."""
        from llguidance.torch import fill_next_token_bitmask_par

        fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(matchers)], bitmask)

    def structural(self, device):
        """The structural-token mask of the closing rule on `device` (built once per device)."""
        key = str(device)
        if key not in self._structural:
            self._structural[key] = structural_mask(self.token_bytes, device)
        return self._structural[key]

    @property
    def token_bytes(self) -> list[bytes]:
        """The bytes of every token id (special tokens decode to b'')."""
        if self._token_bytes is None:
            tok = self.ll_tokenizer
            self._token_bytes = [
                b"" if tok.is_special_token(i) else tok.decode_bytes([i]) for i in range(self.vocab_size)
            ]
        return self._token_bytes


def expand_bitmask(bitmask, vocab_size: int, device) -> Any:
    """int32 bitmask [rows, words] -> bool allowed-mask [rows, vocab_size] on `device`."""
    import torch

    words = bitmask.to(device, non_blocking=True)
    shifts = torch.arange(32, device=device, dtype=torch.int32)
    bits = (words.unsqueeze(-1) >> shifts) & 1
    return bits.view(words.shape[0], -1)[:, :vocab_size].bool()


class JsonScanner:
    """Tracks whether an answer is inside a JSON string, from the bytes written so far."""

    __slots__ = ("in_string", "escaped")

    def __init__(self) -> None:
        self.in_string = False
        self.escaped = False

    def feed(self, data: bytes) -> None:
        for b in data:
            if self.escaped:
                self.escaped = False
            elif self.in_string and b == 0x5C:  # backslash
                self.escaped = True
            elif b == 0x22:  # quote
                self.in_string = not self.in_string


#: Bytes that change the JSON structure (or write a null): only such tokens can close faster.
_STRUCTURAL = (b'"', b"{", b"}", b"[", b"]", b",", b"null")


def structural_mask(token_bytes: list[bytes], device) -> Any:
    """Boolean mask over the vocabulary: tokens holding a quote, bracket, brace, comma or null."""
    import torch

    flags = [any(s in t for s in _STRUCTURAL) for t in token_bytes]
    return torch.tensor(flags, dtype=torch.bool, device=device)


def closing_score(data: bytes, in_string: bool, escaped: bool) -> int:
    """How much writing `data` from the given string state brings the answer towards its end.

    Closing a bracket or brace counts 3, opening one -3, writing `null` 2, and ending
    inside a string -2 (a string still has to be closed; a value string may grow).
    """
    opens = closes = nulls = 0
    for pos, b in enumerate(data):
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x7B, 0x5B):
            opens += 1
        elif b in (0x7D, 0x5D):
            closes += 1
        elif data.startswith(b"null", pos):
            nulls += 1
    return 3 * (closes - opens) + 2 * nulls - (2 if in_string else 0)


def closing_choice(allowed, logits, structural, token_bytes: list[bytes], scanner: JsonScanner,
                   stop_id: int) -> int:
    """The token that heads fastest to the end of the answer (used when the budget runs low).

    `allowed` is the row's boolean mask and `logits` its masked logits. Every allowed
    structural token and the model's best token are scored by `closing_score`; the best
    score wins, the model's preference breaks ties. Strings close, `null` is written where
    allowed, arrays and objects close, and nothing new is opened unless the grammar
    requires it.
    """
    if bool(allowed[stop_id]):
        return stop_id
    best = int(logits.argmax())
    ids = (allowed & structural).nonzero().flatten().tolist()
    if best not in ids:
        ids.append(best)
    scores = logits[ids].tolist()
    return max(
        zip(ids, scores),
        key=lambda pair: (closing_score(token_bytes[pair[0]], scanner.in_string, scanner.escaped), pair[1]),
    )[0]
