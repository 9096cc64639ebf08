"""The configuration table of docs/configuration.md, generated from `Settings` so the two never drift.

    python -m invoicechain.settings_doc        # prints the markdown table
"""

from __future__ import annotations

from invoicechain.config import Settings


def _names(name: str, field) -> list[str]:
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        names = [str(c) for c in choices]
        return names[::-1] if names[0].startswith("INVOICECHAIN_") else names
    return [f"INVOICECHAIN_{name.upper()}"]


def settings_table() -> str:
    """One row per setting: its environment variable(s), default and meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default is None else str(default)
        variables = " / ".join(f"`{n}`" for n in _names(name, field))
        rows.append(f"| {variables} | `{shown}` | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
