"""`sae-report analyze` output safety, through the CLI (issue 11: items 2, 8, 10).

- Only files this tool wrote are ever removed (the manifest), nothing is written through a link,
  a `charts` that is not a folder of ours is refused with one line and nothing touched.
- A full disk, a read-only folder or Ctrl-C while writing: one line, exit 1 / 130, the earlier
  report intact byte for byte, no temp file left.
- Control and bidi characters from a run never reach the terminal or the reports raw.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from sae_report.cli import main
from sae_report.fixtures import write_run
from sae_report.report import output

MANIFEST = ".sae-report-manifest.json"
RAW_UNSAFE = [chr(c) for c in (*range(0, 9), *range(11, 32), *range(0x7F, 0xA0))] + [
    "\u061c", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]


def _analyze(*args: str):
    return CliRunner().invoke(main, ["analyze", *args, "--no-siblings"], catch_exceptions=False)


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` (links not followed): file bytes, link targets, folders."""
    snap: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            snap[rel] = "link -> " + os.readlink(p)
        elif p.is_dir():
            snap[rel] = "dir"
        else:
            snap[rel] = p.read_bytes()
    return snap


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"stats": write_run(root, "clean", steps=2_000, rows=200, with_stats=True).run_dir,
            "plain": write_run(root, "thrash", steps=2_000, rows=200).run_dir}


# ---------------------------------------------------------------------------------------------
# Item 2: only our files, never through a link
# ---------------------------------------------------------------------------------------------


def test_user_files_in_charts_survive_and_only_our_stale_charts_go(runs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "charts").mkdir(parents=True)
    (out / "charts" / "architecture.png").write_bytes(b"\x89PNG the user's diagram")
    (out / "charts" / "diagram.svg").write_text("<svg>mine</svg>")
    (out / "notes.md").write_text("my notes")
    res = _analyze(str(runs["stats"]), "--out", str(out), "--format", "md")
    assert res.exit_code == 0, res.output
    charts = sorted(p.name for p in (out / "charts").iterdir())
    assert {"feature_freq.svg", "input_dims.svg", "architecture.png", "diagram.svg"} <= set(charts)
    manifest = json.loads((out / MANIFEST).read_text())
    assert "charts/feature_freq.svg" in manifest["files"] and "charts/architecture.png" not in manifest["files"]
    assert manifest["dirs"] == []  # charts/ was the user's folder
    # A run without stats into the same folder: our feature_freq/input_dims charts are stale and go; the user's stay.
    res = _analyze(str(runs["plain"]), "--out", str(out), "--format", "md")
    assert res.exit_code == 0, res.output
    charts = sorted(p.name for p in (out / "charts").iterdir())
    assert "feature_freq.svg" not in charts and "input_dims.svg" not in charts
    assert (out / "charts" / "architecture.png").read_bytes() == b"\x89PNG the user's diagram"
    assert (out / "charts" / "diagram.svg").read_text() == "<svg>mine</svg>"
    assert (out / "notes.md").read_text() == "my notes"
    assert not [p for p in out.rglob(".*.tmp")]


def test_a_chart_the_user_changed_is_no_longer_ours(runs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _analyze(str(runs["stats"]), "--out", str(out), "--format", "md").exit_code == 0
    (out / "charts" / "input_dims.svg").write_text("<svg>edited by hand</svg>")
    assert _analyze(str(runs["plain"]), "--out", str(out), "--format", "md").exit_code == 0
    assert not (out / "charts" / "feature_freq.svg").exists()  # ours, unchanged: removed
    assert (out / "charts" / "input_dims.svg").read_text() == "<svg>edited by hand</svg>"  # changed: kept
    assert "charts/input_dims.svg" not in json.loads((out / MANIFEST).read_text())["files"]


def test_a_forged_manifest_removes_nothing_outside_the_report(runs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / "charts").mkdir()
    (out / "charts" / "x.txt").write_text("precious too")
    sha = hashlib.sha256(b"precious").hexdigest()
    (out / MANIFEST).write_text(json.dumps({"files": {"../victim.txt": sha, "charts/../../victim.txt": sha,
                                                      "/etc/passwd": sha, "charts/x.txt": sha}, "dirs": ["..", "charts"]}))
    res = _analyze(str(runs["plain"]), "--out", str(out), "--format", "md")
    assert res.exit_code == 0, res.output
    assert victim.read_text() == "precious" and (out / "charts" / "x.txt").read_text() == "precious too"


def test_a_user_file_named_charts_is_refused_and_nothing_touched(runs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "charts").write_text("not a folder: the user's file")
    before = _snapshot(out)
    res = _analyze(str(runs["plain"]), "--out", str(out), "--format", "md,html,json")
    assert res.exit_code == 1
    assert res.stderr == (f"Error: {out / 'charts'}: exists and is not a folder; sae-report does not replace it "
                          "(move it or choose another --out)\n")
    assert _snapshot(out) == before
    # Formats that need no charts folder still work beside it.
    res = _analyze(str(runs["plain"]), "--out", str(out), "--format", "json")
    assert res.exit_code == 0, res.output
    assert (out / "charts").read_text() == "not a folder: the user's file"


def test_a_charts_link_to_a_user_folder_is_refused_and_the_folder_untouched(runs, tmp_path: Path) -> None:
    mine = tmp_path / "my_pictures"
    mine.mkdir()
    (mine / "holiday.png").write_bytes(b"\x89PNG beach")
    (mine / "l0.svg").write_text("<svg>my own l0</svg>")
    (mine / "notes.txt").write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "charts").symlink_to(mine, target_is_directory=True)
    before, before_mine = _snapshot(out), _snapshot(mine)
    res = _analyze(str(runs["stats"]), "--out", str(out), "--format", "md")
    assert res.exit_code == 1
    assert res.stderr == (f"Error: {out / 'charts'}: is a symbolic link; sae-report writes chart images only into a "
                          "real charts folder (remove the link or choose another --out)\n")
    assert _snapshot(out) == before and _snapshot(mine) == before_mine


