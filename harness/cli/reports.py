"""`nightly merge`, `matrix-page` and `race-page`: the reports stage from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import HarnessError
from ..exitcodes import ExitStatus
from ..kernels import ROWS
from ..race.outcomes import reports_from_json
from ..reports.matrix import Matrix
from ..reports.matrix_page import write_matrix_html
from ..reports.nightly import run_merge
from ..reports.race_page import write_race_pages

# What a matrix.json that is not one raises while it is read.
_UNREADABLE = (OSError, ValueError, KeyError, TypeError)


def add_nightly_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="nightly_cmd", metavar="ACTION", required=True)
    m = sub.add_parser("merge", help="merge matrix.json files (or folders holding one) into --out")
    m.add_argument("inputs", nargs="+", type=Path, metavar="DIR_OR_JSON")
    m.add_argument("--out", required=True, type=Path, metavar="DIR")
    m.add_argument(
        "--previous",
        type=Path,
        metavar="DIR_OR_JSON",
        help="the previous night's merged matrix; absent file: nothing to compare",
    )
    m.add_argument("--summary", type=Path, metavar="FILE", help="also write the changes as Markdown here")


def add_matrix_page_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, metavar="DIR", help="a folder holding matrix.json")


def add_race_page_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("report", type=Path, metavar="REPORT.json", help="a JSON report of race or survey")
    p.add_argument("page", type=Path, nargs="?", metavar="PAGE.html", help="default: index.html beside the report")


def _holds_matrix(p: Path) -> bool:
    return p.is_file() or (p / "matrix.json").is_file()


def cmd_nightly(args: argparse.Namespace) -> int:
    """Exit 0; 1 (FINDINGS) when a claim flipped; 2 on unreadable input."""
    previous = args.previous
    if previous is not None and not _holds_matrix(previous):
        print(f"nightly: no previous night at {previous}; nothing to compare", file=sys.stderr)
        previous = None
    # A kernel job that wrote no matrix (it broke before pytest ended) is left
    # out with a note; its kernel then shows as gone since the previous night.
    inputs = [p for p in args.inputs if _holds_matrix(p)]
    for gone in (p for p in args.inputs if p not in inputs):
        print(f"nightly: no matrix.json at {gone}; left out", file=sys.stderr)
    if not inputs:
        raise HarnessError("none of the inputs holds a matrix.json")
    try:
        mx, changes = run_merge(inputs, args.out, previous, args.summary, order=tuple(ROWS))
    except _UNREADABLE as e:
        raise HarnessError(str(e)) from None
    print(
        f"{args.out / 'index.html'}: {len(mx.kernels)} kernel(s), {len(changes.items)} change(s)"
        + (", a claim flipped" if changes.flipped else "")
    )
    return ExitStatus.FINDINGS if changes.flipped else ExitStatus.OK


def cmd_matrix_page(args: argparse.Namespace) -> int:
    """DIR/index.html again from DIR/matrix.json."""
    src = args.dir / "matrix.json"
    try:
        mx = Matrix.from_json(json.loads(src.read_text()))
    except _UNREADABLE as e:
        raise HarnessError(f"{src}: {e}") from None
    print(write_matrix_html(mx, src.with_name("index.html")))
    return ExitStatus.OK


def cmd_race_page(args: argparse.Namespace) -> int:
    """The page of a JSON report again (a nightly run's, say)."""
    src = args.report
    out = args.page or src.with_name("index.html")
    try:
        doc = json.loads(src.read_text())
    except (OSError, ValueError) as e:
        raise HarnessError(f"{src}: {e}") from None
    write_race_pages(reports_from_json(doc), [out])
    print(out)
    return ExitStatus.OK


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("report", type=Path, metavar="REPORT.json", help="a race's JSON report")
    p.add_argument("folder", type=Path, metavar="DIR", help="a new (or empty) folder for the reproducer")
    p.add_argument(
        "--run", type=int, metavar="N", help="the report's Nth run (default: the first that splatted, else the first)"
    )


def cmd_export(args: argparse.Namespace) -> int:
    """A report's run as a reproducer folder."""
    from ..guest.programs import build_racer
    from ..reports.repro import export, pick_run

    try:
        doc = json.loads(args.report.read_text())
    except (OSError, ValueError) as e:
        raise HarnessError(f"{args.report}: {e}") from None
    reports = reports_from_json(doc)
    if len(reports) != 1:
        raise HarnessError(f"{args.report}: {len(reports)} kernels' reports; export takes a race on one kernel")
    run = pick_run(reports[0], args.run)
    print(export(reports[0], run, args.folder, build_racer()))
    return ExitStatus.OK


def add_survey_merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, metavar="DIR_OR_JSON", help="survey folders or their survey.json")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the merged survey.{md,json} go")


def cmd_survey_merge(args: argparse.Namespace) -> int:
    """Shards of one survey (survey --shard I/N) as one table."""
    from ..reports import survey

    parts = [survey.Survey.load(item / "survey.json" if item.is_dir() else item) for item in args.inputs]
    merged = survey.merge(parts)
    survey.gather(merged, args.out)
    for path in survey.write(merged, args.out, time.strftime("%Y-%m-%d")):
        print(path)
    return ExitStatus.OK
