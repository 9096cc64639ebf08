"""Printed wording per document language: labels (with variants), payment terms, letters.

The words themselves live in the lexicon (`invoicechain/lexicon/*.yaml`), which the reader
recognises them by too.

A label key maps to a tuple of variants; a document picks one variant per key when it is
rendered, so the same invoice reads differently across layouts and seeds.
"""

from __future__ import annotations

import random

from invoicechain.lexicon import lexicon

LEXICON = lexicon()
#: Languages the generator writes in: every language of the lexicon.
LANGUAGES = tuple(LEXICON.languages)

#: Printed labels by language and key (`printed` in `invoicechain/lexicon/<language>.yaml`).
LABELS: dict[str, dict[str, tuple[str, ...]]] = {code: LEXICON.printed(code) for code in LANGUAGES}

#: Payment terms as printed, by language and kind (net30 | skonto | receipt | eom), from the
#: lexicon's `printed_terms`.
PAYMENT_TERMS: dict[str, dict[str, tuple[str, ...]]] = {code: LEXICON.printed_terms(code) for code in LANGUAGES}


class Wording:
    """The labels one document uses: one variant per key, chosen once per document."""

    def __init__(self, language: str, rng: random.Random):
        self.language = language
        self._rng = rng
        self._chosen: dict[str, str] = {}

    def __call__(self, key: str, **values: object) -> str:
        if key not in self._chosen:
            variants = LABELS[self.language].get(key) or LABELS["en"][key]
            self._chosen[key] = self._rng.choice(variants)
        text = self._chosen[key]
        return text.format(**values) if values else text
