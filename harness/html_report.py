"""HTML reports people look at: a race's timelines and latency plots, the
claim x kernel matrix as a coloured grid.

Each page is one self-contained file: the plots are PNGs inside it (data
URIs), the style is inline, there is no script and nothing from the network;
the only links are relative ones to console logs under the build folder.

The plots are drawn by matplotlib, the optional extra `report`
(`pip install -e '.[report]'`, which the Makefile's setup installs).  Without
it the text and JSON reports still work, the race page is written with its
tables and without plots, and `race --html` refuses in one line saying what to
install.  The matrix page has no plots and needs nothing.

`python -m harness.html_report REPORT.json [PAGE.html]` draws the page of a
JSON report again (a nightly run's, say).

What a plot shows is computed by plain functions (`timeline_data`,
`cdf_points`) that the unit tests check against synthetic races; the drawing
functions only draw what those return.
"""

from __future__ import annotations

import base64
import enum
import html
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .errors import HarnessError
from .matrix import OUTCOME_MARK, VERBOSE_KEYS, Cell, Matrix
from .progress import progress
from .racer import CallEvents, CallFailure, Hist, OpStats, UnloadWindow, hist_value
from .report import (CALLER_OPS, Control, GuestState, RaceReport, RunEnd, RunResult, Timeline, Verdict, problem,
                     starts)
from .schemes import SCHEMES, WORKLOADS
from .splat import Splat

if TYPE_CHECKING:
    from matplotlib.axes import Axes

INSTALL = "pip install -e '.[report]'"
PLOTS_MISSING = f"plots need matplotlib, the optional extra 'report': {INSTALL}"

DPI = 100


def plotting_missing() -> str | None:
    """None when matplotlib can be imported, else the one line saying what to install."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return PLOTS_MISSING
    return None


def require_plotting() -> None:
    """For `race --html`: refuse before anything boots when plots cannot be drawn."""
    missing = plotting_missing()
    if missing:
        raise HarnessError(f"--html: {missing}")


# ---------------------------------------------------------------- what the plots show


class SpanKind(enum.Enum):
    """Parts of an unload window, as shaded on a timeline."""

    DELETING = "delete_module running (the provider's exit)"
    GONE = "module gone until the reload returned"
    ABSENT = "reload failed: module absent until the next one"


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float
    kind: SpanKind


@dataclass(frozen=True)
class Rate:
    """Calls completed (any outcome) and succeeded per bin of one caller op."""

    bin_s: float
    done: tuple[int, ...]
    ok: tuple[int, ...]

    @property
    def starts_s(self) -> tuple[float, ...]:
        return tuple(round(i * self.bin_s, 6) for i in range(len(self.done)))


@dataclass(frozen=True)
class TimelineData:
    """A run's timeline in seconds since the roles started."""

    duration_s: float
    spans: tuple[Span, ...]
    windows_total: int
    windows_kept: int
    # (op, errno) -> end times of the failed calls kept; totals by op are exact
    failures: dict[tuple[str, str], tuple[float, ...]] = field(default_factory=dict)
    failures_total: dict[str, int] = field(default_factory=dict)
    rates: dict[str, Rate] = field(default_factory=dict)

    def failure_times(self) -> list[float]:
        return sorted(t for ts in self.failures.values() for t in ts)


def timeline_data(tl: Timeline, duration_s: float) -> TimelineData:
    """Spans, failure marks and rate lines of a run's `Timeline`."""
    spans: list[Span] = []
    windows = sorted(tl.windows, key=lambda w: w.begin_ms)
    for i, w in enumerate(windows):
        spans.append(Span(w.begin_ms / 1000, w.deleted_ms / 1000, SpanKind.DELETING))
        spans.append(Span(w.deleted_ms / 1000, w.reloaded_ms / 1000, SpanKind.GONE))
        # EEXIST: a caller's request_module had loaded it again first; the module is back
        if w.load_error not in (None, "EEXIST"):
            later = [n.begin_ms for n in windows[i + 1:] if n.module == w.module]
            until = later[0] / 1000 if later else duration_s
            spans.append(Span(w.reloaded_ms / 1000, until, SpanKind.ABSENT))
    failures: dict[tuple[str, str], list[float]] = {}
    for op, calls in tl.calls.items():
        for f in calls.failures:
            failures.setdefault((op, f.errno), []).append(f.end_ms / 1000)
    return TimelineData(
        duration_s=duration_s, spans=tuple(spans), windows_total=tl.windows_total, windows_kept=len(windows),
        failures={k: tuple(v) for k, v in sorted(failures.items())},
        failures_total={op: c.failures_total for op, c in tl.calls.items()},
        rates={op: Rate(c.bin_ms / 1000, c.done, c.ok) for op, c in tl.calls.items()})