def test_a_charts_link_written_earlier_by_us_is_still_refused(runs, tmp_path: Path) -> None:
    """Our own earlier report, then charts/ replaced by a link to a user folder holding a file with our
    chart's name and bytes: still refused, the folder untouched (we never remove through a link)."""
    out = tmp_path / "out"
    assert _analyze(str(runs["stats"]), "--out", str(out), "--format", "md").exit_code == 0
    mine = tmp_path / "elsewhere"
    (out / "charts").rename(mine)
    (out / "charts").symlink_to(mine, target_is_directory=True)
    before_mine = _snapshot(mine)
    res = _analyze(str(runs["plain"]), "--out", str(out), "--format", "md")
    assert res.exit_code == 1 and "is a symbolic link" in res.stderr
    assert _snapshot(mine) == before_mine


def test_report_files_that_are_links_are_never_written_through(runs, tmp_path: Path) -> None:
    target = tmp_path / "important.md"
    target.write_text("the user's document")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").symlink_to(target)
    before = _snapshot(out)
    res = _analyze(str(runs["plain"]), "--out", str(out), "--format", "md")
    assert res.exit_code == 1
    assert res.stderr == (f"Error: {out / 'report.md'}: is a symbolic link; sae-report does not write through links "
                          "(remove the link or choose another --out)\n")
    assert target.read_text() == "the user's document" and _snapshot(out) == before


def test_a_chart_name_that_is_a_link_is_refused(runs, tmp_path: Path) -> None:
    target = tmp_path / "outside.svg"
    target.write_text("<svg>outside</svg>")
    out = tmp_path / "out"
    (out / "charts").mkdir(parents=True)
    (out / "charts" / "l0.svg").symlink_to(target)
    before = _snapshot(out)
    res = _analyze(str(runs["plain"]), "--out", str(out), "--format", "md")
    assert res.exit_code == 1
    assert res.stderr == (f"Error: {out / 'charts' / 'l0.svg'}: is a symbolic link; sae-report does not write through "
                          "links (remove the link or choose another --out)\n")
    assert target.read_text() == "<svg>outside</svg>" and _snapshot(out) == before


def test_a_report_name_that_is_a_folder_is_refused(runs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "analysis.json").mkdir(parents=True)
    (out / "analysis.json" / "keep.txt").write_text("x")
    res = _analyze(str(runs["plain"]), "--out", str(out), "--format", "json")
    assert res.exit_code == 1
    assert res.stderr == (f"Error: {out / 'analysis.json'}: exists and is not a regular file; sae-report replaces only "
                          "files it writes (move it or choose another --out)\n")
    assert (out / "analysis.json" / "keep.txt").read_text() == "x"


