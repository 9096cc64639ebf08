"""Master data into Postgres: CSV and JSON through the CLI and the API, all or nothing,
upserts by natural key, export back to the same CSV."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select
from typer.testing import CliRunner

from invoicechain.db.session import session_scope
from invoicechain.db.tables import GoodsReceipt, PostedInvoice, PurchaseOrder, PurchaseOrderLine, Vendor

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_SET = ROOT / "samples" / "master-data"
TABLES = {"vendors": Vendor, "purchase_orders": PurchaseOrder, "purchase_order_lines": PurchaseOrderLine,
          "goods_receipts": GoodsReceipt, "posted_invoices": PostedInvoice}
GOOD_IBAN = "DE89370400440532013000"


def counts(settings) -> dict[str, int]:
    with session_scope(settings) as session:
        return {name: session.exec(select(func.count()).select_from(t)).one() for name, t in TABLES.items()}


def cli(*args: str):
    from cli.main import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture
def app(settings, redis_url, monkeypatch):
    from invoicechain import config
    from workers.celery_app import reconfigure

    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    reconfigure(config.get_settings())
    from api.main import create_app

    yield create_app()
    config.get_settings.cache_clear()


def test_cli_imports_the_sample_company_then_changes_nothing_on_a_second_import(settings, tmp_path):
    result = cli("master-data", "import", str(SAMPLE_SET), "--no-rerun")
    assert result.exit_code == 0, result.output
    assert "vendors\t8 read\t8 written" in result.output
    assert counts(settings) == {"vendors": 8, "purchase_orders": 8, "purchase_order_lines": 44, "goods_receipts": 56, "posted_invoices": 15}

    again = cli("master-data", "import", str(SAMPLE_SET), "--no-rerun")
    assert again.exit_code == 0 and "vendors\t8 read\t0 written" in again.output and "goods_receipts\t56 read\t0 written" in again.output

    out = tmp_path / "export"
    exported = cli("master-data", "export", str(out))
    assert exported.exit_code == 0, exported.output
    for path in SAMPLE_SET.glob("*.csv"):
        assert (out / path.name).read_text() == path.read_text(), path.name


def test_upsert_by_natural_key_changes_only_what_differs(settings, tmp_path):
    assert cli("master-data", "import", str(SAMPLE_SET), "--no-rerun").exit_code == 0
    vendors = (SAMPLE_SET / "vendors.csv").read_text().splitlines()
    vendors[1] = vendors[1].replace(",active,", ",on_hold,")
    (tmp_path / "vendors.csv").write_text("\n".join(vendors) + "\n")
    # A PO's lines file names all its lines: a line left out is removed.
    lines = (SAMPLE_SET / "purchase_order_lines.csv").read_text().splitlines()
    po = lines[1].split(",")[0]
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.startswith(po + ",")][:1]
    (tmp_path / "purchase_order_lines.csv").write_text("\n".join(kept) + "\n")
    result = cli("master-data", "import", str(tmp_path), "--no-rerun")
    assert result.exit_code == 0, result.output
    assert "vendors\t8 read\t1 written" in result.output
    with session_scope(settings) as session:
        vid = vendors[1].split(",")[0]
        assert session.get(Vendor, vid).status == "on_hold"
        po_row = session.exec(select(PurchaseOrder).where(PurchaseOrder.po_number == po)).one()
        assert len(session.exec(select(PurchaseOrderLine).where(PurchaseOrderLine.po_id == po_row.id)).all()) == 1
    assert counts(settings)["vendors"] == 8


@pytest.mark.parametrize(
    ("filename", "text", "line", "column", "words"),
    [
        ("vendors.csv", "vendor_id,name,colour\nV1,Acme,red\n", 1, "colour", "unknown column"),
        ("vendors.csv", "vendor_id,name\nV1,Acme\nV1,Acme twice\n", 3, "vendor_id", "duplicate key V1"),
        ("vendors.csv", "vendor_id,name,iban\nV1,Acme,DE89370400440532013001\n", 2, "iban", "checksum"),
        ("purchase_orders.csv", "po_number,vendor_id,currency,total,remaining,issued_on\nP1,V10001,AUD,1.00,1.00,1/2/2026\n",
         2, "issued_on", "YYYY-MM-DD"),
        ("purchase_orders.csv", "po_number,vendor_id,currency,total,remaining\nP1,NOBODY,EUR,1.00,1.00\n",
         2, "vendor_id", "neither in this import nor in the vendor master"),
    ],
)
def test_bad_input_loads_nothing_and_names_line_and_column(settings, tmp_path, filename, text, line, column, words):
    shutil.copytree(SAMPLE_SET, tmp_path / "set")
    (tmp_path / "set" / filename).write_text(text)
    result = cli("master-data", "import", str(tmp_path / "set"), "--no-rerun")
    assert result.exit_code == 1
    assert f"{filename}:{line} [{column}]" in result.output or f"{filename.removesuffix('.csv')}:{line} [{column}]" in result.output
    assert words in result.output and "nothing was loaded" in result.output
    assert set(counts(settings).values()) == {0}


def test_json_master_data_imports_through_the_same_model(settings):
    result = cli("master-data", "import", str(ROOT / "samples" / "master_data.json"), "--no-rerun")
    assert result.exit_code == 0, result.output
    assert counts(settings)["goods_receipts"] == 56


def test_api_upload_csv_and_json_per_entity(app, settings, auth_headers):
    client = TestClient(app)
    vendors = (SAMPLE_SET / "vendors.csv").read_bytes()
    r = client.post("/v1/master-data/vendors", content=vendors, headers={**auth_headers, "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert (r.json()["read"], r.json()["written"]) == (8, 8)
    r = client.post("/v1/master-data/purchase_orders", files={"file": ("po.csv", (SAMPLE_SET / "purchase_orders.csv").read_bytes(), "text/csv")},
                    headers=auth_headers)
    assert r.status_code == 200 and r.json()["written"] == 8, r.text
    r = client.post("/v1/master-data/vendors", json=[{"id": "V20000", "name": "Zeta Tools GmbH", "iban": GOOD_IBAN}], headers=auth_headers)
    assert r.status_code == 200 and r.json()["written"] == 1, r.text

    bad = b"vendor_id,name,iban\nV30000,Ok Ltd,\nV30001,Bad Ltd,DE00123\n"
    r = client.post("/v1/master-data/vendors", content=bad, headers={**auth_headers, "Content-Type": "text/csv"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail["errors"] == [{"file": "vendors.csv", "line": 3, "column": "iban", "reason": detail["errors"][0]["reason"]}]
    assert "nothing was loaded" in detail["message"]
    assert counts(settings)["vendors"] == 9  # V30000 was not loaded either

    r = client.post("/v1/master-data/customers", content=b"x", headers=auth_headers)
    assert r.status_code == 404
    r = client.get("/v1/master-data/vendors.csv", headers=auth_headers)
    assert r.status_code == 200 and r.text.splitlines()[0].startswith("vendor_id,name,aliases")
    assert client.post("/v1/master-data/vendors", content=vendors).status_code == 401


def test_100000_vendors_with_one_bad_row_load_nothing_and_the_fixed_file_loads_whole(settings, tmp_path):
    from benchmarks.master_data import vendors_csv

    path = tmp_path / "vendors.csv"
    vendors_csv(path, 100_000)
    good = path.read_text()
    path.write_text(good + "V9999999,Last Vendor GmbH,,,DE,,EUR,DE00123,,active,low,\n")
    result = cli("master-data", "import", str(path), "--no-rerun")
    assert result.exit_code == 1 and "vendors.csv:100002 [iban]" in result.output
    assert counts(settings)["vendors"] == 0
    path.write_text(good)
    result = cli("master-data", "import", str(path), "--no-rerun")
    assert result.exit_code == 0 and "vendors\t100000 read\t100000 written" in result.output
    assert counts(settings)["vendors"] == 100_000