def zoom_range(data: TimelineData, cycles: int = 3) -> tuple[float, float] | None:
    """A stretch of about `cycles` unload windows around the first failure
    (or the middle of the run when nothing failed), None without windows."""
    begins = sorted(s.start_s for s in data.spans if s.kind is SpanKind.DELETING)
    if not begins:
        return None
    ends = sorted(s.end_s for s in data.spans if s.kind is SpanKind.GONE)
    fails = data.failure_times()
    focus = fails[0] if fails else data.duration_s / 2
    i = max(0, max((n for n, b in enumerate(begins) if b <= focus), default=0) - 1)
    j = min(len(begins) - 1, i + cycles - 1)
    start = max(0.0, begins[i] - 0.15)
    end = min(data.duration_s, ends[j] + 0.15)
    return (start, end) if end > start else None


def cdf_points(hist: Hist) -> tuple[list[float], list[float]]:
    """Latency CDF of a histogram: (ms at each bucket, fraction of calls at or below)."""
    total = sum(c for _, c in hist)
    xs: list[float] = []
    ys: list[float] = []
    seen = 0
    for idx, count in sorted(hist):
        seen += count
        xs.append(hist_value(idx) / 1e6)
        ys.append(seen / total)
    return xs, ys


# ---------------------------------------------------------------- drawing (matplotlib)

@dataclass(frozen=True)
class SpanStyle:
    colour: str
    alpha: float
    hatch: str | None = None


SPAN_STYLE = {SpanKind.DELETING: SpanStyle("#f4a261", 0.45), SpanKind.GONE: SpanStyle("#8ecae6", 0.55),
              SpanKind.ABSENT: SpanStyle("#e63946", 0.2, "//")}
ERRNO_COLOURS = {"ENODEV": "#d62828", "ENOENT": "#7b2cbf", "EBUSY": "#f77f00", "EAGAIN": "#2a9d8f",
                 "EINVAL": "#6d597a", "EWRONGRESULT": "#000000"}
OTHER_COLOURS = ("#e76f51", "#264653", "#8338ec", "#ff006e", "#3a86ff")
OP_COLOURS = {"lookup": "#1d3557", "mount": "#2a6f4e", "fsmount": "#6a4c93", "hold": "#555555"}


def errno_colour(errno: str, seen: Sequence[str] = ()) -> str:
    if errno in ERRNO_COLOURS:
        return ERRNO_COLOURS[errno]
    others = sorted(e for e in seen if e not in ERRNO_COLOURS)
    return OTHER_COLOURS[others.index(errno) % len(OTHER_COLOURS)] if errno in others else OTHER_COLOURS[0]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _shade(ax: "Axes", spans: Iterable[Span], lo: float, hi: float) -> None:
    """One collection per kind of span, over the axes' full height."""
    shown = [s for s in spans if s.end_s >= lo and s.start_s <= hi]
    for kind, st in SPAN_STYLE.items():
        ranges = [(s.start_s, s.end_s - s.start_s) for s in shown if s.kind is kind]
        if ranges:
            ax.broken_barh(ranges, (0, 1), transform=ax.get_xaxis_transform(), facecolors=st.colour,
                           alpha=st.alpha, hatch=st.hatch, lw=0)


