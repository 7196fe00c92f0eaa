"""Event types declared in files: fields, labels and models, read from ``schemas/*.yaml``.

A data owner describes an event type in YAML (docs/events.md); ``load_declarations``
reads every ``*.yaml`` of a folder, checks it (``reader.py``, problems with file, line
and fix) and compiles each type into the pydantic model that decodes its events
(``build.py``). ``Declarations`` then answers what the rest of Arbiter asks of a type:
its decoder, its field kinds and score names for the rules checker, its JSON Schema.
Pure: reads files, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.declarations.build import DeclaredEvent, Limits, build_model
from app.declarations.reader import read_declaration
from app.declarations.spec import (
    DeclaredModel,
    LabelSpec,
    ModelSpec,
    Problem,
    TypeSpec,
    model_catalog,
)
from app.errors import ConfigError
from app.settings import Settings
from schemas.common import EventCore, FieldKind, model_field_kinds

__all__ = [
    "Declarations",
    "DeclaredEvent",
    "DeclaredModel",
    "DeclaredType",
    "EventTypes",
    "Limits",
    "Problem",
    "limits_of",
    "load_declarations",
    "model_catalog",
    "score_kinds",
    "served_by",
    "served_types",
]


@dataclass(frozen=True)
class DeclaredType:
    """One checked, compiled event type."""

    spec: TypeSpec
    model: type[DeclaredEvent]

    @property
    def name(self) -> str:
        return self.spec.name

    def field_kinds(self) -> dict[str, FieldKind]:
        """Every dotted field path, as rules and windows see it, mapped to its kind."""
        return model_field_kinds(self.model)

    def score_kinds(self) -> dict[str, str]:
        return score_kinds(self.spec.models)

    def json_schema(self) -> dict[str, Any]:
        return self.model.model_json_schema()


def score_kinds(models: tuple[ModelSpec, ...]) -> dict[str, str]:
    """What ``scores.<name>`` rules may read: a yes/no model writes its probability (a
    number); a multi-class model writes the class (text) and ``<name>_confidence``."""
    kinds: dict[str, str] = {}
    for model in models:
        if model.multi_class:
            kinds[model.name] = "string"
            kinds[f"{model.name}_confidence"] = "number"
        else:
            kinds[model.name] = "number"
    return kinds


@dataclass
class Declarations(Mapping[str, DeclaredType]):
    """The declared event types of one folder, by name."""

    directory: Path
    types: dict[str, DeclaredType] = field(default_factory=dict)

    def __getitem__(self, name: str) -> DeclaredType:
        try:
            return self.types[name]
        except KeyError:
            raise KeyError(
                f"unknown event type {name!r}; declared types are "
                f"{', '.join(sorted(self.types)) or 'none'} (in {self.directory})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.types)

    def __len__(self) -> int:
        return len(self.types)

    def field_kinds(self) -> dict[str, dict[str, FieldKind]]:
        return {name: t.field_kinds() for name, t in self.types.items()}

    def score_kinds(self) -> dict[str, dict[str, str]]:
        return {name: t.score_kinds() for name, t in self.types.items()}


def load_declarations(
    directory: Path, limits: Limits | None = None
) -> tuple[Declarations, list[Problem]]:
    """Every ``*.yaml`` declaration in ``directory``: the types that passed, and every
    problem found (a file with problems contributes no type)."""
    declarations = Declarations(directory)
    problems: list[Problem] = []
    if not directory.is_dir():
        problems.append(
            Problem(
                str(directory),
                None,
                "no such folder — create it and declare each event type in a .yaml file",
            )
        )
        return declarations, problems
    for path in sorted(directory.glob("*.yaml")):
        display = str(path)
        spec, found = read_declaration(path, display)
        problems.extend(found)
        if spec is None:
            continue
        if path.stem != spec.name:
            problems.append(
                Problem(
                    display,
                    spec.line,
                    f"the file declares type '{spec.name}' but is named {path.name} — "
                    f"name it {spec.name}.yaml (one file per type, named after it)",
                )
            )
            continue
        model = build_model(spec, limits)
        if spec.example is not None:
            try:
                model.model_validate(spec.example)
            except ValidationError as exc:
                wrong = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '(the event)'}: {e['msg']}"
                    for e in exc.errors()[:5]
                )
                problems.append(
                    Problem(
                        display, spec.example_line, f"the example is not a valid event: {wrong}"
                    )
                )
                continue
        declarations.types[spec.name] = DeclaredType(spec, model)
    return declarations, problems


@dataclass(frozen=True)
class EventTypes:
    """The event types one process serves: how each decodes (the model compiled from its
    declaration, the shipped types too), and what rules may read."""

    declarations: Declarations
    names: tuple[str, ...]
    models: Mapping[str, type[EventCore]]

    def field_kinds(self) -> dict[str, dict[str, FieldKind]]:
        return {t: self.declarations[t].field_kinds() for t in self.names}

    def score_kinds(self) -> dict[str, dict[str, str]]:
        return {t: self.declarations[t].score_kinds() for t in self.names}

    def spec(self, name: str) -> TypeSpec:
        return self.declarations[name].spec

    def labels(self) -> dict[str, tuple[LabelSpec, ...]]:
        """Per served type, the labels its outcomes may carry."""
        return {t: self.spec(t).labels for t in self.names}

    def catalog(self) -> dict[str, DeclaredModel]:
        """Every model the served types declare, by name (``<type>.<model>``)."""
        return model_catalog(self.spec(t) for t in self.names)

    def declared_models(self) -> dict[str, tuple[str, ...]]:
        """Per served type, the names of the models its declaration asks for."""
        return {t: tuple(m.name for m in self.spec(t).models) for t in self.names}


def served_types(directory: Path, names: Sequence[str], limits: Limits | None = None) -> EventTypes:
    """The declared types ``names`` from ``directory``; a ``ConfigError`` names every
    problem (and ``arbiter schemas check``) when a declaration is broken or missing."""
    declarations, problems = load_declarations(directory, limits)
    missing = [
        n
        for n in names
        if directory.is_dir() and n not in declarations and not _broken(n, problems)
    ]
    lines = [str(p) for p in problems]
    lines += [
        f"event type '{n}' is served but not declared in {directory}: add "
        f"{directory / (n + '.yaml')} (docs/events.md) or leave it out of ARBITER_EVENT_TYPES"
        for n in missing
    ]
    if lines:
        shown = "\n  ".join(lines[:20])
        more = f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else ""
        raise ConfigError(
            f"the event type declarations have {len(lines)} problem(s) — check them with "
            f"`arbiter schemas check`:\n  {shown}{more}"
        )
    models: dict[str, type[EventCore]] = {n: declarations[n].model for n in names}
    return EventTypes(declarations, tuple(names), models)


def limits_of(settings: Settings) -> Limits:
    """The caps ``settings`` put on declared types (``ARBITER_SCHEMAS_MAX_*``)."""
    return Limits(settings.schemas.max_attributes, settings.schemas.max_attribute_chars)


def served_by(settings: Settings) -> EventTypes:
    """The event types ``settings`` serve (``ARBITER_EVENT_TYPES`` from
    ``ARBITER_SCHEMAS_DIR``, under its caps): ``served_types`` with them."""
    return served_types(settings.schemas.dir, settings.event_types, limits_of(settings))


def _broken(name: str, problems: Sequence[Problem]) -> bool:
    return any(Path(p.file).stem == name for p in problems)
