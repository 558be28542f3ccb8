"""The race page's plots: per run, a timeline of unload windows, failed calls
and call rates, and the callers' latency CDFs, as PNGs.

What a plot shows is computed by plain functions (`timeline_data`,
`cdf_points`) that the unit tests check against synthetic races; the drawing
functions only draw what those return.

The drawing is matplotlib's, the optional extra `report`
(`pip install -e '.[report]'`, which the Makefile's setup installs).  Without
it the text and JSON reports still work, the race page is written with its
tables and without plots, and `race --html` refuses in one line saying what to
install.  The matrix page has no plots and needs nothing.
"""

from __future__ import annotations

import enum
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..errors import HarnessError
from ..race.outcomes import RaceReport, RunResult, Timeline
from ..race.racer import Hist, hist_value

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
            later = [n.begin_ms for n in windows[i + 1 :] if n.module == w.module]
            until = later[0] / 1000 if later else duration_s
            spans.append(Span(w.reloaded_ms / 1000, until, SpanKind.ABSENT))
    failures: dict[tuple[str, str], list[float]] = {}
    for op, calls in tl.calls.items():
        for f in calls.failures:
            failures.setdefault((op, f.errno), []).append(f.end_ms / 1000)
    return TimelineData(
        duration_s=duration_s,
        spans=tuple(spans),
        windows_total=tl.windows_total,
        windows_kept=len(windows),
        failures={k: tuple(v) for k, v in sorted(failures.items())},
        failures_total={op: c.failures_total for op, c in tl.calls.items()},
        rates={op: Rate(c.bin_ms / 1000, c.done, c.ok) for op, c in tl.calls.items()},
    )


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


SPAN_STYLE = {
    SpanKind.DELETING: SpanStyle("#f4a261", 0.45),
    SpanKind.GONE: SpanStyle("#8ecae6", 0.55),
    SpanKind.ABSENT: SpanStyle("#e63946", 0.2, "//"),
}
ERRNO_COLOURS = {
    "ENODEV": "#d62828",
    "ENOENT": "#7b2cbf",
    "EBUSY": "#f77f00",
    "EAGAIN": "#2a9d8f",
    "EINVAL": "#6d597a",
    "EWRONGRESULT": "#000000",
}
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
            ax.broken_barh(
                ranges,
                (0, 1),
                transform=ax.get_xaxis_transform(),
                facecolors=st.colour,
                alpha=st.alpha,
                hatch=st.hatch,
                lw=0,
            )


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
            ax_fail.scatter(
                shown,
                [ops.index(op)] * len(shown),
                marker="|",
                s=160,
                linewidths=1.6,
                color=errno_colour(errno, errnos),
                zorder=3,
            )
    ax_fail.set_yticks(range(len(ops)), [f"{op} failed" for op in ops])
    ax_fail.set_ylim(-0.6, len(ops) - 0.4)
    ax_fail.set_xlim(lo, hi)
    ax_fail.set_xlabel("time since the roles started (s)")
    if not data.rates:
        ax_rate.text(
            0.5,
            0.5,
            "no caller reported events (killed, or an older racer)",
            transform=ax_rate.transAxes,
            ha="center",
            va="center",
            color="#555555",
            fontsize=9,
        )
    if not any(data.failures_total.values()):
        ax_fail.text(
            0.5,
            0.5,
            "no failed call",
            transform=ax_fail.transAxes,
            ha="center",
            va="center",
            color="#555555",
            fontsize=9,
        )


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
    _draw_view(
        ax_rate,
        ax_fail,
        data,
        0,
        data.duration_s,
        f"{run.scheme} / {run.workload}: whole run, {data.windows_total} unloads, {fails} failed calls",
    )
    if zoom:
        zr = fig.add_subplot(gs[2])
        zf = fig.add_subplot(gs[3], sharex=zr)
        where = "around the first failed call" if data.failure_times() else "in the middle of the run"
        _draw_view(zr, zf, data, zoom[0], zoom[1], f"zoom: {zoom[0]:.2f}–{zoom[1]:.2f} s, a few unloads {where}")
    handles: list[Any] = [
        Patch(label=k.value, color=SPAN_STYLE[k].colour, alpha=SPAN_STYLE[k].alpha, hatch=SPAN_STYLE[k].hatch)
        for k in SpanKind
        if any(s.kind is k for s in data.spans)
    ]
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
        handles.append(
            Line2D(
                [],
                [],
                color=errno_colour(errno, errnos),
                marker="|",
                ls="none",
                ms=12,
                mew=2,
                label=f"{op} failed {errno} ({kept})",
            )
        )
    if handles:  # a timeline with no unload and no call has nothing to name (matplotlib refuses ncol=0)
        fig.legend(handles=handles, loc="outside upper center", ncol=min(4, len(handles)), frameon=False, fontsize=9)
    return _png(fig)


def cdf_png(run: RunResult, knobs: Mapping[str, int]) -> bytes | None:
    """Latency CDF per caller op, successful and failed calls apart (log axis)."""
    series: list[tuple[str, str, str, Hist, int]] = []
    for op in run.caller_ops:
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
