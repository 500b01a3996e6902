"""Hostile run names, config values and texts stay text in report.md and report.html."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from sae_report.report import render_report
from test_report_support import comparison, writeup_analysis, writeup_data

RUN = "<script>alert(1)</script>"
CONFIG = {
    "l1_alpha": 0.065, "target_l0": 0.05, "resample_interval": 10000,
    "note": "</script><script>alert(2)</script>",
    "fence": "```\n<img src=x onerror=alert(3)>\n```",
    "pipe | cell": "a | b",
    "<b>key</b>": "&amp; &lt;",
}
PHASE = "<img src=x onerror=alert(4)>"
EXPLANATION = "[click](javascript:alert(5)) **bold** <b>x</b> &amp; <!-- c --> _u_"
COMMAND = "sae-report analyze `x` <svg onload=alert(6)>"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.scripts: list[tuple[dict, str]] = []
        self._in_script: dict | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None

    def handle_data(self, data):
        if self._in_script is not None:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)
        else:
            self.text.append(data)


def _hostile():
    a = writeup_analysis(run_id=RUN, config=CONFIG)
    findings = [replace(f, explanation=EXPLANATION) for f in a.findings]
    phases = [replace(a.phases[0], name=PHASE)] + a.phases[1:]
    recs = [replace(r, reason="</pre><script>alert(7)</script>") for r in a.recommendations]
    return replace(a, findings=findings, phases=phases, recommendations=recs)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    data = writeup_data(tmp_path_factory.mktemp("run"), rows=200)
    comp = comparison()
    comp["rows"][0]["id"] = "<i>sibling</i>"
    comp["key_finding"] = "<script>alert(8)</script>"
    return render_report(_hostile(), data, ("md", "html"), command=COMMAND, comparison=comp, date="2025-11-01")


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    p.close()
    return p


def _no_active_content(p: _Tags) -> None:
    for tag, attrs in p.tags:
        if tag == "img":  # only our chart images: files beside report.md, static SVGs (data: URIs) in report.html
            if attrs["src"].startswith("data:"):
                assert attrs["src"].startswith("data:image/svg+xml;base64,") and set(attrs) == {"class", "src", "alt"}, attrs
                svg = base64.b64decode(attrs["src"].split(",", 1)[1]).decode()
                inner = _parse(svg)  # the static chart: drawn text only, no active element or handler
                assert svg.startswith("<svg") and not inner.scripts
                assert not any(t in ("img", "foreignobject", "iframe") or any(k.startswith("on") for k in a)
                               for t, a in inner.tags)
            else:
                assert attrs["src"].startswith("charts/") and set(attrs) == {"src", "alt"}, attrs
        assert tag not in ("iframe", "object", "embed", "i", "svg"), tag
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        assert not any(str(v).strip().lower().startswith("javascript:") for v in attrs.values()), (tag, attrs)


def test_html_keeps_hostile_strings_as_text(files) -> None:
    html = files["report.html"].decode()
    p = _parse(html)
    _no_active_content(p)
    # Only our scripts: the bundle, the embed loop, and one JSON spec per chart.
    kinds = [a.get("type", "js") for a, _ in p.scripts]
    assert kinds.count("js") == 2 and all(k in ("js", "application/json") for k in kinds)
    assert not any("alert(" in body for a, body in p.scripts if a.get("type") != "application/json")
    text = "".join(p.text)
    for s in (RUN, CONFIG["note"], "<img src=x onerror=alert(3)>", PHASE, "[click](javascript:alert(5)) **bold** <b>x</b>",
              "</pre><script>alert(7)</script>", "<i>sibling</i>", "<script>alert(8)</script>", COMMAND):
        assert s in text, s
    assert "<title>Training Results Analysis: &lt;script&gt;alert(1)&lt;/script&gt;</title>" in html


def test_chart_json_cannot_close_its_script_and_keeps_the_strings(files) -> None:
    html = files["report.html"].decode()
    p = _parse(html)
    specs = [json.loads(body) for a, body in p.scripts if a.get("type") == "application/json"]
    assert len(specs) == 5  # l0, dead, fidelity, loss, schedules
    for a, body in p.scripts:
        if a.get("type") == "application/json":
            assert "<" not in body and ">" not in body and "&" not in body
    l0 = specs[0]
    assert l0["datasets"]["phases"][0]["name"] == PHASE  # the hostile name survives as data, drawn as text by Vega


def test_markdown_keeps_hostile_strings_as_text(files) -> None:
    md = files["report.md"].decode()
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    p = _parse(rendered)
    _no_active_content(p)
    assert not p.scripts
    text = "".join(p.text)
    for s in (RUN, "[click](javascript:alert(5)) **bold** <b>x</b> &amp; <!-- c --> _u_", PHASE, "<i>sibling</i>",
              "<script>alert(8)</script>", "</pre><script>alert(7)</script>"):
        assert s in text, s
    # The config block stays one closed fence holding the YAML, backticks and all.
    assert "````yaml\n" in md and "<img src=x onerror=alert(3)>" in md
    code = [t for t in MarkdownIt("commonmark").parse(md) if t.type == "fence" and t.info == "yaml"]
    assert "note: </script><script>alert(2)</script>" in code[-1].content  # the appendix: the full config
    assert "```\n" in code[-1].content
    # Table rows keep their cell count (their header's) whatever the strings hold.
    tables, current = [], []
    for ln in md.splitlines() + [""]:
        if ln.startswith("|"):
            current.append(len(re.findall(r"(?<!\\)\|", ln)))
        elif current:
            tables.append(current)
            current = []
    assert len(tables) >= 3 and all(len(set(t)) == 1 for t in tables), tables
    # The regenerate command is one code span.
    assert "`` sae-report analyze `x` <svg onload=alert(6)> ``" in md


def test_csp_allows_exactly_our_inline_code_by_hash(files) -> None:
    """No 'unsafe-inline' / 'unsafe-eval': each executable script and the style sheet is allowed by its
    SHA-256 (checked here without a browser; tests/test_report_browser.py draws the charts under it)."""
    import base64
    import hashlib
    import re

    html = files["report.html"].decode()
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html).group(1)
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert "unsafe" not in csp
    assert directives["default-src"] == "'none'" and directives["connect-src"] == "'none'"

    def source(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    p = _parse(html)
    code = [body for a, body in p.scripts if a.get("type") != "application/json"]
    assert len(code) == 2 and sorted(directives["script-src"].split()) == sorted(source(b) for b in code)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(styles) == 1 and directives["style-src"] == source(styles[0])
    assert "ast: true" in code[1] and "defaultStyle: false" in code[1]
    assert ' style="' not in html.split("<script>", 1)[0]  # no style attributes: the policy would block them


# --- The comparison and campaign pages: the same stack as the run report -------------------------

H_TAG = "</script><img src=x onerror=alert(1)>"
H_MD = "*_[x](javascript:alert(1))"
HOSTILE = H_TAG + H_MD


def test_one_jinja_environment_in_the_package() -> None:
    """Every report (run, comparison, campaign, SAE-Track) renders through report.render.environment."""
    from pathlib import Path

    import sae_report

    root = Path(sae_report.__file__).parent
    hits = [f"{p.relative_to(root)}:{n}" for p in sorted(root.rglob("*.py"))
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "jinja2.Environment(" in line]
    assert len(hits) == 1 and hits[0].startswith("report/render.py:"), hits


@pytest.fixture(scope="module")
def comparison_files(tmp_path_factory) -> dict[str, str]:
    """A comparison of two runs, one with a hostile run id, written as Markdown and HTML."""
    import yaml

    from sae_report.compare import compare_runs
    from sae_report.report.comparison import write_comparison
    from sae_report.fixtures import write_run

    root = tmp_path_factory.mktemp("cmp")
    run = write_run(root / "runs", "sibling_mid", steps=10_000, rows=200, run_id="hostile")
    write_run(root / "runs", "sibling_low", steps=10_000, rows=200)
    cfg = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    cfg["run_id"] = HOSTILE  # the id a report shows comes from the config
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    comp = compare_runs([root / "runs"], 0.05)
    assert HOSTILE in [r.id for r in comp.rows]
    write_comparison(comp, root / "out", ("md", "html"), command="sae-report compare " + H_MD)
    return {"md": (root / "out" / "comparison.md").read_text(), "html": (root / "out" / "comparison.html").read_text()}


def write_hostile_campaign(out) -> None:
    """A two-iteration campaign report (as ``tune`` leaves it) whose run id, texts and config hold
    hostile strings, written into ``out`` without training anything."""
    from sae_report.tune.campaign import Campaign, Iteration
    from sae_report.report.campaign import write_campaign_report

    def row(rid: str, l1: float, settled: float) -> dict:
        return {"id": rid, "l1_alpha": l1, "resample_interval": 10_000, "final_l0": settled * 1.02,
                "settled_l0": settled, "pct_of_target": 100 * settled / 0.05, "second_half_mean_l0": settled,
                "second_half_std_l0": settled / 10, "dead_frac": 0.3, "final_loss": 0.01, "duration_s": 300.0,
                "status": "completed", "warnings": [HOSTILE], "config": {"l1_alpha": l1}, "l0_noise": 0.001}

    first = "iter_01_" + HOSTILE
    its = [Iteration(1, first, 0.01, "starting config " + HOSTILE, status="completed", row=row(first, 0.01, 0.11),
                     findings=[{"kind": "late_spike", "step": 100, "explanation": HOSTILE}],
                     advice=[{"parameter": HOSTILE, "current": 1, "proposed": 2, "reason": HOSTILE}],
                     train_seconds=12.0, total_steps=1000),
           Iteration(2, "iter_02", 0.03, HOSTILE, status="completed", row=row("iter_02", 0.03, 0.07),
                     train_seconds=10.0, total_steps=1000)]
    camp = Campaign(out_dir=out, target_l0=0.05, tolerance=0.1, max_runs=5,
                    base_config={"l1_alpha": 0.01, "seed": HOSTILE + "\n```"}, iterations=its,
                    status="budget_spent", message=HOSTILE, best="iter_02")
    write_campaign_report(camp)


@pytest.fixture(scope="module")
def campaign_files(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("camp")
    write_hostile_campaign(out)
    return {"md": (out / "campaign.md").read_text(), "html": (out / "campaign.html").read_text()}


def _pages(request, which: str) -> dict[str, str]:
    return request.getfixturevalue(f"{which}_files")


def _sha(text: str) -> str:
    import hashlib

    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@pytest.mark.parametrize("which", ["comparison", "campaign"])
def test_comparison_and_campaign_html_have_the_reports_csp_and_static_charts(request, which: str) -> None:
    html = _pages(request, which)["html"]
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html).group(1)
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "unsafe" not in csp
    assert directives["default-src"] == "'none'" and directives["connect-src"] == "'none'"
    p = _parse(html)
    code = [body for a, body in p.scripts if a.get("type") != "application/json"]
    specs = [body for a, body in p.scripts if a.get("type") == "application/json"]
    assert len(code) == 2 and sorted(directives["script-src"].split()) == sorted(_sha(b) for b in code)
    assert "vegaEmbed" in code[0] and "ast: true" in code[1]  # one bundle per file, the shared embed script
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(styles) == 1 and directives["style-src"] == _sha(styles[0])
    assert ' style="' not in html.split("<script>", 1)[0]
    # each chart: a live placeholder, its spec as inert JSON, and a static SVG for readers without JavaScript
    figures = re.findall(r'<figure class="chart" id="fig-([^"]+)">(.*?)</figure>', html, re.S)
    assert len(figures) == len(specs) >= (2 if which == "campaign" else 3)
    for fid, body in figures:
        assert f'data-spec="spec-{fid}"' in body and '<noscript><img class="static-chart" src="data:image/svg+xml;base64,' in body
    for body in specs:
        assert "<" not in body and ">" not in body and "&" not in body
        json.loads(body)


def _inert(p: _Tags) -> None:
    for tag, attrs in p.tags:
        assert tag not in ("script", "iframe", "object", "embed", "svg", "a"), (tag, attrs)
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        assert not any("javascript:" in str(v).lower() for v in attrs.values()), (tag, attrs)
        if tag == "img":
            assert re.fullmatch(r"data:image/svg\+xml;base64,[A-Za-z0-9+/=]+|(charts/)?[\w.]+\.svg", attrs["src"]), attrs


@pytest.mark.parametrize("which", ["comparison", "campaign"])
def test_comparison_and_campaign_keep_hostile_strings_as_text(request, which: str) -> None:
    pages = _pages(request, which)
    html = pages["html"]
    assert H_TAG not in html and "<img src=x" not in html
    p = _parse(html)
    _inert(_only_page_tags(p))
    assert HOSTILE in "".join(p.text)
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(pages["md"])
    m = _parse(rendered)
    _inert(m)
    assert not m.scripts
    assert HOSTILE in "".join(m.text)  # the emphasis and link characters survive as text
    if which == "campaign":  # the config block: one closed fence holding the hostile value
        code = [t for t in MarkdownIt("commonmark").parse(pages["md"]) if t.type == "fence" and t.info == "yaml"]
        assert code and all("seed:" in c.content and "</script>" in c.content for c in code)


def _only_page_tags(p: _Tags) -> _Tags:
    """The page's tags less our own inline code (two scripts and the JSON specs)."""
    q = _Tags()
    q.tags = [(t, a) for t, a in p.tags if t != "script"]
    return q
