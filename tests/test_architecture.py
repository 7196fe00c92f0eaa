"""The layer contract and the pure folders hold, and there is no import cycle.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and are checked by
import-linter, the same check ``lint-imports`` runs by hand. Purity is by folder: a new
module in ``app/core``, ``app/rules``, ``app/inference``... is checked without joining a
list, and a new package of ``app`` must be given a layer (the second test).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def contracts() -> dict[str, dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the packages under ``root`` with ``root``'s pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_layers_the_pure_folders_and_acyclic_imports_hold() -> None:
    """`lint-imports` keeps every contract: layers, pure folders, no cycles."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


def test_every_package_of_app_and_connectors_has_a_layer() -> None:
    """Each direct child of app/ (package or module) is placed in the layers contract, so a
    new one cannot slip past it; connectors/ is one layer."""
    layers = contracts()["layers"]["layers"]
    assert isinstance(layers, list)
    placed = {name.strip() for layer in layers for name in str(layer).replace(":", "|").split("|")}
    children = {
        f"app.{p.stem if p.suffix == '.py' else p.name}"
        for p in (ROOT / "app").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert children - placed == set()
    assert {"connectors", "schemas"} <= placed


def test_every_folder_of_code_is_a_package() -> None:
    """A folder of modules without ``__init__.py`` would be invisible to the contracts
    (and left out of the wheel)."""
    for top in ("app", "connectors", "schemas"):
        for folder in [ROOT / top, *(ROOT / top).rglob("*")]:
            if folder.is_dir() and any(folder.glob("*.py")):
                assert (folder / "__init__.py").is_file(), folder


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("app/core/stages.py", "import app.store.ledger", "Layers"),
        ("app/rules/language/spec.py", "import sqlalchemy", "Pure folders"),
        ("app/store/tables.py", "import app.store.ledger", "No import cycles"),
    ],
)
def test_the_contracts_catch_a_violation(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    """A copy of the tree with one bad import added is refused by the right contract:
    the core reaching up into the store, a pure folder importing a database library, and
    a cycle inside the store."""
    for folder in ("app", "connectors", "schemas"):
        shutil.copytree(
            ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout[-4000:]
    assert Path(module).stem in broken


# --- no type is special ------------------------------------------------------------------

SHIPPED_TYPES = ("order", "ticket", "transaction")
SHIPPED_MODELS = {"Order", "OrderItem", "Ticket", "Transaction", "Device", "EVENT_MODELS"}
# Where the shipped types may be named: the simulator (it makes their data), the demo
# (it tells their story), and the declarations themselves (schemas/*.yaml, not code).
MAY_NAME_THEM = ("app/simulator/", "app/processes/demo.py", "app/processes/simulate.py")


def _docstrings(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _names_a_shipped_type(text: str) -> bool:
    return any(
        text == t or text.startswith(t + ".") or text.endswith("." + t) for t in SHIPPED_TYPES
    )


def shipped_type_mentions(root: Path) -> list[str]:
    """Every place in the code under ``root`` (app, connectors, schemas; docstrings and
    comments aside) that names a shipped event type or uses its hand-written model."""
    found: list[str] = []
    for folder in ("app", "connectors", "schemas"):
        for path in sorted((root / folder).rglob("*.py")):
            where = path.relative_to(root).as_posix()
            if where.startswith(MAY_NAME_THEM):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = _docstrings(tree)
            for node in ast.walk(tree):
                line = getattr(node, "lineno", 0)
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if id(node) not in docstrings and _names_a_shipped_type(node.value):
                        found.append(f"{where}:{line}: {node.value!r}")
                elif isinstance(node, ast.Name | ast.alias) and (
                    (node.id if isinstance(node, ast.Name) else node.name) in SHIPPED_MODELS
                ):
                    found.append(f"{where}:{line}: uses a shipped type's model")
                elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "app.simulator.shapes"
                ):
                    found.append(f"{where}:{line}: imports the simulator's event models")
    return found


def test_no_code_outside_the_declarations_simulator_and_demo_names_a_shipped_type() -> None:
    """The shipped order, ticket and transaction are declarations like any other type:
    nothing in the pipeline, the models, the trainer, the rules or the connectors names
    them or uses their hand-written (simulator) models."""
    assert shipped_type_mentions(ROOT) == []


def test_the_shipped_type_check_finds_a_type_named_in_code(tmp_path: Path) -> None:
    """The check above is not blind: a copy of the tree that special-cases a type, or
    decodes with the simulator's model, is caught with the file and line."""
    for folder in ("app", "connectors", "schemas"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("*.pyc"))
    bad = tmp_path / "app" / "core" / "special.py"
    bad.write_text(
        "from app.simulator.shapes import Ticket\n\n\n"
        'def f(t: str) -> bool:\n    return t == "ticket"\n'
    )
    found = shipped_type_mentions(tmp_path)
    assert "app/core/special.py:5: 'ticket'" in found
    assert "app/core/special.py:1: imports the simulator's event models" in found
    assert "app/core/special.py:1: uses a shipped type's model" in found