def _draw_view(ax_rate: "Axes", ax_fail: "Axes", data: TimelineData, lo: float, hi: float, title: str) -> None:
    _shade(ax_rate, data.spans, lo, hi)
    _shade(ax_fail, data.spans, lo, hi)
    top = 1
    for op, rate in data.rates.items():
        if not rate.done:
            continue
        xs = list(rate.starts_s) + [rate.starts_s[-1] + rate.bin_s]
        colour = OP_COLOURS.get(op, "#333333")
        ax_rate.stairs(rate.done, xs, color=colour, lw=1.4, baseline=None)
        if data.failures_total.get(op):
            ax_rate.stairs(rate.ok, xs, color=colour, lw=1.0, ls=(0, (2, 2)), baseline=None)
        top = max(top, max(rate.done))
    ax_rate.set_xlim(lo, hi)
    ax_rate.set_ylim(0, top * 1.12)
    ax_rate.set_ylabel("calls per 100 ms")
    ax_rate.set_title(title, loc="left", fontsize=10)
    ax_rate.tick_params(labelbottom=False)
    ax_rate.grid(axis="y", color="#dddddd", lw=0.6)
    ops = sorted(data.rates) or sorted({op for op, _ in data.failures})
    errnos = sorted({e for _, e in data.failures})
    for (op, errno), times in data.failures.items():
        shown = [t for t in times if lo <= t <= hi]
        if shown:
            ax_fail.scatter(shown, [ops.index(op)] * len(shown), marker="|", s=160, linewidths=1.6,
                            color=errno_colour(errno, errnos), zorder=3)
    ax_fail.set_yticks(range(len(ops)), [f"{op} failed" for op in ops])
    ax_fail.set_ylim(-0.6, len(ops) - 0.4)
    ax_fail.set_xlim(lo, hi)
    ax_fail.set_xlabel("time since the roles started (s)")
    if not data.rates:
        ax_rate.text(0.5, 0.5, "no caller reported events (killed, or an older racer)",
                     transform=ax_rate.transAxes, ha="center", va="center", color="#555555", fontsize=9)
    if not any(data.failures_total.values()):
        ax_fail.text(0.5, 0.5, "no failed call", transform=ax_fail.transAxes, ha="center", va="center",
                     color="#555555", fontsize=9)


def timeline_png(run: RunResult, data: TimelineData) -> bytes:
    """The whole run above, a zoom on a few unload windows below."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    zoom = zoom_range(data)
    fig = Figure(figsize=(12.5, 6.6 if zoom else 3.6), layout="constrained")
    heights = [3, 1.1, 3, 1.1] if zoom else [3, 1.1]
    gs = fig.add_gridspec(len(heights), 1, height_ratios=heights)
    ax_rate = fig.add_subplot(gs[0])
    ax_fail = fig.add_subplot(gs[1], sharex=ax_rate)
    fails = sum(data.failures_total.values())
    _draw_view(ax_rate, ax_fail, data, 0, data.duration_s,
               f"{run.scheme} / {run.workload}: whole run, {data.windows_total} unloads, {fails} failed calls")
    if zoom:
        zr = fig.add_subplot(gs[2])
        zf = fig.add_subplot(gs[3], sharex=zr)
        where = "around the first failed call" if data.failure_times() else "in the middle of the run"
        _draw_view(zr, zf, data, zoom[0], zoom[1],
                   f"zoom: {zoom[0]:.2f}–{zoom[1]:.2f} s, a few unloads {where}")
    handles: list[Any] = [Patch(label=k.value, color=SPAN_STYLE[k].colour, alpha=SPAN_STYLE[k].alpha,
                                hatch=SPAN_STYLE[k].hatch)
                          for k in SpanKind if any(s.kind is k for s in data.spans)]
    for op, rate in data.rates.items():
        colour = OP_COLOURS.get(op, "#333333")
        handles.append(Line2D([], [], color=colour, lw=1.4, label=f"{op}: calls completed"))
        if data.failures_total.get(op):
            handles.append(Line2D([], [], color=colour, lw=1.0, ls=(0, (2, 2)), label=f"{op}: calls succeeded"))
    errnos = sorted({e for _, e in data.failures})
    kept_by_op: dict[str, int] = {}
    for (op, _), times in data.failures.items():
        kept_by_op[op] = kept_by_op.get(op, 0) + len(times)
    for (op, errno), times in data.failures.items():
        all_kept = kept_by_op[op] == data.failures_total.get(op)
        kept = f"{len(times)}" if all_kept else f"{len(times)} of the first {kept_by_op[op]} kept"
        handles.append(Line2D([], [], color=errno_colour(errno, errnos), marker="|", ls="none", ms=12, mew=2,
                              label=f"{op} failed {errno} ({kept})"))
    fig.legend(handles=handles, loc="outside upper center", ncol=min(4, len(handles)), frameon=False,
               fontsize=9)
    return _png(fig)


def cdf_png(run: RunResult, knobs: Mapping[str, int]) -> bytes | None:
    """Latency CDF per caller op, successful and failed calls apart (log axis)."""
    series: list[tuple[str, str, str, Hist, int]] = []
    for op in CALLER_OPS:
        st = run.ops.get(op)
        if st is None or not st.has_hist:
            continue
        colour = OP_COLOURS.get(op, "#333333")
        if st.has_failed_hist:
            series.append((f"{op} succeeded (n={st.ok})", colour, "-", st.hist_ok, st.ok))
            series.append((f"{op} failed (n={st.failed})", "#d62828", "--", st.hist_failed, st.failed))
        else:
            series.append((f"{op}, all calls (n={st.total})", colour, "-", st.hist, st.total))
    series = [s for s in series if s[4]]
    if not series:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for label, colour, ls, hist, _ in series:
        xs, ys = cdf_points(hist)
        ax.step([xs[0]] + xs, [0.0] + ys, where="post", color=colour, ls=ls, lw=1.6, label=label)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of calls ≤ latency")
    ax.set_title(f"{run.scheme} / {run.workload}: what the callers waited", loc="left", fontsize=10)
    ax.grid(color="#dddddd", lw=0.7)
    ax.grid(color="#f0f0f0", lw=0.5, which="minor")
    delay = knobs.get("exit_delay_ms")
    if delay:
        ax.axvline(delay, color="#f4a261", lw=1.2, ls=":", label=f"exit_delay_ms = {delay}")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=9)
    return _png(fig)


@dataclass
class RunFigures:
    timeline: bytes | None = None
    cdf: bytes | None = None


def race_figures(reports: Sequence[RaceReport]) -> dict[tuple[int, int], RunFigures] | None:
    """Every run's plots, keyed (report index, run index); None without matplotlib."""
    if plotting_missing():
        return None
    out: dict[tuple[int, int], RunFigures] = {}
    for i, rep in enumerate(reports):
        for j, run in enumerate(rep.runs):
            figs = RunFigures(cdf=cdf_png(run, rep.knobs))
            if run.timeline is not None:
                figs.timeline = timeline_png(run, timeline_data(run.timeline, rep.duration_s))
            out[(i, j)] = figs
    return out


