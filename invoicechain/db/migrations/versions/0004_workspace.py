"""workspace: master data imports, review routing, vendor proposals

Revision ID: 0004
Revises: 0003
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401
import sqlmodel  # noqa: F401

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

VENDOR_COLUMNS = (
    ("proposed_by", lambda: sa.String(length=200)),
    ("source_invoice_id", lambda: sa.String(length=32)),
    ("bank_confirmed_by", lambda: sa.String(length=200)),
    ("bank_confirmed_at", lambda: sqlmodel.sql.sqltypes.UTCDateTime()),
)


def upgrade() -> None:
    with op.batch_alter_table("vendor") as batch:
        for name, kind in VENDOR_COLUMNS:
            batch.add_column(sa.Column(name, kind(), nullable=True))
        # room for pending_bank_confirmation
        batch.alter_column("status", type_=sa.String(length=32), existing_type=sa.String(length=16), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("vendor") as batch:
        batch.alter_column("status", type_=sa.String(length=16), existing_type=sa.String(length=32), existing_nullable=False)
        for name, _ in reversed(VENDOR_COLUMNS):
            batch.drop_column(name)
