"""A race report as the text table a terminal shows: the header line (kernel,
knobs, how the guests started), one row per run, then notes on what ended
badly, what a role said and which callers never reached the module."""

from __future__ import annotations

from ..race.outcomes import Control, RaceReport, RunEnd, RunResult, Verdict, control_label, end_text, errors_text


def header(report: RaceReport) -> str:
    knobs = " ".join(report.knobs.args()) or "-"
    origin = f"; {report.kernel_describe}" if report.kernel_describe else ""
    return (
        f"kernel {report.kernel} ({report.kernel_spec}{origin}), accel {report.accel}, seed {report.seed}, "
        f"{report.duration_s:g}s per run, knobs {knobs}, rcu_expedited={int(report.rcu_expedited)}, "
        f"reload={report.reload}, contention={report.contention}, lockdep={int(report.lockdep)}, "
        f"kasan={int(report.kasan)}" + starts(report)
    )


def starts(report: RaceReport) -> str:
    """How the runs' guests started: `guests restored` / `guests cold` / a mix."""
    paths = [r.guest_start.path_name for r in report.runs if r.guest_start]
    if not paths:
        return ""
    if len(set(paths)) == 1:
        return f", guests {paths[0]}"
    return ", guests " + " ".join(
        f"{r.scheme}/{r.workload}:{r.guest_start.path_name}" for r in report.runs if r.guest_start
    )


def live_text(run: RunResult) -> str:
    """The callers' calls that succeeded while the module was live; `?` when
    the racer did not say (an older report)."""
    if not run.reach or any(x.ok_live is None for x in run.reach):
        return "?"
    return str(sum(x.ok_live or 0 for x in run.reach))


def render_table(report: RaceReport) -> str:
    """Side by side: per scheme and workload, ops, errnos, spurious, latency, splats."""
    cols = [
        "scheme",
        "workload",
        "calls ok/total",
        "ok live",
        "caller errors",
        "spurious",
        "met 1/2+ unloads",
        "rmmod ok/total",
        "rmmod errors",
        "call p50/p99/max us",
        "splats",
        "verdict",
    ]
    rows = [cols]
    for r in report.runs:
        calls = r.callers
        lat = next((r.ops[o].latency_us for o in r.caller_ops if o in r.ops), {})
        dm = r.op("delete_module")
        verdict = r.verdict.value
        if r.control is not Control.NONE:
            verdict += f" ({control_label(r)} {r.control.value})"
        rows.append(
            [
                r.scheme,
                r.workload,
                f"{calls.ok}/{calls.total}",
                live_text(r),
                errors_text(calls.errors),
                str(r.spurious_failures),
                f"{r.failed_by_unloads_met[1]}/{r.failed_by_unloads_met[2]}",
                f"{dm.ok}/{dm.total}",
                errors_text(dm.errors),
                "/".join(f"{lat.get(k, 0):.0f}" for k in ("p50", "p99", "max")) if lat else "-",
                "; ".join(s.title for s in r.splats)[:60] or "-",
                verdict,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = [header(report), ""]
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [
        f"{r.scheme}/{r.workload}: broken guest: {r.guest.why_broken()}"
        for r in report.runs
        if r.verdict is Verdict.BROKEN
    ]
    notes += [f"{r.scheme}/{r.workload}: {end_text(r)}" for r in report.runs if r.end is not RunEnd.COMPLETED]
    notes += [f"{r.scheme}/{r.workload}: {e}" for r in report.runs for e in r.role_errors]
    notes += [
        f"{r.scheme}/{r.workload}: {x.label} never reached the module: 0 of {x.calls} calls succeeded "
        f"while it was loaded ({errors_text(x.errors)})"
        for r in report.runs
        for x in r.reach
        if not x.reached
    ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
