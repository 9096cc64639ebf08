"""JSON schemas for constrained decoding, derived from the pydantic models that also drive
the DB, the API and evaluation.

Decoding is stricter than validation: every property is required and emitted in schema
order (a field the document does not state is written as `null`), no other keys are
allowed, and `$ref`s are inlined. That is exactly the shape `models.prompts.dump_output`
gives a `model_dump()` of the same model, so training targets and constrained outputs are
the same token sequences.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

#: Keywords that only annotate; dropping them keeps compiled grammars identical across
#: cosmetic schema changes (and lets the grammar cache key on the content that matters).
_ANNOTATIONS = ("title", "default", "description", "examples")
#: How many reason codes a toolchain decision may carry.
MAX_REASONS = 6


def strict_schema(schema: dict | type) -> dict:
    """A copy of a JSON schema (or pydantic model) with all keys required, in order, refs inlined."""
    if isinstance(schema, type):
        schema = schema.model_json_schema()
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", {}) | schema.pop("definitions", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return walk(merged)
        out = {k: walk(v) for k, v in node.items() if k not in _ANNOTATIONS and k != "properties"}
        if "properties" in node:  # a mapping of names: its keys are never annotations
            out["properties"] = {name: walk(sub) for name, sub in node["properties"].items()}
            out["type"] = "object"
            out["required"] = list(out["properties"])
            out["additionalProperties"] = False
        return out

    return walk(schema)


def schema_key(schema: dict) -> str:
    """Canonical text of a schema, the cache key of its compiled grammar."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


@lru_cache(maxsize=1)
def _invoice_schema_text() -> str:
    from invoicechain.schema import InvoiceFields

    return json.dumps(strict_schema(InvoiceFields))


def invoice_json_schema() -> dict:
    """The decoding schema of `invoicechain.schema.InvoiceFields`."""
    return json.loads(_invoice_schema_text())


def decision_json_schema(step: str) -> dict:
    """The decoding schema of a toolchain decision for one step: a decision and reason codes."""
    from invoicechain.decisions import STEP_DECISIONS, Reason, Step

    decisions = [str(d) for d in STEP_DECISIONS[Step(step)]]
    return {
        "type": "object",
        "properties": {
            "decision": {"type": "string", "enum": decisions},
            "reasons": {
                "type": "array",
                "items": {"type": "string", "enum": [str(r) for r in Reason]},
                "maxItems": MAX_REASONS,
            },
        },
        "required": ["decision", "reasons"],
        "additionalProperties": False,
    }


def all_null_document(schema: dict) -> Any:
    """The shortest value a strict schema admits where every nullable leaf is null."""
    if "anyOf" in schema:
        options = schema["anyOf"]
        if any(o.get("type") == "null" for o in options):
            return None
        return all_null_document(options[0])
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return None
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        return {k: all_null_document(v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [all_null_document(schema["items"]) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "" if "pattern" not in schema else "0"
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    return None
