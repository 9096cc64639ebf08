"""Synthetic invoice corpus: realistic PDFs with exact ground truth and consistent master data.

    from training.synth import generate_corpus
    summary = generate_corpus(n=1000, seed=7, out=Path("corpus"))

or `invoicechain synth --n 1000 --seed 7 --out corpus [--fault-rate 0.3] [--load-master-data]`.

Modules, in the order a corpus is made:

* `countries`, `catalog`, `labels`, `formats`, `money`: the world the documents come from:
  country habits (currency, tax, number and date formats, bank and tax-id formats), what
  vendors sell, printed wording in six languages, fixed exchange rates and the approval limit.
* `parties`: vendors and clients drawn with Faker in their own locale; vendor master records.
* `faults`: which invoice carries which fault; PO numbers with typos and unknown POs kept at
  known edit distances.
* `plan`: every document's content (`document.InvoiceDoc`) and the master data (`master`).
* `render`, `layouts`: eight reportlab layouts (table, two_column, letter, multipage, receipt,
  credit_note, service, remittance).
* `corpus`: renders in worker processes, reads each PDF back with
  `invoicechain.pdf.pdf_text`, checks the ground truth against that text (`grounding`, which
  documents the normalisation of dates and amounts), and writes the files.
* `cli`: the `synth` command.

Ground truth is what the document states: names, numbers and terms exactly as printed,
dates ISO, amounts canonical decimal strings, a value not printed is null. For clean
invoices subtotal + tax - discount + shipping == total, and line amounts sum to the subtotal.
"""


def __getattr__(name: str):
    # Lazy, so that importing the CLI does not load reportlab, pdfplumber or Faker.
    if name in ("generate_corpus", "CorpusSummary"):
        from training.synth import corpus

        return getattr(corpus, name)
    raise AttributeError(name)
