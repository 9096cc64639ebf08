"""Accounts-payable master data: read it from JSON and load it into the database.

The JSON shape (amounts are decimal strings, dates ISO 8601; written by the synthetic
corpus generator as `master_data.json`, and the format to use for real master data):

    {"vendors": [{"id", "name", "aliases", "address", "country", "tax_id", "currency", "iban",
                  "bic", "account_number", "routing_number", "status", "risk", "department"}],
     "purchase_orders": [{"po_number", "vendor_id", "currency", "total", "remaining", "department",
                          "status", "issued_on", "lines": [{"line_no", "description", "quantity",
                          "unit_price"}], "receipts": [{"line_no", "quantity_received", "received_on"}]}],
     "posted_invoices": [{"vendor_id", "invoice_number", "total_amount", "currency", "invoice_date"}],
     "approval_policy": {"auto_approve_limit_eur": "5000.00"},
     "fx_to_eur": {"EUR": "1", "USD": "0.92", ...}}

Loading is an upsert keyed on natural keys (vendor id, PO number, PO line number, vendor +
invoice number): loading the same data twice changes nothing. A PO's lines and goods
receipts are made to equal those in the data.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from invoicechain.db.tables import GoodsReceipt, PostedInvoice, PurchaseOrder, PurchaseOrderLine, Vendor
from invoicechain.enums import PurchaseOrderStatus, VendorStatus

REQUIRED_KEYS = ("vendors", "purchase_orders", "posted_invoices")
VENDOR_COLUMNS = ("name", "aliases", "address", "country", "tax_id", "currency", "iban", "bic",
                  "account_number", "routing_number", "status", "risk", "department")


def read_master_data(path: str | Path) -> dict:
    """Master data from a JSON file (or from `master_data.json` in a corpus folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "master_data.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ValueError(f"{path} is not master data: missing {', '.join(missing)}")
    return data


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _assign(row: Any, values: dict[str, Any]) -> bool:
    """Set the values that differ; True when anything changed."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def load_master_data(session: Session, data: dict) -> dict[str, int]:
    """Upsert vendors, POs with lines and receipts, and posted invoices; rows written per table.

    The counts are rows inserted, changed or removed, so loading unchanged data returns zeros.
    The caller commits (e.g. `invoicechain.db.session.session_scope`).

    Long because it is one upsert block per table, in foreign-key order (vendors, POs, lines, receipts, posted invoices).
    """
    counts = dict.fromkeys(("vendors", "purchase_orders", "purchase_order_lines", "goods_receipts",
                            "posted_invoices"), 0)

    vendor_ids = [v["id"] for v in data.get("vendors", [])]
    vendors = {v.id: v for v in session.exec(select(Vendor).where(Vendor.id.in_(vendor_ids)))} if vendor_ids else {}
    for record in data.get("vendors", []):
        values = {key: record.get(key) for key in VENDOR_COLUMNS}
        values["aliases"] = list(values["aliases"] or [])
        values["status"] = values["status"] or VendorStatus.ACTIVE
        values["risk"] = values["risk"] or "low"
        row = vendors.get(record["id"])
        if row is None:
            session.add(Vendor(id=record["id"], **values))
            counts["vendors"] += 1
        elif _assign(row, values):
            counts["vendors"] += 1
    session.flush()

    orders = data.get("purchase_orders", [])
    numbers = [po["po_number"] for po in orders]
    existing = ({po.po_number: po for po in session.exec(select(PurchaseOrder).where(PurchaseOrder.po_number.in_(numbers)))}
                if numbers else {})
    rows: dict[str, PurchaseOrder] = {}
    for record in orders:
        values = {
            "vendor_id": record["vendor_id"], "currency": record["currency"], "total": record["total"],
            "remaining": record["remaining"], "department": record.get("department"),
            "status": record.get("status") or PurchaseOrderStatus.OPEN, "issued_on": _day(record.get("issued_on")),
        }
        row = existing.get(record["po_number"])
        if row is None:
            row = PurchaseOrder(po_number=record["po_number"], **values)
            session.add(row)
            counts["purchase_orders"] += 1
        elif _assign(row, values):
            counts["purchase_orders"] += 1
        rows[record["po_number"]] = row
    session.flush()

    po_ids = [row.id for row in rows.values()]
    lines_by_po: dict[int, dict[int, PurchaseOrderLine]] = {}
    receipts_by_po: dict[int, list[GoodsReceipt]] = {}
    if po_ids:
        for line in session.exec(select(PurchaseOrderLine).where(PurchaseOrderLine.po_id.in_(po_ids))):
            lines_by_po.setdefault(line.po_id, {})[line.line_no] = line
        for receipt in session.exec(select(GoodsReceipt).where(GoodsReceipt.po_id.in_(po_ids))):
            receipts_by_po.setdefault(receipt.po_id, []).append(receipt)
    for record in orders:
        po = rows[record["po_number"]]
        current = lines_by_po.get(po.id, {})
        wanted = {ln["line_no"] for ln in record.get("lines", [])}
        for ln in record.get("lines", []):
            values = {"description": ln["description"], "quantity": ln["quantity"], "unit_price": ln["unit_price"]}
            row = current.get(ln["line_no"])
            if row is None:
                session.add(PurchaseOrderLine(po_id=po.id, line_no=ln["line_no"], **values))
                counts["purchase_order_lines"] += 1
            elif _assign(row, values):
                counts["purchase_order_lines"] += 1
        for line_no, row in current.items():
            if line_no not in wanted:
                session.delete(row)
                counts["purchase_order_lines"] += 1
        # Receipts have no key of their own: keep the rows that match, add and remove the rest.
        wanted_receipts = Counter(
            (r["line_no"], r["quantity_received"], _day(r.get("received_on"))) for r in record.get("receipts", [])
        )
        for row in receipts_by_po.get(po.id, []):
            key = (row.line_no, row.quantity_received, row.received_on)
            if wanted_receipts[key] > 0:
                wanted_receipts[key] -= 1
            else:
                session.delete(row)
                counts["goods_receipts"] += 1
        for (line_no, quantity, received_on), missing in wanted_receipts.items():
            for _ in range(missing):
                session.add(GoodsReceipt(po_id=po.id, line_no=line_no, quantity_received=quantity,
                                         received_on=received_on))
                counts["goods_receipts"] += 1

    posted = data.get("posted_invoices", [])
    posted_vendors = sorted({p["vendor_id"] for p in posted})
    booked = ({(p.vendor_id, p.invoice_number): p
               for p in session.exec(select(PostedInvoice).where(PostedInvoice.vendor_id.in_(posted_vendors)))}
              if posted_vendors else {})
    for record in posted:
        values = {"total_amount": record["total_amount"], "currency": record["currency"],
                  "invoice_date": _day(record.get("invoice_date"))}
        row = booked.get((record["vendor_id"], record["invoice_number"]))
        if row is None:
            row = PostedInvoice(vendor_id=record["vendor_id"], invoice_number=record["invoice_number"], **values)
            session.add(row)
            booked[(record["vendor_id"], record["invoice_number"])] = row
            counts["posted_invoices"] += 1
        elif _assign(row, values):
            counts["posted_invoices"] += 1
    session.flush()
    # The approval limits and FX rates that come with the master data apply to run_approval.
    from invoicechain.ap.approval import store_master_policy

    store_master_policy(session, data)
    return counts


# --- the shared model: JSON, CSV and the API read into it ------------------------------------

import csv  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from decimal import Decimal, InvalidOperation  # noqa: E402

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator  # noqa: E402

_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
VENDOR_STATUSES = tuple(VendorStatus)
VENDOR_RISKS = ("low", "medium", "high")


def _iso_day(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    text = str(value).strip()
    if not text:
        return None
    if not _ISO_DAY.match(text):
        raise ValueError(f"date {text!r} is not in the format YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"date {text!r} is not a calendar date") from None


def _amount(value: Any) -> str:
    text = str(value).strip() if value is not None else ""
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"amount {text!r} is not a decimal number (write 1234.50: a dot, no thousands separator)") from None
    if not number.is_finite():
        raise ValueError(f"amount {text!r} is not a finite number")
    return text


def _blank_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else (value.strip() if isinstance(value, str) else value)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _blanks(cls, value: Any) -> Any:
        return _blank_none(value)


class VendorRecord(_Record):
    """A vendor of the vendor master (natural key: `id`, the ERP's vendor number)."""

    id: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=200)
    aliases: list[str] = Field(default_factory=list)
    address: str | None = Field(None, max_length=300)
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    tax_id: str | None = Field(None, max_length=40)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")
    iban: str | None = Field(None, max_length=40)
    bic: str | None = Field(None, max_length=20)
    account_number: str | None = Field(None, max_length=40)
    routing_number: str | None = Field(None, max_length=20)
    status: str = VendorStatus.ACTIVE
    risk: str = "low"
    department: str | None = Field(None, max_length=60)

    @field_validator("aliases", mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):  # CSV: aliases separated by '|'
            return [a.strip() for a in value.split("|") if a.strip()]
        return value

    @field_validator("iban")
    @classmethod
    def _iban(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from stdnum import iban
        from stdnum.exceptions import ValidationError as StdnumError

        try:
            return iban.validate(value)
        except StdnumError as exc:
            raise ValueError(f"IBAN {value!r} is not valid ({exc.message.lower().rstrip('.')})") from None

    @field_validator("bic")
    @classmethod
    def _bic(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from stdnum import bic
        from stdnum.exceptions import ValidationError as StdnumError

        try:
            return bic.validate(value)
        except StdnumError as exc:
            raise ValueError(f"BIC {value!r} is not valid ({exc.message.lower().rstrip('.')})") from None

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        value = value or VendorStatus.ACTIVE
        if value not in VENDOR_STATUSES:
            raise ValueError(f"status {value!r} is not one of {', '.join(VENDOR_STATUSES)}")
        return value

    @field_validator("risk", mode="before")
    @classmethod
    def _risk(cls, value: Any) -> Any:
        value = value or "low"
        if value not in VENDOR_RISKS:
            raise ValueError(f"risk {value!r} is not one of {', '.join(VENDOR_RISKS)}")
        return value


class PurchaseOrderLineRecord(_Record):
    """A line of a purchase order (natural key: PO number and line number)."""

    po_number: str | None = Field(None, max_length=60)  # set by the nested JSON form from its PO
    line_no: int = Field(ge=0)
    description: str = Field(min_length=1, max_length=300)
    quantity: str
    unit_price: str

    _quantity = field_validator("quantity", "unit_price")(lambda cls, v: _amount(v))


class GoodsReceiptRecord(_Record):
    """A goods receipt against a PO line (natural key: PO number, line number and date)."""

    po_number: str | None = Field(None, max_length=60)
    line_no: int = Field(ge=0)
    quantity_received: str
    received_on: date | None = None

    _quantity = field_validator("quantity_received")(lambda cls, v: _amount(v))
    _day = field_validator("received_on", mode="before")(lambda cls, v: _iso_day(_blank_none(v)))


class PurchaseOrderRecord(_Record):
    """A purchase order (natural key: `po_number`); lines and receipts may come nested (JSON)."""

    po_number: str = Field(min_length=1, max_length=60)
    vendor_id: str = Field(min_length=1, max_length=40)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    total: str
    remaining: str
    department: str | None = Field(None, max_length=60)
    status: str = PurchaseOrderStatus.OPEN
    issued_on: date | None = None
    lines: list[PurchaseOrderLineRecord] | None = None
    receipts: list[GoodsReceiptRecord] | None = None

    _amounts = field_validator("total", "remaining")(lambda cls, v: _amount(v))
    _day = field_validator("issued_on", mode="before")(lambda cls, v: _iso_day(_blank_none(v)))
    _status = field_validator("status", mode="before")(lambda cls, v: v or PurchaseOrderStatus.OPEN)


class PostedInvoiceRecord(_Record):
    """An invoice already booked in the ledger (natural key: vendor id and invoice number)."""

    vendor_id: str = Field(min_length=1, max_length=40)
    invoice_number: str = Field(min_length=1, max_length=60)
    total_amount: str
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    invoice_date: date | None = None

    _amount = field_validator("total_amount")(lambda cls, v: _amount(v))
    _day = field_validator("invoice_date", mode="before")(lambda cls, v: _iso_day(_blank_none(v)))


class MasterData(BaseModel):
    """Accounts-payable master data, one shape for JSON, CSV and the API.

    Lines and receipts are held flat (`purchase_order_lines`, `goods_receipts`, each naming its
    PO); the JSON form nests them in their PO, and is flattened on reading.
    """

    model_config = ConfigDict(extra="ignore")

    vendors: list[VendorRecord] = Field(default_factory=list)
    purchase_orders: list[PurchaseOrderRecord] = Field(default_factory=list)
    purchase_order_lines: list[PurchaseOrderLineRecord] = Field(default_factory=list)
    goods_receipts: list[GoodsReceiptRecord] = Field(default_factory=list)
    posted_invoices: list[PostedInvoiceRecord] = Field(default_factory=list)
    approval_policy: dict | None = None
    fx_to_eur: dict | None = None

    def model_post_init(self, _: Any) -> None:
        for po in self.purchase_orders:
            for line in po.lines or []:
                self.purchase_order_lines.append(line.model_copy(update={"po_number": po.po_number}))
            for receipt in po.receipts or []:
                self.goods_receipts.append(receipt.model_copy(update={"po_number": po.po_number}))
            po.lines = po.receipts = None

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ENTITY_NAMES}


# --- CSV: one file per entity ---------------------------------------------------------------


@dataclass(frozen=True)
class CsvEntity:
    """How one entity is written as CSV: its file name, columns, required columns and key."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    key: tuple[str, ...]
    record: type[_Record]
    #: CSV column -> record field, where they differ
    renamed: dict[str, str] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"{self.name}.csv"

    def field_of(self, column: str) -> str:
        return self.renamed.get(column, column)


#: The CSV files of master data, as data: the documented headers (docs/workspace.md).
CSV_ENTITIES: dict[str, CsvEntity] = {
    e.name: e
    for e in (
        CsvEntity(
            "vendors",
            ("vendor_id", "name", "aliases", "address", "country", "tax_id", "currency", "iban", "bic",
             "account_number", "routing_number", "status", "risk", "department"),
            ("vendor_id", "name"), ("vendor_id",), VendorRecord, {"vendor_id": "id"},
        ),
        CsvEntity(
            "purchase_orders",
            ("po_number", "vendor_id", "currency", "total", "remaining", "department", "status", "issued_on"),
            ("po_number", "vendor_id", "currency", "total", "remaining"), ("po_number",), PurchaseOrderRecord,
        ),
        CsvEntity(
            "purchase_order_lines",
            ("po_number", "line_no", "description", "quantity", "unit_price"),
            ("po_number", "line_no", "description", "quantity", "unit_price"), ("po_number", "line_no"),
            PurchaseOrderLineRecord,
        ),
        CsvEntity(
            "goods_receipts",
            ("po_number", "line_no", "quantity_received", "received_on"),
            ("po_number", "line_no", "quantity_received"), ("po_number", "line_no", "received_on"), GoodsReceiptRecord,
        ),
        CsvEntity(
            "posted_invoices",
            ("vendor_id", "invoice_number", "total_amount", "currency", "invoice_date"),
            ("vendor_id", "invoice_number", "total_amount", "currency"), ("vendor_id", "invoice_number"),
            PostedInvoiceRecord,
        ),
    )
}
ENTITY_NAMES = tuple(CSV_ENTITIES)


@dataclass(frozen=True)
class RowError:
    """One problem in the input: file, line (1 = the header), column and why."""

    file: str
    line: int | None
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "") + (f" [{self.column}]" if self.column else "")
        return f"{where}: {self.reason}"


class MasterDataError(ValueError):
    """Master data that cannot be loaded; nothing of it was written."""

    def __init__(self, errors: list[RowError]):
        self.errors = errors
        shown = "\n".join(str(e) for e in errors[:20])
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} error(s) in the master data; nothing was loaded.\n{shown}{more}")


def _header_name(raw: str) -> str:
    """ERP exports write 'Vendor ID', 'vendor-id' or 'VENDOR_ID': all read as vendor_id."""
    return re.sub(r"[\s\-./]+", "_", raw.strip().lstrip("\ufeff").strip().lower()).strip("_")


def entity_of(path: str | Path) -> str | None:
    """The entity a CSV file holds, from its name (`vendors.csv`, `Vendors-2024.csv`)."""
    stem = _header_name(Path(path).stem)
    for name in sorted(CSV_ENTITIES, key=len, reverse=True):
        if stem == name or stem.startswith(name + "_"):
            return name
    return None


def parse_csv(text: str, entity: str, filename: str | None = None) -> tuple[list, list[RowError]]:
    """Records of one entity from CSV text, and every problem found (none are skipped silently)."""
    spec = CSV_ENTITIES[entity]
    filename = filename or spec.filename
    text = text.lstrip("\ufeff")
    sample = text[:4096]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return [], [RowError(filename, 1, None, "the file is empty: expected a header line")]
    columns = [_header_name(h) for h in header]
    errors: list[RowError] = []
    for col, raw in zip(columns, header):
        if col not in spec.columns:
            errors.append(RowError(filename, 1, raw, f"unknown column {raw!r}; the columns of {spec.filename} are: {', '.join(spec.columns)}"))
    for col in spec.required:
        if col not in columns:
            errors.append(RowError(filename, 1, col, f"required column {col!r} is missing"))
    seen_twice = {c for c in columns if columns.count(c) > 1}
    for col in sorted(seen_twice):
        errors.append(RowError(filename, 1, col, f"column {col!r} appears more than once"))
    if errors:
        return [], errors

    records: list = []
    keys: dict[tuple, int] = {}
    for line_no, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            errors.append(RowError(filename, line_no, None, f"{len(row)} values for {len(columns)} columns"))
            continue
        values = {spec.field_of(c): v for c, v in zip(columns, row)}
        try:
            record = spec.record.model_validate(values)
        except ValidationError as exc:
            for err in exc.errors():
                loc = str(err["loc"][0]) if err["loc"] else None
                column = next((c for c in columns if spec.field_of(c) == loc), loc)
                message = err["msg"].removeprefix("Value error, ")
                errors.append(RowError(filename, line_no, column, message))
            continue
        key = tuple(str(getattr(record, spec.field_of(k)) or "") for k in spec.key)
        if key in keys:
            errors.append(RowError(filename, line_no, ",".join(spec.key),
                                   f"duplicate key {'/'.join(key)} (first on line {keys[key]})"))
            continue
        keys[key] = line_no
        records.append(record)
    return records, errors


def read_master_data_files(paths: list[Path | str]) -> MasterData:
    """Master data from CSV files (one per entity), a folder of them, or a JSON file.

    Raises `MasterDataError` with every problem found, line by line.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() == ".csv" and entity_of(q))
            if not found and (p / "master_data.json").exists():
                found = [p / "master_data.json"]
            if not found:
                raise MasterDataError([RowError(str(p), None, None, "the folder holds no master-data CSV files "
                                                f"({', '.join(e.filename for e in CSV_ENTITIES.values())}) and no master_data.json")])
            files.extend(found)
        else:
            files.append(p)
    blocks: dict[str, list] = {name: [] for name in ENTITY_NAMES}
    extra: dict[str, Any] = {}
    errors: list[RowError] = []
    for path in files:
        if not path.exists():
            errors.append(RowError(str(path), None, None, "no such file"))
            continue
        if path.suffix.lower() == ".json":
            try:
                data = parse_master_json(path.read_bytes(), str(path))
            except MasterDataError as exc:
                errors.extend(exc.errors)
                continue
            for name in ENTITY_NAMES:
                blocks[name].extend(getattr(data, name))
            extra.update({k: getattr(data, k) for k in ("approval_policy", "fx_to_eur") if getattr(data, k)})
            continue
        entity = entity_of(path)
        if entity is None:
            errors.append(RowError(str(path), None, None, "cannot tell which master data the file holds: name it "
                                   + ", ".join(e.filename for e in CSV_ENTITIES.values())))
            continue
        text, problem = _decode(path.read_bytes())
        if problem:
            errors.append(RowError(str(path), None, None, problem))
            continue
        records, errs = parse_csv(text, entity, str(path))
        errors.extend(errs)
        blocks[entity].extend(records)
    if errors:
        raise MasterDataError(errors)
    return MasterData.model_construct(**blocks, **{k: extra.get(k) for k in ("approval_policy", "fx_to_eur")})


def _decode(data: bytes) -> tuple[str, str | None]:
    if b"\x00" in data[:4096]:
        return "", "the file is binary, not CSV text"
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding), None
        except UnicodeDecodeError:
            continue
    return "", "the file is neither UTF-8 nor Windows-1252 text"


