#!/usr/bin/env bash
# Rebuild migration 0001 from the tables (only while no database outside tests uses the schema).
set -euo pipefail
cd "$(dirname "$0")/.."
DB="ic_regen_$$"
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $DB"
trap 'psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB"' EXIT
rm -f invoicechain/db/migrations/versions/0001_initial_schema.py
.venv/bin/python - "$DB" <<'PY'
import sys
from alembic import command
from invoicechain.config import Settings
from invoicechain.db.session import alembic_config
cfg = alembic_config(Settings(database_url=f"postgresql://postgres@127.0.0.1:5432/{sys.argv[1]}"))
command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
PY
sed -i '/^Create Date:/d' invoicechain/db/migrations/versions/0001_initial_schema.py
