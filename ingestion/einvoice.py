"""Structured e-invoices: ZUGFeRD / Factur-X PDFs with embedded XML, and standalone CII or UBL
(XRechnung, PEPPOL BIS) XML, read into the project's field schema (`invoicechain.schema`).

Public API (kept small on purpose):

- ``parse_einvoice(xml_bytes) -> (fields, meta)``: ``fields`` is a dict that validates as
  ``InvoiceFields`` (schema order, strings); ``meta`` says what was read (syntax, profile,
  document type code, warnings, fields shortened to the schema's length limits).
- ``embedded_xml(pdf_bytes) -> bytes | None``: the e-invoice XML a PDF carries, if any.
- ``strip_attachments(pdf_bytes) -> bytes``: the same PDF without its embedded files.

XML is parsed safely: a document type declaration (and so any entity, internal or external)
is refused before parsing, and the parser never resolves entities nor touches the network.
Where each field lives in each syntax is data (``FIELD_PATHS``), not code.
"""

from __future__ import annotations

import io
import logging
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree

from invoicechain.schema import MAX_LINE_ITEMS, InvoiceFields

log = logging.getLogger(__name__)

#: The largest XML document read (an XRechnung with attached files can run to megabytes).
MAX_XML_BYTES = 20 * 1024 * 1024

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
    "inv": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "cn": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}

ROOTS = {
    f"{{{NS['rsm']}}}CrossIndustryInvoice": "cii",
    f"{{{NS['inv']}}}Invoice": "ubl",
    f"{{{NS['cn']}}}CreditNote": "ubl",
}

#: Names under which PDF/A-3 e-invoices embed their XML, most specific first.
EMBEDDED_NAMES = ("factur-x.xml", "zugferd-invoice.xml", "xrechnung.xml", "order-x.xml")

#: Profiles by the guideline / customization identifier they start with or contain.
PROFILES = (
    ("xrechnung", "xrechnung"),
    ("peppol.eu", "peppol-bis"),
    ("factur-x.eu:1p0:minimum", "factur-x-minimum"),
    ("factur-x.eu:1p0:basicwl", "factur-x-basic-wl"),
    ("factur-x.eu:1p0:basic", "factur-x-basic"),
    ("factur-x.eu:1p0:extended", "factur-x-extended"),
    ("zugferd.de:2p", "zugferd"),
    ("cen.eu:en16931", "en16931"),
)

_CII_HEAD = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeAgreement"
_CII_SETTLE = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeSettlement"
_CII_SUM = f"{_CII_SETTLE}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"

