"""Data flows one way: runlog -> ingest -> analysis -> recommend -> compare / track (the SAE-Track
analysis) -> report (every rendering) -> the workflows (tune, sweep, pipeline) -> commands, and the trainer builds on the run format only. Imports are read from the source (those
inside functions too), so a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _unit(package: str, parts: tuple[str, ...]) -> str:
    """The unit a module belongs to: ``sae_report.<subpackage or module>``, or ``trainer``."""
    if package == "trainer":
        return "trainer"
    if parts and parts[0] == "__version__":
        return "sae_report.__version__"  # a constant: a leaf every layer may read
    if not parts or parts[0] == "__init__":
        return "sae_report"  # the front door (load_run, analyze, write_report): the top
    return "sae_report." + parts[0].removesuffix(".py")


def _graph() -> dict[str, dict[str, set[str]]]:
    """unit -> imported unit -> the files that import it."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for package in ("sae_report", "trainer"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT / package).with_suffix("").parts
            src = _unit(package, rel)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                targets: list[tuple[str, ...]] = []
                if isinstance(node, ast.Import):
                    targets = [tuple(a.name.split(".")) for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        here = (package, *rel[:-1])  # the package the module is in
                        base = here[: len(here) - (node.level - 1)]
                        mod = (*base, *(node.module.split(".") if node.module else ()))
                    else:
                        mod = tuple((node.module or "").split("."))
                    targets = [(*mod, a.name) for a in node.names]
                for t in targets:
                    if t[0] not in ("sae_report", "trainer"):
                        continue
                    dst = _unit(t[0], t[1:])
                    if dst != src:
                        edges[src][dst].add(str(path.relative_to(ROOT)))
    return edges


def _cycles(edges: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_packages() -> None:
    edges = _graph()
    cycles = _cycles(edges)
    detail = [" <-> ".join(c) + ": " + "; ".join(f"{a}->{b} ({sorted(edges[a][b])[0]})" for a in c for b in c
                                                  if b in edges.get(a, {})) for c in cycles]
    assert cycles == [], "\n".join(detail)


def test_the_trainer_builds_on_the_run_format_only() -> None:
    used = {dst: files for dst, files in _graph()["trainer"].items()
            if dst not in ("sae_report.__version__", "sae_report.runlog")}
    assert used == {}, used


def test_lower_layers_do_not_import_higher_ones() -> None:
    order = ["sae_report.runlog", "sae_report.ingest", "sae_report.analysis", "sae_report.recommend",
             "sae_report.compare", "sae_report.track", "sae_report.report", "sae_report.tune", "sae_report.commands"]
    edges = _graph()
    wrong = []
    for i, low in enumerate(order):
        for high in order[i + 1:]:
            if high in edges.get(low, {}):
                wrong.append(f"{low} imports {high} ({sorted(edges[low][high])})")
    assert wrong == []


def test_one_chart_module_and_rendering_only_in_report() -> None:
    """Charts (altair) and templates are drawn only under ``sae_report/report/``."""
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "sae_report").rglob("*.py")
                   if "import altair" in p.read_text(encoding="utf-8") and "report" not in p.relative_to(ROOT).parts[1:2])
    assert users == []
