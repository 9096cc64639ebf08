"""learning loop: evaluation sets, gated promotion, job progress

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('promotiondecision', schema=None) as batch_op:
        batch_op.add_column(sa.Column('comparison', _JSON, nullable=True))
        batch_op.add_column(sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('promotiondecision', schema=None) as batch_op:
        batch_op.drop_column('actor')
        batch_op.drop_column('comparison')