def test_an_out_folder_that_is_a_link_is_followed_as_chosen(runs, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    res = _analyze(str(runs["plain"]), "--out", str(tmp_path / "link"), "--format", "md")
    assert res.exit_code == 0, res.output
    assert (real / "report.md").is_file() and (tmp_path / "link").is_symlink()


# ---------------------------------------------------------------------------------------------
# Item 8: full disk, read-only folder, Ctrl-C: one line, the earlier report intact
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def earlier(runs, tmp_path: Path) -> tuple[Path, dict]:
    """A complete earlier report (target 5%) in ``out``; the next write (target 2%) differs in every file."""
    out = tmp_path / "out"
    res = _analyze(str(runs["stats"]), "--out", str(out), "--target-l0", "5%")
    assert res.exit_code == 0, res.output
    return out, _snapshot(out)


def _fail_after(monkeypatch: pytest.MonkeyPatch, n: int, exc: BaseException) -> list[int]:
    calls = [0]
    real = output._os_write

    def write(fd, data):
        calls[0] += 1
        if calls[0] > n:
            raise exc
        return real(fd, data)

    monkeypatch.setattr(output, "_os_write", write)
    return calls


@pytest.mark.parametrize("after", [0, 1, 4, 8, 9, 10])  # 11 writes in all: the last is the manifest
def test_disk_full_partway_leaves_the_earlier_report_intact(runs, earlier, monkeypatch, after: int) -> None:
    out, before = earlier
    calls = _fail_after(monkeypatch, after, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    res = _analyze(str(runs["stats"]), "--out", str(out), "--target-l0", "2%")
    assert calls[0] == after + 1  # it failed where we said
    assert res.exit_code == 1
    assert res.stderr == f"Error: {out}: cannot write the report (No space left on device); nothing was changed\n"
    assert _snapshot(out) == before  # byte for byte, no temp file
    monkeypatch.undo()
    assert _analyze(str(runs["stats"]), "--out", str(out), "--target-l0", "2%").exit_code == 0
    assert _snapshot(out) != before


def test_disk_full_into_a_new_folder_leaves_no_folder(runs, tmp_path: Path, monkeypatch) -> None:
    _fail_after(monkeypatch, 2, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    out = tmp_path / "a" / "b"
    res = _analyze(str(runs["plain"]), "--out", str(out), "--format", "md,json")
    assert res.exit_code == 1 and res.stderr.count("\n") == 1
    assert not (tmp_path / "a").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="running as root: chmod does not block writes (the simulated case below covers it)")
def test_read_only_folder_by_chmod(runs, earlier) -> None:
    out, before = earlier
    os.chmod(out, 0o555)
    try:
        res = _analyze(str(runs["stats"]), "--out", str(out), "--target-l0", "2%")
    finally:
        os.chmod(out, 0o755)
    assert res.exit_code == 1
    assert res.stderr == f"Error: {out}: cannot write here (permission denied or read-only)\n"
    assert _snapshot(out) == before


def test_read_only_folder_simulated(runs, earlier, monkeypatch) -> None:
    """As root chmod blocks nothing: the temp file's creation fails as on a read-only folder."""
    out, before = earlier
    real_open = os.open

    def deny(path, flags, mode=0o777, *, dir_fd=None):
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(output.os, "open", deny)
    res = _analyze(str(runs["stats"]), "--out", str(out), "--target-l0", "2%")
    assert res.exit_code == 1
    assert res.stderr == (f"Error: {out}: cannot write the report here (Permission denied); nothing was changed; "
                          "choose a folder with --out DIR\n")
    monkeypatch.undo()
    assert _snapshot(out) == before


@pytest.mark.parametrize("after", [0, 3, 9])
def test_ctrl_c_while_writing_leaves_the_earlier_report(runs, earlier, monkeypatch, after: int) -> None:
    out, before = earlier
    _fail_after(monkeypatch, after, KeyboardInterrupt())
    res = _analyze(str(runs["stats"]), "--out", str(out), "--target-l0", "2%")
    assert res.exit_code == 130
    assert res.stderr == "Interrupted: nothing was written (an earlier report is unchanged)\n"
    assert "Traceback" not in res.output
    assert _snapshot(out) == before


def test_ctrl_c_during_the_renames_finishes_them_first(runs, earlier, monkeypatch) -> None:
    out, before = earlier
    real = os.replace
    sent = []

    def replace(*args, **kwargs):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the commit runs: held back until it is done
        return real(*args, **kwargs)

    monkeypatch.setattr(output.os, "replace", replace)
    res = _analyze(str(runs["stats"]), "--out", str(out), "--target-l0", "2%")
    assert res.exit_code == 130
    assert res.stderr == "Interrupted: the report had been written in full\n"
    monkeypatch.undo()
    after = _snapshot(out)
    manifest = json.loads(after[MANIFEST])
    for name, digest in manifest["files"].items():  # the manifest and the files agree: one complete report
        assert hashlib.sha256(after[name]).hexdigest() == digest, name
    assert after["report.md"] != before["report.md"] and not [n for n in after if n.endswith(".tmp")]


def test_ctrl_c_while_reading_writes_nothing(runs, tmp_path: Path, monkeypatch) -> None:
    import sae_report.pipeline as pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "load_run", interrupted)
    res = _analyze(str(runs["plain"]), "--out", str(tmp_path / "out"))
    assert res.exit_code == 130
    assert res.stderr == "Interrupted: nothing was written (an earlier report is unchanged)\n"
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Item 10: control and bidi characters never reach the terminal or the reports raw
# ---------------------------------------------------------------------------------------------

HOSTILE_ID = "evil\x1b]0;pwned\x07\x1b[2J\u202eabc"
HOSTILE_NOTE = "\x1b]8;;http://x.example\x07link\x1b]8;;\x07 \x9b31m\u2066red\u2069"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml

    root = tmp_path_factory.mktemp("hostile")
    # The folder's name holds controls too (printed in "Wrote ..."); the id with "[" is set in config.yaml
    # (a "[" in the folder name trips the parquet reader's glob: a reader matter, not this file's).
    run = write_run(root, "clean", steps=2_000, rows=200, run_id="run\x1b]0;title\x07\u202e").run_dir
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["run_id"] = HOSTILE_ID
    cfg["note"] = HOSTILE_NOTE
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return run


def _raw(text: str) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in text if c in RAW_UNSAFE})


