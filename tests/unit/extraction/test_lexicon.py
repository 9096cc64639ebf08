"""The lexicon: one set of words for the generator and the reader, in every language.

The round trip: every label the synthetic generator can print (`printed` in each language's
file) is recognised by the reader as what it labels, in every language of the lexicon. A
new language file is covered by these tests as soon as it exists; its own test rows go into
`LANGUAGE_ROWS` below.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from extraction import candidates, reconcile
from extraction.grammar import TITLE_START
from extraction.grounding import locate
from invoicechain.lexicon import LABEL_KINDS, LexiconError, languages, lexicon, load
from invoicechain.ap.payment import parse_terms
from training.synth.formats import format_date

LANGS = languages()
ROOT = Path(__file__).resolve().parents[3]


def variants(lang: str, key: str) -> list[str]:
    """The printed variants of a label key in a language, placeholders filled."""
    return [v.format(p=2, n=3, num="RE-1", date="2026-03-14", cur="EUR", po="PO-1")
            for v in lexicon().printed(lang).get(key, ())]


def cases(*keys: str) -> list:
    return [pytest.param(lang, key, v, id=f"{lang}-{key}-{v}") for lang in LANGS for key in keys
            for v in variants(lang, key)]


def test_every_language_file_loads_with_every_part():
    lex = lexicon()
    assert LANGS[0] == "en" and set(LANGS) >= {"en", "de", "fr", "nl", "es", "it"}
    for lang in LANGS:
        language = lex.languages[lang]
        assert len(language.months) == 12 and language.title_words and language.units
        assert language.printed and language.printed_terms, lang
        for kind in ("total", "due_date", "issue_date", "client_name", "payment_terms", "po_number", "invoice_id"):
            assert language.labels[kind], (lang, kind)


@pytest.mark.parametrize("lang,key,label", cases("invoice_no"))
def test_invoice_number_labels_are_read(lang, key, label):
    assert reconcile._labels_of("RE-1", f"{label} RE-1") == ["invoice_id"]


@pytest.mark.parametrize("lang,key,label", cases("customer_no"))
def test_customer_number_labels_are_read(lang, key, label):
    assert reconcile._labels_of("K-1", f"{label} K-1") == ["customer"]


@pytest.mark.parametrize("lang,key,label", cases("delivery_note"))
def test_delivery_note_labels_are_read(lang, key, label):
    assert reconcile._labels_of("LS-1", f"{label}: LS-1") == ["delivery"]


@pytest.mark.parametrize("lang,key,label", cases("vat_no"))
def test_tax_number_labels_are_read(lang, key, label):
    assert reconcile._labels_of("DE123456789", f"{label} DE123456789") == ["tax_id"]


@pytest.mark.parametrize("lang,key,label", cases("po"))
def test_po_labels_are_read(lang, key, label):
    assert candidates.labelled_text(f"{label}: PO-4711", "po_number") == ["PO-4711"]


@pytest.mark.parametrize("lang,key,label", cases("bill_to"))
def test_client_labels_are_read(lang, key, label):
    assert candidates.labelled_text(f"{label}: Globex Handel GmbH", "client_name") == ["Globex Handel GmbH"]


@pytest.mark.parametrize("lang,key,label", cases("terms"))
def test_terms_labels_are_read(lang, key, label):
    assert candidates.labelled_text(f"{label}: 30 days net", "payment_terms") == ["30 days net"]


@pytest.mark.parametrize("lang,key,label", cases("due"))
def test_due_date_labels_are_read(lang, key, label):
    assert candidates.labelled_due_dates(f"{label}: 2026-03-14") == ["2026-03-14"]


@pytest.mark.parametrize("lang,key,label", cases("date"))
def test_invoice_date_labels_are_read(lang, key, label):
    assert candidates.labelled_issue_dates(f"{label}: 2026-03-14") == ["2026-03-14"]


@pytest.mark.parametrize("lang,key,label", cases("delivery_date"))
def test_other_date_labels_are_no_due_date(lang, key, label):
    text = f"{label}: 2026-03-14"
    assert candidates.due_date_candidates(text) == [] and candidates.labelled_issue_dates(text) == []


@pytest.mark.parametrize("lang,key,label", cases("total", "amount_due"))
def test_total_labels_are_read(lang, key, label):
    assert candidates.labelled_totals(f"{label}  1.234,56") == ["1234.56", "-1234.56"]


@pytest.mark.parametrize("lang,key,label", cases("subtotal"))
def test_subtotal_labels_are_no_total(lang, key, label):
    assert candidates.labelled_totals(f"{label}  1.234,56") == []


@pytest.mark.parametrize("lang,key,label", cases("discount", "shipping"))
def test_adjustment_labels_are_read(lang, key, label):
    assert reconcile._amount_labelled(f"{label}  12,50", reconcile.Decimal("12.50"), key)


@pytest.mark.parametrize("lang", LANGS)
def test_tax_labels_are_read(lang):
    printed = lexicon().printed(lang)
    for label in {v for key, labels in (lexicon().printed("en") | printed).items() if key.startswith("tax_") for v in labels}:
        assert reconcile._amount_labelled(f"{label} 19%  12,50", reconcile.Decimal("12.50"), "tax"), label


@pytest.mark.parametrize("lang,key,label", cases("bic"))
def test_bic_labels_are_read(lang, key, label):
    assert candidates.labelled_bank_details(f"{label}: DEUTDEFF500")["bic"] == ["DEUTDEFF500"]


@pytest.mark.parametrize("lang,key,label", cases("unit"))
def test_unit_column_headers_are_read(lang, key, label):
    assert candidates.unit_header(f"Description   {label}   Qty   Price")


@pytest.mark.parametrize("lang,key,label", cases("invoice", "credit_note"))
def test_titles_never_start_a_name(lang, key, label):
    assert TITLE_START.match(f"{label} Acme Trading Ltd")


@pytest.mark.parametrize("lang", LANGS)
def test_printed_terms_are_read(lang):
    for kind, texts in lexicon().printed_terms(lang).items():
        for text in texts:
            terms = parse_terms(text)
            assert terms is not None, text
            if kind == "net30":
                assert terms.net_days == 30, text
            elif kind == "skonto":
                assert (terms.discount_pct, terms.discount_days, terms.net_days) == (2, 10, 30), text
            elif kind == "receipt":
                assert terms.on_receipt, text
            elif kind == "eom":
                assert terms.end_of_month, text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("style", ["long", "short"])
def test_written_dates_are_read_and_grounded(lang, style):
    for month in range(1, 13):
        day = date(2026, month, 14)
        printed = format_date(day, style, lang)
        text = f"Datum: {printed}\n"
        assert day.isoformat() in candidates.date_candidates(text), printed
        span = locate(day.isoformat(), "date", text)
        assert span and text[span[0]:span[1]] == printed, printed


def test_the_named_examples():
    assert candidates.labelled_totals("Montant TTC  208,30") == ["208.30", "-208.30"]
    assert candidates.labelled_totals("Offener Betrag  208,30") == ["208.30", "-208.30"]
    assert candidates.unit_header("Descrizione   U.M.   Q.tà   Prezzo")
    text = "Rechnungsdatum: 14. März 2026"
    span = locate("2026-03-14", "date", text)
    assert span and text[span[0]:span[1]] == "14. März 2026"


#: Labels real invoices print that the generator does not: the reader knows more words than
#: the generator prints (each row: field, printed label).
READER_ONLY = [
    ("due_date", "Fälligkeitstermin"), ("due_date", "zahlbar spätestens am"), ("due_date", "Date limite de paiement"),
    ("due_date", "Payable avant le"), ("due_date", "Fecha límite de pago"), ("due_date", "Uiterste betaaldatum"),
    ("issue_date", "Ausstellungsdatum"), ("issue_date", "Date d'émission"), ("issue_date", "Émise le"),
    ("issue_date", "Date issued"),
    ("vendor_name", "Rechnungsaussteller"), ("vendor_name", "Auftragnehmer"), ("vendor_name", "Prestataire"),
    ("vendor_name", "Afzender"),
    ("client_name", "Rechnungsanschrift"), ("client_name", "Auftraggeber"), ("client_name", "Destinataire"),
    ("client_name", "Facturado a"), ("client_name", "Committente"), ("client_name", "Afnemer"),
    ("po_number", "Bestell-Nr."), ("po_number", "Ihr Bestellzeichen"), ("po_number", "N° commande"),
    ("po_number", "Référence commande"), ("po_number", "Referencia del pedido"), ("po_number", "Ordernummer"),
    ("po_number", "Customer PO #"),
    ("payment_terms", "Modalités de paiement"),
]


@pytest.mark.parametrize("field,label", READER_ONLY, ids=lambda v: v)
def test_labels_of_real_invoices_are_read(field, label):
    if field == "due_date":
        assert candidates.labelled_due_dates(f"{label}: 2026-03-14") == ["2026-03-14"]
    elif field == "issue_date":
        assert candidates.labelled_issue_dates(f"{label}: 2026-03-14") == ["2026-03-14"]
    else:
        value = "PO-4711" if field == "po_number" else "Globex Handel GmbH"
        assert candidates.labelled_text(f"{label}: {value}", field) == [value]
        assert candidates.labelled_text(f"{label}\n{value}", field) == [value]


def test_imposta_labels_a_tax_amount():
    assert reconcile._amount_labelled("Imposta 22%  12,50", reconcile.Decimal("12.50"), "tax")


def test_a_new_language_is_one_file(tmp_path):
    """A folder with one more file: its words are read with every other language's."""
    src = Path(lexicon().languages["en"].code and __import__("invoicechain.lexicon", fromlist=["HERE"]).HERE)
    for f in src.glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "pt.yaml").write_text(
        "language: pt\nname: Portuguese\nlabels:\n  total: ['total\\s*a\\s*pagar']\n  due_date: ['vencimento']\n"
        "title_words: [FATURA]\nmonths: [janeiro, fevereiro, março, abril, maio, junho, julho, agosto, setembro,"
        " outubro, novembro, dezembro]\ndate_joiners: [de]\nname_joiners: [e]\n", encoding="utf-8")
    lex = load(tmp_path)
    assert list(lex.languages)[-1] == "pt" and "FATURA" in lex.title_words
    assert re.search(lex.label("due_date"), "Vencimento", re.I) and lex.month_names["março"] == 3
    assert lex.words("date_joiners") == ("of", "de") and lex.words("name_joiners")[-2:] == ("e", "&")
    assert re.fullmatch(lex.alternation("name_joiners"), "&") and re.fullmatch(lex.alternation("ordinals"), "nd")


