"""report.html in a real browser: Debian's headless Chromium, every network request blocked.

Fails unless every chart drew SVG marks under the report's own Content-Security-Policy (script and
style hashes only: no 'unsafe-inline', no 'unsafe-eval'), tooltips show, the console stayed clean
(a CSP violation is a console error), no request left the file and no script from a hostile string
ran. Skipped (with the reason) where /usr/bin/chromium or Playwright is
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
        assert int(page.get_attribute("body", "data-charts-ready")) == 7
        assert page.locator("div.vega").count() == 7
        assert page.locator(".chart-error").count() == 0
        marks = _marks_per_chart(page)
        assert len(marks) == 7 and all(n > 0 for n in marks), marks
        lines = page.eval_on_selector_all("div.vega svg", "els => els.map(s => s.querySelectorAll('.mark-line path').length)")
        assert all(n > 0 for n in lines[:5]), lines  # the time charts drew their lines
        assert page.locator(".vega-embed svg.marks").count() == 7  # drawn under the strict CSP
        assert page.locator("img.static-chart").count() == 0  # the static images stay in <noscript>
        csp = page.get_attribute('meta[http-equiv="Content-Security-Policy"]', "content")
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp and "'sha256-" in csp, csp
        # A tooltip (vega-tooltip, its style from our sheet, nothing injected) on a marker of the L0 chart.
        marker = page.locator("#fig-l0 svg .mark-rule.role-mark line").first
        marker.scroll_into_view_if_needed()
        box = marker.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_selector("#vg-tooltip-element.visible", timeout=5_000)
        assert page.eval_on_selector("#vg-tooltip-element", "e => getComputedStyle(e).position") == "fixed"
        assert "step" in page.locator("#vg-tooltip-element").inner_text()
        assert errors == [] and requests == [] and dialogs == []
        assert page.locator("script[src]").count() == 0 and page.locator("link[href]").count() == 0
    finally:
        context.close()


def test_the_csp_blocks_what_it_should(browser, tmp_path) -> None:
    """The policy is enforced: a script or style not hashed is refused, and drawing without the
    interpreter (ast: false) would need 'unsafe-eval' (so the policy really holds without it)."""
    from sae_report.report import render

    data = writeup_data(tmp_path / "run", rows=200)
    out = tmp_path / "report"
    write_report(writeup_analysis(), data, out, formats=("html",), date="2025-11-01")
    html = (out / "report.html").read_text()
    embed = render.html_assets()["embed"]
    no_ast = embed.replace("ast: true", "ast: false")
    assert no_ast != embed
    variant = html.replace(embed, no_ast).replace(render.csp_source(embed), render.csp_source(no_ast))
    injected = html.replace("<main>", "<main><script>document.title = 'ran'</script><style>body{display:none}</style>", 1)
    for name, text, drawn, refused in (("no_ast", variant, False, "unsafe-eval"), ("injected", injected, True, "inline script")):
        f = tmp_path / f"{name}.html"
        f.write_text(text)
        page, context, errors, requests, dialogs = _open(browser, f)
        try:
            charts = page.locator("div.vega").count()
            assert charts == 5 and page.locator(".vega-embed svg.marks").count() == (charts if drawn else 0), name
            assert page.title() != "ran" and page.locator("main").is_visible(), name
            assert any(refused in e for e in errors), (name, errors)
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


def test_bidi_and_control_characters_are_shown_not_obeyed(browser, tmp_path) -> None:
    data = writeup_data(tmp_path / "run", rows=200)
    a = writeup_analysis(run_id="run\u202eexe.txt\x1b[31m", config={"target_l0": 0.05, "note": "\u2067abc\u2069"})
    out = tmp_path / "report"
    write_report(a, data, out, formats=("html",), date="2025-11-01")
    page, context, errors, requests, dialogs = _open(browser, out / "report.html")
    try:
        assert page.locator("h1").inner_text() == "Training Results Analysis: run\\u202eexe.txt\\x1b[31m"
        text = page.locator("main").inner_text()
        assert "\u202e" not in text and "\x1b" not in text and "\u2067" not in text
        assert "held invisible control or bidirectional-text characters" in text
        assert errors == [] and all(n > 0 for n in _marks_per_chart(page))
    finally:
        context.close()


def _axis_labels(page, fig: str) -> list[str]:
    """The x-axis tick labels of a chart (the first axis group Vega draws is the x axis)."""
    return page.eval_on_selector(f"#fig-{fig} svg", """s => {
        const axes = Array.from(s.querySelectorAll('.role-axis')).map(
            ax => Array.from(ax.querySelectorAll('.role-axis-label text')).map(t => t.textContent));
        return axes.find(labels => labels.length > 0) || [];  // grid-only axes have no labels
    }""")


def test_verdict_first_zoom_and_static_fallback(browser, tmp_path) -> None:
    """Issue 12's checks: the verdict (with L0, fidelity, the most severe finding and the next config)
    is in the first screen at 1300x900; a time chart zooms on the step axis with the mouse wheel and
    pans with a drag (x domain changes, y axis stays); with JavaScript off the static SVG of every
    chart shows instead."""
    data = writeup_data(tmp_path / "run", rows=400)
    out = tmp_path / "report"
    write_report(writeup_analysis(), data, out, formats=("html",), comparison=comparison(), date="2025-11-01")
    html = out / "report.html"
    context = browser.new_context(offline=True, java_script_enabled=True, viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", lambda route: route.continue_() if route.request.url == html.resolve().as_uri() else route.abort())
    try:
        page.goto(html.resolve().as_uri(), wait_until="load")
        page.wait_for_selector("body[data-charts-ready]", timeout=30_000)
        box = page.locator("#verdict").bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 900, box  # all of it on screen 1
        verdict = page.locator("#verdict").inner_text()
        for text in ("Verdict:", "Worth acting on", "L0:", "Fidelity:", "explained variance", "MSE",
                     "Most severe finding:", "Collapse", "Next run:", "l1_alpha 0.065 -> 0.045"):
            assert text in verdict, (text, verdict)
        assert page.locator("details.config").count() == 1 and not page.locator("details.config pre").is_visible()
        # Zoom: the wheel over the L0 chart narrows the step axis; a drag pans it.
        page.locator("#fig-l0").scroll_into_view_if_needed()
        before = _axis_labels(page, "l0")
        assert before[0] == "0" and before[-1].endswith("k"), before
        plot = page.locator("#fig-l0 svg.marks").bounding_box()
        page.mouse.move(plot["x"] + plot["width"] / 2, plot["y"] + plot["height"] / 2)
        page.mouse.wheel(0, -600)
        page.wait_for_timeout(400)
        zoomed = _axis_labels(page, "l0")
        assert zoomed != before and zoomed[0] != "0", (before, zoomed)
        page.mouse.down()
        page.mouse.move(plot["x"] + plot["width"] / 2 + 150, plot["y"] + plot["height"] / 2, steps=6)
        page.mouse.up()
        page.wait_for_timeout(300)
        panned = _axis_labels(page, "l0")
        assert panned != zoomed, (zoomed, panned)
        assert page.locator(".hint").first.is_visible()  # the zoom hint shows only where JavaScript runs
        assert errors == []
    finally:
        context.close()
    # JavaScript off: no chart is drawn, every chart's static SVG shows in its place.
    context = browser.new_context(offline=True, java_script_enabled=False, viewport={"width": 1300, "height": 900})
    page = context.new_page()
    try:
        page.goto(html.resolve().as_uri(), wait_until="load")
        imgs = page.locator("img.static-chart")
        assert imgs.count() == page.locator("figure.chart").count() == 5
        for i in range(imgs.count()):
            img = imgs.nth(i)
            img.scroll_into_view_if_needed()
            assert img.is_visible()
            assert img.evaluate("e => e.complete && e.naturalWidth > 300"), i
        assert page.locator(".vega-embed").count() == 0 and not page.locator(".hint").first.is_visible()
        assert page.locator("#verdict").bounding_box()["y"] < 900
    finally:
        context.close()


@pytest.mark.parametrize("which", ["comparison", "campaign"])
def test_comparison_and_campaign_draw_under_their_csp_with_static_fallbacks(browser, tmp_path, which) -> None:
    """comparison.html and campaign.html are built like report.html: every chart draws under the
    hash-only CSP (no console error, nothing fetched, no dialog from the hostile strings), and with
    JavaScript off each chart's static SVG shows instead."""
    from test_report_escaping import HOSTILE, write_hostile_campaign

    if which == "campaign":
        write_hostile_campaign(tmp_path)
        html, n = tmp_path / "campaign.html", 2
    else:
        from sae_report.compare import compare_runs
        from sae_report.report.comparison import write_comparison
        from sae_report.fixtures import write_siblings

        write_siblings(tmp_path / "runs", steps=20_000, rows=200)
        write_comparison(compare_runs([tmp_path / "runs"], 0.05), tmp_path, ("html",))
        html, n = tmp_path / "comparison.html", 5
    page, context, errors, requests, dialogs = _open(browser, html)
    try:
        assert int(page.get_attribute("body", "data-charts-ready")) == n
        assert page.locator(".vega-embed svg.marks").count() == n and page.locator(".chart-error").count() == 0
        assert all(m > 0 for m in _marks_per_chart(page))
        assert errors == [] and requests == [] and dialogs == []
        if which == "campaign":
            assert HOSTILE in page.locator("body").inner_text()
    finally:
        context.close()
    context = browser.new_context(offline=True, java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(html.resolve().as_uri(), wait_until="load")
        imgs = page.locator("img.static-chart")
        assert imgs.count() == page.locator("figure.chart").count() == n
        for i in range(n):
            imgs.nth(i).scroll_into_view_if_needed()
            assert imgs.nth(i).evaluate("e => e.complete && e.naturalWidth > 200"), i
    finally:
        context.close()