def parse_master_json(data: bytes | str, filename: str = "master_data.json") -> MasterData:
    """Master data from the JSON form (see the module docstring)."""
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MasterDataError([RowError(filename, getattr(exc, "lineno", None), None, f"not JSON: {exc}")]) from None
    if not isinstance(raw, dict):
        raise MasterDataError([RowError(filename, None, None, "expected a JSON object with vendors, purchase_orders, ...")])
    try:
        return MasterData.model_validate(raw)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = [str(x) for x in err["loc"]]
            errors.append(RowError(filename, None, ".".join(loc), err["msg"].removeprefix("Value error, ")))
        raise MasterDataError(errors) from None


def parse_upload(entity: str, data: bytes, filename: str | None = None) -> MasterData:
    """One entity's records from an upload (CSV text or a JSON list of records / master-data object)."""
    if entity not in CSV_ENTITIES:
        raise MasterDataError([RowError(filename or entity, None, None, f"unknown entity {entity!r}; one of {', '.join(ENTITY_NAMES)}")])
    name = filename or CSV_ENTITIES[entity].filename
    stripped = data.lstrip()[:1]
    if stripped in (b"[", b"{"):
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MasterDataError([RowError(name, getattr(exc, "lineno", None), None, f"not JSON: {exc}")]) from None
        if isinstance(raw, list):
            raw = {entity: raw}
        return parse_master_json(json.dumps(raw), name)
    text, problem = _decode(data)
    if problem:
        raise MasterDataError([RowError(name, None, None, problem)])
    records, errors = parse_csv(text, entity, name)
    if errors:
        raise MasterDataError(errors)
    return MasterData.model_construct(**{n: (records if n == entity else []) for n in ENTITY_NAMES},
                                      approval_policy=None, fx_to_eur=None)