def test_a_broken_file_says_what_is_wrong(tmp_path):
    (tmp_path / "en.yaml").write_text("labels:\n  total: ['(unclosed']\nmonths: [a,b,c,d,e,f,g,h,i,j,k,l]\n")
    with pytest.raises(LexiconError, match="no regular expression"):
        load(tmp_path)
    (tmp_path / "en.yaml").write_text("labels:\n  totl: [total]\nmonths: [a,b,c,d,e,f,g,h,i,j,k,l]\n")
    with pytest.raises(LexiconError, match="unknown label kinds"):
        load(tmp_path)


# --- the lexicon is the only home of label words --------------------------------------------

#: Packages and modules that read or print a document's words: they build their patterns and
#: word lists from the lexicon, never from words of their own.
READERS = ["extraction", "models", "invoicechain", "ingestion", "training/synth", "training/attention.py"]
#: Regular expressions may alternate these (file extensions, no words of a language).
NOT_WORDS = {"pdf", "txt", "json", "xml"}
#: A string a regular expression is made of: an argument of `re.*`, or regex syntax in it.
_REGEX_SYNTAX = re.compile(r"\(\?|\\[sdbwSDBW]|\[\^")
#: An alternation of two words in a regular expression (`(?:st|nd)`, `and|of`).
_WORD_ALTERNATION = re.compile(r"(?<![\\\w])([^\W\d_]{2,})\|(?=([^\W\d_]{2,})(?![\w]))")