#: Where each field is, per syntax: XPath relative to the root (the first match wins).
#: Kinds: text, date, amount, nonzero (an amount where 0 means "not stated"), address, party.
FIELD_PATHS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "cii": {
        "invoice_id": ("text", ("rsm:ExchangedDocument/ram:ID",)),
        "vendor_name": ("text", (f"{_CII_HEAD}/ram:SellerTradeParty/ram:Name",)),
        "vendor_address": ("address", (f"{_CII_HEAD}/ram:SellerTradeParty/ram:PostalTradeAddress",)),
        "client_name": ("text", (f"{_CII_HEAD}/ram:BuyerTradeParty/ram:Name",)),
        "invoice_date": ("date", ("rsm:ExchangedDocument/ram:IssueDateTime/udt:DateTimeString",)),
        "due_date": ("date", (f"{_CII_SETTLE}/ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString",)),
        "currency": ("text", (f"{_CII_SETTLE}/ram:InvoiceCurrencyCode",)),
        "subtotal": ("amount", (f"{_CII_SUM}/ram:LineTotalAmount",)),
        "discount": ("nonzero", (f"{_CII_SUM}/ram:AllowanceTotalAmount",)),
        "shipping": ("nonzero", (f"{_CII_SUM}/ram:ChargeTotalAmount",)),
        "tax": ("tax", (f"{_CII_SUM}/ram:TaxTotalAmount",)),
        "total_amount": ("amount", (f"{_CII_SUM}/ram:GrandTotalAmount",)),
        "po_number": ("text", (f"{_CII_HEAD}/ram:BuyerOrderReferencedDocument/ram:IssuerAssignedID",)),
        "payment_terms": ("text", (f"{_CII_SETTLE}/ram:SpecifiedTradePaymentTerms/ram:Description",)),
    },
    "ubl": {
        "invoice_id": ("text", ("cbc:ID",)),
        "vendor_name": ("text", (
            "cac:AccountingSupplierParty/cac:Party/cac:PartyLegalEntity/cbc:RegistrationName",
            "cac:AccountingSupplierParty/cac:Party/cac:PartyName/cbc:Name",
        )),
        "vendor_address": ("address", ("cac:AccountingSupplierParty/cac:Party/cac:PostalAddress",)),
        "client_name": ("text", (
            "cac:AccountingCustomerParty/cac:Party/cac:PartyLegalEntity/cbc:RegistrationName",
            "cac:AccountingCustomerParty/cac:Party/cac:PartyName/cbc:Name",
        )),
        "invoice_date": ("date", ("cbc:IssueDate",)),
        "due_date": ("date", ("cbc:DueDate", "cac:PaymentMeans/cbc:PaymentDueDate")),
        "currency": ("text", ("cbc:DocumentCurrencyCode",)),
        "subtotal": ("amount", ("cac:LegalMonetaryTotal/cbc:LineExtensionAmount",)),
        "discount": ("nonzero", ("cac:LegalMonetaryTotal/cbc:AllowanceTotalAmount",)),
        "shipping": ("nonzero", ("cac:LegalMonetaryTotal/cbc:ChargeTotalAmount",)),
        "tax": ("tax", ("cac:TaxTotal/cbc:TaxAmount",)),
        "total_amount": ("amount", ("cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount",)),
        "po_number": ("text", ("cac:OrderReference/cbc:ID",)),
        "payment_terms": ("text", ("cac:PaymentTerms/cbc:Note",)),
    },
}

#: Address parts in print order, per syntax (street lines, postcode and city, region, country).
ADDRESS_PARTS = {
    "cii": (("ram:LineOne",), ("ram:LineTwo",), ("ram:LineThree",),
            ("ram:PostcodeCode", "ram:CityName"), ("ram:CountrySubDivisionName",), ("ram:CountryID",)),
    "ubl": (("cbc:StreetName",), ("cbc:AdditionalStreetName",), ("cac:AddressLine/cbc:Line",),
            ("cbc:PostalZone", "cbc:CityName"), ("cbc:CountrySubentity",), ("cac:Country/cbc:IdentificationCode",)),
}

#: Line items: the repeating element and, relative to it, each line field's path.
LINE_PATHS = {
    "cii": ("rsm:SupplyChainTradeTransaction/ram:IncludedSupplyChainTradeLineItem", {
        "description": "ram:SpecifiedTradeProduct/ram:Name",
        "quantity": "ram:SpecifiedLineTradeDelivery/ram:BilledQuantity",
        "unit_price": "ram:SpecifiedLineTradeAgreement/ram:NetPriceProductTradePrice/ram:ChargeAmount",
        "amount": "ram:SpecifiedLineTradeSettlement/ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount",
    }),
    "ubl": ("cac:InvoiceLine|cac:CreditNoteLine", {
        "description": "cac:Item/cbc:Name",
        "quantity": "cbc:InvoicedQuantity|cbc:CreditedQuantity",
        "unit_price": "cac:Price/cbc:PriceAmount",
        "amount": "cbc:LineExtensionAmount",
    }),
}

#: Bank details: the payment means element and, relative to it, each bank field's path.
BANK_PATHS = {
    "cii": (f"{_CII_SETTLE}/ram:SpecifiedTradeSettlementPaymentMeans", {
        "iban": "ram:PayeePartyCreditorFinancialAccount/ram:IBANID",
        "account_number": "ram:PayeePartyCreditorFinancialAccount/ram:ProprietaryID",
        "bic": "ram:PayeeSpecifiedCreditorFinancialInstitution/ram:BICID",
    }),
    "ubl": ("cac:PaymentMeans", {
        "account": "cac:PayeeFinancialAccount/cbc:ID",
        "bic": "cac:PayeeFinancialAccount/cac:FinancialInstitutionBranch/cbc:ID",
    }),
}

