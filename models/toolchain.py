"""Toolchain decisions through the runtime: each constrained to its step's decisions and the reason codes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.prompts import TOOLCHAIN_INSTRUCTIONS, dump_output, render_prompt

if TYPE_CHECKING:
    from models.runtime import ModelRuntime

#: New tokens a toolchain decision may take.
DECISION_TOKENS = 96


def propose_many(runtime: ModelRuntime, items: list[tuple[str, dict]], adapter: str | None) -> list[dict]:
    """Decisions for many (step, context) pairs in one batch: {"decision": ..., "reasons": [codes]} each."""
    from extraction.schemas import decision_json_schema

    runtime.load()
    requests = [
        (adapter, render_prompt(runtime.tokenizer, TOOLCHAIN_INSTRUCTIONS[step], dump_output(context)),
         decision_json_schema(step))
        for step, context in items
    ]
    values = runtime.generate_json(requests, max_new_tokens=DECISION_TOKENS)
    return [{"decision": v["decision"], "reasons": list(v["reasons"])} for v in values]
