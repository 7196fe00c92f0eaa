"""Rule-file tests as values: what a test says, how it went, and the report.

``app.rules.authoring.case_reader`` builds ``RuleTest`` values from the ``tests:`` of a
rule file; ``app.rules.authoring.testing`` runs them and fills in ``CaseResult``,
``Coverage`` and ``RuleTestReport``. A test's ``event`` is merged onto the ``example``
its type's declaration gives (``deep_merge``). The file format is shown
in ``app.rules.authoring.testing``.

Pure: no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.declarations.yamlsrc import plain
from app.rules.language.spec import RuleProblem, SourceRef
from app.rules.runtime.result import RuleResult


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: mappings merge key by key, anything else
    (numbers, text, lists) replaces. Neither input is changed."""
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        current = out.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            out[key] = deep_merge(current, value)
        else:
            out[key] = copy.deepcopy(plain(value))
    return out


@dataclass(frozen=True)
class Expectation:
    """What a test expects; None means "not checked". ``actions`` are in rule-file form
    (``{"publish": "fraud-alerts"}``, ``{"set": {"queue": "x"}}``, ``{"tag": ["a"]}``)."""

    decision: str | None = None
    rules_fired: tuple[str, ...] | None = None
    actions: tuple[Mapping[str, Any], ...] | None = None
    tags: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RuleTest:
    """One test as written: ``event`` is the partial event (before merging)."""

    name: str
    event_type: str
    source: SourceRef
    event: Mapping[str, Any]
    scores: Mapping[str, Any]
    windows: Mapping[str, float]
    expect: Expectation


@dataclass(frozen=True)
class Difference:
    """One expectation that did not hold: ``what`` is decision/rules_fired/actions/tags;
    ``missing`` lists the expected actions or tags that were not there."""

    what: str
    expected: Any
    actual: Any
    missing: tuple[Any, ...] = ()


@dataclass(frozen=True)
class CaseResult:
    """How one test went. ``error`` (the test could not run: invalid event, unknown score)
    and ``differences`` (it ran and something else happened) both mean it failed."""

    test: RuleTest
    result: RuleResult | None = None
    differences: tuple[Difference, ...] = ()
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and not self.differences


@dataclass(frozen=True)
class Coverage:
    """Which rules of one ruleset (in evaluation order) at least one test made fire."""

    event_type: str
    rules: tuple[str, ...]
    exercised: frozenset[str]

    @property
    def not_exercised(self) -> tuple[str, ...]:
        return tuple(r for r in self.rules if r not in self.exercised)

    @property
    def line(self) -> str:
        """``transaction: 5/7 rules exercised; not exercised: a, b``."""
        done = len(self.rules) - len(self.not_exercised)
        text = f"{self.event_type}: {done}/{len(self.rules)} rules exercised"
        if self.not_exercised:
            text += f"; not exercised: {', '.join(self.not_exercised)}"
        return text


@dataclass(frozen=True)
class RuleTestReport:
    """Everything ``arbiter rules test`` shows: rule-file and test-definition problems,
    one result per test (file order), and coverage per ruleset (by event type)."""

    problems: tuple[RuleProblem, ...]
    results: tuple[CaseResult, ...]
    coverage: tuple[Coverage, ...]

    @property
    def failed(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failed
