"""The layout of the tests themselves: helpers live in tests/support, conftest.py files hold fixtures
only, and no test module imports from a conftest or from another test module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
SUPPORT = TESTS / "support"


def modules() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def imported(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth; relative ones as '.name'."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def is_fixture(node: ast.stmt) -> bool:
    if not isinstance(node, ast.FunctionDef):
        return False
    if node.name.startswith("pytest_"):  # a hook
        return True
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if ast.unparse(target) == "pytest.fixture":
            return True
    return False


def test_tests_import_helpers_only_from_tests_support() -> None:
    wrong = []
    for path in modules():
        for line, module in imported(ast.parse(path.read_text(), str(path))):
            relative = module.startswith(".")
            outside_support = module.startswith("tests") and not module.startswith("tests.support")
            if relative or outside_support or module.split(".")[-1] == "conftest":
                wrong.append(f"{path.relative_to(TESTS.parent)}:{line} imports {module}")
    assert wrong == [], "import helpers from tests.support, never from a conftest or a test module"


def test_conftest_files_hold_fixtures_only() -> None:
    wrong = []
    for path in TESTS.rglob("conftest.py"):
        for node in ast.parse(path.read_text(), str(path)).body:
            allowed = isinstance(node, ast.Import | ast.ImportFrom) or is_fixture(node)
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            if not (allowed or docstring):
                first_line = ast.unparse(node).splitlines()[0]
                wrong.append(f"{path.relative_to(TESTS.parent)}:{node.lineno} {first_line}")
    assert wrong == [], "a helper in a conftest.py: move it to tests/support"


def test_support_modules_are_not_collected_and_test_modules_hold_tests() -> None:
    assert not list(SUPPORT.rglob("test_*.py")), "a support module named test_* would be collected"
    empty = []
    for path in TESTS.rglob("test_*.py"):
        tree = ast.parse(path.read_text(), str(path))
        tests = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
        if not tests:
            empty.append(str(path.relative_to(TESTS.parent)))
    assert empty == [], "test modules without tests: helpers belong in tests/support"
