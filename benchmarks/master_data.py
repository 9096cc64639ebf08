"""Time a master-data import of 100,000 vendors from CSV into Postgres (target: under a minute).

    .venv/bin/python -m benchmarks.master_data [--vendors 100000] [--database-url postgresql://...]

Writes a `vendors.csv` of generated vendors (valid IBANs, aliases, addresses), creates a
scratch database (dropped afterwards) unless one is given, then times reading and
validating the CSV, the bulk upsert in one transaction, and a second import of the same
file (every row unchanged: nothing written). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def vendors_csv(path: Path, n: int) -> None:
    """n vendors with German IBANs whose check digits are computed, as an ERP would export them."""
    with path.open("w", encoding="utf-8") as out:
        out.write("vendor_id,name,aliases,address,country,tax_id,currency,iban,bic,status,risk,department\n")
        for i in range(n):
            bban = f"37040044{i:010d}"
            check = 98 - int(bban + "131400") % 97  # DE = 13 14, then 00
            out.write(f"V{i:07d},Vendor {i} GmbH,VENDOR {i}|Vendor {i},\"Strasse {i % 500}, {10000 + i % 89999} Berlin\","
                      f"DE,DE{100000000 + i},EUR,DE{check:02d}{bban},COBADEFFXXX,active,low,Operations\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vendors", type=int, default=100_000)
    parser.add_argument("--database-url", default=None, help="an existing database (default: a scratch one)")
    args = parser.parse_args()

    import psycopg

    from invoicechain import config
    from invoicechain.db.session import init_db, session_scope
    from invoicechain.master_data import import_master_data, read_master_data_files

    scratch = None
    url = args.database_url
    if url is None:
        scratch = f"ic_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{scratch}"')
        url = ADMIN_URL.rsplit("/", 1)[0] + "/" + scratch
    os.environ["DATABASE_URL"] = url
    config.get_settings.cache_clear()
    settings = config.get_settings()
    rows = []
    try:
        init_db(settings)
        with tempfile.TemporaryDirectory(prefix="md-bench-") as tmp:
            path = Path(tmp) / "vendors.csv"
            vendors_csv(path, args.vendors)
            t0 = time.perf_counter()
            data = read_master_data_files([path])
            t_read = time.perf_counter() - t0
            t1 = time.perf_counter()
            with session_scope(settings) as session:
                written = import_master_data(session, data)["vendors"]
            t_load = time.perf_counter() - t1
            t2 = time.perf_counter()
            with session_scope(settings) as session:
                again = import_master_data(session, read_master_data_files([path]))["vendors"]
            t_again = time.perf_counter() - t2
        rows = [
            ("read and validate the CSV (IBAN checksums included)", f"{t_read:.1f} s", f"{args.vendors:,} rows"),
            ("bulk upsert, one transaction", f"{t_load:.1f} s", f"{written:,} written"),
            ("first import, total", f"**{t_read + t_load:.1f} s**", f"{args.vendors / (t_read + t_load):,.0f} rows/s"),
            ("same file again (read + upsert)", f"{t_again:.1f} s", f"{again:,} written"),
        ]
    finally:
        if scratch:
            from invoicechain.db.session import dispose_engines

            dispose_engines()
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    print(f"Master-data import, {args.vendors:,} vendors ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)\n")
    print("| phase | time | rows |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