# --- loading: one transaction, bulk upserts by natural key -------------------------------------

#: Rows per INSERT statement (a statement holds at most 65,535 parameters on Postgres).
BULK_ROWS = 2000


def _insert_for(session: Session):
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the project runs on Postgres and SQLite
        raise RuntimeError(f"bulk upserts are not implemented for {dialect}")
    return insert


def _upsert(session: Session, table, rows: list[dict], key: tuple[str, ...]) -> int:
    """INSERT ... ON CONFLICT (key) DO UPDATE, only where a value differs; rows written."""
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return _upsert_postgres(session, table, rows, key)
    from sqlalchemy import or_

    insert = _insert_for(session)
    columns = [c for c in rows[0] if c not in key]
    written = 0
    for start in range(0, len(rows), BULK_ROWS):
        stmt = insert(table).values(rows[start : start + BULK_ROWS])
        excluded = stmt.excluded
        changed = or_(*(table.c[c].is_distinct_from(excluded[c]) for c in columns)) if columns else None
        stmt = stmt.on_conflict_do_update(index_elements=list(key), set_={c: excluded[c] for c in columns}, where=changed)
        written += session.execute(stmt.returning(table.c[key[0]])).all().__len__()
    return written


def _upsert_postgres(session: Session, table, rows: list[dict], key: tuple[str, ...]) -> int:
    """COPY the rows into a temporary table, then one INSERT ... SELECT ... ON CONFLICT DO UPDATE
    (tens of thousands of rows a second, in the session's transaction)."""
    from psycopg import sql
    from psycopg.types.json import Jsonb
    from sqlalchemy import JSON

    columns = list(rows[0])
    others = [c for c in columns if c not in key]
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSON)}
    raw = session.connection().connection.driver_connection
    temp = sql.Identifier(f"import_{table.name}")
    target = sql.Identifier(table.name)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    with raw.cursor() as cur:
        cur.execute(sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(temp, target))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(temp, names)) as copy:
            for row in rows:
                copy.write_row([Jsonb(row[c]) if c in json_columns and row[c] is not None else row[c] for c in columns])
        update = sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in others)
        differs = sql.SQL(" OR ").join(
            sql.SQL("t.{} IS DISTINCT FROM EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in others
        )
        cur.execute(
            sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {} WHERE {}").format(
                target, names, names, temp, sql.SQL(", ").join(map(sql.Identifier, key)), update, differs
            )
        )
        written = cur.rowcount
        cur.execute(sql.SQL("DROP TABLE {}").format(temp))
    return written


