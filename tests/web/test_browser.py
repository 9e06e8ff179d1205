"""The dashboard in a real headless browser (Debian's chromium and chromium-driver, driven by
Selenium; nothing downloaded): live updates from other processes, filtering, the live log
tail, actions that land in the log with their actor, the token and the Origin enforced."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import orjson
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from eventlog import open_store
from tests.conftest import PATIENCE
from tests.e2e.conftest import CLI
from tests.web.conftest import Server
from tri24es import events as ev
from tri24es.names import KILL_SWITCH_STREAM
from tri24es.procinfo import host_id, start_time
from tri24es.services import Services

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.skipif(not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
                       reason="browser tests: apt-get install chromium chromium-driver "
                              "(.ci/run does)"),
    pytest.mark.xdist_group("web-browser"),  # one browser and one server, tests in order
]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PATIENCE)
    try:
        yield driver
    finally:
        driver.quit()


T = TypeVar("T")


def wait(driver: WebDriver, condition: Callable[[WebDriver], T], what: str) -> T:
    """The condition's first truthy value (e.g. a cell's text, read in the same look)."""
    found: T = WebDriverWait(driver, PATIENCE, poll_frequency=0.1).until(
        condition, f"waiting for {what}")
    return found


def look(driver: WebDriver, css: str, read: Callable[[WebElement], T]) -> T | None:
    """read() of the first element css finds; None if there is none, or if a live update
    replaced it between finding and reading (the caller looks again)."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return read(found[0]) if found else None
    except StaleElementReferenceException:
        return None


def text_of(driver: WebDriver, css: str) -> str:
    return look(driver, css, lambda e: e.text) or ""


def click(driver: WebDriver, css: str, what: str) -> None:
    """Click once; a button inside the live part may be swapped out just as it is clicked
    (a stale element gets no click), so look again until one click lands."""
    wait(driver, lambda d: look(d, css, lambda e: e.click() or True), what)


def open_page(driver: WebDriver, server: Server, path: str, *, live: bool = True) -> None:
    driver.get(server.url + path)
    if live:  # the stream is open: later moves of the head reach the page
        wait(driver, lambda d: text_of(d, "#live-state") == "●", "the live stream")
    driver.execute_script("window.notReloaded = true;")


