"""The survey of real modules: every target row raced on each kernel, one
table (target x kernel) of what happened, with the JSON reports and the page
of every run beside it (`python -m harness survey`).

survey.json holds the whole state: the races, the targets not raced and why,
the ops derived per module, and the target a stopped survey was racing, so
that `survey --resume` and `survey-merge` lose nothing.  Each race's full
report (its events, its replay) and its page are written to races/ as soon
as it ends; survey.json and the survey's memory keep the race without its
events, so neither grows with the races' lengths (a 53-race survey.json was
27 MB with them).  An older survey.json (a bare list of reports, or reports
with their events) still reads."""

from __future__ import annotations

import collections
import json
import os
import re
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from ..errors import HarnessError
from ..race.outcomes import RaceReport, RunResult, Verdict, errors_text, reports_from_json
from ..race.targets import TargetRow
from ..util import write_text
from . import triage

FORMAT = 3  # 3: races' events in races/, derived ops kept
CHECKPOINT_S = 60.0  # a running survey rewrites survey.json at most this often


@dataclass(frozen=True)
class NotRaced:
    """A target the survey could not race on a kernel, and why."""

    kernel: str
    target: str
    why: str

    def line(self) -> str:
        return f"{self.target} on {self.kernel}: {self.why}"

    @property
    def reason(self) -> str:
        """The kind of reason, to count them: discover's (NoOps) for a module no
        op reaches, else the error's first words."""
        m = re.match(r"no op reaches it \(([^)]*)\)", self.why)
        if m:
            return m[1]
        return re.split(r"[:;(]", self.why, maxsplit=1)[0].strip()[:80] or "no reason given"