def _check_references(session: Session, data: MasterData) -> list[RowError]:
    """POs name existing vendors; lines and receipts existing POs (in this data or already loaded)."""
    errors: list[RowError] = []
    vendor_ids = {v.id for v in data.vendors}
    wanted = {po.vendor_id for po in data.purchase_orders} | {p.vendor_id for p in data.posted_invoices}
    missing = sorted(wanted - vendor_ids)
    known = set()
    for start in range(0, len(missing), 10000):
        chunk = missing[start : start + 10000]
        known |= set(session.exec(select(Vendor.id).where(Vendor.id.in_(chunk))).all())
    for i, po in enumerate(data.purchase_orders):
        if po.vendor_id not in vendor_ids and po.vendor_id not in known:
            errors.append(RowError("purchase_orders", i + 2, "vendor_id", f"vendor {po.vendor_id} is neither in this import nor in the vendor master"))
    for i, p in enumerate(data.posted_invoices):
        if p.vendor_id not in vendor_ids and p.vendor_id not in known:
            errors.append(RowError("posted_invoices", i + 2, "vendor_id", f"vendor {p.vendor_id} is neither in this import nor in the vendor master"))
    po_numbers = {po.po_number for po in data.purchase_orders}
    needed = sorted(({ln.po_number for ln in data.purchase_order_lines} | {r.po_number for r in data.goods_receipts}) - po_numbers)
    known_pos = set(session.exec(select(PurchaseOrder.po_number).where(PurchaseOrder.po_number.in_(needed))).all()) if needed else set()
    for label, records in (("purchase_order_lines", data.purchase_order_lines), ("goods_receipts", data.goods_receipts)):
        for i, rec in enumerate(records):
            if rec.po_number not in po_numbers and rec.po_number not in known_pos:
                errors.append(RowError(label, i + 2, "po_number", f"purchase order {rec.po_number} is neither in this import nor loaded"))
    return errors