# ---------------------------------------------------------------- pages

STYLE = """
body { font: 15px/1.45 "DejaVu Sans", sans-serif; margin: 24px 32px; color: #1b1b1b; max-width: 1400px; }
h1 { font-size: 24px; margin: 0 0 6px; } h2 { font-size: 19px; margin: 32px 0 6px; }
h3 { font-size: 16px; margin: 18px 0 4px; }
.meta { color: #333; margin: 2px 0; }
table { border-collapse: collapse; margin: 10px 0; }
th, td { border: 1px solid #c8c8c8; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font: 13px/1.35 "DejaVu Sans Mono", monospace; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 8px; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.v-clean { background: #d8f3dc; } .v-spurious { background: #ffe8b3; } .v-fail { background: #ffccd5; }
.v-control { background: #dbe7ff; }
.problem { color: #9d0208; font-weight: bold; }
.note { color: #555; font-style: italic; }
section.run { border-top: 2px solid #ccc; margin-top: 28px; }
.m-holds { background: #b7e4c7; } .m-not { background: #ffd6a5; } .m-fail { background: #ff8fa3; }
.m-fact { background: #cde2ff; } .m-skip { background: #e9e9e9; }
td.cell { white-space: nowrap; }
table.matrix td:first-child { min-width: 260px; max-width: 420px; overflow-wrap: anywhere; }
td.cell a { display: block; color: inherit; text-decoration: none; }
td.cell a:hover { text-decoration: underline; }
.legend span { padding: 2px 8px; margin-right: 6px; border: 1px solid #bbb; }
div.detail:target { outline: 3px solid #457b9d; }
div.detail { margin: 8px 0 16px; padding: 4px 10px; border-left: 4px solid #ccc; }
.badge { padding: 1px 6px; border: 1px solid #bbb; }
summary { cursor: pointer; color: #1d3557; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _link(path: str, page_dir: Path) -> str:
    """A relative link to a file under the build folder, or its path when it is gone."""
    if not path:
        return '<span class="note">none</span>'
    p = Path(path)
    if not p.is_file():
        return f'<code>{_e(p.name)}</code> <span class="note">(not kept)</span>'
    rel = os.path.relpath(p.resolve(), page_dir.resolve())
    return f'<a href="{_e(rel)}"><code>{_e(p.name)}</code></a>'


def _page(title: str, body: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _run_id(i: int, run: RunResult) -> str:
    return f"k{i}-{run.scheme}-{run.workload}"


def _verdict_class(run: RunResult) -> str:
    if problem(run):
        return "v-fail"
    if run.control is not Control.NONE:
        return "v-control"
    return {"clean": "v-clean", "spurious": "v-spurious"}.get(run.verdict.value, "v-fail")


def _errors(errors: Mapping[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "-"


def _runs_table(i: int, rep: RaceReport) -> list[str]:
    head = ["scheme", "workload", "calls ok/total", "caller errors", "spurious", "met 1 / 2+ unloads",
            "unloads ok/tried", "call p50 / p99 / max (ms)", "splats", "verdict"]
    rows = ["<table class=\"runs\"><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for run in rep.runs:
        calls, dm = run.callers, run.op("delete_module")
        lat = next((run.ops[o].latency_us for o in CALLER_OPS if o in run.ops), None)
        lat_text = " / ".join(f"{lat.get(k, 0) / 1000:.1f}" for k in ("p50", "p99", "max")) if lat else "-"
        verdict = run.verdict.value + (f" (control {run.control.value})" if run.control is not Control.NONE else "")
        cells = [f'<a href="#{_run_id(i, run)}">{_e(run.scheme)}</a>', _e(run.workload),
                 f"{calls.ok}/{calls.total}", _e(_errors(calls.errors)), str(run.spurious_failures),
                 f"{run.failed_by_unloads_met[1]} / {run.failed_by_unloads_met[2]}", f"{dm.ok}/{dm.total}",
                 lat_text, _e("; ".join(s.title for s in run.splats) or "-"),
                 f'<span class="{_verdict_class(run)}">{_e(verdict)}</span>']
        num = {2, 4, 5, 6, 7}
        rows.append("<tr>" + "".join(f'<td class="num">{c}</td>' if n in num else f"<td>{c}</td>"
                                     for n, c in enumerate(cells)) + "</tr>")
    rows.append("</table>")
    return rows


def _run_section(i: int, rep: RaceReport, run: RunResult, figs: RunFigures | None, plots_note: str | None,
                 page_dir: Path) -> list[str]:
    out = [f'<section class="run" id="{_run_id(i, run)}">',
           f'<h2>{_e(run.scheme)} / {_e(run.workload)}: <span class="{_verdict_class(run)}">'
           f"{_e(run.verdict.value)}</span></h2>"]
    scheme, workload = SCHEMES.get(run.scheme), WORKLOADS.get(run.workload)
    if scheme is not None and workload is not None:
        out.append(f'<p class="meta">{_e(run.scheme)}: {_e(scheme.summary)}.<br>'
                   f"{_e(run.workload)}: {_e(workload.summary)}.</p>")
    why = problem(run)
    if why:
        out.append(f'<p class="problem">FAIL: {_e(why)}</p>')
    tl = run.timeline
    if plots_note:
        out.append(f'<p class="note">{_e(plots_note)}</p>')
    elif tl is None:
        out.append('<p class="note">No timeline: no role reported events (an older racer, or every role '
                   "died before printing its result).</p>")
    if figs and figs.timeline:
        out.append(_img(figs.timeline, f"timeline of {run.scheme}/{run.workload}"))
    if tl is not None:
        dropped = [f"{op}: first {len(c.failures)} of {c.failures_total} failed calls marked"
                   for op, c in tl.calls.items() if len(c.failures) < c.failures_total]
        if len(tl.windows) < tl.windows_total:
            dropped.append(f"first {len(tl.windows)} of {tl.windows_total} unload windows shaded")
        if dropped:
            out.append(f'<p class="note">{_e("; ".join(dropped))} (the racer keeps a bounded number).</p>')
    if figs and figs.cdf:
        out.append(_img(figs.cdf, f"latency CDF of {run.scheme}/{run.workload}"))
    out.append('<table class="ops"><tr><th>operation</th><th>total</th><th>ok</th><th>errors</th>'
               "<th>p50 / p90 / p99 / max (ms)</th></tr>")
    for name, st in run.ops.items():
        lat = " / ".join(f"{st.latency_us.get(k, 0) / 1000:.2f}" for k in ("p50", "p90", "p99", "max"))
        out.append(f"<tr><td>{_e(name)}</td><td class=\"num\">{st.total}</td><td class=\"num\">{st.ok}</td>"
                   f"<td>{_e(_errors(st.errors))}</td><td class=\"num\">{lat}</td></tr>")
    out.append("</table>")
    out.append(f"<p>Reproduce: <code>{_e(run.repro)}</code></p>")
    out.append(f"<p>Console log: {_link(run.console_log, page_dir)}; run took {run.seconds:g} s, "
               f"ended {_e(run.end.value)}{(': ' + _e(run.end_detail)) if run.end_detail else ''}.</p>")
    for err in run.role_errors:
        out.append(f'<p class="problem">{_e(err)}</p>')
    for s in run.splats:
        out.append(f"<h3>{_e(s.kind)}: {_e(s.title)}</h3>")
        out.append(f"<pre>{_e(chr(10).join(s.lines))}</pre>")
        out.append(f"<p>Whole log: {_link(run.console_log, page_dir)}</p>")
    out.append("</section>")
    return out


def race_html(reports: Sequence[RaceReport], page_dir: Path,
              figures: Mapping[tuple[int, int], RunFigures] | None) -> str:
    """The race page; `figures` from `race_figures` (None: no matplotlib)."""
    body: list[str] = []
    note = PLOTS_MISSING.capitalize() + "." if figures is None else None
    for i, rep in enumerate(reports):
        knobs = ", ".join(f"{k}={v}" for k, v in sorted(rep.knobs.items())) or "-"
        body += [f"<h1>Unload race on {_e(rep.kernel)} ({_e(rep.kernel_spec)})</h1>",
                 f'<p class="meta">accel <b>{_e(rep.accel)}</b>, seed <b>{rep.seed}</b>, '
                 f"{rep.duration_s:g} s per run, knobs <b>{_e(knobs)}</b>, rcu_expedited={int(rep.rcu_expedited)}, "
                 f"reload={_e(rep.reload)}, host CPU hogs {rep.contention}{_e(starts(rep))}</p>"]
        problems = rep.problems()
        body.append(f'<p class="problem">{len(problems)} run(s) fail: exit status 1</p>' if problems else
                    '<p class="meta">Every run showed what its scheme claims (exit status 0).</p>')
        body += [f'<p class="problem">FAIL {_e(p)}</p>' for p in problems]
        body += _runs_table(i, rep)
        body.append('<p class="note">A timeline shades each unload (orange: delete_module running, the '
                    "provider's exit with its delay; blue: module gone until the reload returned), marks each "
                    "failed call at the moment it returned, coloured by errno, and draws the calls completed "
                    "per 100 ms. Callers that wait show as a rate falling to zero inside the windows.</p>")
        for j, run in enumerate(rep.runs):
            figs = figures.get((i, j)) if figures is not None else None
            body += _run_section(i, rep, run, figs, note, page_dir)
    title = "Unload race: " + ", ".join(f"{r.kernel_spec}" for r in reports)
    return _page(title, body)


def write_race_pages(reports: Sequence[RaceReport], outs: Sequence[Path]) -> list[Path]:
    """Draw the plots once and write the page at each path (links relative to
    each).  Without matplotlib the pages have no plots and say what to install."""
    figures = race_figures(reports)
    if figures is None:
        progress(f"report page without plots: {PLOTS_MISSING}")
    for out in outs:
        try:
            out.write_text(race_html(reports, out.parent, figures))
        except OSError as e:
            raise HarnessError(f"cannot write the HTML report {out}: {e.strerror or e}") from None
    return list(outs)


# ---------------------------------------------------------------- a page again from a JSON report


def _hist_json(buckets: Sequence[Sequence[int]] | None) -> Hist:
    return tuple(sorted((int(i), int(c)) for i, c in buckets or ()))


def _op_stats(d: Mapping[str, Any]) -> OpStats:
    met = d.get("failed_by_unloads_met") or (0, 0, 0)
    ff = d.get("first_failure_ms")
    return OpStats(total=int(d["total"]), ok=int(d["ok"]), errors={str(k): int(v) for k, v in d["errors"].items()},
                   failed_during_unload=int(d.get("failed_during_unload", 0)),
                   latency_us={str(k): float(v) for k, v in (d.get("latency_us") or {}).items()},
                   first_failure_ms=None if ff is None else float(ff), hist=_hist_json(d.get("hist")),
                   failed_by_unloads_met=(int(met[0]), int(met[1]), int(met[2])),
                   hist_failed=_hist_json(d.get("hist_failed")))


def _timeline(d: Mapping[str, Any] | None) -> Timeline | None:
    if not d:
        return None
    unloads = d.get("unloads") or {}
    windows = tuple(UnloadWindow(float(w[0]), float(w[1]), float(w[2]), w[3], w[4], str(w[5]) if len(w) > 5 else "")
                    for w in unloads.get("windows", []))
    calls = {str(op): CallEvents(op=str(op), failures_total=int(c["failures_total"]),
                                 failures=tuple(CallFailure(float(a), float(b), str(e)) for a, b, e in c["failures"]),
                                 bin_ms=int(c["bin_ms"]), done=tuple(c["done"]), ok=tuple(c["ok"]))
             for op, c in (d.get("calls") or {}).items()}
    return Timeline(windows=windows, windows_total=int(unloads.get("total", len(windows))), calls=calls)


def _run(d: Mapping[str, Any]) -> RunResult:
    met = d.get("failed_by_unloads_met") or (0, 0, 0)
    return RunResult(
        scheme=d["scheme"], workload=d["workload"], end=RunEnd(d["end"]), end_detail=d.get("end_detail", ""),
        ops={str(k): _op_stats(v) for k, v in d["ops"].items()}, spurious_failures=int(d["spurious_failures"]),
        first_spurious_s=d.get("first_spurious_s"), failed_during_unload=int(d.get("failed_during_unload", 0)),
        failed_by_unloads_met=(int(met[0]), int(met[1]), int(met[2])),
        splats=_splats(d.get("splats", [])),
        role_errors=list(d.get("role_errors", [])), verdict=Verdict(d["verdict"]), control=Control(d["control"]),
        seconds=float(d.get("seconds", 0.0)), repro=d.get("repro", ""), console_log=d.get("console_log", ""),
        timeline=_timeline(d.get("events")), guest_start=d.get("guest_start"), guest=_guest(d.get("guest")))


def _splats(items: Sequence[Mapping[str, Any]]) -> list[Splat]:
    return [Splat(s["kind"], s["title"], tuple(s["lines"]), (), None, 0) for s in items]


def _guest(d: Mapping[str, Any] | None) -> GuestState:
    if not d:
        return GuestState()
    before, after = d.get("debug_locks") or (None, None)
    return GuestState(tuple(_splats(d.get("boot_splats", []))), before, after)


def reports_from_json(doc: Any) -> list[RaceReport]:
    """The RaceReports of a JSON report (one object, or a list for several
    kernels), to draw its page again; a bad document is a HarnessError."""
    try:
        return [RaceReport(kernel=r["kernel"], kernel_spec=r["kernel_spec"], accel=r["accel"], seed=int(r["seed"]),
                           duration_s=float(r["duration_s"]), rcu_expedited=bool(r["rcu_expedited"]),
                           knobs={str(k): int(v) for k, v in r["knobs"].items()}, reload=r["reload"],
                           contention=int(r.get("contention", 0)), lockdep=bool(r.get("lockdep", False)),
                           kasan=bool(r.get("kasan", False)), runs=[_run(x) for x in r["runs"]])
                for r in (doc if isinstance(doc, list) else [doc])]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise HarnessError(f"not a race JSON report: {type(e).__name__}: {e}") from None


def main(argv: Sequence[str]) -> int:
    """`python -m harness.html_report REPORT.json [PAGE.html]`: the page of a
    JSON report again (default: index.html beside it)."""
    if len(argv) not in (1, 2):
        print("usage: python -m harness.html_report REPORT.json [PAGE.html]", file=sys.stderr)
        return 2
    src = Path(argv[0])
    out = Path(argv[1]) if len(argv) == 2 else src.with_name("index.html")
    try:
        try:
            doc = json.loads(src.read_text())
        except (OSError, ValueError) as e:
            raise HarnessError(f"{src}: {e}") from None
        write_race_pages(reports_from_json(doc), [out])
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return int(e.exit_code)
    print(out)
    return 0


# ---------------------------------------------------------------- looking at a page

# Headless Chromium that loads the local page and nothing else: no DNS, no
# background fetches, its profile in a scratch folder.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--disable-breakpad", "--no-pings",
                  "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND")


def chromium() -> str | None:
    """Debian's Chromium, when installed."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(page: Path, png: Path, scratch: Path, width: int = 1400, height: int = 2000,
               timeout_s: float = 120) -> Path:
    """A PNG of `page` as headless Chromium draws it in a width x height window;
    `scratch` holds the browser's profile (and is its HOME)."""
    exe = chromium()
    if exe is None:
        raise HarnessError("chromium is not installed (as root: sh scripts/setup.sh --browser)")
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(scratch), "XDG_CONFIG_HOME": str(scratch / "config"),
           "XDG_CACHE_HOME": str(scratch / "cache")}
    png.unlink(missing_ok=True)
    proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={scratch / 'profile'}",
                           f"--screenshot={png.resolve()}", f"--window-size={width},{height}",
                           page.resolve().as_uri()],
                          capture_output=True, text=True, env=env, timeout=timeout_s, stdin=subprocess.DEVNULL)
    if not png.is_file():
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise HarnessError(f"chromium wrote no screenshot of {page}: {tail[0]}")
    return png


