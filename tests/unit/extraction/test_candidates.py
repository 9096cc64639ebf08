"""Grounded decoding: the values a document offers, and the per-document grammar built on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extraction.candidates import (
    currency_candidates,
    date_candidates,
    cell_prefixes,
    date_order,
    due_date_candidates,
    iban_candidates,
    labelled_bank_details,
    labelled_due_dates,
    labelled_issue_dates,
    labelled_text,
    labelled_totals,
    legal_names,
    number_candidates,
    text_chunks,
)
from extraction.grammar import document_grammar
from models.prompts import dump_output
from extraction.schemas import all_null_document, invoice_json_schema

INVOICE = """Logan-Schmitt Inc.
Hauptstraße 5, 10115 Berlin
Rechnung Nr. RE-2026-0042        Datum: 14. März 2026
Fällig: 13.04.2026
Kunde: de Swart B.V.
27" Monitor   2   1.234,50   2.469,00
Summe netto 3.333,85
MwSt 19% 633,43
Gesamt EUR 3.967,28
"""


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Total 1,234.56", "1234.56"),
        ("Gesamt 1.234,56", "1234.56"),
        ("Summe 3.333,85", "3333.85"),
        ("Menge 7,5 kg", "7.5"),
        ("1 234,50 EUR", "1234.50"),
        ("CHF 12'500.00", "12500.00"),
        ("Rabatt -50.00", "-50.00"),
        ("Discount 50.00", "-50.00"),  # a discount may be answered with either sign
    ],
)
def test_numbers_are_read_in_every_way_they_can_be_meant(text, expected):
    assert expected in number_candidates(text)


def test_a_number_is_never_cut_or_invented():
    values = number_candidates("Summe 3.333,85 und 80 Stück")
    assert "3.3333" not in values and "80040" not in values and "33" not in values
    assert {"3333.85", "80", "-80"} <= set(values)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Datum: 12/04/2024", {"2024-04-12", "2024-12-04"}),
        ("Fällig: 13.04.2026", {"2026-04-13"}),
        ("2026-03-14", {"2026-03-14"}),
        ("Datum: 14. März 2026", {"2026-03-14"}),
        ("Date: March 14th, 2026", {"2026-03-14"}),
        ("Fecha de factura: 10 de octubre de 2026", {"2026-10-10"}),
        ("14-MAR-18", {"2018-03-14"}),
    ],
)
def test_dates_are_read_in_every_order_and_language(text, expected):
    assert expected <= set(date_candidates(text))


def test_a_document_that_shows_its_date_order_is_read_in_that_order_only():
    assert date_order("Date: 06/05/2026  Due: 07/05/2026") is None
    assert set(date_candidates("Date: 06/05/2026  Due: 07/05/2026")) == {
        "2026-05-06", "2026-06-05", "2026-05-07", "2026-07-05"}
    day_first = "Date: 06/05/2026  Due: 07/05/2026  Delivered: 28/04/2026"
    assert date_order(day_first) == "dmy"
    assert set(date_candidates(day_first)) == {"2026-05-06", "2026-05-07", "2026-04-28"}
    month_first = "Date: 06/05/2026  Shipped: 04/28/2026"
    assert set(date_candidates(month_first)) == {"2026-06-05", "2026-04-28"}
    # both orders shown (a stamp in another hand): every reading stays
    assert date_order("28/04/2026 and 04/28/2026") is None
    # no date shows it: the document's place does (United States: month first; elsewhere: day first)
    us = "Ridge Supply Inc.\n1200 Main St, Austin, TX 78701\nDate: 06/05/2026\nTotal $ 120.00\n"
    assert date_order(us) == "mdy" and date_candidates(us) == ["2026-06-05"]
    for elsewhere in ("Date: 06/05/2026\nTotal EUR 120,00\n", "Date: 06/05/2026\nTotal £120.00\n",
                      "Date: 06/05/2026\nTOTAL RM 12.00\n"):
        assert date_order(elsewhere) == "dmy" and date_candidates(elsewhere) == ["2026-05-06"], elsewhere
    assert date_order(us + "IBAN: DE89 3704 0044 0532 0130 00\n") is None  # signs of both: no order


def test_a_labelled_due_date_is_never_left_out_nor_taken_from_another_date(tokenizer):
    assert labelled_due_dates(INVOICE) == ["2026-04-13"]
    text = INVOICE.replace("Fällig: 13.04.2026\n", "") + "Ship date:  17 September 2026\nPayment due:  5 October 2026\n"
    assert labelled_due_dates(text) == ["2026-10-05"]
    assert labelled_due_dates("Fällig am: 07/10/2026\nTotal due  $512.35") == ["2026-10-07", "2026-07-10"]
    grammar = document_grammar(invoice_json_schema(), text)
    items = [{"description": '27" Monitor', "quantity": "2", "unit_price": "1234.50", "amount": "2469.00"}]
    rest = {"client_name": "de Swart B.V.", "line_items": items}
    assert _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, due_date="2026-10-05", **rest))
    for wrong in (None, "2026-09-17"):
        assert not _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, due_date=wrong, **rest))
    assert not _accepts(tokenizer, grammar, _answer(invoice_date="2026-09-17", due_date="2026-10-05", **rest))
    # the date after the invoice-date label (`Datum:`) is the invoice date, never left out
    assert labelled_issue_dates(text) == [ISSUED]
    assert not _accepts(tokenizer, grammar, _answer(invoice_date=None, due_date="2026-10-05", **rest))


def test_an_unlabelled_due_date_is_no_date_printed_as_another_date(tokenizer):
    text = ("Invoice date:  10 September 2026\nShip date:  8 September 2026\nDelivered:  2026-09-09\n"
            "Terms:  Payable on receipt\nStamp 12/09/2026 received\n")
    assert labelled_issue_dates(text) == ["2026-09-10"]
    assert due_date_candidates(text) == ["2026-09-12", "2026-12-09"]
    grammar = document_grammar(invoice_json_schema(), text)
    right = _answer(invoice_date="2026-09-10", payment_terms="Payable on receipt")
    assert _accepts(tokenizer, grammar, right)
    for wrong in ({"due_date": "2026-09-10"}, {"due_date": "2026-09-08"}, {"due_date": "2026-09-09"},
                  {"invoice_date": "2026-09-08"}):
        assert not _accepts(tokenizer, grammar, {**right, **wrong}), wrong
    assert _accepts(tokenizer, grammar, {**right, "due_date": "2026-09-12"})


def test_a_name_never_starts_with_a_title_or_stamp_word(tokenizer):
    text = ("COPY\nANDERSSON OFFICE SUPPLIES HB\nGUTSCHRIFT\nAgnes-Gertz-Weg 1-8\n16647 Gardelegen\nKOPIE\n"
            "Bill to:\nGutschrift\nKnight-Jones Ltd\n")
    grammar = document_grammar(invoice_json_schema(), text)
    right = _answer(vendor_name="ANDERSSON OFFICE SUPPLIES HB", vendor_address="Agnes-Gertz-Weg 1-8, 16647 Gardelegen",
                    client_name="Knight-Jones Ltd")
    assert _accepts(tokenizer, grammar, right)
    # the vendor a name in a legal form (the header prints one), the client a labelled cell: neither a title word
    for wrong in ({"vendor_name": "COPY ANDERSSON OFFICE SUPPLIES HB"}, {"vendor_name": "KOPIE"},
                  {"client_name": "Gutschrift"}):
        assert not _accepts(tokenizer, grammar, {**right, **wrong}), wrong
    assert _accepts(tokenizer, grammar, {**right, "vendor_name": "OFFICE SUPPLIES HB"})  # a name in its legal form
    # a total is never zero
    text = "FIVE STAR CASH & CARRY\nZ = 0% 4.00\nTOTAL 4.00\nCHANGE 0.00\n"
    grammar = document_grammar(invoice_json_schema(), text)
    right = _answer(vendor_name="FIVE STAR CASH & CARRY", total_amount="4.00")
    assert _accepts(tokenizer, grammar, right)
    assert not _accepts(tokenizer, grammar, {**right, "total_amount": "0.00"})
    assert _accepts(tokenizer, grammar, {**right, "tax": "0.00"})


def test_a_vendor_whose_header_prints_a_legal_form_ends_in_one(tokenizer):
    text = "ILLEGAL TEO HENG STATIONERY & BOOKS SDN BHD\n(001451637-M)\nNO. 53, JALAN BESAR\nTOTAL RM 18.00\n"
    assert legal_names(text) == ["ILLEGAL TEO HENG STATIONERY & BOOKS SDN BHD", "TEO HENG STATIONERY & BOOKS SDN BHD",
                                 "HENG STATIONERY & BOOKS SDN BHD", "STATIONERY & BOOKS SDN BHD", "& BOOKS SDN BHD",
                                 "BOOKS SDN BHD"]
    assert legal_names("Käster\nAgnes-Gertz-Weg 1-8\n16647 Gardelegen\n") == []
    assert "AIK HUAT HARDWARE ENTERPRISE (SETIA ALAM) SDN BHD" in legal_names(
        "AIK HUAT HARDWARE\nENTERPRISE (SETIA\nALAM) SDN BHD\n822737-X\n")  # over three lines
    assert legal_names("ACME\n\nHOLDINGS GMBH\n") == ["ACME HOLDINGS GMBH", "HOLDINGS GMBH"]  # blank lines skipped
    grammar = document_grammar(invoice_json_schema(), text)
    right = _answer(vendor_name="TEO HENG STATIONERY & BOOKS SDN BHD", total_amount="18.00")
    assert _accepts(tokenizer, grammar, right)
    assert _accepts(tokenizer, grammar, {**right, "vendor_name": "ILLEGAL TEO HENG STATIONERY & BOOKS SDN BHD"})
    for wrong in ("TEO HENG STATIONERY", "SDN BHD", "NO. 53, JALAN BESAR"):
        assert not _accepts(tokenizer, grammar, {**right, "vendor_name": wrong}), wrong


def test_labelled_text_is_read_after_its_label_on_its_line_or_below():
    header = ("Rechnungsempfänger:  Lieferanschrift:\nEvans Group  Evans Group\n77 Reece Manors  77 Reece Manors\n"
              "Zahlungsbedingungen: Zahlbar innerhalb 30 Tagen netto\nKundennummer:  K14053\n")
    assert labelled_text(header, "client_name") == ["Evans Group", "77 Reece Manors"]  # not another label's cell
    assert labelled_text(header, "payment_terms") == ["Zahlbar innerhalb 30 Tagen netto"]
    # a label must start its cell and end with a colon or its line: `Customer no.:` is none
    assert labelled_text("Customer no.:  C-78519\nTerms and conditions apply", "client_name") == []
    assert labelled_text("Customer no.:  C-78519\nTerms and conditions apply", "payment_terms") == []
    assert labelled_text("Bill to\nTel. 555 0100\nStichting Veltman BV\n", "client_name") == [
        "Tel. 555 0100", "Stichting Veltman BV"]
    # two columns with the same content (`Billed to:` and `Ship to:`) read as one
    assert labelled_text("Billed to:  Ship to:\nKnight-Jones Ltd Knight-Jones Ltd\n", "client_name") == ["Knight-Jones Ltd"]
    # a PO number after its label holds a digit
    assert labelled_text("PO #:  MCP-7071122\nYour order no.:\nsee above\n", "po_number") == ["MCP-7071122"]
    assert labelled_text("Pos.  Artikel  Menge\nBestellnummer:  4502373840  Seite 1", "po_number") == ["4502373840"]


def test_a_labelled_po_number_holds_a_digit_and_is_never_left_out(tokenizer):
    text = INVOICE.replace("Kunde: de Swart B.V.\n", "Kunde: de Swart B.V.\nIhre Bestellung:  PO-55817  Seite 1\n")
    grammar = document_grammar(invoice_json_schema(), text)
    item = {"description": '27" Monitor', "quantity": "2", "unit_price": "1234.50", "amount": "2469.00"}
    right = _answer(invoice_date=ISSUED, invoice_id="RE-2026-0042", client_name="de Swart B.V.", po_number="PO-55817",
                    due_date="2026-04-13", line_items=[item])
    assert _accepts(tokenizer, grammar, right)
    for wrong in ({"po_number": None}, {"po_number": "PO"}, {"po_number": "RE-2026-0042"}):
        assert not _accepts(tokenizer, grammar, {**right, **wrong}), wrong
    unlabelled = document_grammar(invoice_json_schema(), INVOICE)
    base = _answer(invoice_date=ISSUED, invoice_id="RE-2026-0042", client_name="de Swart B.V.", due_date="2026-04-13", line_items=[item])
    assert _accepts(tokenizer, unlabelled, base)
    assert _accepts(tokenizer, unlabelled, {**base, "po_number": "RE-2026-0042"})  # no PO label: any printed piece
    # (an unlabelled number without a digit is dropped by reconciliation: `reconcile_shapes`)


def test_a_labelled_client_or_terms_is_a_piece_of_the_text_after_the_label(tokenizer):
    text = INVOICE.replace("Kunde: de Swart B.V.\n", "Rechnung an:\nTel. 030 1234\nde Swart B.V.\nTerms:  Net 30 days  Seite 1\n")
    text = text.replace("Rechnung an:", "Kunde:")
    grammar = document_grammar(invoice_json_schema(), text)
    item = {"description": '27" Monitor', "quantity": "2", "unit_price": "1234.50", "amount": "2469.00"}
    right = _answer(invoice_date=ISSUED, client_name="de Swart B.V.", payment_terms="Net 30 days", due_date="2026-04-13", line_items=[item])
    assert _accepts(tokenizer, grammar, right)
    assert _accepts(tokenizer, grammar, {**right, "payment_terms": "Net 30"})
    for wrong in ({"client_name": None}, {"payment_terms": None}, {"client_name": "Logan-Schmitt Inc."},
                  {"payment_terms": "Net 30 days Seite 1"}, {"client_name": "de Swart"}):
        assert not _accepts(tokenizer, grammar, {**right, **wrong}), wrong
    # a labelled client is a whole cell, or the cell up to a comma or bracket: never cut short
    assert cell_prefixes("Bolzmann Kitzmann AG & Co. OHG (K-1402), Abt. 3") == [
        "Bolzmann Kitzmann AG & Co. OHG (K-1402), Abt. 3", "Bolzmann Kitzmann AG & Co. OHG", "Bolzmann Kitzmann AG & Co. OHG (K-1402)"]


def test_a_labelled_total_is_one_printed_after_a_totals_label(tokenizer):
    text = ("Net amount  777.18\nPayment details  Discount 3%  -23.32\nBank: BMO  Shipping & handling  41.99\n"
            "GST 0%  0.00\nGrand total  CAD 795.85\n")
    assert set(labelled_totals(text)) == {"795.85", "-795.85"}
    assert labelled_totals("Summe netto  574,20\nMwSt. 19 %  115,61\nSumme brutto  724,10 EUR\n") == ["724.10", "-724.10"]
    receipt = ("SUB-TOTAL (EX)  16.98\nTOTAL TAX  1.02\nTOTAL RM INCL OF GST  18.00\nCASH  20.00\nCHANGE  2.00\n"
               "(TOTAL INCLUDED GST @ 6% : 1.02)\nTOTAL SV : 10.56\n")
    assert labelled_totals(receipt) == ["18.00", "-18.00"]
    assert labelled_totals("Total HT  2 395,80\nNet à payer  2 276,01 EUR\n") == ["2276.01", "-2276.01"]
    grammar = document_grammar(invoice_json_schema(), text)
    right = _answer(subtotal="777.18", discount="23.32", shipping="41.99", tax="0.00", total_amount="795.85")
    assert _accepts(tokenizer, grammar, right)
    assert not _accepts(tokenizer, grammar, {**right, "total_amount": "777.18"})


def test_receipt_totals_printed_below_their_labels():
    # a lone colon between the label and its amount
    receipt = "SUB-TOTAL (EX)\n:\n26.00\nTOTAL TAX\n:\n1.56\nTOTAL\n:\n27.55\nCASH\n:\n50.00\n"
    assert labelled_totals(receipt) == ["27.55", "-27.55"]
    # a tax summary's row (`TOTAL :` with the net and the tax below) is no total beside a real one
    summary = receipt + "GST SUMMARY\nTOTAL :\n26.00\n1.56\n"
    assert labelled_totals(summary) == ["27.55", "-27.55"]
    # ... and only where nothing else is labelled a total
    assert labelled_totals("SR @ 6%\nTOTAL :\n26.00\n1.56\n") == ["26.00", "-26.00"]
    # labels read column first, then their amounts in the same order
    stacked = ("TOTAL SALES (EXCLUDING GST) :\nDISCOUNT :\nTOTAL GST :\nROUNDING :\n"
               "TOTAL SALES (INCLUSIVE OF GST)\n94.34\n0.00\n5.66\n0.00\n100.00\nTHANK YOU\n")
    assert labelled_totals(stacked) == ["100.00", "-100.00"]
    # a count of amounts that differs from the labels' leaves the pairing unknown
    assert labelled_totals(stacked.replace("100.00\n", "100.00\n100.00\n")) == []
    # two column heads above two figures are no stacked block
    assert labelled_totals("TOTAL\nAMOUNT\n83.93\n83.93\nTAX\n") == []


def test_impossible_dates_are_not_candidates():
    assert date_candidates("31/02/2026 and 99.99.9999") == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("TOTAL AUD 92.77", {"AUD"}),
        ("TOTAL 23.580,03 kr", {"SEK", "NOK", "DKK", "ISK"}),
        ("Total: $ 12.00", {"USD", "CAD", "AUD"}),
        ("Gesamt 12,00 €", {"EUR"}),
        ("TOTAL RM 9.90", {"MYR"}),
    ],
)
def test_currencies_are_the_codes_printed_or_signed(text, expected):
    assert expected <= set(currency_candidates(text))


def test_words_that_are_not_currencies_are_not_candidates():
    assert currency_candidates("VAT ABN GST INVOICE kroner Krone") == []


def test_text_chunks_are_whole_words_escaped_once():
    chunks = text_chunks('27" monitor\n\n  \\ end, Logan-Schmitt Inc.:x')
    assert chunks[:3] == ['27\\"', " ", "monitor"]
    assert "Inc." in chunks and "," in chunks and ":" in chunks
    assert "".join(chunks) == json.dumps('27" monitor \\ end, Logan-Schmitt Inc.:x')[1:-1]


def _matcher(tokenizer, grammar_text: str):
    import llguidance
    import llguidance.hf

    grammar = llguidance.LLMatcher.grammar_from_lark(grammar_text)
    matcher = llguidance.LLMatcher(llguidance.hf.from_tokenizer(tokenizer), grammar)
    assert not matcher.is_error(), matcher.get_error()
    return matcher


def _accepts(tokenizer, grammar_text: str, answer: dict) -> bool:
    matcher = _matcher(tokenizer, grammar_text)
    ids = tokenizer(dump_output(answer), add_special_tokens=False)["input_ids"]
    return bool(matcher.consume_tokens(ids)) and matcher.is_accepting()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


#: The date INVOICE prints after its invoice-date label (`Datum:`).
ISSUED = "2026-03-14"


def _answer(**fields) -> dict:
    answer = all_null_document(invoice_json_schema())
    answer.update(fields)
    return answer


def test_grammar_admits_what_the_document_says_and_nothing_else(tokenizer):
    grammar = document_grammar(invoice_json_schema(), INVOICE)
    item = {"description": '27" Monitor', "quantity": "2", "unit_price": "1234.50", "amount": "2469.00"}
    right = _answer(
        invoice_id="RE-2026-0042", vendor_name="Logan-Schmitt Inc.", client_name="de Swart B.V.",
        vendor_address="Hauptstraße 5, 10115 Berlin", invoice_date="2026-03-14", due_date="2026-04-13",
        currency="EUR", subtotal="3333.85", tax="633.43", total_amount="3967.28", line_items=[item],
    )
    assert _accepts(tokenizer, grammar, right)
    # every other field may be null, but for the due date and the client printed after their labels
    assert _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, due_date="2026-04-13", client_name="de Swart B.V.", line_items=[item]))
    assert not _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, client_name="de Swart B.V.", line_items=[item]))
    assert not _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, due_date="2026-04-13", line_items=[item]))
    for wrong in (
        {"client_name": "De Swart B.V."},  # not as printed
        {"vendor_name": "Log-2888135"},  # not in the text
        {"vendor_name": "Logan-Schmitt Inc"},  # a word cut short
        {"client_name": "de Sw"},
        {"client_name": ""},  # an empty value: null is how an unstated field is written
        {"invoice_id": ""},
        {"vendor_name": "Logan-Schmitt Inc. "},  # a space at either end
        {"vendor_name": " Logan-Schmitt Inc."},
        {"vendor_address": ""},
        {"subtotal": "3.3333"},  # a mangled amount
        {"total_amount": "3967.29"},  # an amount the document does not print
        {"invoice_date": "2026-03-15"},  # an invented date
        {"currency": "USD"},  # not printed, no sign for it
        {"line_items": [{**item, "quantity": "80040"}]},
    ):
        assert not _accepts(tokenizer, grammar, {**right, **wrong}), wrong
    # An address is pieces of the text joined by commas (or as printed, lines joined by a space).
    assert _accepts(tokenizer, grammar, {**right, "vendor_address": "Hauptstraße 5"})
    for wrong in ("anything, really", "Hauptstraße 5, 10115 Berlin, Germany", "Hauptstr. 5, 10115 Berlin"):
        assert not _accepts(tokenizer, grammar, {**right, "vendor_address": wrong}), wrong


def test_a_document_without_numbers_or_dates_only_allows_null_there(tokenizer):
    grammar = document_grammar(invoice_json_schema(), "no figures here at all")
    assert _accepts(tokenizer, grammar, _answer(vendor_name="figures"))
    assert not _accepts(tokenizer, grammar, _answer(total_amount="1.00"))
    assert not _accepts(tokenizer, grammar, _answer(invoice_date="2026-01-01"))
    assert _accepts(tokenizer, grammar, all_null_document(invoice_json_schema()))


def test_every_gold_answer_of_a_synthetic_corpus_is_admitted(tokenizer, tmp_path):
    from training.synth.corpus import generate_corpus

    summary = generate_corpus(24, 515, tmp_path, processes=1, toolchain=False)
    records = [json.loads(line) for line in Path(summary.extract_jsonl).read_text().splitlines()]
    assert len(records) == 24
    for r in records:
        gold = r["output"] if isinstance(r["output"], dict) else json.loads(r["output"])
        assert _accepts(tokenizer, document_grammar(invoice_json_schema(), r["input"]), gold), r["input"][:200]


def test_ibans_are_the_ones_printed_written_without_spaces():
    printed = "IBAN: IT28 I750 0068 1221 0232 4933 366  TOTAL EUR 2.742,39\nBIC: ZSZZITILXXX"
    # Only the reading that passes the ISO 13616 check, not the ones that stop early or run on.
    assert iban_candidates(printed) == ["IT28I7500068122102324933366"]
    assert iban_candidates("IBAN DE89370400440532013000 BIC COBADEFFXXX") == ["DE89370400440532013000"]
    # A misprinted IBAN (check fails) can still be copied as printed.
    assert "DE89370400440532013001" in iban_candidates("IBAN: DE89 3704 0044 0532 0130 01")
    assert iban_candidates("Invoice INV-2026-0042, total 12.00") == []


def test_iban_field_only_admits_a_printed_iban(tokenizer):
    text = INVOICE + "IBAN: DE89 3704 0044 0532 0130 00\n"
    grammar = document_grammar(invoice_json_schema(), text)
    bank = {"iban": "DE89370400440532013000", "bic": None, "account_number": None, "routing_number": None}
    items = [{"description": '27" Monitor', "quantity": "2", "unit_price": "1234.50", "amount": "2469.00"}]
    rest = {"due_date": "2026-04-13", "client_name": "de Swart B.V.", "line_items": items}
    assert _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, bank=bank, **rest))
    # a digit dropped
    assert not _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, bank={**bank, "iban": "DE8937040044053201300"}, **rest))

    # a valid IBAN printed under its label is never left out
    assert not _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, bank={**bank, "iban": None}, **rest))
    assert not _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, bank=None, **rest))


US_BANK = """Bank: JPMorgan Chase Bank  Sales Tax 6.25%  12.29
SWIFT/BIC: FJLMUSG7  Total  USD 208.99
ABA: 321737997
Acct #: 923659633741
Account no.:  K93341
"""


def test_labelled_bank_details_are_found_by_label_and_shape():
    assert labelled_bank_details(US_BANK) == {"bic": ["FJLMUSG7"], "routing_number": ["321737997"]}
    uk = "IBAN: GB74 REWE 5210 2300 1067 27 · SWIFT: REWEGBCHXXX · Sort code: 52-10-23 · Account number: 00106727"
    assert labelled_bank_details(uk) == {"iban": ["GB74REWE52102300106727"], "bic": ["REWEGBCHXXX"],
                                         "routing_number": ["52-10-23"]}
    assert labelled_bank_details("BSB: 860-765\nTransit/Institution: 12345-003") == {
        "routing_number": ["12345-003", "860-765"]}
    # an ABA number whose check digit fails, a BIC-shaped word without its label, no label at all
    assert labelled_bank_details("Routing no.: 321737998\nRECHNUNG DEUTSCHE\nPhone 52-10-23") == {}


def test_labelled_bank_details_are_never_left_out(tokenizer):
    grammar = document_grammar(invoice_json_schema(), INVOICE + US_BANK)
    bank = {"iban": None, "bic": "FJLMUSG7", "account_number": "923659633741", "routing_number": "321737997"}
    items = [{"description": '27" Monitor', "quantity": "2", "unit_price": "1234.50", "amount": "2469.00"}]
    rest = {"due_date": "2026-04-13", "client_name": "de Swart B.V.", "line_items": items}
    assert _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, bank=bank, **rest))
    assert _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, bank={**bank, "account_number": None}, **rest))
    for wrong in (None, {**bank, "bic": None}, {**bank, "routing_number": None},
                  {**bank, "bic": "JPMorgan Chase Bank"}, {**bank, "routing_number": "923659633741"}):
        assert not _accepts(tokenizer, grammar, _answer(invoice_date=ISSUED, bank=wrong, **rest)), wrong


TABLE = """Rechnung RE-1
Article  Qty  Price  Total
HDMI cable 2m  5  17,76  88,80
HDMI cable 5m  8  12,50  100,00
Network switch 8-port  2  71,00  142,00
Net amount 330,80
"""

#: Rows that do not balance: a line discount, a lump sum.
LOOSE_TABLE = """Rechnung RE-2
Article  Qty  Price  Total
HDMI cable 2m  5  17,76  less 10%  79,92
Installation  lump sum  120,00
Net amount 199,92
"""

RECEIPT = """SHOP
MILK 1L
4 x 2.54   10.16
COFFEE BEANS 500G
1 x 16.36   16.36
TOTAL 26.52
"""


def _item(description, quantity, unit_price, amount):
    return {"description": description, "quantity": quantity, "unit_price": unit_price, "amount": amount}


def test_line_items_are_read_row_by_row_down_the_page(tokenizer):
    grammar = document_grammar(invoice_json_schema(), LOOSE_TABLE)
    rows = [_item("HDMI cable 2m", "5", "17.76", "79.92"), _item("Installation", None, None, "120.00")]
    assert _accepts(tokenizer, grammar, _answer(line_items=rows))
    assert _accepts(tokenizer, grammar, _answer(line_items=[rows[1]]))  # which rows: the model's choice
    assert _accepts(tokenizer, grammar, _answer(line_items=[]))
    for wrong in (
        [_item("Installation", "5", "17.76", "79.92")],  # one row's description, another's numbers
        [rows[0], rows[0]],  # a row read twice
        [rows[1], rows[0]],  # out of order
        [_item("HDMI cable 2m less", "5", "17.76", "79.92"), _item("Installation lump", None, None, "120.00")],
        [_item("less 10% Installation", None, None, "120.00")],  # text across two rows
    ):
        assert not _accepts(tokenizer, grammar, _answer(line_items=wrong)), wrong


def test_a_table_that_balances_is_read_whole_and_as_it_balances(tokenizer):
    grammar = document_grammar(invoice_json_schema(), TABLE)
    rows = [_item("HDMI cable 2m", "5", "17.76", "88.80"), _item("HDMI cable 5m", "8", "12.50", "100.00"),
            _item("Network switch 8-port", "2", "71.00", "142.00")]
    assert _accepts(tokenizer, grammar, _answer(line_items=rows))
    for wrong in (
        [rows[0], rows[1], {**rows[2], "description": "Network switch"}],  # a row's words are its description
        [rows[0], rows[1], {**rows[2], "description": "switch 8-port"}],
        [rows[0], rows[2]],  # a row that balances left out
        [],
        rows + [_item("Net amount", "330.80", "330.80", "330.80")],  # after the table
        [rows[0], _item("Article", None, None, None), *rows[1:]],  # a row that does not balance
        [rows[0], {**rows[1], "description": None}, rows[2]],  # a balanced row has words
        [rows[0], {**rows[1], "quantity": "12.50", "unit_price": "8"}, rows[2]],  # columns swapped
        [rows[0], {**rows[1], "amount": "12.50"}, rows[2]],  # a reading that does not balance
        [rows[0], {**rows[1], "quantity": None}, rows[2]],
        [rows[0], rows[1], {**rows[2], "quantity": "8"}],  # a number glued to a word (`8-port`)
    ):
        assert not _accepts(tokenizer, grammar, _answer(line_items=wrong)), wrong


#: Row numbers, item codes and a unit column around the descriptions.
CODED_TABLE = """Invoice INV-9
#  Item no.  Description  Unit  Qty  Unit price  Amount
1  ART-28928  Extension lead 3-way 1.5m  pc  4  14.90  59.60
2  Consulting services senior consultant  h  7  187.30  1,311.10
3  5727  Photo shoot full day  1  958.14  958.14
Total  2,328.84
"""


def test_a_row_description_is_its_words_less_row_number_item_code_and_unit(tokenizer):
    grammar = document_grammar(invoice_json_schema(), CODED_TABLE)
    rows = [_item("Extension lead 3-way 1.5m", "4", "14.90", "59.60"),
            _item("Consulting services senior consultant", "7", "187.30", "1311.10"),
            _item("Photo shoot full day", "1", "958.14", "958.14")]
    assert _accepts(tokenizer, grammar, _answer(line_items=rows))
    # `day` also ends descriptions: a unit or not is the model's choice.
    assert _accepts(tokenizer, grammar, _answer(line_items=[*rows[:2], {**rows[2], "description": "Photo shoot full"}]))
    for description in ("ART-28928 Extension lead 3-way 1.5m", "1 ART-28928 Extension lead 3-way 1.5m",
                        "Extension lead 3-way 1.5m pc", "Extension lead", "3-way 1.5m"):
        assert not _accepts(tokenizer, grammar, _answer(line_items=[{**rows[0], "description": description}, *rows[1:]]))
    assert not _accepts(tokenizer, grammar, _answer(
        line_items=[rows[0], {**rows[1], "description": "Consulting services senior consultant h"}, rows[2]]))


def test_without_a_unit_column_a_last_unit_word_is_the_models_choice(tokenizer):
    text = CODED_TABLE.replace("Unit  Qty", "Qty")
    grammar = document_grammar(invoice_json_schema(), text)
    rows = [_item("Extension lead 3-way 1.5m", "4", "14.90", "59.60"),
            _item("Consulting services senior consultant", "7", "187.30", "1311.10"),
            _item("Photo shoot full day", "1", "958.14", "958.14")]
    assert _accepts(tokenizer, grammar, _answer(line_items=rows))
    assert _accepts(tokenizer, grammar, _answer(line_items=[{**rows[0], "description": "Extension lead 3-way 1.5m pc"},
                                                            *rows[1:]]))


def test_a_credit_note_row_keeps_its_printed_signs(tokenizer):
    text = "CREDIT NOTE CN-7\n1  Stapler long reach  -5  330,00  -1 650,00\nTotal  -1 650,00\n"
    grammar = document_grammar(invoice_json_schema(), text)
    row = _item("Stapler long reach", "-5", "330.00", "-1650.00")
    assert _accepts(tokenizer, grammar, _answer(line_items=[row]))
    assert not _accepts(tokenizer, grammar, _answer(line_items=[{**row, "quantity": "5", "unit_price": "-330.00"}]))
    assert not _accepts(tokenizer, grammar, _answer(line_items=[{**row, "quantity": "1", "unit_price": "-1650.00"}]))


def test_text_without_line_breaks_is_not_read_row_by_row(tokenizer):
    flat = "Invoice RE-1 " + " ".join(["Widget type %d  1  5,00  5,00" % i for i in range(60)])
    assert len(flat) > 400
    grammar = document_grammar(invoice_json_schema(), flat)
    two = [_item("Widget type 1", "1", "5.00", "5.00"), _item("Widget type 2", "1", "5.00", "5.00")]
    assert _accepts(tokenizer, grammar, _answer(line_items=two))


def test_receipt_items_take_their_numbers_from_the_figures_line_below(tokenizer):
    grammar = document_grammar(invoice_json_schema(), RECEIPT)
    items = [_item("MILK 1L", "4", "2.54", "10.16"), _item("COFFEE BEANS 500G", "1", "16.36", "16.36")]
    assert _accepts(tokenizer, grammar, _answer(line_items=items))
    # Not from a line further down, nor from the line above.
    assert not _accepts(tokenizer, grammar, _answer(line_items=[_item("MILK 1L", "1", "16.36", "16.36")]))
    assert not _accepts(tokenizer, grammar, _answer(line_items=[_item("COFFEE BEANS 500G", "4", "2.54", "10.16")]))


def test_grounded_extraction_writes_only_document_values(tiny_model_dir):
    """Even a random model, under the grounded grammar, writes only what the document holds."""
    from models.runtime import ModelRuntime

    runtime = ModelRuntime(tiny_model_dir, device="cpu", dtype="float32", max_new_tokens=400)
    [result] = runtime.extract([INVOICE])
    fields = result.fields
    flat = " ".join(INVOICE.split())
    numbers, dates = set(number_candidates(INVOICE)), set(date_candidates(INVOICE))
    for key in ("invoice_id", "vendor_name", "client_name", "po_number", "payment_terms"):
        assert fields[key] is None or fields[key] in flat, (key, fields[key])
    for key in ("subtotal", "discount", "shipping", "tax", "total_amount"):
        assert fields[key] is None or fields[key] in numbers, (key, fields[key])
    for key in ("invoice_date", "due_date"):
        assert fields[key] is None or fields[key] in dates, (key, fields[key])
    for item in fields["line_items"]:
        assert item["description"] in flat
        assert all(item[k] is None or item[k] in numbers for k in ("quantity", "unit_price", "amount"))


def test_a_grammar_engine_failure_costs_one_window_not_the_batch(tiny_model_dir, caplog):
    """When the grammar engine gives up on one document's grounded grammar (a resource limit on
    an unusual text), that document is decoded again under the plain schema grammar and the
    rest of the batch is untouched."""
    from models.runtime import ModelRuntime

    runtime = ModelRuntime(tiny_model_dir, device="cpu", dtype="float32", max_new_tokens=400)
    other = "Acme Ltd\nInvoice A-1\nTotal 12,00\n"
    expected = runtime.extract([other])[0].fields
    runtime.load()
    bank = runtime._bank
    broken_key = bank.compile_document(invoice_json_schema(), INVOICE).key
    original = bank.matcher

    def matcher(compiled):
        m = original(compiled)
        if compiled.key == broken_key:  # put this row's matcher in the engine's error state
            m.consume_token(bank.stop_token_id)
            m.consume_token(bank.stop_token_id)
        return m

    bank.matcher = matcher
    try:
        with caplog.at_level("WARNING"):
            broken, fine = runtime.extract([INVOICE, other])
    finally:
        bank.matcher = original
    assert fine.fields == expected
    assert any("decoding them with the plain schema" in r.getMessage() for r in caplog.records)
    assert broken.outputs and broken.outputs[0].startswith("{")  # a full answer from the retry
    assert set(broken.fields) == set(expected)


def test_labels_real_invoices_print():
    # the buyer block of a ZUGFeRD visualisation: a number's label line is no client's name
    text = ("Käufer/Leistungsempfänger:\nNummer  : GE2020211\nGlobale Nummer: 4000001987658 (GTIN)\n"
            "Kunden AG Mitte\nKundenstraße 15\n")
    assert labelled_text(text, "client_name") == ["Kunden AG Mitte"]
    assert labelled_text("Buyer:\nAcme Trading Ltd\n", "client_name") == ["Acme Trading Ltd"]
    assert labelled_text("Ihre Auftragsnummer: ABC-123\n", "po_number") == ["ABC-123"]
    assert labelled_text("N° BON DE COMMANDE : PO201925478\n", "po_number") == ["PO201925478"]
    assert labelled_issue_dates("Kunden-Nr.:  10000  Belegdatum:  26.10.22\n") == ["2022-10-26"]
    assert "2017-12-09" in labelled_due_dates("Bitte überweisen Sie bis zum 09.12.2017.\n")
    assert labelled_totals("Endsumme  963,12 €\n") == ["963.12", "-963.12"]
    assert labelled_totals("Zahlbetrag  300,00\n") == ["300.00", "-300.00"]
    # a service period's end is no due date
    assert labelled_due_dates("Leistungszeitraum vom 01.11.2024 bis zum 30.11.2024\n") == []


def test_a_totals_blocks_surcharges_allowances_and_prepayments_label_no_total():
    from extraction.candidates import labelled_totals

    text = ("Positionssumme  180,00\nGesamtbetrag der Zuschläge  5,00\nGesamtbetrag der Abschläge  -9,00\n"
            "Rechnungssumme ohne USt.  176,00\nSteuerbetrag in  EUR  20,00\nBruttosumme  196,00\n"
            "Erhaltene Anzahlungen  -50,00\nZahlbetrag  146,00\n")
    assert {v for v in labelled_totals(text) if not v.startswith("-")} == {"196.00", "146.00"}


def test_the_date_of_an_invoices_own_number_and_a_letters_date_are_its_issue_date():
    from extraction.candidates import labelled_issue_dates

    assert labelled_issue_dates("Teilrechnung  Nr.  8812  vom  14.03.2026\nLieferdatum: 13.03.2026\n") == ["2026-03-14"]
    assert labelled_issue_dates("Bestellung Nr. 2026-17 vom 01.02.2026\n") == []  # an order's date
    assert labelled_issue_dates("Herrn Max Muster  Hamburg, den  24.03.2026\n") == ["2026-03-24"]
    assert labelled_issue_dates("Invoice No. 7781 dated 5 March 2026\n") == ["2026-03-05"]


def test_a_date_that_starts_its_line_under_a_due_date_label_is_a_due_date():
    from extraction.candidates import labelled_due_dates

    column = "Beschreibung  Fälligkeit  Teilzahlung\nZahlbar ohne Abzug\n28.11.2026\nRechnungsdatum: 14.11.2026\n"
    assert labelled_due_dates(column) == ["2026-11-28"]
    wrapped = "Den Betrag überweisen Sie bitte bis zum\n19.12.2026\n"
    assert labelled_due_dates(wrapped) == ["2026-12-19"]
    scanned = "Den Betrag uberweisen Sie bitte bis zum  19.12.2026\n"  # a scan's text without the umlaut
    assert labelled_due_dates(scanned) == ["2026-12-19"]
    # a date further down, or below another date, is not the label's
    assert labelled_due_dates("Fälligkeit\nLieferung am 01.12.2026\n13.12.2026\n") == []
    # a header table's row: its first date is the column's on the left, not the due date's
    assert labelled_due_dates("Invoice date  Due date\n01.02.2026  03.03.2026\n") == []


def test_a_totals_tax_is_no_total_and_a_legal_form_alone_is_no_name():
    from extraction.candidates import labelled_totals, legal_names

    text = ("Lieferant GmbH & Co. KG\nRechnung\n\nGesamtbetrag Netto:  554,55 €\nGesamtbetrag Steuer:  100,83 €\n"
            "Gesamtbetrag Brutto:  655,38 €\n")
    assert sorted(labelled_totals(text)) == ["-655.38", "655.38"]
    assert legal_names("ZF_Sammelrechnung.xml\nLieferant GmbH & Co. KG\nRechnung\n") == [
        "ZF_Sammelrechnung.xml Lieferant GmbH & Co. KG", "Lieferant GmbH & Co. KG"]
    assert sorted(labelled_totals("Totaal excl. btw  100,00\nTotaal btw  21,00\nTotaal incl. btw  121,00\n")) == [
        "-121.00", "121.00"]


def test_a_legal_name_with_its_registration_number_after_it_is_a_legal_name_without_it():
    from extraction.candidates import legal_names

    text = "NYONYA COLORS @ 1 UTAMA\nLITTLE CRAVINGS SDN BHD (562007-D)\nHQ: 7, JLN SS21/34, 47400 PJ\n"
    assert legal_names(text) == ["LITTLE CRAVINGS SDN BHD", "CRAVINGS SDN BHD"]
    assert legal_names("SUBWAY#42210-0\nURBAN IDEA SDN BHD (417940-M),\nA-G-06, DATARAN GLOMAC\n")[0] == "URBAN IDEA SDN BHD"
