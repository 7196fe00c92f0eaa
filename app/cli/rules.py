"""``arbiter rules …``: check rule files, run their tests, backtest them on the ledger.

``check`` and ``test`` read the rule files only (``app.rules.loader``,
``app.rules.authoring.testing``); ``backtest`` replays stored events through candidate
rules (``app.ops.backtest``) and writes nothing. Reports are printed here with rich.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from app.cli.options import build_settings, console, err, fail, parse_when, run_async

rules_app = typer.Typer(no_args_is_help=True, help="Author and check rule files.")


@rules_app.command("check")
def rules_check(
    rules_dir: Annotated[Path | None, typer.Option("--dir", help="Folder of rule files.")] = None,
) -> None:
    """Validate every rule file; print each problem with file, line, rule and fix."""
    from app.errors import ConfigError
    from app.rules.loader import check_rules
    from app.wiring import rule_vocabulary

    settings = build_settings(rules_dir=rules_dir)
    try:
        vocabulary = rule_vocabulary(settings)
    except ConfigError as exc:
        fail(str(exc))
    rulesets, problems = check_rules(settings.rules.dir, *vocabulary)
    for problem in problems:
        err.print("[red]✗[/]", escape(str(problem)), highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    for name, ruleset in sorted(rulesets.items()):
        console.print(
            f"[green]✓[/] {name}: {len(ruleset.rules)} rules, default "
            f"'{ruleset.default_decision}', version {ruleset.version}"
        )


@rules_app.command("test")
def rules_test(
    rules_dir: Annotated[Path | None, typer.Option("--dir", help="Folder of rule files.")] = None,
) -> None:
    """Run the `tests:` of every rule file: pass/fail with a diff, then rule coverage."""
    from app.errors import ConfigError
    from app.rules.authoring.testing import run_rule_tests
    from app.wiring import event_types, rule_vocabulary

    settings = build_settings(rules_dir=rules_dir)
    try:
        types = event_types(settings)
    except ConfigError as exc:
        fail(str(exc))
    report = run_rule_tests(settings.rules.dir, *rule_vocabulary(settings, types), types)
    for problem in report.problems:
        err.print("[red]✗[/]", escape(str(problem)), highlight=False, soft_wrap=True)
    for case in report.results:
        _print_case(case)
    for item in report.coverage:
        console.print(escape(item.line), highlight=False, soft_wrap=True)
    failed = len(report.failed)
    passed = len(report.results) - failed
    summary = f"{passed} passed, {failed} failed"
    if report.problems:
        summary += f", {len(report.problems)} problem(s) in the files"
    console.print(("[green]" if report.ok else "[red]") + summary + "[/]")
    if not report.ok:
        raise typer.Exit(1)


def _print_case(case: Any) -> None:
    from app.rules.authoring.cases import CaseResult
    from app.rules.authoring.testing import format_action

    assert isinstance(case, CaseResult)
    test = case.test
    where = f"{test.source.file}:{test.source.line}"
    mark = "[green]✓[/]" if case.passed else "[red]✗[/]"
    console.print(mark, escape(f"{where} {test.name}"), highlight=False, soft_wrap=True)
    if case.error is not None:
        console.print("    " + escape(case.error), highlight=False, soft_wrap=True)
        return
    if case.passed or case.result is None:
        return

    def listed(items: Any) -> str:
        return "[" + ", ".join(str(i) for i in items) + "]"

    lines: list[str] = []
    for diff in case.differences:
        if diff.what == "decision":
            expected, actual = str(diff.expected), str(diff.actual)
        elif diff.what == "rules_fired":
            expected, actual = listed(diff.expected), listed(diff.actual)
        elif diff.what == "actions":
            expected = "; ".join(format_action(a) for a in diff.missing) + " (missing)"
            actual = "; ".join(format_action(a) for a in diff.actual) or "(no actions)"
        else:
            expected = listed(diff.missing) + " (missing)"
            actual = listed(diff.actual)
        lines += [
            f"    {diff.what}:",
            f"      - expected: {expected}",
            f"      + actual:   {actual}",
        ]
    shown = {d.what for d in case.differences}
    result = case.result
    if "decision" not in shown:
        lines.append(f"    decision: {result.decision}")
    if "rules_fired" not in shown:
        lines.append(f"    rules_fired: {listed(result.rules_fired)}")
    lines.append(f"    reasons: {' | '.join(result.reasons)}")
    for line in lines:
        console.print(escape(line), highlight=False, soft_wrap=True)


@rules_app.command("backtest")
def rules_backtest(
    since: Annotated[
        str, typer.Option(help="Replay events from this ISO date/time (UTC if no offset).")
    ],
    until: Annotated[
        str | None, typer.Option(help="Up to (not including) this ISO date/time.")
    ] = None,
    rules: Annotated[
        Path | None, typer.Option("--rules", help="Candidate rule folder (ARBITER_RULES_DIR).")
    ] = None,
    samples: Annotated[int, typer.Option(min=0, help="Sample events per change.")] = 3,
    event_type: Annotated[str | None, typer.Option("--type", help="Only this event type.")] = None,
) -> None:
    """Replay stored events through candidate rules and show how decisions would change.

    Reads the ledger only: it writes nothing and publishes nothing.
    """
    from app.ops.backtest import BacktestRequest, run_backtest
    from app.rules.loader import check_rules
    from app.wiring import rule_vocabulary

    settings = build_settings(rules_dir=rules)
    start, end = parse_when(since, "--since"), (parse_when(until, "--until") if until else None)
    if event_type is not None and event_type not in settings.event_types:
        fail(f"--type {event_type!r} is not one of {', '.join(settings.event_types)}")
    rulesets, problems = check_rules(settings.rules.dir, *rule_vocabulary(settings))
    if problems:
        for problem in problems:
            err.print("[red]✗[/]", escape(str(problem)), highlight=False, soft_wrap=True)
        fail(
            f"the candidate rules in {settings.rules.dir} have {len(problems)} problem(s) "
            "(listed above) — fix them, then backtest"
        )
    request = BacktestRequest(
        database_url=settings.resolved_database_url,
        since=start,
        until=end,
        event_types=(event_type,) if event_type else None,
        samples=samples,
    )
    with console.status("replaying the ledger…") as status:
        report = run_async(
            lambda: run_backtest(
                request,
                rulesets,
                on_progress=lambda n: status.update(f"replaying the ledger… {n:,} events"),
            )
        )
    _print_backtest(report)


def _print_backtest(report: Any) -> None:
    from rich.table import Table

    from app.rules.authoring.backtest import BacktestReport

    assert isinstance(report, BacktestReport)
    window = f"since {report.since.isoformat() if report.since else '?'}"
    if report.until is not None:
        window += f" until {report.until.isoformat()}"
    console.print(
        f"backtest {window}: {report.events:,} events replayed, {report.changed:,} decisions "
        f"would change ({report.seeded:,} earlier events seeded the windows)",
        highlight=False,
    )
    for part in report.by_type:
        table = Table(title=f"{part.event_type}: {part.events:,} events, {part.changed:,} changed")
        table.add_column("old decision")
        table.add_column("new decision")
        table.add_column("events", justify="right")
        for (old, new), count in part.transitions.items():
            style = None if old == new else "bold yellow"
            table.add_row(escape(old), escape(new), f"{count:,}", style=style)
        console.print(table)
        if part.rule_shifts:
            shifts = Table(title=f"{part.event_type}: rules that fired more / less")
            shifts.add_column("rule")
            shifts.add_column("before", justify="right")
            shifts.add_column("candidate", justify="right")
            shifts.add_column("change", justify="right")
            for shift in part.rule_shifts:
                shifts.add_row(
                    escape(shift.rule), f"{shift.old:,}", f"{shift.new:,}", f"{shift.delta:+,}"
                )
            console.print(shifts)
        for (old, new), found in part.samples.items():
            console.print(escape(f"  {old} → {new}, e.g.:"), highlight=False)
            for sample in found:
                was = ", ".join(sample.old_rules_fired) or "default"
                now = ", ".join(sample.new_rules_fired) or "default"
                reasons = " | ".join(sample.new_reasons)
                console.print(
                    escape(f"    {sample.event_id} (was {was}; now {now}): {reasons}"),
                    highlight=False,
                    soft_wrap=True,
                )
    if report.outcomes is None:
        console.print("outcome effect: no outcomes recorded yet")
