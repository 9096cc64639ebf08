"""Reading master data from CSV and JSON: every problem reported by line and column, ERP
export quirks (header spelling, delimiter, byte-order mark) read as intended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from invoicechain.master_data import (
    CSV_ENTITIES,
    MasterData,
    MasterDataError,
    entity_of,
    parse_csv,
    parse_upload,
    read_master_data_files,
    write_csv,
)

ROOT = Path(__file__).resolve().parents[3]
GOOD_IBAN = "DE89370400440532013000"
BAD_IBAN = "DE89370400440532013001"  # one digit off: the checksum fails


def errors_of(text: str, entity: str = "vendors") -> list[tuple[int | None, str | None, str]]:
    _, errors = parse_csv(text, entity)
    return [(e.line, e.column, e.reason) for e in errors]


def test_wrong_header_is_reported_on_line_1_and_nothing_is_read():
    records, errors = parse_csv("vendor_id,name,colour\nV1,Acme,blue\n", "vendors")
    assert records == []
    assert [(e.line, e.column) for e in errors] == [(1, "colour")]
    assert "unknown column 'colour'" in errors[0].reason and "vendor_id, name" in errors[0].reason


def test_missing_required_column():
    assert errors_of("name,iban\nAcme,\n") == [(1, "vendor_id", "required column 'vendor_id' is missing")]


def test_duplicate_key_names_the_first_line():
    got = errors_of(f"vendor_id,name\nV1,Acme\nV2,Beta\nV1,Acme again\n")
    assert got == [(4, "vendor_id", "duplicate key V1 (first on line 2)")]


def test_bad_iban_checksum_and_wrong_date_format():
    assert errors_of(f"vendor_id,name,iban\nV1,Acme,{GOOD_IBAN}\nV2,Beta,{BAD_IBAN}\n") == [
        (3, "iban", f"IBAN '{BAD_IBAN}' is not valid (the number's checksum or check digit is invalid)")
    ]
    got = errors_of("po_number,vendor_id,currency,total,remaining,issued_on\nP1,V1,EUR,10.00,10.00,05/01/2026\n"
                    "P2,V1,EUR,1.000,00,1.00,2026-01-05\n", "purchase_orders")
    assert got[0] == (2, "issued_on", "date '05/01/2026' is not in the format YYYY-MM-DD")
    assert got[1] == (3, None, "7 values for 6 columns")


def test_erp_export_quirks_header_spelling_semicolons_bom_and_aliases():
    text = "\ufeffVendor ID;Name;Aliases;IBAN;Status\nV1;Acme GmbH;ACME|Acme Industrial;DE89 3704 0044 0532 0130 00;\n"
    records, errors = parse_csv(text, "vendors")
    assert errors == []
    (v,) = records
    assert (v.id, v.name, v.aliases, v.iban, v.status) == ("V1", "Acme GmbH", ["ACME", "Acme Industrial"], GOOD_IBAN, "active")


def test_amounts_must_be_plain_decimals():
    got = errors_of("po_number,line_no,description,quantity,unit_price\nP1,1,Bolts,10,\"1,234.50\"\n", "purchase_order_lines")
    assert got == [(2, "unit_price", "amount '1,234.50' is not a decimal number (write 1234.50: a dot, no thousands separator)")]


def test_entity_from_file_name():
    assert entity_of("vendors.csv") == "vendors"
    assert entity_of("Purchase-Order-Lines_2026.csv") == "purchase_order_lines"
    assert entity_of("purchase_orders.csv") == "purchase_orders"
    assert entity_of("notes.csv") is None


def test_folder_with_one_bad_file_loads_nothing_and_reports_each_file(tmp_path):
    (tmp_path / "vendors.csv").write_text(f"vendor_id,name,iban\nV1,Acme,{GOOD_IBAN}\n")
    (tmp_path / "goods_receipts.csv").write_text("po_number,line_no,quantity_received,received_on\nP1,1,3,2026-13-01\n")
    with pytest.raises(MasterDataError) as caught:
        read_master_data_files([tmp_path])
    (err,) = caught.value.errors
    assert err.file.endswith("goods_receipts.csv") and err.line == 2 and err.column == "received_on"
    assert "nothing was loaded" in str(caught.value)


def test_binary_and_empty_uploads_are_clear_errors():
    with pytest.raises(MasterDataError, match="binary"):
        parse_upload("vendors", b"\x00\x01\x02PK")
    with pytest.raises(MasterDataError, match="unknown entity"):
        parse_upload("customers", b"id\n1\n")
    data = parse_upload("vendors", json.dumps([{"id": "V9", "name": "Zeta", "iban": GOOD_IBAN}]).encode())
    assert [v.id for v in data.vendors] == ["V9"]


def test_json_master_data_and_sample_csv_set_describe_the_same_data():
    from_json = read_master_data_files([ROOT / "samples" / "master_data.json"])
    from_csv = read_master_data_files([ROOT / "samples" / "master-data"])
    def rows(data, name):
        return sorted(json.dumps(r.model_dump(mode="json"), sort_keys=True) for r in getattr(data, name))

    for name in CSV_ENTITIES:
        assert rows(from_json, name) == rows(from_csv, name), name
        assert rows(from_csv, name), name


def test_csv_written_reads_back_the_same():
    data = MasterData.model_validate(json.loads((ROOT / "samples" / "master_data.json").read_text()))
    rows = [{"vendor_id": v.id, **v.model_dump(exclude={"id"})} for v in data.vendors]
    records, errors = parse_csv(write_csv(rows, "vendors"), "vendors")
    assert errors == [] and records == data.vendors
