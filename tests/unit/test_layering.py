"""Product code never imports the test doubles: only the commands that run them do, inside the command."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import enrolment_sync

PACKAGE = "enrolment_sync"
DOUBLES = f"{PACKAGE}.testing"
# (module, top-level function): the commands whose job is to run the doubles, importing them when called
ALLOWED = {(f"{PACKAGE}.cli", "simulator"), (f"{PACKAGE}.cli", "demo"), (f"{PACKAGE}.demo", "demo_main")}


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The absolute module names an import statement (or importlib.import_module("...")) brings in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = module.split(".")
            anchor = parts if is_package else parts[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base]) if base else ".".join(anchor)
        return [base, *(f"{base}.{alias.name}" for alias in node.names)]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in {"import_module", "__import__"} and isinstance(node.args[0].value, str):
            return [node.args[0].value]
    return []


def forbidden_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """`module:line` of every import of the test doubles outside the allowed command functions."""
    found = []
    for top in ast.parse(source).body:
        allowed = isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef) and (module, top.name) in ALLOWED
        for node in ast.walk(top):
            names = _imported(node, module, is_package)
            if not allowed and any(n == DOUBLES or n.startswith(f"{DOUBLES}.") for n in names):
                found.append(f"{module}:{getattr(node, 'lineno', '?')}")
    return found


def product_modules() -> list[tuple[Path, str]]:
    root = Path(enrolment_sync.__file__).parent
    modules = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] == "testing":
            continue
        parts = [PACKAGE, *relative.with_suffix("").parts]
        modules.append((path, ".".join(parts)))
    return modules


def test_no_product_module_imports_the_test_doubles() -> None:
    modules = product_modules()
    assert len(modules) > 20, "the walk must see the whole package"
    offenders = [
        hit
        for path, module in modules
        for hit in forbidden_imports(path.read_text("utf-8"), module, is_package=path.name == "__init__.py")
    ]
    assert offenders == [], f"product modules import {DOUBLES}: {offenders}"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("enrolment_sync.job", "from enrolment_sync.testing.kvca import SimulatorConfig\n", 1),
        ("enrolment_sync.job", "import enrolment_sync.testing.servers\n", 1),
        ("enrolment_sync.job", "from .testing import servers\n", 1),
        ("enrolment_sync.job", "from . import testing\n", 1),
        ("enrolment_sync.outbox.worker", "from ..testing.fake_sheets import RunningFakeSheets\n", 1),
        ("enrolment_sync.outbox", "from ..testing import fake_sheets\n", 1),
        ("enrolment_sync.job", "def f():\n    from .testing.kvca import serve\n", 1),
        ("enrolment_sync.job", "import importlib\nimportlib.import_module('enrolment_sync.testing.kvca')\n", 1),
        ("enrolment_sync.cli", "from .testing.kvca import serve\n", 1),  # the CLI, but at import time
        ("enrolment_sync.cli", "def serve():\n    from .testing.kvca import serve\n", 1),  # not a doubles command
        ("enrolment_sync.cli", "def simulator():\n    from .testing.kvca import serve\n", 0),
        ("enrolment_sync.demo", "def demo_main():\n    from .testing.servers import JsonReceiver\n", 0),
        ("enrolment_sync.job", "from .kvca.client import KvcaClient\nfrom . import db\n", 0),
        ("enrolment_sync.job", "from .testingx import y\n", 0),
    ],
)
def test_the_check_sees_every_form_of_import(module: str, source: str, expected: int) -> None:
    assert len(forbidden_imports(source, module, is_package=module == "enrolment_sync.outbox")) == expected
