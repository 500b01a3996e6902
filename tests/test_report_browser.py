"""report.html in a real browser: Debian's headless Chromium, every network request blocked.

Fails unless every chart drew SVG marks, the console stayed clean, no request left the file and no
script from a hostile string ran. Skipped (with the reason) where /usr/bin/chromium or Playwright is
missing; CI (.ci/run) installs Debian's chromium. Never downloads a browser.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from sae_report.report import write_report
from test_report_support import comparison, writeup_analysis, writeup_data

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = [pytest.mark.browser]

if CHROMIUM is None:
    pytest.skip("no chromium on this machine (apt-get install chromium; .ci/run does it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-default-apps", "--no-first-run", "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def _open(browser, html: Path):
    """Load the report offline; return (page, console errors, requests other than the file, dialogs)."""
    context = browser.new_context(offline=True, java_script_enabled=True)
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    dialogs: list[str] = []
    url = html.resolve().as_uri()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url) if r.url != url else None)
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
    page.goto(url, wait_until="load")
    page.wait_for_selector("body[data-charts-ready]", timeout=30_000)
    return page, context, errors, requests, dialogs


def _marks_per_chart(page) -> list[int]:
    return page.eval_on_selector_all(
        "div.vega", "els => els.map(e => e.querySelectorAll('svg .role-mark > path, svg .role-mark > line,"
                    " svg .role-mark > rect, svg .role-mark > text, svg .role-mark > g, svg path.mark-line').length)")


def test_every_chart_draws_offline(browser, tmp_path) -> None:
    data = writeup_data(tmp_path / "run", rows=400, with_stats=True)
    out = tmp_path / "report"
    write_report(writeup_analysis(), data, out, formats=("html",), comparison=comparison(), date="2025-11-01")
    page, context, errors, requests, dialogs = _open(browser, out / "report.html")
    try:
        assert int(page.get_attribute("body", "data-charts-ready")) == 6
        assert page.locator("div.vega").count() == 6
        assert page.locator(".chart-error").count() == 0
        marks = _marks_per_chart(page)
        assert len(marks) == 6 and all(n > 0 for n in marks), marks
        lines = page.eval_on_selector_all("div.vega svg", "els => els.map(s => s.querySelectorAll('.mark-line path').length)")
        assert all(n > 0 for n in lines[:4]), lines  # the time charts drew their lines
        assert errors == [] and requests == [] and dialogs == []
        assert page.locator("script[src]").count() == 0 and page.locator("link[href]").count() == 0
    finally:
        context.close()


def test_hostile_strings_do_not_run_in_the_browser(browser, tmp_path) -> None:
    data = writeup_data(tmp_path / "run", rows=200)
    a = writeup_analysis(run_id="<script>alert(1)</script>", config={"note": "</script><script>alert(2)</script>",
                                                                     "target_l0": 0.05})
    a = replace(a, phases=[replace(a.phases[0], name="</script><img src=x onerror=alert(3)>")] + a.phases[1:])
    out = tmp_path / "report"
    write_report(a, data, out, formats=("html",), date="2025-11-01")
    page, context, errors, requests, dialogs = _open(browser, out / "report.html")
    try:
        assert dialogs == [] and errors == [] and requests == []
        assert page.locator("h1").inner_text() == "Training Results Analysis: <script>alert(1)</script>"
        assert page.locator("img").count() == 0
        assert "</script><img src=x onerror=alert(3)>" in page.locator("#fig-l0 svg").inner_html().replace("&lt;", "<").replace("&gt;", ">")
        assert all(n > 0 for n in _marks_per_chart(page))
    finally:
        context.close()