def _reader_files() -> list[Path]:
    files = []
    for name in READERS:
        path = ROOT / name
        files += [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))
    return files


def _label_words() -> set[str]:
    """Every word of five letters or more that a lexicon label, title, month, terms phrase or
    label word holds."""
    lex = lexicon()
    texts = [f for kind in LABEL_KINDS for f in lex.fragments(kind)] + list(lex.words("label_words"))
    for language in lex.languages.values():
        texts += list(language.title_words) + list(language.months)
        texts += [w for words in language.payment_terms.values() for w in words]
    words = set()
    for text in texts:
        words.update(w.lower() for w in re.findall(r"[^\W\d_]{5,}", re.sub(r"\\[a-zA-Z]", " ", text)))
    return words


def _strings(tree) -> list:
    """The string constants of a module that are not docstrings (prose)."""
    import ast

    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs]


def _many(alternatives: list[str], words: set[str]) -> list[str]:
    """The label words of a list of alternatives, when they make a word list: three
    alternatives or more with a label word, or two that are more than half of them. An
    alternative of more than three words is prose (a sentence), no label."""
    with_words = [hits for a in alternatives if len(a.split()) <= 3
                  and (hits := {w.lower() for w in re.findall(r"[^\W\d_]{5,}", a)} & words)]
    if len(with_words) >= 3 or (len(with_words) == 2 and 2 * len(with_words) > len(alternatives)):
        return sorted(set().union(*with_words))
    return []


