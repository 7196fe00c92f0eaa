"""The layer contract and the pure folders hold, and there is no import cycle.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and are checked by
import-linter, the same check ``lint-imports`` runs by hand. Purity is by folder: a new
module in ``app/core``, ``app/rules``, ``app/inference``... is checked without joining a
list, and a new package of ``app`` must be given a layer (the second test).
"""

from __future__ import annotations

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
