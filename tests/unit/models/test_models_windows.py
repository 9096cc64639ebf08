"""The window rule as pure functions: budget, cut on line breaks, overlap, whole coverage."""

from __future__ import annotations

import re

from models.windows import MIN_BUDGET, WINDOW_MARGIN, cut_windows, document_budget


def _word_starts(text: str) -> list[int]:
    """One token per word or run of whitespace, like a tokenizer's offsets."""
    return [m.start() for m in re.finditer(r"\S+|\s+", text)]


def _tokens_in(starts: list[int], s: int, e: int) -> int:
    return sum(1 for c in starts if s <= c < e)


TABLE = "".join(f"row {i:03d} widget  {i}.00  {i * 2}.00\n" for i in range(120))


def test_the_budget_is_what_the_prompt_leaves_and_never_below_the_minimum():
    assert document_budget(400, 100) == 400 - 100 - WINDOW_MARGIN
    assert document_budget(50, 100) == MIN_BUDGET


def test_a_text_within_the_budget_is_one_window():
    assert cut_windows("short text", _word_starts("short text"), budget=10, overlap=4) == [(0, 10)]
    assert cut_windows("", [], budget=10, overlap=4) == [(0, 0)]


def test_windows_cover_the_text_within_the_budget_ending_on_line_breaks_and_overlapping():
    starts = _word_starts(TABLE)
    spans = cut_windows(TABLE, starts, budget=200, overlap=40)
    assert len(spans) > 2
    assert spans[0][0] == 0 and spans[-1][1] == len(TABLE)
    for (s, e), (next_s, next_e) in zip(spans, spans[1:]):
        assert _tokens_in(starts, s, e) <= 200
        assert TABLE[e - 1] == "\n"  # table rows are not split
        assert next_s < e  # consecutive windows overlap
        assert _tokens_in(starts, next_s, e) <= 40
        assert TABLE[next_s - 1] == "\n"  # and the next one starts at a line start
        assert next_e > e


def test_the_overlap_is_at_most_a_quarter_of_the_budget():
    starts = _word_starts(TABLE)
    spans = cut_windows(TABLE, starts, budget=100, overlap=1000)
    for (_, e), (next_s, _) in zip(spans, spans[1:]):
        assert _tokens_in(starts, next_s, e) <= 100 // 4


def test_text_without_line_breaks_is_cut_on_token_boundaries():
    text = " ".join(f"w{i}" for i in range(300))
    starts = _word_starts(text)
    spans = cut_windows(text, starts, budget=64, overlap=8)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for s, e in spans:
        assert s in starts and (e in starts or e == len(text))
        assert _tokens_in(starts, s, e) <= 64
    assert all(b[0] < a[1] for a, b in zip(spans, spans[1:]))
