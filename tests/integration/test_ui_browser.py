"""`tapers ui` end to end in a real headless Chromium (Debian's package, driven by
Playwright): the page with the token, two machines, a button that halts one, graphs
that move, the destroy confirmation, a narrow window, and the page without JavaScript.
Screenshots go to test-artifacts/ui/ (TAPERS_TEST_ARTIFACTS overrides)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# As root, in a closed network: no sandbox (root), no background traffic to Google.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture
def chromium():
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        problem = f"playwright is not installed ({exc})"
    if problem is None and not Path(CHROMIUM).exists():
        problem = f"no {CHROMIUM} (apt-get install chromium)"
    if problem:
        if os.environ.get("TAPERS_REQUIRE_LXC") == "1":
            pytest.fail(f"the browser tests must run here: {problem}")
        pytest.skip(problem)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def shots() -> Path:
    folder = Path(os.environ.get("TAPERS_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_panel_in_a_real_browser(project, panel, chromium, shots) -> None:
    from playwright.sync_api import expect

    project.write("machines:\n  web: {}\n  db: {}\n")
    project.tapers("up").ok()
    ui = panel()
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(ui.url)
    assert page.url == ui.base + "/", "the token is traded for a cookie and leaves the address bar"
    cards = page.locator("article.machine")
    expect(cards).to_have_count(2)
    web, db = (page.locator(f"#m-{project.container(name)}") for name in ("web", "db"))
    expect(web.locator('[data-field="state"]')).to_have_text("running")
    expect(db.locator('[data-field="state"]')).to_have_text("running")
    expect(page.locator("#live")).to_be_visible(timeout=10_000)

    # the graphs move: new samples arrive and the lines change without a reload
    memory = f"#m-{project.container('web')} figure[data-chart=memory]"
    samples = f"Number(document.querySelector('{memory}')?.dataset.samples || 0)"
    page.wait_for_function(f"() => {samples} >= 2", timeout=15_000)
    before = page.locator(f"{memory} polyline").get_attribute("points")
    count = page.evaluate(samples)
    page.wait_for_function(f"() => {samples} > {count}", timeout=15_000)
    assert page.locator(f"{memory} polyline").get_attribute("points") != before
    page.screenshot(path=str(shots / "1-two-machines.png"), full_page=True)

    # halt db with its button: its state changes on the page, the command's output is shown
    db.locator('button[value="halt"]').click()
    expect(db.locator('[data-field="state"]')).to_have_text("stopped", timeout=60_000)
    expect(db.locator('[data-field="output"]')).to_contain_text("done", timeout=30_000)
    assert project.lxc_state("db") == "STOPPED" and project.lxc_state("web") == "RUNNING"
    expect(db.locator('[data-field="plan"]')).to_contain_text("start")
    expect(db.locator('[data-field="use"]')).to_have_text("-")
    page.screenshot(path=str(shots / "2-db-halted.png"), full_page=True)

    # destroy asks first, naming the machine; dismissed, nothing happens
    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    db.locator('button[value="destroy"]').click()
    page.wait_for_timeout(300)  # a dismissed dialog sends nothing; give a wrong POST the time to show
    assert questions and '"db"' in questions[0] and project.name in questions[0]
    assert project.lxc_state("db") == "STOPPED"

    # a narrow window: one column, nothing wider than the screen
    page.set_viewport_size({"width": 380, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 380
    page.screenshot(path=str(shots / "3-narrow.png"), full_page=True)
    assert errors == [], f"errors in the page's script: {errors}"
    page.close()

    # without JavaScript the read-only parts still read
    context = chromium.new_context(java_script_enabled=False)
    plain = context.new_page()
    plain.goto(ui.url)
    text = plain.locator("main").inner_text()
    assert "web" in text and "running" in text and "stopped" in text
    assert project.record("web")["address"] in text
    plain.screenshot(path=str(shots / "4-without-javascript.png"), full_page=True)
    context.close()
