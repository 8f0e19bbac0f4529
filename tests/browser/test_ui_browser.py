"""An operator in a real browser: find a drifted lab host, read its diff, converge it, watch it live.

Runs against a real `fleet serve`, real lab hosts over SSH and a real git
source. Screenshots of the main pages land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.browser.conftest import OPERATOR, PASSWORD

pytestmark = pytest.mark.lab

LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
RUN_TIMEOUT_S = 180


@pytest.fixture
def page(browser, stack):
    _, server = stack
    context = browser.new_context(viewport=LAPTOP, base_url=server.url())
    page = context.new_page()
    problems: list[str] = []
    # A CSP violation or a script error shows up as a console error: none is allowed.
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page
    context.close()
    assert not problems, problems


def log_in(page, screenshots=None) -> None:
    page.goto("/login")
    if screenshots:
        page.screenshot(path=screenshots / "login.png")
    page.get_by_label("Name").fill(OPERATOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/$"))


def run_status(page) -> str:
    """The run page's status pill, read between reloads (the live view reloads itself at the end)."""
    try:
        return page.locator("#run-status .word").inner_text(timeout=2000)
    except Exception:  # the page is reloading just now
        return ""


def watch_run(page, timeout: float = RUN_TIMEOUT_S, on_running=None) -> list[str]:
    """Statuses seen on the open run page until it ends, without ever reloading it from the test."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run_status(page)
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        if status == "running" and on_running:
            on_running()
        if status and status not in ("queued", "running"):
            return seen
        time.sleep(0.5)
    raise AssertionError(f"the run did not end within {timeout}s; statuses seen: {seen}")


def test_operator_converges_a_drifted_host_and_watches_it_live(page, stack, screenshots):
    log_in(page, screenshots)
    page.wait_for_selector(".tiles")
    assert "drifted" in page.locator(".tiles").inner_text()
    page.screenshot(path=screenshots / "dashboard.png", full_page=True)

    # Hosts, filtered to the drifted ones; both fresh lab hosts drift against the example source.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Hosts").click()
    page.get_by_role("navigation", name="Filter by status").get_by_role("link", name=re.compile("drifted")).click()
    page.wait_for_url(re.compile(r"status=drifted"))
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 2
    page.screenshot(path=screenshots / "hosts.png", full_page=True)

    # The host and its diff.
    page.get_by_role("link", name="web1", exact=True).click()
    page.wait_for_url(re.compile(r"/hosts/web1$"))
    assert page.locator("#host-status .word").inner_text() == "drifted"
    diffs = page.locator("pre.diff")
    assert diffs.count() >= 1
    all_diffs = "\n".join(diffs.all_inner_texts())
    assert "+++ after: /etc/motd" in all_diffs
    assert page.locator("pre.diff .d-add").first.is_visible()
    page.screenshot(path=screenshots / "host-with-diff.png", full_page=True)

    # Converge: land on the run page, which updates itself until the run ends.
    page.get_by_role("button", name="Converge").click()
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_url = page.url
    assert re.search(r"run \d+ queued", page.locator(".flash").inner_text())
    shot = {"taken": False}

    def screenshot_live():
        if not shot["taken"] and page.locator("#live-tasks tr").count() >= 3:
            page.screenshot(path=screenshots / "run-live.png", full_page=True)
            shot["taken"] = True

    seen = watch_run(page, on_running=screenshot_live)
    assert seen[0] in ("queued", "running") and seen[-1] == "successful", seen
    if not shot["taken"]:
        page.screenshot(path=screenshots / "run-live.png", full_page=True)
    assert page.url == run_url
    page.wait_for_selector("#h-hosts")  # the live view reloaded itself into the verdict table
    assert page.locator("#live").count() == 0
    page.screenshot(path=screenshots / "run-done.png", full_page=True)

    # Back to the host: check it, watch the check end, see it in sync.
    page.goto("/hosts/web1")
    page.get_by_role("button", name="Check", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    seen = watch_run(page)
    assert seen[-1] == "successful", seen
    page.goto("/hosts/web1")
    status = page.locator("#host-status .word").inner_text()
    assert status == "in sync", f"web1 is {status} after its converge and check:\n{page.locator('main').inner_text()}"
    assert "No drift at the last check" in page.locator("#h-drift + *").inner_text()
    # The example source's sshd test runs for real in a check (check_mode: false): listed, never drift.
    executed = page.locator("section", has=page.locator("#h-executed")).inner_text()
    assert "Test the full sshd configuration" in executed and "changed nothing" in executed
    page.screenshot(path=screenshots / "host-in-sync.png", full_page=True)


def test_the_other_pages_and_phone_widths(page, stack, screenshots):
    log_in(page)
    for path, name in (("/", "dashboard-history"), ("/revisions", "revisions"), ("/approvals", "approvals"),
                       ("/runs", "runs")):
        page.goto(path)
        page.screenshot(path=screenshots / f"{name}.png", full_page=True)
    assert page.locator("table.list tbody tr").count() >= 2
    page.set_viewport_size(PHONE)
    for path, name in (("/", "dashboard-phone"), ("/hosts/db1", "host-phone")):
        page.goto(path)
        page.screenshot(path=screenshots / f"{name}.png", full_page=True)
        # Nothing wider than the phone except inside the scrolling tables and diffs.
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} scrolls sideways on a phone by {overflow}px"


def test_a_viewer_sees_no_converge_button(browser, stack):
    cli, server = stack
    assert cli("user", "add", "vera", "--role", "viewer", "--password-stdin", input=PASSWORD + "\n").code == 0
    context = browser.new_context(viewport=LAPTOP, base_url=server.url())
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("Name").fill("vera")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto("/hosts/db1")
    assert page.get_by_role("button", name="Converge").count() == 0
    assert page.get_by_role("link", name="Admin").count() == 0
    context.close()