def not_reloaded(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return window.notReloaded === true;"))


def logged(server: Server, type_: str, stream: str) -> list[dict[str, object]]:
    return [orjson.loads(e.metadata) | {"data": orjson.loads(e.data)}
            for e in server.events(type_) if e.stream == stream]


def sign_in(driver: WebDriver, server: Server, token: str) -> None:
    driver.get(server.url + "/login?next=/")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()


def test_the_overview_updates_when_a_task_completes_elsewhere(browser: WebDriver,
                                                              server: Server) -> None:
    assert server.cli("submit", "Finish me", "--id", "live-1",
                      "--priority", "CRITICAL").returncode == 0
    open_page(browser, server, "/")
    # Read in the look that found it: a live update may replace the table just after.
    before = int(wait(browser, lambda d: text_of(d, "#count-completed"), "the queue table"))
    worker = server.cli("worker", "--id", "browser-worker-1", "--exec", "echo done",
                        "--max-tasks", "1")
    assert worker.returncode == 0, worker.stderr
    wait(browser, lambda d: text_of(d, "#count-completed") == str(before + 1),
         "the completed count to move")
    assert not_reloaded(browser)
    assert "browser-worker-1" in text_of(browser, "table.workers")


def test_filtering_the_task_list(browser: WebDriver, server: Server) -> None:
    for n, (title, priority) in enumerate([("Alpha filter", "LOW"), ("Beta filter", "LOW"),
                                           ("Alpha other", "HIGH")]):
        assert server.cli("submit", title, "--id", f"filter-{n}",
                          "--priority", priority).returncode == 0
    open_page(browser, server, "/tasks", live=False)
    browser.find_element(By.ID, "filter-text").send_keys("alpha")
    Select(browser.find_element(By.ID, "filter-priority")).select_by_visible_text("LOW")
    browser.find_element(By.ID, "filter-apply").click()

    def shown(d: WebDriver) -> list[str]:
        try:
            return [r.get_attribute("data-task") or "" for r in
                    d.find_elements(By.CSS_SELECTOR, "tr.task-row")]
        except StaleElementReferenceException:  # the filtered page is loading
            return []

    wait(browser, lambda d: shown(d) == ["filter-0"], "only the LOW alpha task")
    assert "priority=LOW" in browser.current_url


def test_a_task_page_shows_the_live_log_tail(browser: WebDriver, server: Server,
                                             tmp_path: Path) -> None:
    go = tmp_path / "go"
    agent = f"sh -c 'echo first-line; while [ ! -e {go} ]; do sleep 0.05; done; echo second-line'"
    assert server.cli("submit", "Talk slowly", "--id", "tail-1", "--priority", "CRITICAL",
                      "--command", agent).returncode == 0
    open_page(browser, server, "/tasks/tail-1")
    worker = subprocess.Popen([*CLI, "worker", "--id", "browser-worker-2", "--max-tasks", "1"],
                              cwd=server.root, env=server.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait(browser, lambda d: "first-line" in text_of(d, "#log-tail"), "the first line")
        assert "second-line" not in text_of(browser, "#log-tail")
        go.touch()
        wait(browser, lambda d: "second-line" in text_of(d, "#log-tail"), "the second line")
        wait(browser, lambda d: text_of(d, "#field-state") == "completed", "completed")
        assert worker.wait(PATIENCE) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert not_reloaded(browser)


def test_actions_from_the_page_land_in_the_log_with_the_actor(browser: WebDriver,
                                                              server: Server) -> None:
    db = str(server.root / "state" / "tri24es.db")
    with open_store(db) as store:
        services = Services(store, actor="test")
        services.start_worker("page-worker", pid=os.getpid(), pid_start_time=start_time(
            os.getpid()), host=host_id())
    assert server.cli("submit", "Cancel me", "--id", "to-cancel").returncode == 0

    # Not signed in: the buttons are there but disabled, and a wrong token is refused.
    open_page(browser, server, "/workers")
    pause = "#worker-page-worker button[data-action='pause']"
    (disabled,) = wait(browser, lambda d: look(d, pause, lambda e: [e.get_attribute("disabled")]),
                       "the pause button")
    assert disabled is not None
    sign_in(browser, server, "not-the-token")
    wait(browser, lambda d: text_of(d, "#message") == "wrong token", "the refusal")
    sign_in(browser, server, server.token)
    wait(browser, lambda d: d.current_url.rstrip("/") == server.url, "back at the overview")

    open_page(browser, server, "/workers")
    click(browser, pause, "the pause button")
    wait(browser, lambda d: bool(logged(server, "WorkerPauseRequested", "worker-page-worker")),
         "the pause request")
    (paused,) = logged(server, "WorkerPauseRequested", "worker-page-worker")
    assert paused["actor"] == "web:127.0.0.1"
    assert paused["data"]["by"] == "web:127.0.0.1"  # type: ignore[index]

    open_page(browser, server, "/tasks/to-cancel")
    browser.find_element(By.CSS_SELECTOR, "#task-actions button[data-action='cancel']").click()
    wait(browser, lambda d: bool(logged(server, "TaskCancelled", "task-to-cancel")),
         "the cancellation")
    assert logged(server, "TaskCancelled", "task-to-cancel")[0]["actor"] == "web:127.0.0.1"
    wait(browser, lambda d: text_of(d, "#field-state") == "cancelled", "the page to follow")

    open_page(browser, server, "/")
    with open_store(db) as store:
        Services(store, actor="budget-watchdog").activate_killswitch(ev.KillSwitchActivated(
            reason="rate $9.00/min over the limit", rate=Decimal(9), daily=Decimal(20),
            rate_limit=Decimal(1), daily_limit=Decimal(75)))
    wait(browser, lambda d: "rate $9.00/min" in text_of(d, "#killswitch.banner"),
         "the kill switch banner")
    assert not_reloaded(browser)
    form = browser.find_element(By.ID, "reset-form")
    wait(browser, lambda d: form.is_displayed(), "the reset form")
    form.find_element(By.NAME, "reason").send_keys("limits raised")
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait(browser, lambda d: bool(logged(server, "KillSwitchReset", KILL_SWITCH_STREAM)),
         "the reset")
    (reset,) = logged(server, "KillSwitchReset", KILL_SWITCH_STREAM)
    assert reset["actor"] == "web:127.0.0.1"
    assert (reset["data"]["by"], reset["data"]["reason"]) == (  # type: ignore[index]
        "web:127.0.0.1", "limits raised")
    wait(browser, lambda d: text_of(d, "#killswitch") == "kill switch off", "the switch off")


def test_a_form_on_another_origin_cannot_act(browser: WebDriver, server: Server) -> None:
    """Signed in, the browser visits a page of another origin on the same
    host that posts a form to the dashboard: the cookie goes along (same site), the Origin
    check refuses it."""
    assert server.cli("submit", "Victim", "--id", "victim").returncode == 0
    sign_in(browser, server, server.token)
    wait(browser, lambda d: d.current_url.rstrip("/") == server.url, "signed in")
    page = (f'<form id="f" method="post" action="{server.url}/api/tasks/victim/cancel">'
            '<input name="csrf" value="guessed"></form>'
            '<script>document.getElementById("f").submit()</script>').encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{evil.server_address[1]}/")
        wait(browser, lambda d: "cross-site request refused" in text_of(d, "#message"),
             "the refusal page")
    finally:
        evil.shutdown()
        evil.server_close()
    assert logged(server, "TaskCancelled", "task-victim") == []


def test_a_hostile_title_is_shown_as_text(browser: WebDriver, server: Server) -> None:
    title = "<img src=x onerror=\"window.owned=1\"><script>window.owned=2</script>"
    assert server.cli("submit", title, "--id", "hostile").returncode == 0
    for path in ("/tasks?q=hostile", "/tasks/hostile"):
        open_page(browser, server, path, live=False)
        wait(browser, lambda d: "window.owned" in d.find_element(By.TAG_NAME, "main").text,
             f"the title as text on {path}")
        assert browser.execute_script("return window.owned === undefined;")
        assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
