"""Import direction is one way: pure modules never reach I/O libraries or connectors.

Each pure module is parsed with ``ast`` (nothing is imported) and every import it makes,
at module level or inside a function, is followed through the repository's own packages
(``app``, ``connectors``, ``schemas``), including the ``__init__`` of every package on
the way, since importing ``a.b.c`` runs ``a`` and ``a.b`` first.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWN_PACKAGES = frozenset({"app", "connectors", "schemas"})
IO_LIBRARIES = frozenset({"faststream", "aiokafka", "sqlalchemy", "asyncpg", "aiosqlite", "httpx"})

PURE_MODULES = (
    "app.pipeline.stages",
    "app.pipeline.decode",
    "app.inference.features",
    "app.rules.spec",
    "app.rules.loader",
    "app.rules.compile",
    "app.simulator.generate",
    "app.simulator.outcomes",
    "app.simulator.breakage",
    "app.inference.loading",
    "app.inference.scoring",
    "app.inference.tabular",
    "app.inference.text",
    "app.trainer.jobs.conclude",
    "app.trainer.jobs.dataset",
    "app.trainer.jobs.drift",
    "app.trainer.jobs.evaluate",
    "app.trainer.jobs.first",
    "app.trainer.jobs.fit_tabular",
    "app.trainer.jobs.fit_text",
    "app.trainer.jobs.job",
    "app.trainer.jobs.job_tabular",
    "app.trainer.jobs.job_text",
    "app.trainer.jobs.run",
    "app.trainer.jobs.search",
    "app.trainer.report.plots",
    "app.trainer.report.report",
    "app.trainer.report.report_charts",
    "app.trainer.report.svg",
    *sorted(
        "schemas" if p.stem == "__init__" else f"schemas.{p.stem}"
        for p in (ROOT / "schemas").glob("*.py")
    ),
)


def module_file(name: str) -> Path | None:
    """The source file of an in-repo module or package, or None if it is not one of ours."""
    if name.split(".", maxsplit=1)[0] not in OWN_PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: every package whose __init__ runs first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_names(name: str, path: Path) -> set[str]:
    """Every module name ``path`` imports, relative imports resolved, submodules included."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                assert node.module is not None
                base = node.module
            found.add(base)
            for alias in node.names:
                # ``from pkg import sub`` imports the submodule when there is one.
                if module_file(f"{base}.{alias.name}") is not None:
                    found.add(f"{base}.{alias.name}")
    return found


def forbidden_reach(start: str) -> dict[str, list[str]]:
    """Each I/O library or connector module ``start`` reaches, with the import chain to it."""
    queue: deque[tuple[str, list[str]]] = deque([(m, [m]) for m in with_parents(start)])
    seen: set[str] = set()
    hits: dict[str, list[str]] = {}
    while queue:
        name, chain = queue.popleft()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top in IO_LIBRARIES or top == "connectors":
            hits.setdefault(name, chain)
            if top != "connectors":
                continue
        path = module_file(name)
        if path is None:
            continue
        for imported in sorted(imported_names(name, path)):
            for step in with_parents(imported):
                if step not in seen:
                    queue.append((step, [*chain, step]))
    return hits


def describe(hits: dict[str, list[str]]) -> str:
    return "; ".join(" -> ".join(chain) for chain in hits.values())


def test_every_listed_pure_module_exists() -> None:
    """The list of pure modules names real files (a rename must update this test)."""
    missing = [m for m in PURE_MODULES if module_file(m) is None]
    assert not missing
    assert "schemas.common" in PURE_MODULES
    assert "schemas" in PURE_MODULES


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_never_reaches_io_libraries(module: str) -> None:
    """A pure module imports no I/O library or connector, directly or through our packages."""
    hits = forbidden_reach(module)
    assert not hits, f"{module} reaches I/O code: {describe(hits)}"


def test_checker_catches_the_io_shell() -> None:
    """The checker flags service.py, which imports connectors.kafka (and through it I/O)."""
    hits = forbidden_reach("app.service")
    assert "connectors.kafka" in hits
    assert hits["connectors.kafka"][-2:] == ["app.service", "connectors.kafka"]


def test_checker_resolves_relative_and_lazy_imports(tmp_path: Path) -> None:
    """Relative imports resolve against the package; imports inside functions count."""
    source = "from . import decode\nfrom .stages import InRecord\n\ndef f():\n    import json\n"
    path = tmp_path / "mod.py"
    path.write_text(source)
    names = imported_names("app.pipeline.fake", path)
    assert {"app.pipeline", "app.pipeline.decode", "app.pipeline.stages", "json"} <= names