@dataclass
class Survey:
    """What a survey has done so far."""

    reports: list[RaceReport] = field(default_factory=list)
    not_raced: list[NotRaced] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)  # "target on kernel" being raced when stopped
    # Wall seconds: per raced target ("target on kernel": its guest, setup and
    # race), and per kernel the one guest that derived the modules' ops.
    seconds: dict[str, float] = field(default_factory=dict)
    discover_seconds: dict[str, float] = field(default_factory=dict)
    # kernel -> module -> its derived target row (targets.row_to_json), or the
    # line saying why no op reaches it: what a resumed survey does not derive again.
    derived: dict[str, dict[str, Any]] = field(default_factory=dict)
    # "target on kernel" -> its race's full report and page (absolute in memory,
    # relative to survey.json's folder on disk).
    files: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def done(self) -> set[tuple[str, str]]:
        """(kernel spec, target) of every race run and every target refused."""
        raced = {(rep.kernel_spec, run.scheme) for rep in self.reports for run in rep.runs}
        return raced | {(n.kernel, n.target) for n in self.not_raced}

    def to_json(self, base: Path | None = None) -> dict[str, Any]:
        """The state; the races' files relative to `base` (survey.json's folder)."""

        def rel(p: Path) -> str:
            return os.path.relpath(p, base) if base is not None else str(p)

        return {
            "format": FORMAT,
            "reports": [r.to_json() for r in self.reports],
            "not_raced": [vars(n) for n in self.not_raced],
            "interrupted": self.interrupted,
            "seconds": self.seconds,
            "discover_seconds": self.discover_seconds,
            "derived": self.derived,
            "files": {k: [rel(j), rel(h)] for k, (j, h) in self.files.items()},
        }

    def keep(self, report: RaceReport, out: Path) -> RaceReport:
        """A race just ended: its full report and page to races/ in `out`, and
        the race without its events into the state."""
        from .race_page import write_race_pages

        for run in report.runs:
            stem = _race_stem(out, report.kernel_spec, run.scheme)
            stem.parent.mkdir(parents=True, exist_ok=True)
            one = replace(report, runs=[run])
            write_text(stem.with_suffix(".json"), json.dumps(one.to_json(), separators=(",", ":")))
            write_race_pages([one], [stem.with_suffix(".html")])
            self.files[f"{run.scheme} on {report.kernel_spec}"] = (stem.with_suffix(".json"), stem.with_suffix(".html"))
        slim = replace(report, runs=[_slim(r) for r in report.runs])
        self.reports.append(slim)
        return slim

    def timing(self) -> str:
        """The survey's pace in one line ("" before any race)."""
        raced = list(self.seconds.values())
        if not raced:
            return ""
        total = sum(raced) + sum(self.discover_seconds.values())
        ordered = sorted(raced)
        median = statistics.median(ordered)
        return (
            f"{len(raced)} targets raced in {total / 60:.0f} min of wall time "
            f"(deriving ops {sum(self.discover_seconds.values()) / 60:.0f} min): "
            + (f"{len(raced) / (total / 3600):.0f} per hour; " if total > 0 else "")
            + f"per target median {median:.1f} s "
            f"({ordered[0]:.1f}-{ordered[-1]:.1f})."
        )

    @classmethod
    def from_json(cls, doc: Any, base: Path | None = None) -> "Survey":
        """A survey.json (its races' files relative to `base`); a bad document is a HarnessError."""
        if isinstance(doc, list):  # before FORMAT 2: the reports alone
            return cls(reports_from_json(doc))

        def where(p: str) -> Path:
            return (base / p).resolve() if base is not None else Path(p)

        try:
            return cls(
                reports_from_json(doc["reports"]),
                [NotRaced(str(n["kernel"]), str(n["target"]), str(n["why"])) for n in doc["not_raced"]],
                [str(x) for x in doc.get("interrupted", [])],
                {str(k): float(v) for k, v in doc.get("seconds", {}).items()},
                {str(k): float(v) for k, v in doc.get("discover_seconds", {}).items()},
                {str(k): {str(m): _derived(d) for m, d in v.items()} for k, v in doc.get("derived", {}).items()},
                {str(k): (where(j), where(h)) for k, (j, h) in doc.get("files", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise HarnessError(f"not a survey's JSON ({type(e).__name__}: {e})") from None

    @classmethod
    def load(cls, path: Path) -> "Survey":
        try:
            return cls.from_json(json.loads(path.read_text()), path.parent)
        except (OSError, ValueError) as e:
            raise HarnessError(f"{path}: not a survey's JSON ({e})") from None


def _slim(run: RunResult) -> RunResult:
    """A run as the survey keeps it: no events, replay or latency histograms
    (races/ holds them); a busy unloader's histogram alone was 23 KB."""
    ops = {k: replace(v, hist=(), hist_failed=()) for k, v in run.ops.items()}
    return replace(run, timeline=None, replay=None, ops=ops)


def gather(state: Survey, out: Path) -> None:
    """Each race's report and page copied into out/races/ (a merge's folder),
    so the merged survey stands alone: a CI job uploads only its own folder.
    A file that is gone (a shard's folder moved) keeps no link."""
    import shutil

    for key, files in list(state.files.items()):
        target, _, kernel = key.partition(" on ")  # a target name has no space
        stem = _race_stem(out, kernel, target)
        moved = (stem.with_suffix(".json"), stem.with_suffix(".html"))
        if not all(f.is_file() for f in files):
            del state.files[key]
            continue
        stem.parent.mkdir(parents=True, exist_ok=True)
        for src, dst in zip(files, moved):
            if src.resolve() != dst.resolve():
                shutil.copyfile(src, dst)
        state.files[key] = moved


def _derived(d: Any) -> dict[str, Any]:
    """One module's derived entry, checked: {"row": a TargetRow's JSON} or {"why": a line}."""
    if "why" in d:
        return {"why": str(d["why"])}
    TargetRow.from_json(d["row"])
    return {"row": dict(d["row"])}


def _race_stem(out: Path, kernel: str, target: str) -> Path:
    """Where one race's report and page go in a survey's folder (.json, .html)."""
    return out / "races" / _safe(kernel) / _safe(target)


def _safe(name: str) -> str:
    """A target's or kernel's name as one path component."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name) or "_"


MAX_ERRNOS = 3


def cell(run: RunResult) -> str:
    """One target on one kernel: verdict, unloads done, the callers' calls and errnos, and splats."""
    calls = run.callers
    errs = sorted(calls.errors.items(), key=lambda kv: -kv[1])[:MAX_ERRNOS]
    errnos = " ".join(f"{k}:{v}" for k, v in errs) or "no errors"
    verdict = run.verdict.value + (f" (control {run.control.value})" if run.target and run.target.control else "")
    text = f"**{verdict}**; {run.unloads} unloads; {calls.ok}/{calls.total} calls ok, {errnos}"
    met = run.failed_by_unloads_met
    if met[1] or met[2]:
        text += f"; met 1/2+ unloads {met[1]}/{met[2]}"
    if run.splats:
        text += "; " + "; ".join(s.title for s in run.splats[:2])
    return text


def table(reports: Sequence[RaceReport], when: str) -> str:
    """Markdown: one row per target, one column per kernel (its exact release)."""
    kernels = [f"{r.kernel_spec} ({r.kernel})" for r in dict((r.kernel_spec, r) for r in reports).values()]
    by: dict[tuple[str, str], RunResult] = {}
    targets: list[str] = []
    for rep in reports:
        for run in rep.runs:
            by[(run.scheme, f"{rep.kernel_spec} ({rep.kernel})")] = run
            if run.scheme not in targets:
                targets.append(run.scheme)
    lines = [
        f"Survey of {when}: each target's unload raced against its callers.",
        "",
        "| target | ops | " + " | ".join(kernels) + " |",
        "|---|---|" + "---|" * len(kernels),
    ]
    for t in targets:
        any_run = next(r for (name, _), r in by.items() if name == t)
        lines.append(
            f"| {t} | {any_run.workload} | "
            + " | ".join(cell(by[(t, k)]) if (t, k) in by else "-" for k in kernels)
            + " |"
        )
    return "\n".join(lines) + "\n"


def unreached_runs(reports: Sequence[RaceReport]) -> list[str]:
    """Races whose callers never reached the module: not raced, with the errno that stopped each caller."""
    return [
        f"{run.scheme} on {rep.kernel_spec}: {x.label} 0 of {x.calls} calls succeeded while the module was "
        f"loaded ({errors_text(x.errors)})"
        for rep in reports
        for run in rep.runs
        if run.verdict is Verdict.UNREACHED
        for x in run.reach
        if not x.reached
    ]


def splat_runs(reports: Sequence[RaceReport]) -> list[tuple[RaceReport, RunResult]]:
    """Every run that splatted or died: each is kept with its console log and repro."""
    return [
        (rep, run)
        for rep in reports
        for run in rep.runs
        if run.splats or run.verdict in (Verdict.CRASHED, Verdict.WARNED, Verdict.HUNG)
    ]


def triage_line(run: RunResult) -> str:
    """What the run's first splat is (triage.py), by the target raced and its title."""
    title = run.splats[0].title if run.splats else run.verdict.value
    return triage.line(run.scheme, title)


def index_html(state: Survey, out: Path, md: str) -> str:
    """The survey's page: the table, each cell a link to its race's own page
    (races/), and the survey.md text below.  It holds no plots, so it stays
    small however many races the survey ran."""
    from html import escape

    kernels = list(dict((r.kernel_spec, f"{r.kernel_spec} ({r.kernel})") for r in state.reports).items())
    rows: dict[str, dict[str, str]] = {}
    for rep in state.reports:
        for run in rep.runs:
            files = state.files.get(f"{run.scheme} on {rep.kernel_spec}")
            text = escape(run.verdict.value) + f", {run.unloads} unloads"
            if run.splats:
                text += "<br>" + escape(run.splats[0].title)
            if files:
                text = f'<a href="{escape(os.path.relpath(files[1], out))}">{text}</a>'
            rows.setdefault(run.scheme, {})[rep.kernel_spec] = text
    head = "".join(f"<th>{escape(label)}</th>" for _, label in kernels)
    body = "".join(
        f"<tr><td>{escape(t)}</td>" + "".join(f"<td>{cells.get(k, '-')}</td>" for k, _ in kernels) + "</tr>"
        for t, cells in rows.items()
    )
    return (
        "<!doctype html><meta charset=utf-8><title>Survey</title><h1>Survey</h1>"
        f"<table border=1 cellpadding=4><tr><th>target</th>{head}</tr>{body}</table>"
        f"<pre>{escape(md)}</pre>\n"
    )


def write(state: Survey, out: Path, when: str, page: bool = True) -> list[Path]:
    """survey.md, survey.json and (with `page`) index.html in `out`."""
    reports = state.reports
    out.mkdir(parents=True, exist_ok=True)
    md = table(reports, when)
    if state.timing():
        md += "\n" + state.timing() + "\n"
    found = splat_runs(reports)
    if found:
        md += "\nSplats (console log, reproducer, triage):\n\n" + "".join(
            f"- {run.scheme} on {rep.kernel_spec}: {'; '.join(s.title for s in run.splats[:2]) or run.verdict.value}"
            f" — `{run.console_log}` — `{run.repro}` — {triage_line(run)}\n"
            for rep, run in found
        )
    unreached = unreached_runs(reports)
    if unreached:
        md += "\nNot raced (no caller reached the module):\n\n" + "".join(f"- {line}\n" for line in unreached)
    if state.not_raced:
        counts = collections.Counter(n.reason for n in state.not_raced)
        md += (
            "\nNot raced, by reason:\n\n| reason | targets |\n|---|---|\n"
            + "".join(f"| {reason} | {count} |\n" for reason, count in counts.most_common())
            + "\nNot raced:\n\n"
            + "".join(f"- {n.line()}\n" for n in state.not_raced)
        )
    if state.interrupted:
        md += "\nStopped while racing " + ", ".join(state.interrupted) + " (`survey --resume` goes on from there).\n"
    write_text((out / "survey.md"), md)
    write_text((out / "survey.json"), json.dumps(state.to_json(out.resolve()), separators=(",", ":")))
    if not page:
        return [out / "survey.md", out / "survey.json"]
    write_text(out / "index.html", index_html(state, out.resolve(), md))
    return [out / "survey.md", out / "survey.json", out / "index.html"]


def merge(parts: Sequence[Survey]) -> Survey:
    """Surveys of disjoint shards as one: per kernel, the union of their runs
    and of the targets not raced, in the order the parts gave them.  A target
    in two parts on one kernel (overlapping shards, or a survey merged with
    itself) is refused: which of the two would be the row?"""
    out: dict[str, RaceReport] = {}
    merged = Survey()
    seen: dict[tuple[str, str], int] = {}

    def once(key: tuple[str, str], i: int) -> None:
        if key in seen:
            raise HarnessError(
                f"{key[1]} on {key[0]} is in survey {seen[key]} and survey {i}: "
                "merge surveys of disjoint shards (--shard 1/N, 2/N, ...)"
            )
        seen[key] = i

    for i, part in enumerate(parts, 1):
        for rep in part.reports:
            for run in rep.runs:
                once((rep.kernel_spec, run.scheme), i)
            if rep.kernel_spec not in out:
                out[rep.kernel_spec] = replace(rep, runs=list(rep.runs))
            else:
                out[rep.kernel_spec].runs.extend(rep.runs)
        for n in part.not_raced:
            once((n.kernel, n.target), i)
            merged.not_raced.append(n)
        merged.interrupted += part.interrupted
        merged.seconds.update(part.seconds)
        merged.files.update(part.files)
        for kernel, rows in part.derived.items():
            merged.derived.setdefault(kernel, {}).update(rows)
        for kernel, took in part.discover_seconds.items():
            merged.discover_seconds[kernel] = merged.discover_seconds.get(kernel, 0.0) + took
    merged.reports = list(out.values())
    return merged