def import_master_data(session: Session, data: MasterData) -> dict[str, int]:
    """Load validated master data: upserts by natural key, all or nothing (the caller commits).

    Vendors, POs and posted invoices are upserted; a PO named in the lines (receipts) of this
    import gets exactly those lines (receipts). Returns rows written per entity (unchanged rows
    are not counted). Raises `MasterDataError` when a reference is missing; nothing is written then.
    """
    errors = _check_references(session, data)
    if errors:
        raise MasterDataError(errors)
    counts = dict.fromkeys(ENTITY_NAMES, 0)
    vendor_rows = [
        {"id": v.id, "name": v.name, "aliases": list(v.aliases), "address": v.address, "country": v.country,
         "tax_id": v.tax_id, "currency": v.currency, "iban": v.iban, "bic": v.bic, "account_number": v.account_number,
         "routing_number": v.routing_number, "status": v.status, "risk": v.risk, "department": v.department}
        for v in data.vendors
    ]
    counts["vendors"] = _upsert(session, Vendor.__table__, vendor_rows, ("id",))
    po_rows = [
        {"po_number": p.po_number, "vendor_id": p.vendor_id, "currency": p.currency, "total": p.total,
         "remaining": p.remaining, "department": p.department, "status": p.status, "issued_on": p.issued_on}
        for p in data.purchase_orders
    ]
    counts["purchase_orders"] = _upsert(session, PurchaseOrder.__table__, po_rows, ("po_number",))

    touched = sorted({ln.po_number for ln in data.purchase_order_lines} | {r.po_number for r in data.goods_receipts})
    po_ids = dict(session.exec(select(PurchaseOrder.po_number, PurchaseOrder.id).where(PurchaseOrder.po_number.in_(touched))).all()) if touched else {}
    counts["purchase_order_lines"] = _replace_children(
        session, PurchaseOrderLine, po_ids, data.purchase_order_lines,
        lambda r: (r.line_no, r.description, r.quantity, r.unit_price),
        lambda row: (row.line_no, row.description, row.quantity, row.unit_price),
        lambda pid, r: {"po_id": pid, "line_no": r.line_no, "description": r.description, "quantity": r.quantity, "unit_price": r.unit_price},
    )
    counts["goods_receipts"] = _replace_children(
        session, GoodsReceipt, po_ids, data.goods_receipts,
        lambda r: (r.line_no, r.quantity_received, r.received_on),
        lambda row: (row.line_no, row.quantity_received, row.received_on),
        lambda pid, r: {"po_id": pid, "line_no": r.line_no, "quantity_received": r.quantity_received, "received_on": r.received_on},
    )

    if data.posted_invoices:
        legacy = {"vendors": [], "purchase_orders": [], "posted_invoices": [
            {"vendor_id": p.vendor_id, "invoice_number": p.invoice_number, "total_amount": p.total_amount,
             "currency": p.currency, "invoice_date": p.invoice_date.isoformat() if p.invoice_date else None}
            for p in data.posted_invoices]}
        counts["posted_invoices"] = load_master_data(session, legacy)["posted_invoices"]
    if data.approval_policy or data.fx_to_eur:
        from invoicechain.ap.approval import store_master_policy

        store_master_policy(session, {k: v for k, v in (("approval_policy", data.approval_policy), ("fx_to_eur", data.fx_to_eur)) if v})
    session.flush()
    return counts


