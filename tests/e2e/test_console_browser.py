"""The console in a real browser: Debian's chromium, driven by Selenium, against the real relay.

`relayguard console serve` runs as its own process next to Postfix + the milter + a sink. The
browser logs in, finds a message in the audit search, pulls the kill switch (reason and
confirmation) after which the source's next SMTP transaction is refused, and releases a held
message that then arrives at the sink. No page may cause a Content-Security-Policy violation.

With RELAYGUARD_CONSOLE_SCREENSHOTS=DIR each page is also saved as DIR/NAME.png (1280x800);
`scripts/console_screenshots.py` runs this test that way to refresh docs/console/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from relayguard.config import load_config
from relayguard.services.console.accounts import Accounts
from tests.e2e import test_console_e2e
from tests.e2e.test_console_e2e import PASSWORD
from tests.support.stack import LOOPBACK, RelayStack, free_ports, make_message, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

relay = test_console_e2e.relay  # the same fixture: Postfix + the milter + the sink

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = "RELAYGUARD_CONSOLE_SCREENSHOTS"
CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,800",
)


@pytest.fixture
def console_url(relay: tuple[RelayStack, Path]) -> Iterator[str]:
    """`relayguard console serve` for the relay's config, on a free loopback port."""
    stack, config_path = relay
    (port,) = free_ports(1)
    text = config_path.read_text().replace("[console]\n", f"[console]\nport = {port}\n", 1)
    config_path.write_text(text)
    settings = load_config(config_path).console
    assert settings is not None
    Accounts(settings.accounts_file).add("alice", "operator", PASSWORD)
    log = (stack.base_dir / "console.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "relayguard.cli", "console", "serve", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://{LOOPBACK}:{port}"
        assert wait_until(lambda: _answers(url), 30), (stack.base_dir / "console.log").read_text()
        yield url
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/login", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless chromium with a fresh profile; Selenium Manager never goes online."""
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in CHROME_ARGS:
        options.add_argument(argument)
    with tempfile.TemporaryDirectory(prefix="relayguard-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        viewport = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", viewport)
        try:
            yield driver
        finally:
            driver.quit()


def shoot(driver: WebDriver, name: str) -> None:
    """Save the page as NAME.png when screenshots were asked for."""
    directory = os.environ.get(SCREENSHOTS)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(Path(directory) / f"{name}.png"))


def csp_violations(driver: WebDriver) -> list[str]:
    """Console messages of Content-Security-Policy refusals since the last call."""
    return [
        str(entry["message"])
        for entry in driver.get_log("browser")
        if "Content Security Policy" in str(entry["message"])
    ]


def submit(driver: WebDriver, form: str, **fields: str) -> None:
    """Fill the form's text fields, tick its confirmation box if any, press its button."""
    element = driver.find_element(By.CSS_SELECTOR, form)
    for name, value in fields.items():
        box = element.find_element(By.NAME, name)
        box.clear()
        box.send_keys(value)
    for confirm in element.find_elements(By.CSS_SELECTOR, "input[name=confirm]"):
        confirm.click()
    page = driver.find_element(By.TAG_NAME, "html")
    element.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda _: gone(page))


def gone(element: WebElement) -> bool:
    """The element's page was replaced (chromium reports it stale, or as a foreign node)."""
    try:
        element.is_enabled()
    except WebDriverException:
        return True
    return False


def follow(driver: WebDriver, link_text: str) -> None:
    """Click the link and wait for the next page (not the old one, which is gone)."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.LINK_TEXT, link_text).click()
    WebDriverWait(driver, 10).until(lambda _: gone(page))


def body(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


# Cells of the audit table's first columns (time, source, outcome) whose text takes more than one
# line: short words must never be broken ("quaranti/ne"), the time never wrapped.
WRAPPED_CELLS = """
return [...document.querySelectorAll('table.audit tbody td:nth-child(-n+3)')].filter(td => {
  const range = document.createRange();
  range.selectNodeContents(td);
  return td.textContent.trim() !== '' && range.getClientRects().length > 1;
}).map(td => td.textContent);
"""


def send_mail(stack: RelayStack) -> None:
    """One message held by the YARA rule, two delivered ones."""
    held = make_message("held by yara", sender="scanner@example.com", body="RELAYGUARD-TEST-HOLD\n")
    with stack.submission() as smtp:
        smtp.send_message(held, to_addrs=["alice@example.com"])
        for recipient in ("bob@example.com", "carol@example.com"):
            scan = make_message("scan", sender="scanner@example.com", recipient=recipient)
            smtp.send_message(scan, to_addrs=[recipient])
    assert wait_until(lambda: len(stack.sink.messages) == 2, 20)
    assert len(stack.postfix.queue()) == 1


def test_console_in_chromium(
    relay: tuple[RelayStack, Path], console_url: str, browser: WebDriver
) -> None:
    stack, _ = relay
    send_mail(stack)
    queue_id = str(stack.postfix.queue()[0]["queue_id"])

    browser.get(f"{console_url}/")
    assert browser.current_url == f"{console_url}/login"
    shoot(browser, "login")
    submit(browser, "form.login", user="alice", password=PASSWORD)
    assert "alice (operator)" in body(browser)
    shoot(browser, "overview")

    # The audit search finds the delivered message to carol, and only it.
    def found() -> bool:
        browser.get(f"{console_url}/audit")
        submit(browser, "form.search", recipient="carol@example.com")
        return len(browser.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")) == 1

    assert wait_until(found, 15, interval=0.5)
    assert "carol@example.com" in body(browser) and "bob@example.com" not in body(browser)

    # The unfiltered search lists the three messages and the login, once the index has the
    # login line: the index follows the log every second, so the line may be a poll behind.
    def listed() -> bool:
        browser.get(f"{console_url}/audit")
        return len(browser.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")) == 4

    assert wait_until(listed, 15, interval=0.5)
    assert "console_login" in body(browser)
    assert browser.execute_script(WRAPPED_CELLS) == []
    shoot(browser, "audit")

    # Release the held message: it arrives at the sink.
    follow(browser, "Quarantine")
    assert "YARA rule markers:Hold_Marker" in body(browser)
    shoot(browser, "quarantine")
    follow(browser, queue_id)
    assert "RELAYGUARD-TEST-HOLD" in body(browser)
    shoot(browser, "message")
    submit(browser, f"form[action='/quarantine/{queue_id}/release']")
    assert wait_until(lambda: any(m.subject == "held by yara" for m in stack.sink.messages), 20)

    # The kill switch: the source's next transaction is refused with the operator's reason.
    follow(browser, "Sources")
    assert "3/100 messages/hour" in body(browser)  # the three messages sent, counted by the milter
    shoot(browser, "sources")
    follow(browser, "printer")
    shoot(browser, "source")
    submit(browser, "form[action='/sources/printer/disable']", reason="compromised, ticket 17")
    assert "compromised, ticket 17" in body(browser)
    with stack.submission() as smtp:
        code, text = smtp.mail("scanner@example.com")
    assert (code, text.decode()) == (
        550,
        "5.7.1 source printer is disabled: compromised, ticket 17",
    )

    follow(browser, "Inventory")
    shoot(browser, "inventory")
    follow(browser, "Overview")
    assert "compromised, ticket 17" in body(browser)  # the overview lists the disabled source

    assert csp_violations(browser) == []
    # The check above can see a violation: an inline script is refused and logged.
    browser.execute_script(
        "const s = document.createElement('script'); s.textContent = '1'; document.body.append(s);"
    )
    assert wait_until(lambda: bool(csp_violations(browser)), 5, interval=0.2)
