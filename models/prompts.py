"""Prompt formats: the single definition shared by training and inference.

A record is `{"instruction": str, "input": str, "output": object | str}`. It is rendered
with the base model's chat template (system + user turn, then the assistant turn holds
the output). Object outputs are serialised by `dump_output`, whose separators match the
grammar used for constrained decoding, so the model is trained on exactly the token
sequences it is later allowed to produce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from invoicechain.decisions import Step

SYSTEM_PROMPT = "You turn business documents into JSON. Answer with JSON only."
EXTRACT_INSTRUCTION = "Extract the invoice fields as JSON. Use null for fields the document does not state."
#: Separators of the JSON the model writes; the grammar compiler is given the same pair.
JSON_SEPARATORS = (",", ":")

_FALLBACK_TEMPLATE = "### System:\n{system}\n\n### Instruction:\n{user}\n\n### Response:\n"

TOOLCHAIN_INSTRUCTIONS: dict[str, str] = {
    Step.VALIDATE: "Decide the validate_invoice step for this invoice: VALID or INVALID, with reason codes.",
    Step.MATCH_PO: "Decide the match_po step: MATCHED, PARTIAL, NO_MATCH or NO_PO, with reason codes.",
    Step.APPROVAL: "Decide the run_approval step: APPROVED, PENDING_APPROVAL or REJECTED, with reason codes.",
    Step.PAYMENT: "Decide the trigger_payment step: SCHEDULED or HELD, with reason codes.",
}


def dump_output(output: Any) -> str:
    """The exact text of an answer: strings as they are, objects as compact JSON."""
    if isinstance(output, str):
        return output
    return json.dumps(output, ensure_ascii=False, separators=JSON_SEPARATORS)


def user_message(instruction: str, input_text: str) -> str:
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def render_prompt(tokenizer, instruction: str, input_text: str) -> str:
    """The prompt text up to where the answer starts (generation prompt included)."""
    user = user_message(instruction, input_text)
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return _FALLBACK_TEMPLATE.format(system=SYSTEM_PROMPT, user=user)


def encode_prompt(tokenizer, instruction: str, input_text: str) -> list[int]:
    return tokenizer(render_prompt(tokenizer, instruction, input_text), add_special_tokens=False)["input_ids"]


def answer_stop_id(tokenizer) -> int:
    """Token that ends an answer: the chat template's end-of-turn token, else EOS."""
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(tok) if tok in tokenizer.get_vocab() else None
        if tid is not None:
            return tid
    return tokenizer.eos_token_id


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]  # -100 on prompt tokens: the loss is on the answer only

    @property
    def prompt_len(self) -> int:
        return sum(1 for x in self.labels if x == -100)


def encode_example(tokenizer, record: dict, max_length: int | None = None) -> EncodedExample:
    """Tokenise a training record: prompt tokens masked with -100, answer + stop token kept."""
    prompt_ids = encode_prompt(tokenizer, record["instruction"], record.get("input", "") or "")
    answer_ids = tokenizer(dump_output(record["output"]), add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids + [answer_stop_id(tokenizer)]
    if max_length is not None and len(prompt_ids) + len(answer_ids) > max_length:
        raise ValueError(
            f"record is {len(prompt_ids) + len(answer_ids)} tokens, over max_length {max_length}"
        )
    return EncodedExample(prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids)


def extract_record(document_text: str, fields: dict | None) -> dict:
    """Training record for the `extract` adapter."""
    return {"instruction": EXTRACT_INSTRUCTION, "input": document_text, "output": fields}


def toolchain_record(step: str, context: dict, decision: dict) -> dict:
    """Training record for the `toolchain` adapter: step context in, decision + reasons out."""
    return {"instruction": TOOLCHAIN_INSTRUCTIONS[step], "input": dump_output(context), "output": decision}
