"""``arbiter demo`` as a real process: the summary it prints, and that however it ends
(finished, Ctrl-C, killed) no embedded broker is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import alive, tansu_children, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.sqlite]

DEMO = [sys.executable, "-c", "from app.cli import main; main()", "demo"]
EARLY_STOP = "stopped early by Ctrl-C; the broker has been shut down."


@pytest.fixture
def demo_env(tmp_path: Path, trained_models: Path) -> dict[str, str]:
    """The demo's data under tmp_path, using the session's models (no retraining)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    return {
        **base,
        "ARBITER_DATA_DIR": str(tmp_path / "data"),
        "ARBITER_MODELS_DIR": str(trained_models),
        "COLUMNS": "200",
    }


@pytest.fixture
def long_demo(
    demo_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A demo that would run for minutes, started and up to its broker: (process, tansu pid)."""
    proc = subprocess.Popen(
        [*DEMO, "--events", "100000", "--rate", "200"],
        env=demo_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        children: list[int] = []

        def broker_up() -> bool:
            assert proc.poll() is None, proc.communicate()[0]
            children[:] = tansu_children(proc.pid)
            return bool(children)

        wait_for(broker_up, 60, "the demo's Tansu child")
        yield proc, children[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def _table(stdout: str, title: str) -> list[list[str]]:
    """The body rows of the Rich table titled ``title`` in ``stdout``, as cell lists."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line)
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


def _count(cell: str) -> int:
    return int(cell.replace(",", ""))


def test_demo_decides_every_event_and_prints_the_summary(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    """400 events at full speed: the first line says where the dashboard will be; exit 0;
    decisions plus dead letters in the summary make 400; the rules that fired most and
    the trainer's part are in the summary."""
    result = subprocess.run(
        [*DEMO, "--events", "400", "--rate", "0"],
        env=demo_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    decided = _table(result.stdout, "Decisions by type")
    dead = _table(result.stdout, "Dead letters by reason")
    latency = _table(result.stdout, "Latency")
    assert {row[0] for row in decided} == {"order", "ticket", "transaction"}
    assert dead, "the simulator sends ~2 % malformed events; none was dead-lettered"
    assert sum(_count(row[2]) for row in decided) + sum(_count(row[2]) for row in dead) == 400
    assert len(latency) == 2
    assert "dashboard will be at http://127.0.0.1:" in result.stdout.splitlines()[0]
    assert "• dashboard: http://127.0.0.1:" in result.stdout
    rules = _table(result.stdout, "Rules that fired most")
    assert rules, "the shipped rules fire on simulator traffic"
    trainer = _table(result.stdout, "Trainer")
    assert "no retrain" in trainer[0][2], "400 events are too few to retrain"
    assert EARLY_STOP not in result.stdout
    assert "The dashboard stays up" not in result.stdout, "not a terminal: no waiting"
    assert (tmp_path / "data" / "demo" / "arbiter.db").is_file()


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.timeout(420)
def test_demo_retrains_after_the_drift_promotes_v2_and_keeps_the_dashboard_up_until_ctrl_c(
    demo_env: dict[str, str], tmp_path: Path, trained_models: Path
) -> None:
    """The default 3,000 events with --stay: the fraud pattern changes a third of the way
    in, the trainer promotes transaction.fraud v2 with a higher ROC-AUC than v1 on recent
    data, v2 serves; after the summary the dashboard still answers (its training runs
    include the promotion) until Ctrl-C, then exit 0 — and the shared first models folder
    is untouched (the demo trains in its own copy)."""
    before = _files(trained_models)
    proc = subprocess.Popen(
        [*DEMO, "--rate", "0", "--stay"],
        env=demo_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if "The dashboard stays up" in line:
                break
        stdout = "".join(lines)
        assert proc.poll() is None, stdout
        url = next(
            line.split("dashboard: ", 1)[1].strip()
            for line in lines
            if line.startswith("• dashboard: http")
        )
        data = httpx.get(url + "dashboard/data", timeout=30).json()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)

    assert proc.returncode == 0, stdout + rest
    fraud = [row for row in _table(stdout, "Trainer") if row[0] == "transaction.fraud"]
    assert len(fraud) == 1, stdout
    _, _, result, versions, change = fraud[0]
    assert (result, versions) == ("promoted", "v1 → v2"), stdout
    champion_auc, challenger_auc = (float(x) for x in change.split(" → "))
    assert challenger_auc > champion_auc + 0.05, stdout
    serving = {row[0]: row[1] for row in _table(stdout, "Models in service now")}
    assert serving["transaction.fraud"] == "v2"
    runs = {(r["model"], r["status"]) for r in data["training_runs"]}
    assert ("transaction.fraud", "promoted") in runs
    assert EARLY_STOP not in rest, "a Ctrl-C after the summary is not an early stop"
    assert "Traceback" not in stdout + rest
    assert _files(trained_models) == before
    assert (tmp_path / "data" / "demo" / "models" / "transaction.fraud" / "v2").is_dir()


def test_demo_stops_on_ctrl_c_with_the_early_stop_line_and_no_broker_left(
    long_demo: tuple[subprocess.Popen[str], int],
) -> None:
    """SIGINT mid-run: the demo exits 0, says it stopped early, and its Tansu is gone."""
    proc, tansu = long_demo

    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)

    assert proc.returncode == 0, stdout
    assert EARLY_STOP in stdout
    assert "Decisions by type" in stdout
    assert "Traceback" not in stdout
    wait_for(lambda: not alive(tansu), 10, "Tansu exit")


def test_a_killed_demo_takes_its_broker_down_with_it(
    long_demo: tuple[subprocess.Popen[str], int],
) -> None:
    """SIGKILL to the demo (no cleanup runs): the kernel's parent-death signal ends Tansu."""
    proc, tansu = long_demo

    proc.kill()
    proc.wait(10)

    wait_for(lambda: not alive(tansu), 10, "Tansu exit after its parent was killed")
