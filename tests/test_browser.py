"""The dashboard in a real headless Chromium against a real ``arbiter run`` fed by the
simulator: the page loads without console errors, its counters move, a dead letter opens,
and a screenshot of it is kept under the run's data folder.

Chromium and chromedriver come from the Debian packages that ``make test`` installs
(``make browser``); where they could not be installed, this test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from app.simulator.generate import SimEvent, generate
from connectors.broker import EmbeddedBroker
from tests.harness import ArbiterProcess, produce

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = [
    pytest.mark.browser,
    pytest.mark.kafka,
    pytest.mark.sqlite,
    # The shared trained_models fixture may be built in this test's setup (~2.5 min).
    pytest.mark.timeout(300),
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1800",
)
WAIT_S = 60


@pytest.fixture
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile, quit (browser and driver) whatever happens."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing and os.environ.get("CI"):
        pytest.fail(f"{', '.join(missing)} missing in CI: `make test` installs them (make browser)")
    if missing:  # a developer machine without root/apt: say so, run the rest
        pytest.skip(
            f"{', '.join(missing)} missing: run `make browser` "
            "(apt-get install chromium chromium-driver, as root)"
        )
    with tempfile.TemporaryDirectory(prefix="arbiter-chromium-") as profile:
        options = webdriver.ChromeOptions()
        # An explicit binary and driver: Selenium Manager then never downloads anything.
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()


async def test_dashboard_in_chromium_shows_moving_counters_and_opens_a_dead_letter(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path, chromium: WebDriver
) -> None:
    """With the simulator feeding ``arbiter run``, the page at / loads with no console
    error, the decision total grows while it is open, clicking the newest dead letter
    shows its payload, and a PNG screenshot lands in <data_dir>/screenshots/."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    data_dir = tmp_path / "data"
    service = ArbiterProcess(
        tmp_path / "arbiter.log",
        {
            "ARBITER_KAFKA_BOOTSTRAP": broker.bootstrap,
            "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
            "ARBITER_MODELS_DIR": str(models),
            "ARBITER_DATA_DIR": str(data_dir),
            "ARBITER_DATABASE_AUTO_MIGRATE": "true",
            "ARBITER_HTTP_AUTH": "false",
            "ARBITER_TRAINER_ENABLED": "false",
        },
    ).start()
    try:
        events = list(generate(600, seed=707, malformed_rate=0.05))
        first, second = events[:300], events[300:]
        assert any(e.malformed for e in first), "the first wave should hold dead letters"
        await service.wait_for_log("http api listening", timeout=120)
        port = next(
            e["port"] for e in service.log_lines() if e.get("event") == "http api listening"
        )
        await produce(broker.bootstrap, first)

        driver = chromium
        wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.25)
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: _decisions_total(d) > 0)
        before = _decisions_total(driver)

        await produce(broker.bootstrap, second)
        wait.until(lambda d: _decisions_total(d) > before)

        # The page rebuilds its tables on every poll: find and click in one retried step.
        dead_id = wait.until(_click_newest_dead_letter)
        body = driver.find_element(By.ID, "viewer-body")
        wait.until(lambda d: body.text.strip() not in ("", "loading…"))
        assert driver.find_element(By.ID, "viewer").get_attribute("open") is not None
        assert f"dead letter {dead_id}" in driver.find_element(By.ID, "viewer-title").text
        assert _is_payload_of_one_of(body.text, first + second), body.text[:300]

        shot = data_dir / "screenshots" / "dashboard.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000, "a blank page makes a tiny PNG"

        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        service.ensure_stopped()


def _decisions_total(driver: WebDriver) -> int:
    """The sum of the "decisions" column of the throughput table (0 before the first poll),
    read in one script so that a poll redrawing the table cannot interleave."""
    total = driver.execute_script(
        """
        let total = 0;
        for (const row of document.querySelectorAll("#rates tbody tr")) {
          const cell = row.cells[3];
          if (row.cells.length === 5 && /^\\d+$/.test(cell.textContent)) {
            total += Number(cell.textContent);
          }
        }
        return total;
        """
    )
    return int(total)


def _click_newest_dead_letter(driver: WebDriver) -> str | None:
    """Click the id of the newest dead letter and return it; None while there is none or
    the row was redrawn under us (the wait tries again)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        buttons = driver.find_elements(By.CSS_SELECTOR, "#dead tbody button.link")
        if not buttons:
            return None
        dead_id = buttons[0].text
        buttons[0].click()
    except StaleElementReferenceException:
        return None
    return dead_id


def _is_payload_of_one_of(shown: str, events: list[SimEvent]) -> bool:
    """True when the viewer's text begins one of the broken events' bytes, as text."""
    head = shown.strip()[:200]
    return any(
        e.malformed and e.value.decode("utf-8", "replace").strip().startswith(head) for e in events
    )
