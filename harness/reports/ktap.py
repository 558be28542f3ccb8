"""KTAP version 1 (the kernel's Documentation/dev-tools/ktap.rst) from race reports.

One test per run (`ok`/`not ok N kernel.scheme.workload`, a directive from
the status table in harness/reports/status.py), its figures as diagnostic
lines before its result, and a nested subtest per operation (each caller op
and the unloader's), indented two spaces with its own version line and plan:
`ok` when the operation ran, `not ok` when it never did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..race.outcomes import RaceReport, RunResult, problem
from ..race.racer import OpStats
from ..util import safe_name, write_text
from .status import KTAP_RESULT, run_status
from .table import header

# What a KTAP test name keeps of a kernel spec (a path too), an op or a knob.
NAME_CHARS = "_.:/=+-"


def _name(text: str) -> str:
    return safe_name(text, keep=NAME_CHARS)


def _errors(errors: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "-"


def _line(ok: str, n: int, name: str, directive: str = "", reason: str = "") -> str:
    tail = f" # {directive}" + (f" {reason}" if reason else "") if directive else ""
    return f"{ok} {n} {name}{tail}"


def _op_lines(name: str, st: OpStats, n: int) -> list[str]:
    lat = st.latency_us
    figures = [f"# {name}: ok/total {st.ok}/{st.total}", f"# {name}: errors {_errors(st.errors)}"]
    if lat:
        figures.append(f"# {name}: p50/p99/max us " + "/".join(f"{lat.get(k, 0):.0f}" for k in ("p50", "p99", "max")))
    return figures + [_line("ok" if st.total else "not ok", n, _name(name))]


def run_lines(report: RaceReport, run: RunResult, n: int) -> list[str]:
    ops = [o for o in (*run.caller_ops, "delete_module") if o in run.ops]
    sub = ["KTAP version 1", f"1..{len(ops)}"]
    for i, o in enumerate(ops, 1):
        sub += _op_lines(o, run.ops[o], i)
    calls, dm = run.callers, run.op("delete_module")
    name = _name(f"{report.kernel_spec}.{run.scheme}.{run.workload}")
    diag = [
        f"# {name}: calls ok/total {calls.ok}/{calls.total}",
        f"# {name}: caller errors {_errors(calls.errors)}",
        f"# {name}: spurious {run.spurious_failures}",
        f"# {name}: met 1/2+ unloads {run.failed_by_unloads_met[1]}/{run.failed_by_unloads_met[2]}",
        f"# {name}: unloads (rmmod ok/total) {dm.ok}/{dm.total}, rmmod errors {_errors(dm.errors)}",
        f"# {name}: verdict {run.verdict.value}, control {run.control.value}",
    ]
    diag += [f"# {name}: splat {s.kind.value}: {s.title}" for s in run.splats[:5]]
    if run.console_log:
        diag.append(f"# {name}: console log {run.console_log}")
    status = run_status(run)
    ok, directive = KTAP_RESULT[status]
    why = problem(run) or ""
    reason = why if directive else ""
    if why and not directive:
        diag.append(f"# {name}: {why}")
    return ["  " + s for s in sub] + diag + [_line(ok, n, name, directive, reason.replace("#", ""))]


def render(reports: Sequence[RaceReport]) -> str:
    runs = [(rep, run) for rep in reports for run in rep.runs]
    lines = ["KTAP version 1", f"1..{len(runs)}"]
    lines += [f"# {header(rep)}" for rep in reports]
    for n, (rep, run) in enumerate(runs, 1):
        lines += run_lines(rep, run, n)
    return "\n".join(lines) + "\n"


def write(reports: Sequence[RaceReport], path: Path) -> None:
    write_text(path, render(reports))