META_PATHS = {
    "cii": {"type_code": "rsm:ExchangedDocument/ram:TypeCode",
            "guideline": "rsm:ExchangedDocumentContext/ram:GuidelineSpecifiedDocumentContextParameter/ram:ID"},
    "ubl": {"type_code": "cbc:InvoiceTypeCode|cbc:CreditNoteTypeCode", "guideline": "cbc:CustomizationID"},
}

#: Schema length limits (characters) of the text fields.
TEXT_LIMITS = {
    name: next((a.get("maxLength") for a in prop.get("anyOf", [prop]) if a.get("maxLength")), None)
    for name, prop in InvoiceFields.model_json_schema()["properties"].items()
}
LINE_DESCRIPTION_LIMIT = 200
BANK_FIELD_LIMIT = 60


class EInvoiceError(ValueError):
    """The bytes are not an e-invoice this module can read; the message says why."""


# --- safe XML -------------------------------------------------------------------------------

_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
        huge_tree=False, remove_comments=True, remove_pis=True,
    )


def refused_declaration(xml_bytes: bytes) -> bool:
    """True when the XML declares a document type or entities (an external entity, a billion
    laughs): such XML is refused unparsed."""
    return bool(_DOCTYPE.search(xml_bytes.replace(b"\x00", b"")))


def parse_xml(xml_bytes: bytes) -> etree._Element:
    """Parse untrusted XML: no DTD, no entities, no network; EInvoiceError when refused."""
    if not xml_bytes or not xml_bytes.strip():
        raise EInvoiceError("The XML document is empty.")
    if len(xml_bytes) > MAX_XML_BYTES:
        raise EInvoiceError(f"The XML document is {len(xml_bytes)} bytes, over the {MAX_XML_BYTES}-byte limit.")
    # UTF-16 documents are rare for e-invoices; decode the declaration check on an 8-bit view.
    if refused_declaration(xml_bytes):
        raise EInvoiceError("The XML declares a document type or entities, which e-invoices never need; refused.")
    try:
        root = etree.parse(io.BytesIO(xml_bytes), _parser()).getroot()
    except etree.XMLSyntaxError as exc:
        raise EInvoiceError(f"The XML is not well-formed: {exc}.") from None
    if root is None:
        raise EInvoiceError("The XML has no root element.")
    return root


def detect_syntax(xml_bytes: bytes) -> str | None:
    """'cii' or 'ubl' for an e-invoice XML, else None (never raises)."""
    try:
        return ROOTS.get(parse_xml(xml_bytes).tag)
    except EInvoiceError:
        return None


# --- values ---------------------------------------------------------------------------------


def _text(node: etree._Element | None) -> str | None:
    if node is None:
        return None
    value = " ".join("".join(node.itertext()).split())
    return value or None


def _first(root: etree._Element, paths: tuple[str, ...] | str) -> etree._Element | None:
    for path in (paths,) if isinstance(paths, str) else paths:
        found = root.xpath(path, namespaces=NS)
        if found:
            return found[0]
    return None


def _decimal(text: str | None, warnings: list[str], where: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        warnings.append(f"{where}: {text!r} is not a number")
        return None
    if not value.is_finite():
        warnings.append(f"{where}: {text!r} is not a number")
        return None
    return value


def _plain(value: Decimal, min_places: int) -> str:
    """A schema decimal string: at least `min_places` and at most 4 decimal places."""
    value = value.normalize()
    if value.as_tuple().exponent < -4:
        value = value.quantize(Decimal("0.0001"))
    if value.as_tuple().exponent > -min_places:
        value = value.quantize(Decimal(1).scaleb(-min_places))
    return format(value, "f")


def _amount(text: str | None, warnings: list[str], where: str) -> str | None:
    value = _decimal(text, warnings, where)
    return None if value is None else _plain(value, 2)


def _quantity(text: str | None, warnings: list[str], where: str) -> str | None:
    value = _decimal(text, warnings, where)
    return None if value is None else _plain(value, 0)


def _date(node: etree._Element | None, warnings: list[str], where: str) -> str | None:
    text = _text(node)
    if text is None:
        return None
    fmt = node.get("format")
    if fmt in (None, "102") and re.fullmatch(r"\d{8}", text):
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text[:10]) and fmt is None:
        return text[:10]
    warnings.append(f"{where}: date {text!r} (format {fmt}) is not a calendar day")
    return None