# ---------------------------------------------------------------- the matrix page


def compact_json(value: Any, width: int = 110, indent: str = "") -> str:
    """JSON that keeps a value on one line when it fits in `width`, so long
    records stay readable (lists of numbers do not take a line per number)."""
    flat = json.dumps(value, default=str, ensure_ascii=False)
    if len(indent) + len(flat) <= width or not isinstance(value, (dict, list)) or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(str(k))}: {compact_json(v, width, inner).lstrip()}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    return "[\n" + ",\n".join(inner + compact_json(v, width, inner).lstrip() for v in value) + "\n" + indent + "]"


def _cell_class(c: Cell) -> tuple[str, str, str]:
    """(CSS class, outcome mark, what it says of the claim)."""
    mark = OUTCOME_MARK.get(c.outcome, c.outcome or "?")
    if c.outcome in ("failed", "error"):
        return "m-fail", mark, "test failed" if c.outcome == "failed" else "setup/teardown"
    if c.outcome == "skipped" or not c.outcome:
        return "m-skip", mark, ""
    holds = c.holds()
    if holds is None:
        return "m-fact", mark, "fact"
    return ("m-holds", mark, "holds") if holds else ("m-not", mark, "does not hold")


def matrix_html(mx: Matrix, page_dir: Path) -> str:
    """The claim x kernel grid, coloured; each cell links to its measured values and logs below."""
    totals = ", ".join(f"{k} {v}" for k, v in mx.totals().items()) or "no results"
    body = ["<h1>The seed's claims, per kernel</h1>",
            f'<p class="meta">{len(mx.claims)} tests on {len(mx.kernels)} kernel(s): {_e(totals)}. '
            "A test passes when the kernel behaves as measured; <i>does not hold</i> marks a claim of the "
            "2002 thread that the measurement contradicts. Click a cell for what was measured.</p>",
            '<p class="legend"><span class="m-holds">holds</span><span class="m-not">does not hold</span>'
            '<span class="m-fact">fact (measured, no claim)</span><span class="m-fail">failed / error</span>'
            '<span class="m-skip">skipped</span></p>',
            "<table class=\"matrix\"><tr><th>claim</th>" + "".join(f"<th>{_e(k)}</th>" for k in mx.kernels)
            + "</tr>"]
    ids: dict[tuple[str, str], str] = {}
    for r, claim in enumerate(mx.claims):
        row = [f"<td><code>{_e(claim)}</code></td>"]
        for k, kernel in enumerate(mx.kernels):
            c = mx.cell(claim, kernel)
            if c is None:
                row.append('<td class="m-skip">–</td>')
                continue
            ids[(claim, kernel)] = f"c{r}-{k}"
            cls, mark, says = _cell_class(c)
            row.append(f'<td class="cell {cls}"><a href="#c{r}-{k}"><b>{_e(mark)}</b><br>{_e(says)}<br>'
                       f'<small>{c.seconds:g} s</small></a></td>')
        body.append("<tr>" + "".join(row) + "</tr>")
    body.append("</table>")
    body.append("<h2>Measured, per cell</h2>")
    for claim in mx.claims:
        body.append(f"<h3><code>{_e(claim)}</code></h3>")
        for kernel in mx.kernels:
            c = mx.cell(claim, kernel)
            if c is None:
                continue
            cls, mark, says = _cell_class(c)
            text = f"{mark}, {says}" if says else mark
            logs = ", ".join(_link(p, page_dir) for p in c.console_logs) or (
                '<span class="note">not recorded (only logs of failed tests are kept unless pytest runs with '
                "--keep-console-logs, as make matrix does)</span>")
            body.append(f'<div class="detail" id="{ids[(claim, kernel)]}"><b>{_e(kernel)}</b>: '
                        f'<span class="badge {cls}">{_e(text)}</span> in {c.seconds:g} s. Console log: {logs}')
            if c.measured:
                short = {k: v for k, v in c.measured.items() if k not in VERBOSE_KEYS}
                body.append(f"<pre>{_e(compact_json(short))}</pre>")
                for key in (k for k in VERBOSE_KEYS if k in c.measured):
                    record = compact_json(c.measured[key])
                    body.append(f"<details><summary>{_e(key)} ({record.count(chr(10)) + 1} lines)</summary>"
                                f"<pre>{_e(record)}</pre></details>")
            if c.message:
                body.append(f"<pre>{_e(c.message)}</pre>")
            body.append("</div>")
    return _page("Claims x kernels", body)


def write_matrix_html(mx: Matrix, out: Path) -> Path:
    out.write_text(matrix_html(mx, out.parent))
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
