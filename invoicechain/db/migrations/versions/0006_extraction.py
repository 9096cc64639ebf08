"""extraction: document type, paid, language, OCR confidence

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.add_column('document', sa.Column('ocr', _JSON, nullable=True))
    op.add_column('invoice', sa.Column('document_type', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))
    op.add_column('invoice', sa.Column('paid', sa.Boolean(), nullable=True))
    op.add_column('invoice', sa.Column('language', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True))


def downgrade() -> None:
    op.drop_column('invoice', 'language')
    op.drop_column('invoice', 'paid')
    op.drop_column('invoice', 'document_type')
    op.drop_column('document', 'ocr')
