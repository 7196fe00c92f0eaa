"""Merge the files of one ruleset: one default, one mode, unique names, reachable rules.

Several files may declare the same event type; they are merged in file-name order and
their rules ordered by ``priority`` (high first, ties in file order). In stop mode a rule
that can never match, because one before it always matches first, is a problem.

Pure: no I/O.
"""

from __future__ import annotations

from app.rules.language.rule_checks import FileRules, RuleChecks
from app.rules.language.shadow import implies
from app.rules.language.spec import Mode, Rule, RuleSet, canonical_condition, ruleset_version

__all__ = ["merge_ruleset"]


def merge_ruleset(checker: RuleChecks, event_type: str, parts: list[FileRules]) -> RuleSet | None:
    """The ruleset of ``event_type`` from its files' parts, recording problems on
    ``checker``; None when it has no usable default."""
    defaults = [(p.path, p.default) for p in parts if p.default is not None]
    first = parts[0]
    if not any(p.declares_default for p in parts):
        checker.problem(
            first.path,
            first.type_line,
            None,
            f"the {event_type} ruleset has no 'default' — add 'default: {{decision: ..., "
            "reason: ...}}' (what to decide when no rule matches)",
        )
    for path, extra in defaults[1:]:
        assert extra is not None
        checker.problem(
            path,
            extra[2],
            None,
            f"the {event_type} ruleset already has a 'default' in {defaults[0][0]} — keep one",
        )
    mode = _merge_mode(checker, event_type, parts)
    seen: dict[str, Rule] = {}
    rules: list[Rule] = []
    for part in parts:
        for rule in part.rules:
            earlier = seen.get(rule.name)
            if earlier is not None:
                checker.problem(
                    part.path,
                    rule.source.line,
                    rule.name,
                    f"duplicate rule name (first at {earlier.source.file}:{earlier.source.line}) "
                    "— rename one of them",
                )
                continue
            seen[rule.name] = rule
            rules.append(rule)
    # Higher priority first; sorted() is stable, so ties keep file order.
    ordered = sorted(rules, key=lambda r: -r.priority)
    if mode == "stop":
        ordered = _reachable(checker, ordered)
    if not defaults:
        return None
    decision, reason, _ = defaults[0][1]
    frozen = tuple(ordered)
    windows = tuple(w for p in parts for w in p.windows)
    return RuleSet(
        event_type=event_type,
        rules=frozen,
        default_decision=decision,
        default_reason=reason,
        version=ruleset_version(event_type, frozen, decision, reason, mode, windows),
        files=tuple(p.path for p in parts),
        mode=mode,
        windows=windows,
        numeric_paths=frozenset(checker.numeric_paths.get(event_type, ())),
    )


def _merge_mode(checker: RuleChecks, event_type: str, parts: list[FileRules]) -> Mode:
    declared = [(p.path, p.mode) for p in parts if p.mode is not None]
    if not declared:
        return "stop"
    (first_path, (mode, _)), rest = declared[0], declared[1:]
    for path, (other, line) in ((p, m) for p, m in rest if m is not None):
        if other != mode:
            checker.problem(
                path,
                line,
                None,
                f"the {event_type} ruleset is 'mode: {mode}' in {first_path} — "
                "one ruleset has one mode; make them agree",
            )
    return mode


def _shadows(first: Rule, later: Rule) -> bool:
    if canonical_condition(first.when) == canonical_condition(later.when):
        return True
    return first.priority == later.priority and implies(later.when, first.when)


def _reachable(checker: RuleChecks, ordered: list[Rule]) -> list[Rule]:
    """Stop mode: every rule needs a decision, and no rule may be hidden behind one that
    comes first and matches whenever it does: one with the identical condition (at any
    priority), or a broader one at the same priority (a broad rule written above a
    narrow one). A broader rule given a *higher* priority is a deliberate override
    ("hold everything during the audit") and is allowed."""
    kept: list[Rule] = []
    for rule in ordered:
        if rule.decision is None:
            checker.problem(
                rule.source.file,
                rule.source.line,
                rule.name,
                "the rule has no 'decision', which only 'mode: collect' allows — add "
                "'decision: <word>' or set 'mode: collect' on the ruleset",
            )
            continue
        shadow = next((k for k in kept if _shadows(k, rule)), None)
        if shadow is not None:
            same = (
                "the identical condition"
                if canonical_condition(shadow.when) == canonical_condition(rule.when)
                else "a broader condition (it matches whenever this one does)"
            )
            order = (
                f"a higher priority ({shadow.priority} > {rule.priority})"
                if shadow.priority > rule.priority
                else "the same priority and comes first"
            )
            checker.problem(
                rule.source.file,
                rule.source.line,
                rule.name,
                f"can never match: rule '{shadow.name}' "
                f"({shadow.source.file}:{shadow.source.line}) has {same} and {order}, and in "
                "stop mode only the first matching rule fires — remove this rule, narrow "
                "the other, or give this one a higher priority",
            )
            continue
        kept.append(rule)
    return kept