def test_terminal_output_has_no_raw_control_characters(hostile: Path, tmp_path: Path) -> None:
    res = _analyze(str(hostile), "--out", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    assert _raw(res.stdout) == [] and _raw(res.stderr) == []
    first = res.stdout.splitlines()[0]
    assert first.startswith("evil\\x1b]0;pwned\\x07\\x1b[2J\\u202eabc  (sae-report, ")
    assert f"Wrote {tmp_path / 'out' / 'report.md'}" in res.stdout


def test_json_on_stdout_escapes_them(hostile: Path, tmp_path: Path) -> None:
    res = _analyze(str(hostile), "--json", "--out", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    assert _raw(res.stdout) == []
    assert json.loads(res.stdout)["run"]["id"] == HOSTILE_ID  # the exact string, as JSON escapes


def test_reports_show_them_as_visible_escapes_with_a_note(hostile: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _analyze(str(hostile), "--out", str(out))
    assert res.exit_code == 0, res.output
    md = (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    page = html.split("<script>", 1)[0]  # the page without the Vega bundle (code, not run strings)
    for name in ("report.md", "report.html", "analysis.json", *(f"charts/{p.name}" for p in (out / "charts").iterdir())):
        text = (out / name).read_text(encoding="utf-8")
        if name == "report.html":
            text = page + html.rsplit("</script>", 2)[-2]  # the page and the embed script
        assert _raw(text) == [], name
    assert md.startswith("# Training Results Analysis: evil\\x1b\\]0;pwned\\x07\\x1b\\[2J\\u202eabc\n")
    assert "<title>Training Results Analysis: evil\\x1b]0;pwned\\x07\\x1b[2J\\u202eabc</title>" in page
    note = ("held invisible control or bidirectional-text characters (U+0007, U+001B, U+202E RIGHT-TO-LEFT "
            "OVERRIDE, U+2066 LEFT-TO-RIGHT ISOLATE, U+2069 POP DIRECTIONAL ISOLATE); they are shown as visible escapes")
    assert note in md and note in page
    assert json.loads((out / "analysis.json").read_text())["run"]["id"] == HOSTILE_ID
    assert "\\u202e" in (out / "analysis.json").read_text()


def test_an_error_line_naming_a_hostile_path_stays_one_visible_line(tmp_path: Path) -> None:
    bad = tmp_path / "nope\x1b[2J\u202e\nforged"
    res = _analyze(str(bad))
    assert res.exit_code == 2
    assert res.stderr == f"Error: {tmp_path}/nope\\x1b[2J\\u202e\\nforged: no such file or directory\n"


# ---------------------------------------------------------------------------------------------
# output.publish directly: the charts folder and the manifest
# ---------------------------------------------------------------------------------------------


def test_our_empty_charts_folder_goes_with_our_charts_but_a_user_file_keeps_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    output.publish(out, {"report.md": b"a", "charts/l0.svg": b"<svg/>"}, replace_charts=True)
    assert json.loads((out / MANIFEST).read_text())["dirs"] == ["charts"]
    output.publish(out, {"report.md": b"b"}, replace_charts=True)  # a report without charts
    assert not (out / "charts").exists()
    output.publish(out, {"report.md": b"c", "charts/l0.svg": b"<svg/>"}, replace_charts=True)
    (out / "charts" / "mine.txt").write_text("mine")
    output.publish(out, {"report.md": b"d"}, replace_charts=True)
    assert sorted(p.name for p in (out / "charts").iterdir()) == ["mine.txt"]
    output.publish(out, {"analysis.json": b"{}"}, replace_charts=False)  # formats not asked for: untouched
    assert (out / "report.md").read_bytes() == b"d" and sorted(json.loads((out / MANIFEST).read_text())["files"]) == [
        "analysis.json", "report.md"]


def test_publish_rejects_names_that_are_not_report_files(tmp_path: Path) -> None:
    for name in ("../x", "charts/../../x", "charts/a/b.svg", "notes.txt", MANIFEST):
        with pytest.raises(ValueError, match="not a report file name"):
            output.publish(tmp_path, {name: b"x"}, replace_charts=False)
    assert list(tmp_path.iterdir()) == []