def _limit(value: str | None, limit: int | None, name: str, shortened: list[str]) -> str | None:
    if value is None or limit is None or len(value) <= limit:
        return value
    shortened.append(name)
    cut = value[:limit]
    if " " in cut[limit // 2:]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;")


def _address(node: etree._Element | None, syntax: str) -> str | None:
    if node is None:
        return None
    parts = []
    for group in ADDRESS_PARTS[syntax]:
        words = [_text(_first(node, p)) for p in group]
        joined = " ".join(w for w in words if w)
        if joined:
            parts.append(joined)
    return ", ".join(parts) or None


def _tax(root: etree._Element, path: str, currency: str | None, warnings: list[str]) -> str | None:
    """The document's tax total in the invoice currency (a second total may be in the tax currency)."""
    nodes = root.xpath(path, namespaces=NS)
    chosen = next((n for n in nodes if currency and n.get("currencyID") == currency), None)
    if chosen is None:
        chosen = next((n for n in nodes if n.get("currencyID") is None), nodes[0] if nodes else None)
    return _amount(_text(chosen), warnings, "tax")


def _iban(value: str | None) -> str | None:
    if not value:
        return None
    from stdnum import iban

    compact = iban.compact(value)
    return compact if iban.is_valid(compact) else None


def _bank(root: etree._Element, syntax: str, shortened: list[str]) -> dict[str, str | None] | None:
    path, fields = BANK_PATHS[syntax]
    for means in root.xpath(path, namespaces=NS):
        got = {name: _text(_first(means, rel)) for name, rel in fields.items()}
        if syntax == "ubl":
            account = got.pop("account")
            iban = _iban(account)
            got["iban"], got["account_number"] = (iban, None) if iban else (None, account)
        elif got.get("iban"):
            got["iban"] = got["iban"].replace(" ", "")
        if any(got.values()):
            bank = {k: got.get(k) for k in ("iban", "bic", "account_number")}
            bank["routing_number"] = None
            return {k: _limit(v, BANK_FIELD_LIMIT, f"bank.{k}", shortened) for k, v in bank.items()}
    return None


def _profile(guideline: str | None) -> str | None:
    if not guideline:
        return None
    low = guideline.lower()
    return next((name for key, name in PROFILES if key in low), None)


# --- parsing --------------------------------------------------------------------------------


def parse_einvoice(xml_bytes: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a CII or UBL e-invoice into schema fields.

    Returns ``(fields, meta)``: ``fields`` validates as ``InvoiceFields`` (dumped to a plain
    dict, schema order); ``meta`` holds ``syntax`` ('cii' or 'ubl'), ``root``, ``type_code``
    (380 invoice, 381 credit note, ...), ``guideline`` and ``profile``, ``warnings`` (values that
    could not be read) and ``shortened`` (fields cut to the schema's length limits).
    Raises EInvoiceError for anything that is not a readable CII or UBL invoice.
    """
    root = parse_xml(xml_bytes)
    syntax = ROOTS.get(root.tag)
    if syntax is None:
        raise EInvoiceError(f"The XML root {etree.QName(root).localname!r} is no CII or UBL invoice.")
    warnings: list[str] = []
    shortened: list[str] = []
    meta: dict[str, Any] = {"syntax": syntax, "root": etree.QName(root).localname}
    for name, path in META_PATHS[syntax].items():
        meta[name] = _text(_first(root, path))
    meta["profile"] = _profile(meta["guideline"])

    fields: dict[str, Any] = {}
    paths = FIELD_PATHS[syntax]
    currency = _text(_first(root, paths["currency"][1]))
    for name, (kind, where) in paths.items():
        if kind == "tax":
            value = _tax(root, where[0], currency, warnings)
        elif kind == "address":
            value = _address(_first(root, where), syntax)
        elif kind == "date":
            value = _date(_first(root, where), warnings, name)
        elif kind in ("amount", "nonzero"):
            value = _amount(_text(_first(root, where)), warnings, name)
            if kind == "nonzero" and value is not None and Decimal(value) == 0:
                value = None
        else:
            value = _text(_first(root, where))
        if isinstance(value, str) and kind in ("text", "address"):
            value = _limit(value, TEXT_LIMITS.get(name), name, shortened)
        fields[name] = value
    if fields["currency"] is not None and not re.fullmatch(r"[A-Z]{3}", fields["currency"]):
        warnings.append(f"currency: {fields['currency']!r} is not an ISO 4217 code")
        fields["currency"] = None

    line_path, line_fields = LINE_PATHS[syntax]
    items = []
    for index, line in enumerate(root.xpath(line_path, namespaces=NS), start=1):
        where = f"line {index}"
        description = _limit(_text(_first(line, line_fields["description"])), LINE_DESCRIPTION_LIMIT,
                             f"{where}.description", shortened)
        items.append({
            "description": description or "",
            "quantity": _quantity(_text(_first(line, line_fields["quantity"])), warnings, f"{where}.quantity"),
            "unit_price": _amount(_text(_first(line, line_fields["unit_price"])), warnings, f"{where}.unit_price"),
            "amount": _amount(_text(_first(line, line_fields["amount"])), warnings, f"{where}.amount"),
        })
    if len(items) > MAX_LINE_ITEMS:
        shortened.append("line_items")
        items = items[:MAX_LINE_ITEMS]
    fields["line_items"] = items
    fields["bank"] = _bank(root, syntax, shortened)

    fields = _validated(fields, warnings)
    meta["warnings"] = warnings
    meta["shortened"] = shortened
    return fields, meta


def _validated(fields: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """Fields as InvoiceFields dumps them; a value the schema refuses becomes null with a warning."""
    from pydantic import ValidationError

    for _ in range(len(fields) + MAX_LINE_ITEMS * 4 + 8):
        try:
            return InvoiceFields.model_validate(fields).model_dump()
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = error["loc"]
            warnings.append(f"{'.'.join(map(str, loc))}: {error['msg']}")
            target: Any = fields
            for key in loc[:-1]:
                target = target[key]
            if isinstance(target, dict) and loc[-1] in target:
                target[loc[-1]] = None if not isinstance(target[loc[-1]], list) else []
            else:  # pragma: no cover - a shape the schema refuses as a whole
                break
    raise EInvoiceError("The e-invoice's values do not fit the field schema.")


# --- PDF ------------------------------------------------------------------------------------


def _reader(pdf_bytes: bytes):
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf_bytes))
    if reader.is_encrypted:
        reader.decrypt("")
    return reader


def embedded_xml(pdf_bytes: bytes) -> bytes | None:
    """The CII / UBL XML a PDF carries (Factur-X, ZUGFeRD 2, XRechnung in a PDF), else None.

    None also for a PDF that cannot be read at all: the text step reports that with its reason.
    """
    try:
        attachments = _reader(pdf_bytes).attachments
        names = list(attachments.keys())
    except Exception as exc:  # pypdf raises many types for damaged or encrypted files
        log.debug("no attachments read: %s", exc)
        return None
    lowered = {name.lower(): name for name in names}
    ordered = [lowered[n] for n in EMBEDDED_NAMES if n in lowered]
    ordered += [n for n in names if n.lower().endswith(".xml") and n not in ordered]
    for name in ordered:
        try:
            contents = attachments[name]
        except Exception as exc:
            log.debug("attachment %s unreadable: %s", name, exc)
            continue
        for data in contents if isinstance(contents, list) else [contents]:
            if data and detect_syntax(data):
                return data
    return None


def strip_attachments(pdf_bytes: bytes) -> bytes:
    """The PDF without its embedded files (the page content is unchanged)."""
    from pypdf import PdfWriter
    from pypdf.generic import ArrayObject, NameObject

    reader = _reader(pdf_bytes)
    writer = PdfWriter()  # only what the pages reach is copied: the document's file tree stays behind
    for source in reader.pages:
        page = writer.add_page(source)
        if NameObject("/AF") in page:
            del page[NameObject("/AF")]
        annots = page.get("/Annots")
        if annots is not None:
            kept = [a for a in annots.get_object() if a.get_object().get("/Subtype") != "/FileAttachment"]
            page[NameObject("/Annots")] = ArrayObject(kept)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# --- the pipeline's use ---------------------------------------------------------------------

#: The source recorded for values read from an e-invoice's XML.
XML_SOURCE = "xml"
#: Content type under which standalone XML documents are stored.
XML_CONTENT_TYPE = "application/xml"


def read_structured(data: bytes, content_type: str) -> dict[str, Any] | None:
    """The e-invoice a stored document carries: ``{"fields", "meta"}``, ``{"error"}`` when its
    XML cannot be read, or None when it carries none (a plain PDF)."""
    if content_type == XML_CONTENT_TYPE:
        xml = data
    else:
        xml = embedded_xml(data)
        if xml is None:
            return None
    try:
        fields, meta = parse_einvoice(xml)
    except EInvoiceError as exc:
        return {"error": str(exc)}
    return {"fields": fields, "meta": meta}


def render_text(fields: dict[str, Any]) -> str:
    """A plain reading of an XML-only invoice's fields, for people (there is no page to show)."""
    lines = []
    for name, value in fields.items():
        if name == "line_items":
            for item in value or []:
                lines.append("  ".join(str(item.get(k) or "") for k in ("description", "quantity", "unit_price", "amount")))
        elif name == "bank":
            lines += [f"{k}: {v}" for k, v in (value or {}).items() if v]
        elif value not in (None, ""):
            lines.append(f"{name}: {value}")
    return "\n".join(lines)


def _same(name: str, a: Any, b: Any) -> bool:
    if name in ("subtotal", "discount", "shipping", "tax", "total_amount"):
        try:
            return Decimal(str(a)) == Decimal(str(b))
        except (InvalidOperation, ValueError):
            return False
    norm = lambda v: " ".join(str(v).casefold().replace(",", " ").split())  # noqa: E731
    return norm(a) == norm(b)


def page_disagreements(xml_fields: dict[str, Any], page_fields: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Scalar fields that the XML and the visible page (as the model read it) both state, differently."""
    out = []
    for name, xml_value in xml_fields.items():
        if name in ("line_items", "bank"):
            continue
        page_value = (page_fields or {}).get(name)
        if xml_value in (None, "") or page_value in (None, ""):
            continue
        if name == "payment_terms":  # free text, shortened to the schema limit: not comparable
            continue
        if not _same(name, xml_value, page_value):
            out.append({"field": name, "xml": xml_value, "page": page_value})
    xml_iban = (xml_fields.get("bank") or {}).get("iban")
    page_iban = ((page_fields or {}).get("bank") or {}).get("iban")
    if xml_iban and page_iban and xml_iban.replace(" ", "") != str(page_iban).replace(" ", ""):
        out.append({"field": "bank.iban", "xml": xml_iban, "page": page_iban})
    return out


def xml_confidence(fields: dict[str, Any]) -> dict[str, float]:
    """Confidence 1.0 for every field the XML states (the XML is the invoice's legal content)."""
    return {name: 1.0 for name, value in fields.items() if value not in (None, "", [])}


def xml_grounding(fields: dict[str, Any]) -> dict[str, Any]:
    """Each stated field's source: the XML."""
    return {name: {"source": XML_SOURCE} for name, value in fields.items() if value not in (None, "", [])}
