"""The shape of the code base, read from its source: functions a person can hold, tests
that do not lean on other tests, and unit tests that need nothing outside the clone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
#: The application packages (pyproject.toml [tool.importlinter] root_packages).
PACKAGES = ("invoicechain", "extraction", "models", "training", "ingestion", "workers", "api", "ui", "cli")
#: A function longer than this says why in its docstring, with the words "Long because".
MAX_LINES = 80
REASON = re.compile(r"\blong because\b", re.IGNORECASE)


def _sources(*folders: str):
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _docstring_lines(node: ast.AST) -> int:
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


def long_functions(limit: int = MAX_LINES) -> list[tuple[str, int, bool]]:
    """(path:line qualified name, length in lines, whether its docstring gives a reason) for each
    function of the application packages longer than `limit` lines, its docstring not counted.
    Database migrations are exempt: a migration is a flat list of DDL statements, kept as
    written when it shipped."""
    found = []
    for path, tree in _sources(*PACKAGES):
        if "migrations" in path.parts:
            continue

        def visit(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        length = child.end_lineno - child.lineno + 1 - _docstring_lines(child)
                        if length > limit:
                            reason = bool(REASON.search(ast.get_docstring(child) or ""))
                            found.append((f"{path.relative_to(ROOT)}:{child.lineno} {name}", length, reason))
                    visit(child, f"{name}.")
                else:
                    visit(child, prefix)

        visit(tree, "")
    return found


def test_no_function_is_over_80_lines_without_a_reason_in_its_docstring():
    unexplained = [f"{where} ({n} lines)" for where, n, reason in long_functions() if not reason]
    assert not unexplained, "split these or say 'Long because ...' in the docstring:\n" + "\n".join(unexplained)


def test_the_length_check_finds_a_long_function():
    """The check itself sees functions: some exist over a low limit, so a long one would be seen."""
    assert any(n > 20 for _, n, _ in long_functions(limit=20))


def test_no_test_module_imports_another_test_module():
    """Shared fixtures live in conftest.py, builders in tests/factories.py or a helper module
    whose name does not start with test_; a test module never imports another."""
    offenders = []
    for path, tree in _sources("tests", "benchmarks"):
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "tests" and any(p.startswith("test_") for p in parts):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_unit_tests_need_nothing_outside_the_clone():
    """tests/unit runs on a fresh clone: no reference to the sibling `shared` folder there."""
    pattern = re.compile(r"""parent\s*/\s*["']shared["']|\.\./shared|\bSHARED\b""")
    offenders = [
        f"{path.relative_to(ROOT)}:{i}"
        for path in sorted((ROOT / "tests" / "unit").rglob("*.py"))
        if path != Path(__file__).resolve()
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, offenders


#: Fixtures of tests/conftest.py that start or reach a service, or load the real model.
SERVICE_FIXTURES = {"pg_url", "settings", "session", "redis_url", "auth_headers", "base_model_dir", "stack"}


def test_unit_tests_use_no_service_fixture():
    """tests/unit needs no Postgres, Redis or real model: no unit test (or unit fixture) asks
    for a fixture that reaches one; such tests live in tests/integration."""
    offenders = []
    for path, tree in _sources("tests/unit"):
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                used = {a.arg for a in node.args.args + node.args.kwonlyargs} & SERVICE_FIXTURES
                if used and (node.name.startswith("test_") or any(
                        "fixture" in ast.unparse(d) for d in node.decorator_list)):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} uses {sorted(used)}")
    assert not offenders, "\n".join(offenders)


def test_the_readme_is_a_front_door_whose_links_resolve():
    """README.md stays short (at most 150 lines), names the two commands and links only to
    files that exist; the reference pages it points to are there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert "make demo" in readme and "make test" in readme
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert links
    missing = [link for link in links if not link.startswith(("http://", "https://")) and not (ROOT / link).exists()]
    assert not missing, missing
    for page in ("architecture", "extraction", "benchmarks", "operations", "training"):
        assert f"docs/{page}.md" in links, page
    assert "CHANGELOG.md" in links
