"""Vocabularies as types: no step, status, queue, adapter name, decision or reason code is
written as a bare string in the application packages; code names the enum member
(`StepRunStatus.DONE`, `Queue.EXTRACT`), so a renamed or mistyped value fails at import,
not in a query that silently matches nothing.

The check reads the source: every string literal (docstrings aside) equal to a value of a
`StrEnum` in `invoicechain.enums` or `invoicechain.decisions` is reported, unless the same
word means something else where it stands; those places are listed in `OTHER_MEANINGS`
with what the word means there.
"""

from __future__ import annotations

import ast
from enum import StrEnum
from pathlib import Path

import invoicechain.decisions
import invoicechain.enums

ROOT = Path(__file__).resolve().parents[3]
#: The application packages (pyproject.toml [tool.importlinter] root_packages).
PACKAGES = ("invoicechain", "extraction", "models", "training", "ingestion", "workers", "api", "ui", "cli")
#: Where the vocabularies are defined.
DEFINITIONS = {ROOT / "invoicechain" / "enums.py", ROOT / "invoicechain" / "decisions.py"}

#: (file, enclosing function or class, word) -> (how many times, what the word means there):
#: places where a vocabulary's word means something else.
OTHER_MEANINGS: dict[tuple[str, str, str], tuple[int, str]] = {
    ("invoicechain/ap/match_po.py", "_check_line", "received"): (1, "a PO line's received-quantity column"),
    ("models/decoding.py", "_Row", "done"): (1, "a slot: the row has finished decoding"),
    ("models/registry.py", "compare_on_eval_set", "candidate"): (1, "the comparison's side for the candidate version"),
    ("models/registry.py", "compare_on_eval_set", "active"): (1, "the comparison's side for the active version"),
    ("models/registry.py", "promote", "candidate"): (2, "the comparison's side for the candidate version"),
    ("models/registry.py", "promote", "active"): (1, "the comparison's side for the active version"),
    ("training/evaluate.py", "_load_runtime", "candidate"): (1, "the version label of the adapter under evaluation"),
    ("training/jobs.py", "run_training_job", "cancelled"): (1, "how the training loop stopped (TrainResult.stopped)"),
    ("training/sft.py", "TrainResult", "cancelled"): (1, "how the training loop stopped"),
    ("training/sft.py", "train_lora", "cancelled"): (2, "how the training loop stopped"),
    ("training/synth/plan.py", "InvoiceBuilder._noise", "received"): (2, "a rubber stamp printed on a synthetic scan"),
    ("training/synth/render.py", "draw_stamp", "received"): (2, "a rubber stamp printed on a synthetic scan"),
    ("ingestion/dropfolder.py", "<module>", "done"): (1, "the drop folder's subfolder for taken files"),
    ("ingestion/dropfolder.py", "<module>", "failed"): (1, "the drop folder's subfolder for refused files"),
    ("api/routes/master_data.py", "_rerun_out", "queued"): (2, "a re-run's flag in the reply: put on the queue or not"),
    ("api/routes/training_jobs.py", "<module>", "training"): (1, "the OpenAPI tag of the routes"),
    ("cli/models.py", "list_adapters", "candidate"): (1, "a column heading"),
    ("cli/models.py", "list_adapters", "active"): (1, "a column heading"),
    ("cli/train.py", "train", "training"): (1, "the progress bar's label"),
    ("ui/app.py", "_invoice_list", "received"): (1, "a column heading: when the invoice arrived"),
    ("cli/run.py", "process_documents", "rejected"): (1, "a document refused before it became an invoice"),
    ("cli/inbox.py", "watch.show", "failed"): (1, "the word printed for a mail that made no invoice"),
}


def vocabularies() -> dict[str, list[str]]:
    """Each value of every vocabulary enum, with the enums that hold it."""
    values: dict[str, list[str]] = {}
    for module in (invoicechain.enums, invoicechain.decisions):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, StrEnum) and obj is not StrEnum and obj.__module__ == module.__name__:
                for member in obj:
                    values.setdefault(member.value, []).append(f"{obj.__name__}.{member.name}")
    return values


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, nodes) and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def literals(path: Path, values: dict[str, list[str]]):
    """(scope, line, word) for each string literal in `path` that is a vocabulary value."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = _docstrings(tree)

    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield from visit(child, child.name if scope == "<module>" else f"{scope}.{child.name}")
                continue
            if isinstance(child, ast.Constant) and isinstance(child.value, str) and child.value in values and id(child) not in skip:
                yield scope, child.lineno, child.value
            yield from visit(child, scope)

    yield from visit(tree, "<module>")


def test_no_vocabulary_value_is_a_bare_string_in_the_application():
    values = vocabularies()
    found: dict[tuple[str, str, str], list[int]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path in DEFINITIONS:
                continue
            for scope, line, word in literals(path, values):
                found.setdefault((str(path.relative_to(ROOT)), scope, word), []).append(line)
    bare = [
        f"{rel}:{line} ({scope}) {word!r}: use {' or '.join(values[word])}"
        for (rel, scope, word), lines in found.items()
        if len(lines) != OTHER_MEANINGS.get((rel, scope, word), (0, ""))[0]
        for line in lines
    ]
    assert not bare, "write the enum member, not the string:\n" + "\n".join(bare)
    stale = [key for key, (count, _) in OTHER_MEANINGS.items() if len(found.get(key, [])) != count]
    assert not stale, f"OTHER_MEANINGS lists places that no longer hold the word so often: {stale}"


def test_the_check_sees_a_bare_status(tmp_path):
    """A status compared as a string is found; the member, a docstring and other words are not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        'def f(run):\n    """done"""\n    if run.status == "done":\n        return StepRunStatus.DONE\n    return "finished"\n'
    )
    assert list(literals(sample, vocabularies())) == [("f", 3, "done")]


def test_every_vocabulary_is_read():
    values = vocabularies()
    for word in ("extract", "toolchain", "done", "queued", "candidate", "on_hold", "open", "needs_review",
                 "validate_invoice", "PENDING_APPROVAL", "UNKNOWN_VENDOR"):
        assert word in values, word
