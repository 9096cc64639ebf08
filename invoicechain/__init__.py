"""Invoice Toolchain: the shared core (settings, field schema, tables, PDF text, AP rules, CLI)."""

__version__ = "0.1.0"