def _replace_children(session: Session, table, po_ids: dict[str, int], records: list, key_of, row_key, values) -> int:
    """Make each named PO's lines (receipts) equal the records; rows added or removed."""
    if not records:
        return 0
    by_po: dict[int, list] = {}
    for rec in records:
        by_po.setdefault(po_ids[rec.po_number], []).append(rec)
    existing: dict[int, list] = {}
    ids = list(by_po)
    for start in range(0, len(ids), 10000):
        for row in session.exec(select(table).where(table.po_id.in_(ids[start : start + 10000]))):
            existing.setdefault(row.po_id, []).append(row)
    written = 0
    inserts = []
    for pid, recs in by_po.items():
        # Rows already equal to a record stay; the others go, and the missing records are added.
        remaining = Counter(key_of(r) for r in recs)
        for row in existing.get(pid, []):
            k = row_key(row)
            if remaining[k] > 0:
                remaining[k] -= 1
            else:
                session.delete(row)
                written += 1
        for rec in recs:
            if remaining[key_of(rec)] > 0:
                remaining[key_of(rec)] -= 1
                inserts.append(values(pid, rec))
    session.flush()
    if inserts:
        session.execute(table.__table__.insert(), inserts)
        written += len(inserts)
    return written


# --- export back to CSV ----------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "|".join(map(str, value))
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def master_data_rows(session: Session) -> dict[str, list[dict]]:
    """The loaded master data as CSV rows per entity (the columns of `CSV_ENTITIES`)."""
    numbers = dict(session.exec(select(PurchaseOrder.id, PurchaseOrder.po_number)).all())
    out: dict[str, list[dict]] = {}
    out["vendors"] = [{"vendor_id": v.id, **{c: getattr(v, c) for c in CSV_ENTITIES["vendors"].columns[1:]}}
                      for v in session.exec(select(Vendor).order_by(Vendor.id))]
    out["purchase_orders"] = [{c: getattr(p, c) for c in CSV_ENTITIES["purchase_orders"].columns}
                              for p in session.exec(select(PurchaseOrder).order_by(PurchaseOrder.po_number))]
    out["purchase_order_lines"] = [
        {"po_number": numbers[ln.po_id], **{c: getattr(ln, c) for c in CSV_ENTITIES["purchase_order_lines"].columns[1:]}}
        for ln in session.exec(select(PurchaseOrderLine).order_by(PurchaseOrderLine.po_id, PurchaseOrderLine.line_no))
    ]
    out["goods_receipts"] = [
        {"po_number": numbers[r.po_id], **{c: getattr(r, c) for c in CSV_ENTITIES["goods_receipts"].columns[1:]}}
        for r in session.exec(select(GoodsReceipt).order_by(GoodsReceipt.po_id, GoodsReceipt.line_no, GoodsReceipt.id))
    ]
    out["posted_invoices"] = [{c: getattr(p, c) for c in CSV_ENTITIES["posted_invoices"].columns}
                              for p in session.exec(select(PostedInvoice).order_by(PostedInvoice.vendor_id, PostedInvoice.invoice_number))]
    for name in out:
        out[name].sort(key=lambda row: tuple(_cell(row[k]) for k in CSV_ENTITIES[name].key))
    return out


def write_csv(rows: list[dict], entity: str) -> str:
    """CSV text of one entity, header first."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    columns = CSV_ENTITIES[entity].columns
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def export_master_data(session: Session, folder: str | Path) -> dict[str, int]:
    """Write the loaded master data as one CSV per entity into `folder`; rows per entity."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for entity, rows in master_data_rows(session).items():
        (folder / CSV_ENTITIES[entity].filename).write_text(write_csv(rows, entity), encoding="utf-8")
        counts[entity] = len(rows)
    return counts
