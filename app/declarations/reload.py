"""Hot reload of event type declarations: notice a change in the schemas folder, check that
the types in service can take it live, and hand back the new ``EventTypes``.

The consume loop asks ``DeclarationsWatcher.poll()`` between batches (``app.pipeline.upkeep``).
A change is detected by the content hash of the folder's ``*.yaml`` files. The new folder
is read exactly as at start-up (``load_declarations``): any problem refuses it. Then
``incompatible`` says what of the change cannot be taken while the service runs — a
field that a rule or a declared model reads removed or of another kind, the id, key or
time field changed, a served type's file gone — and anything it names refuses the whole
change; the declarations in service keep serving.

Only the types already served are reloaded: topics and the consumer's subscription are
fixed at start-up, so a new type's file is noted (``DeclarationsChange.unserved``) and
left alone until it is listed in ``ARBITER_EVENT_TYPES`` and the process restarts.
Pure: reads files, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.declarations import DeclaredType, EventTypes, Limits, load_declarations
from app.declarations.folder import FolderWatch
from app.declarations.spec import LabelSpec, ModelSpec, TypeSpec
from schemas.common import EventCore, FieldKind

__all__ = [
    "DeclarationsChange",
    "DeclarationsWatcher",
    "RulesCheck",
    "incompatible",
]

# What the rules in service say of candidate declarations: every problem the rules check
# (the one ``arbiter schemas check`` and start-up run) finds against them; empty: none.
RulesCheck = Callable[[EventTypes], Sequence[str]]

_INDEX = re.compile(r"^\d+$")


@dataclass(frozen=True)
class DeclarationsChange:
    """A changed folder: the new ``types`` to swap in, or the ``problems`` that refused it.
    ``unserved`` names types newly declared but not served (serving them needs a restart)."""

    fingerprint: str
    types: EventTypes | None
    problems: tuple[str, ...]
    unserved: tuple[str, ...] = ()


class DeclarationsWatcher:
    """Follows the declarations folder for the types ``current`` serves."""

    def __init__(
        self,
        directory: Path,
        current: EventTypes,
        *,
        limits: Limits | None = None,
        interval_s: float = 2.0,
        rule_fields: Callable[[], Mapping[str, Mapping[str, str]]] | None = None,
        rules_check: RulesCheck | None = None,
    ) -> None:
        self._watch = FolderWatch(directory, interval_s=interval_s)
        self._limits = limits
        self._rule_fields = rule_fields
        self._rules_check = rules_check
        self.current = current
        self._refused = False
        # Declared but not served at start-up: not news when a later change keeps them.
        self._unserved = {n for n in current.declarations if n not in current.names}

    def retry_refused(self) -> None:
        """Check a change refused before again at the next poll (the rules in service
        changed, and what they read may allow it now)."""
        if self._refused:
            self._watch.forget()

    def poll(self, *, force: bool = False) -> DeclarationsChange | None:
        """``None`` unless the folder changed since the last poll (checked at most every
        ``interval_s``, or now with ``force``); a refused change is reported once, not on
        every poll. A change that is taken becomes ``current``."""
        fingerprint = self._watch.changed(force=force)
        if fingerprint is None:
            return None
        change = self.check(fingerprint)
        self._refused = change.types is None
        if change.types is not None:
            self.current = change.types
        return change

    def check(self, fingerprint: str = "") -> DeclarationsChange:
        """The folder as it is now, read and checked against ``current``."""
        declarations, found = load_declarations(self._watch.directory, self._limits)
        names = self.current.names
        declared_unserved = {n for n in declarations if n not in names}
        unserved = tuple(sorted(declared_unserved - self._unserved))
        self._unserved = declared_unserved
        problems = [str(p) for p in found]
        if problems:
            return DeclarationsChange(fingerprint, None, tuple(problems), unserved)
        models: dict[str, type[EventCore]] = {
            n: declarations[n].model for n in names if n in declarations
        }
        candidate = EventTypes(declarations, names, models)
        reasons = incompatible(
            self.current,
            candidate,
            rule_fields=self._rule_fields() if self._rule_fields else None,
            rules_check=self._rules_check,
        )
        if reasons:
            return DeclarationsChange(fingerprint, None, tuple(reasons), unserved)
        return DeclarationsChange(fingerprint, candidate, (), unserved)


def incompatible(
    old: EventTypes,
    new: EventTypes,
    *,
    rule_fields: Mapping[str, Mapping[str, str]] | None = None,
    rules_check: RulesCheck | None = None,
) -> list[str]:
    """Why ``new`` cannot replace ``old`` in a running service (empty: it can), one
    sentence per reason naming the type, the field and the fix.

    ``rule_fields`` maps each type to the field paths its rules in service read (and
    where: ``rule 'x' (rules/loan.yaml:12)``); ``rules_check`` runs the rules check of
    start-up against ``new``. Taken live: new optional fields, loosened bounds, new enum
    values, new labels and models, descriptions — anything that no rule, model, stored
    decision or window relies on."""
    reasons: list[str] = []
    for name in old.names:
        before = old.declarations[name]
        after = new.declarations.types.get(name)
        if after is None:
            reasons.append(
                f"{name}: its declaration {name}.yaml is gone, but {name} is served — restore "
                f"the file (a served type cannot be removed while the service runs: take it "
                f"out of ARBITER_EVENT_TYPES and restart instead)"
            )
            continue
        reasons += _identity(before.spec, after.spec)
        reasons += _read_by_rules(before, after, (rule_fields or {}).get(name, {}))
        reasons += _read_by_models(before, after)
    if not reasons and rules_check is not None:
        found = list(rules_check(new))
        if found:
            if list(rules_check(old)):
                reasons.append(
                    "the rule files do not pass the rules check against the declarations in "
                    "service either (a refused rules change?): fix them first — "
                    + "; ".join(found[:10])
                )
            else:
                reasons += [
                    f"{p} — the new declarations break this rule: keep what it reads in the "
                    "declaration, or change the rule first"
                    for p in found
                ]
    return reasons


def _identity(before: TypeSpec, after: TypeSpec) -> list[str]:
    """The id, key and time field: stored decisions, partitions and windows use them."""
    reasons: list[str] = []
    for what, was, now, why in (
        ("id", before.id_field, after.id_field, "stored decisions are keyed by it"),
        ("key", before.key_field, after.key_field, "partitions and windows are keyed by it"),
        ("time", before.time_field, after.time_field, "windows count by it"),
    ):
        was_type = _type_of(before, was)
        now_type = _type_of(after, now)
        if was != now:
            reasons.append(
                f"{before.name}: the {what} field changed from {was or 'arrival'} to "
                f"{now or 'arrival'}, and {why} — keep '{what}: {was or 'arrival'}' (a "
                "different one needs a restart, or a new type)"
            )
        elif was_type != now_type:
            reasons.append(
                f"{before.name}: the {what} field '{was}' changed from {was_type} to "
                f"{now_type}, and {why} — keep it {was_type}"
            )
    return reasons


def _type_of(spec: TypeSpec, name: str | None) -> str | None:
    found = spec.field(name) if name else None
    return found.type if found else None


def _kind(kinds: Mapping[str, FieldKind], path: str) -> FieldKind | None:
    """The kind of ``path`` (``items.0.sku`` reads as ``items.*.sku``), None if not a field."""
    if path in kinds:
        return kinds[path]
    starred = ".".join("*" if _INDEX.match(part) else part for part in path.split("."))
    return kinds.get(starred)


def _changed(
    before: Mapping[str, FieldKind], after: Mapping[str, FieldKind], path: str
) -> str | None:
    """How ``path`` changed (``removed``, ``number → string``), or None if it did not."""
    was = _kind(before, path)
    if was is None:
        return None
    now = _kind(after, path)
    if now is None:
        return "removed"
    if now != was and "any" not in (was, now):
        return f"changed from {was} to {now}"
    return None


def _read_by_rules(before: DeclaredType, after: DeclaredType, read: Mapping[str, str]) -> list[str]:
    old_kinds, new_kinds = before.field_kinds(), after.field_kinds()
    reasons: list[str] = []
    for path, where in sorted(read.items()):
        how = _changed(old_kinds, new_kinds, path)
        if how is not None:
            reasons.append(
                f"{before.name}: field '{path}' is {how}, but {where} reads it — keep it "
                f"in {before.name}.yaml as it was, or change the rule first"
            )
    return reasons


def _read_by_models(before: DeclaredType, after: DeclaredType) -> list[str]:
    """Fields a declared model uses as features, and the label it predicts."""
    old_spec, new_spec = before.spec, after.spec
    old_kinds, new_kinds = before.field_kinds(), after.field_kinds()
    reasons: list[str] = []
    new_models = {m.name: m for m in new_spec.models}
    for model in old_spec.models:
        if model.name not in new_models:
            continue  # a model removed (with its features or label) reads nothing now
        where = f"model '{model.name}'"
        for field_name in _features(old_spec, model):
            paths = [p for p in old_kinds if p == field_name or p.startswith(field_name + ".")]
            for path in paths:
                how = _changed(old_kinds, new_kinds, path)
                if how is not None:
                    reasons.append(
                        f"{old_spec.name}: field '{path}' is {how}, but {where} uses it as a "
                        f"feature — keep it as it was (or declare a new model without it)"
                    )
                    break
        if model.kind == "text":
            for field_name in model.text:
                now = new_spec.field(field_name)
                if now is not None and not now.text:
                    reasons.append(
                        f"{old_spec.name}: field '{field_name}' is no longer 'text: true', but "
                        f"{where} reads it as text — keep 'text: true' on it"
                    )
        reasons += _label_changes(old_spec, new_spec, model, new_models[model.name])
    return reasons


def _features(spec: TypeSpec, model: ModelSpec) -> list[str]:
    """The fields ``model`` reads: its text fields, or its features and derived ones."""
    if model.kind == "text":
        return list(model.text)
    never = {spec.id_field, spec.key_field, spec.time_field, *spec.text_fields}
    if model.include:
        names = list(model.include)
    else:
        names = [f.name for f in spec.fields if f.name not in never]
    names = [n for n in names if n not in model.exclude]
    names += [d.field for d in model.derived if d.field not in names]
    return names


def _label_changes(
    old_spec: TypeSpec, new_spec: TypeSpec, model: ModelSpec, now: ModelSpec
) -> list[str]:
    old_label = old_spec.label(model.label)
    new_label = new_spec.label(model.label)
    where = f"model '{model.name}'"
    if new_label is None:  # the loader refuses a model of an undeclared label: belt and braces
        return [
            f"{old_spec.name}: label '{model.label}' is removed, but {where} predicts it — "
            "keep the label, or remove the model with it"
        ]
    if old_label is not None and (
        old_label.type != new_label.type or set(old_label.values) - set(new_label.values)
    ):
        return [
            f"{old_spec.name}: label '{model.label}' changed ({_describe(old_label)} → "
            f"{_describe(new_label)}), but {where} predicts it — keep it as it was, or "
            "declare a new label and a new model for it"
        ]
    changes = [
        f"{what} {_plain(was)} → {_plain(is_now)}"
        for what, was, is_now in (
            ("label", model.label, now.label),
            ("kind", model.kind, now.kind),
            ("positive", model.positive, now.positive),
            ("classes", model.classes, now.classes),
        )
        if was != is_now
    ]
    if changes:
        return [
            f"{old_spec.name}: {where} changed what it predicts or how ({'; '.join(changes)}), "
            "and its trained versions learnt the old one — keep it as it was, or declare the "
            "new one under a new model name"
        ]
    return []


def _plain(value: object) -> str:
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _describe(label: LabelSpec) -> str:
    if label.type == "enum":
        return f"enum of {', '.join(label.values)}"
    return label.type
