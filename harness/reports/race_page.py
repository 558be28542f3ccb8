"""The race page: per kernel, the runs' table, and per run its verdict, its
timelines and latency CDFs (`plots`), its splats and its console log.

Without matplotlib (the optional extra `report`) the page is written with its
tables and without plots, and says what to install.

`python -m harness race-page REPORT.json [PAGE.html]` draws the page of a JSON
report again (a nightly run's, say).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import HarnessError
from ..progress import progress
from ..race.outcomes import Control, RaceReport, RunResult, Verdict, problem
from ..race.schemes import SCHEMES, WORKLOADS
from ..util import write_text
from .page import esc, file_link, html_page
from .plots import PLOTS_MISSING, RunFigures, race_figures
from .table import starts


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _run_id(i: int, run: RunResult) -> str:
    return f"k{i}-{run.scheme}-{run.workload}"


def _verdict_class(run: RunResult) -> str:
    if problem(run):
        return "v-fail"
    if run.control is not Control.NONE:
        return "v-control"
    return {Verdict.CLEAN: "v-clean", Verdict.SPURIOUS: "v-spurious"}.get(run.verdict, "v-fail")


def _errors(errors: Mapping[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "-"


def _runs_table(i: int, rep: RaceReport) -> list[str]:
    head = [
        "scheme",
        "workload",
        "calls ok/total",
        "caller errors",
        "spurious",
        "met 1 / 2+ unloads",
        "unloads ok/tried",
        "call p50 / p99 / max (ms)",
        "splats",
        "verdict",
    ]
    rows = ['<table class="runs"><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for run in rep.runs:
        calls, dm = run.callers, run.op("delete_module")
        lat = next((run.ops[o].latency_us for o in run.caller_ops if o in run.ops), None)
        lat_text = " / ".join(f"{lat.get(k, 0) / 1000:.1f}" for k in ("p50", "p99", "max")) if lat else "-"
        verdict = run.verdict.value + (f" (control {run.control.value})" if run.control is not Control.NONE else "")
        cells = [
            f'<a href="#{_run_id(i, run)}">{esc(run.scheme)}</a>',
            esc(run.workload),
            f"{calls.ok}/{calls.total}",
            esc(_errors(calls.errors)),
            str(run.spurious_failures),
            f"{run.failed_by_unloads_met[1]} / {run.failed_by_unloads_met[2]}",
            f"{dm.ok}/{dm.total}",
            lat_text,
            esc("; ".join(s.title for s in run.splats) or "-"),
            f'<span class="{_verdict_class(run)}">{esc(verdict)}</span>',
        ]
        num = {2, 4, 5, 6, 7}
        rows.append(
            "<tr>"
            + "".join(f'<td class="num">{c}</td>' if n in num else f"<td>{c}</td>" for n, c in enumerate(cells))
            + "</tr>"
        )
    rows.append("</table>")
    return rows


def _run_section(
    i: int, rep: RaceReport, run: RunResult, figs: RunFigures | None, plots_note: str | None, page_dir: Path
) -> list[str]:
    out = [
        f'<section class="run" id="{_run_id(i, run)}">',
        f'<h2>{esc(run.scheme)} / {esc(run.workload)}: <span class="{_verdict_class(run)}">'
        f"{esc(run.verdict.value)}</span></h2>",
    ]
    scheme, workload = SCHEMES.get(run.scheme), WORKLOADS.get(run.workload)
    if scheme is not None and workload is not None:
        out.append(
            f'<p class="meta">{esc(run.scheme)}: {esc(scheme.summary)}.<br>'
            f"{esc(run.workload)}: {esc(workload.summary)}.</p>"
        )
    why = problem(run)
    if why:
        out.append(f'<p class="problem">FAIL: {esc(why)}</p>')
    tl = run.timeline
    if plots_note:
        out.append(f'<p class="note">{esc(plots_note)}</p>')
    elif tl is None:
        out.append(
            '<p class="note">No timeline: no role reported events (an older racer, or every role '
            "died before printing its result).</p>"
        )
    if figs and figs.timeline:
        out.append(_img(figs.timeline, f"timeline of {run.scheme}/{run.workload}"))
    if tl is not None:
        dropped = [
            f"{op}: first {len(c.failures)} of {c.failures_total} failed calls marked"
            for op, c in tl.calls.items()
            if len(c.failures) < c.failures_total
        ]
        if len(tl.windows) < tl.windows_total:
            dropped.append(f"first {len(tl.windows)} of {tl.windows_total} unload windows shaded")
        if dropped:
            out.append(f'<p class="note">{esc("; ".join(dropped))} (the racer keeps a bounded number).</p>')
    if figs and figs.cdf:
        out.append(_img(figs.cdf, f"latency CDF of {run.scheme}/{run.workload}"))
    out.append(
        '<table class="ops"><tr><th>operation</th><th>total</th><th>ok</th><th>errors</th>'
        "<th>p50 / p90 / p99 / max (ms)</th></tr>"
    )
    for name, st in run.ops.items():
        lat = " / ".join(f"{st.latency_us.get(k, 0) / 1000:.2f}" for k in ("p50", "p90", "p99", "max"))
        out.append(
            f'<tr><td>{esc(name)}</td><td class="num">{st.total}</td><td class="num">{st.ok}</td>'
            f'<td>{esc(_errors(st.errors))}</td><td class="num">{lat}</td></tr>'
        )
    out.append("</table>")
    out.append(f"<p>Reproduce: <code>{esc(run.repro)}</code></p>")
    out.append(
        f"<p>Console log: {file_link(run.console_log, page_dir)}; run took {run.seconds:g} s, "
        f"ended {esc(run.end.value)}{(': ' + esc(run.end_detail)) if run.end_detail else ''}.</p>"
    )
    if run.dump is not None:
        d = run.dump
        if d.vmcore:
            reader = f"; vmlinux {file_link(d.vmlinux, page_dir)}" if d.vmlinux else ""
            note = f" ({esc(d.note)})" if d.note else ""
            out.append(f"<p>Memory: vmcore {file_link(d.vmcore, page_dir)}, {d.bytes >> 20} MiB{reader}{note}.</p>")
        else:
            out.append(f"<p>Memory: no vmcore ({esc(d.note)}).</p>")
    for err in run.role_errors:
        out.append(f'<p class="problem">{esc(err)}</p>')
    for s in run.splats:
        out.append(f"<h3>{esc(s.kind)}: {esc(s.title)}</h3>")
        if s.decoded:
            out.append("<p>Frames with file:line (the kernel's decode_stacktrace.sh):</p>")
        out.append(f"<pre>{esc(chr(10).join(s.decoded or s.lines))}</pre>")
        out.append(f"<p>Whole log: {file_link(run.console_log, page_dir)}</p>")
    out.append("</section>")
    return out


def race_html(
    reports: Sequence[RaceReport], page_dir: Path, figures: Mapping[tuple[int, int], RunFigures] | None
) -> str:
    """The race page; `figures` from `race_figures` (None: no matplotlib)."""
    body: list[str] = []
    note = PLOTS_MISSING.capitalize() + "." if figures is None else None
    for i, rep in enumerate(reports):
        knobs = ", ".join(rep.knobs.args()) or "-"
        origin = f"; {rep.kernel_describe}" if rep.kernel_describe else ""
        body += [
            f"<h1>Unload race on {esc(rep.kernel)} ({esc(rep.kernel_spec + origin)})</h1>",
            f'<p class="meta">accel <b>{esc(rep.accel)}</b>, seed <b>{rep.seed}</b>, '
            f"{rep.duration_s:g} s per run, knobs <b>{esc(knobs)}</b>, rcu_expedited={int(rep.rcu_expedited)}, "
            f"reload={esc(rep.reload)}, host CPU hogs {rep.contention}{esc(starts(rep))}</p>",
        ]
        problems = rep.problems()
        body.append(
            f'<p class="problem">{len(problems)} run(s) fail: exit status 1</p>'
            if problems
            else '<p class="meta">Every run showed what its scheme claims (exit status 0).</p>'
        )
        body += [f'<p class="problem">FAIL {esc(p)}</p>' for p in problems]
        if rep.interrupted:
            body.append(
                f'<p class="problem">Stopped (Ctrl-C or SIGTERM) during {esc(rep.interrupted)}: '
                "that run and the ones after it are not here.</p>"
            )
        if rep.frames_note:
            body.append(f'<p class="meta">Splat frames are function+offset, not file:line: {esc(rep.frames_note)}.</p>')
        body += _runs_table(i, rep)
        body.append(
            '<p class="note">A timeline shades each unload (orange: delete_module running, the '
            "provider's exit with its delay; blue: module gone until the reload returned), marks each "
            "failed call at the moment it returned, coloured by errno, and draws the calls completed "
            "per 100 ms. Callers that wait show as a rate falling to zero inside the windows.</p>"
        )
        for j, run in enumerate(rep.runs):
            figs = figures.get((i, j)) if figures is not None else None
            body += _run_section(i, rep, run, figs, note, page_dir)
    title = "Unload race: " + ", ".join(f"{r.kernel_spec}" for r in reports)
    return html_page(title, body)


def write_race_pages(reports: Sequence[RaceReport], outs: Sequence[Path]) -> list[Path]:
    """Draw the plots once and write the page at each path (links relative to
    each).  Without matplotlib the pages have no plots and say what to install."""
    figures = race_figures(reports)
    if figures is None:
        progress(f"report page without plots: {PLOTS_MISSING}")
    for out in outs:
        try:
            write_text(out, race_html(reports, out.parent, figures))
        except OSError as e:
            raise HarnessError(f"cannot write the HTML report {out}: {e.strerror or e}") from None
    return list(outs)
