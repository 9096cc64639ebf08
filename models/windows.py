"""Long documents: the window rule.

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

Steps 1 to 3 are here, as pure functions of the text and its token offsets; step 4 is
`models.extractor`, step 5 `extraction.pipeline.merge_windows`.
"""

from __future__ import annotations

import bisect

#: Tokens kept free between the prompt and max_input_tokens when windowing.
WINDOW_MARGIN = 8
#: The smallest document budget, however long the prompt itself is.
MIN_BUDGET = 32


def document_budget(max_input_tokens: int, prompt_tokens: int) -> int:
    """Tokens of document one window may hold (rule 1): `prompt_tokens` is the prompt's own length."""
    return max(MIN_BUDGET, max_input_tokens - prompt_tokens - WINDOW_MARGIN)


def cut_windows(text: str, token_starts: list[int], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Character ranges of the windows `text` is read in (rules 2 and 3).

    `token_starts` is the character offset where each of the text's tokens starts, in
    order; `budget` the tokens a window may hold; `overlap` the tokens consecutive
    windows share (at most a quarter of the budget is used). A text within the budget is
    one window.
    """
    n = len(token_starts)
    if n <= budget:
        return [(0, len(text))]
    starts = token_starts
    overlap = min(overlap, budget // 4)
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
