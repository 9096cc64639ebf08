"""Database tables, engine and migrations."""

from invoicechain.db.session import get_engine, init_db, session_scope

__all__ = ["get_engine", "init_db", "session_scope"]