def _suspects(source: str, words: set[str]) -> list[tuple[int, list[str]]]:
    """Label words held in code as a word list: an alternation (`a|b|c`) or a collection of
    strings (`("INVOICE", "RECHNUNG", ...)`) most of whose alternatives are label words. Names
    (`client_name`), prose and docstrings are none."""
    import ast

    tree = ast.parse(source)
    strings = _strings(tree)
    ids = {id(node) for node in strings}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            elts = node.values if isinstance(node, ast.Dict) else node.elts
            elements = [e.value for e in elts if id(e) in ids and not re.fullmatch(r"[a-z0-9_]*", e.value)]
            if len(elements) >= 3 and (hits := _many(elements, words)):
                found.append((node.lineno, hits))
    for node in strings:
        if "|" in node.value and (hits := _many(node.value.split("|"), words)):
            found.append((node.lineno, hits))
    return found


def _regex_word_alternations(source: str) -> list[tuple[int, str]]:
    """Regular expressions in code that alternate words (`(?:st|nd|rd|th)`, `(?:&|and|of)`):
    the words of a language belong in the lexicon, whatever their length."""
    import ast

    tree = ast.parse(source)
    in_calls = {id(node.args[0]) for node in ast.walk(tree)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"}
    found = []
    for node in _strings(tree):
        if id(node) in in_calls or _REGEX_SYNTAX.search(node.value):
            pairs = {w.lower() for m in _WORD_ALTERNATION.finditer(node.value) for w in m.groups()}
            if pairs - NOT_WORDS:
                found.append((node.lineno, node.value))
    return found


@pytest.mark.parametrize("path", _reader_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_label_word_lists_outside_the_lexicon(path):
    source = path.read_text(encoding="utf-8")
    found = _suspects(source, _label_words())
    assert not found, f"{path}: label words in code (move them to invoicechain/lexicon/): {found}"
    found = _regex_word_alternations(source)
    assert not found, f"{path}: words alternated in a regular expression (move them to invoicechain/lexicon/): {found}"


def test_the_word_list_check_finds_a_word_list():
    """The checks above see what they look for: the reader's patterns as they were written
    before the lexicon, and not names, prose, product words or file names."""
    words = _label_words()
    assert _suspects('_DUE = re.compile(r"(?i)due\\s*date|f\u00e4llig|zahlbar\\s*bis|scadenza")', words)
    assert _suspects('TITLES = ("INVOICE", "RECHNUNG", "FATTURA")', words)
    assert _suspects('LABELS = {"en": "Invoice", "de": "Rechnung", "fr": "Facture"}', words)
    assert _suspects('LABELS = ("Invoice", "Inv", "Total", "Subtotal", "Amount", "Due", "PO")', words)
    assert _suspects('P = r"(?<![^\\W_])(?:invoice|rechnung|facture|factura|fattura|factuur)(?![^\\W_])"', words)
    assert not _suspects('FIELDS = ("client_name", "payment_terms", "po_number")', words)
    assert not _suspects('TEXT = {1: "the invoice total is wrong", 2: "the vendor has a new account", '
                         '3: "a discount was taken twice"}', words)
    assert not _suspects('def f():\n    """Totals | amounts | invoices | payments."""', words)
    assert not _suspects('_i("Contract review {}", "supply agreement|lease|NDA")', words)
    assert not _suspects('NAMES = ("factur-x.xml", "zugferd-invoice.xml", "xrechnung.xml", "order-x.xml")', words)
    assert _regex_word_alternations('re.compile(r"[0-9]{1,2}(?:st|nd|rd|th)?")')
    assert _regex_word_alternations('re.match(r"(?i)(?:&|and|of)\\s", cell)')
    assert _regex_word_alternations('ORD = r"(?:st|nd|rd|th)?\\s*"')
    assert not _regex_word_alternations('re.compile(r"^inv-\\d{5,}\\.(pdf|txt|json)$")')
    assert not _regex_word_alternations('VARIANTS = "per week|per month"')
    assert not _regex_word_alternations('re.compile(r"[A-Z]{3}|[0-9]+")')
