"""Report generation time for 10K, 1M and 10M-row runs, side by side (goal: < 5 s beyond the analysis at 10M).

The run is the write-up scenario (``sae_report.fixtures.generate``) built in memory, so the figures
measure the analysis and the report, not the log writer. For each size it prints: analysis time,
report time (all three formats written to a temp folder, charts rendered), the HTML size beyond the
inlined Vega bundle, the chart points drawn, and the ratio to the smallest size.

    python benchmarks/report_scaling.py            # 10K, 1M, 10M rows (the lead runs this one)
    python benchmarks/report_scaling.py --quick    # 10K and 100K rows: a smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl

from sae_report.fixtures import generate
from sae_report.report import render, write_report
from sae_report.runlog import Event, RunData


def make_run(rows: int, seed: int = 0) -> RunData:
    """The write-up scenario with ``rows`` logged rows (one per step past 100K rows)."""
    steps = max(100_000, rows)
    gen = generate("writeup", steps=steps, seed=seed, rows=rows)
    metrics = pl.DataFrame({k: v for k, v in gen.columns.items()})
    events = [Event(step=int(e["step"]), kind=str(e["kind"]), data={k: v for k, v in e.items() if k not in ("step", "kind")})
              for e in gen.events]
    return RunData(path=Path(f"bench/{rows}"), run_id=str(gen.config["run_id"]), config=dict(gen.config),
                   metrics=metrics, events=events, summary={"elapsed_s": float(gen.columns["elapsed_s"][-1])})


def measure(rows: int, repeats: int) -> dict:
    from sae_report.analysis import analyze

    data = make_run(rows)
    t = time.perf_counter()
    analysis = analyze(data)
    t_analyze = time.perf_counter() - t
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            t = time.perf_counter()
            files = write_report(analysis, data, Path(tmp) / "report", command="bench", date="2025-11-01")
            times.append(time.perf_counter() - t)
        html = next(p for p in files if p.name == "report.html").stat().st_size
        md_dir = sum(p.stat().st_size for p in files if p.suffix in (".md", ".svg"))
        points = sum(len(v) for p in files if p.name == "report.html"
                     for v in _datasets(p.read_text(encoding="utf-8")))
    return {"rows": rows, "analyze_s": t_analyze, "report_s": sorted(times)[len(times) // 2],
            "html_beyond_bundle_kb": (html - len(render.vega_bundle().encode())) / 1024, "md_folder_kb": md_dir / 1024,
            "points": points}


def _datasets(html: str) -> list[list]:
    out = []
    for part in html.split('<script type="application/json"')[1:]:
        body = part.split(">", 1)[1].split("</script>", 1)[0]
        out += list(json.loads(body).get("datasets", {}).values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10K and 100K rows only (smoke run)")
    ap.add_argument("--repeats", type=int, default=None, help="report repeats per size (median; default 3, quick 1)")
    args = ap.parse_args()
    sizes = (10_000, 100_000) if args.quick else (10_000, 1_000_000, 10_000_000)
    repeats = args.repeats or (1 if args.quick else 3)
    render.vega_bundle()  # built once per machine (cached in ~/.cache/sae-report), not part of a report
    measure(2_000, 1)  # warm-up: vl_convert's first render starts its JS engine (~1.5 s once per process)
    results = [measure(n, repeats) for n in sizes]
    base = results[0]["report_s"]
    print(f"{'rows':>12} {'analyze s':>10} {'report s':>9} {'x 10K':>7} {'html KB*':>9} {'md+svg KB':>10} {'points':>8}")
    for r in results:
        print(f"{r['rows']:>12,} {r['analyze_s']:>10.2f} {r['report_s']:>9.2f} {r['report_s'] / base:>7.2f} "
              f"{r['html_beyond_bundle_kb']:>9.0f} {r['md_folder_kb']:>10.0f} {r['points']:>8,}")
    print("* HTML size beyond the inlined Vega bundle "
          f"({len(render.vega_bundle().encode()) / 1024:.0f} KB). Goal: report < 5 s and HTML < 2 MB beyond the bundle at 10M rows.")


if __name__ == "__main__":
    main()
