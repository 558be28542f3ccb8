"""Race results: the maths from role records to a run, the table and the JSON.

Pure functions, no guest: what a number in the report means is decided here.

A *spurious failure* is a lookup, mount or fsmount that returned an error
although its provider was installed in the guest the whole time and loadable
by `request_module`: the unloader reloads it every cycle and never removes the
file, so a scheme that let callers wait out the unload (and reload it) would
have served every one of them.  It is counted from the roles' own records:
the failures of those operations, by errno.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from .splat import Splat

if TYPE_CHECKING:
    from .racer import RoleResult

CALLER_OPS = ("lookup", "mount", "fsmount")
CRASH_KINDS = {"oops", "bug", "gpf", "panic", "invalid_opcode", "kasan", "kfence"}


@dataclass
class RunResult:
    """One scheme x workload in one guest."""

    scheme: str
    workload: str
    ops: dict[str, dict] = field(default_factory=dict)  # {op: {total, ok, errors}}
    latency_us: dict[str, dict] = field(default_factory=dict)  # {op: {p50, p90, p99, max}}
    spurious_failures: int = 0
    first_spurious_s: float | None = None  # seconds after the start
    failed_during_unload: int = 0
    splats: list[dict] = field(default_factory=list)  # [{kind, title}]
    verdict: str = ""
    note: str = ""
    seconds: float = 0.0
    repro: str = ""
    console_log: str = ""
    role_errors: list[str] = field(default_factory=list)


@dataclass
class RaceReport:
    kernel: str
    kernel_spec: str
    accel: str
    seed: int
    duration_s: float
    rcu_expedited: bool
    knobs: dict[str, int]
    reload: str
    runs: list[RunResult] = field(default_factory=list)

    def unexpected_splats(self) -> list[RunResult]:
        """Runs whose guest splatted although the scheme claims to be safe."""
        return [r for r in self.runs if r.splats and r.scheme != "unsafe"]


def _op_name(role: str, op: str) -> str:
    """fsmounter's mounts go through get_fs_type: keep them apart from mounter's."""
    if role == "fsmounter" and op in ("mount", "umount"):
        return "fs" + op
    return op


def verdict(run: RunResult) -> str:
    kinds = {s["kind"] for s in run.splats}
    if kinds & CRASH_KINDS or "died" in run.note or "lost" in run.note:
        return "crashed"
    if run.splats:
        return "warned"
    if "hang" in run.note:
        return "hung"
    if run.role_errors:
        return "error"
    unloads = run.ops.get("delete_module", {}).get("ok", 0)
    if unloads == 0:
        return "no-race"
    if run.spurious_failures:
        return "spurious"
    return "clean"


def summarise_run(scheme: str, workload: str, roles: list[RoleResult], splats: list[Splat],
                  note: str, repro: str, seconds: float) -> RunResult:
    from .racer import merge_ops

    renamed = [
        {_op_name(r.role, op): st for op, st in r.ops.items()} for r in roles]
    merged = merge_ops(renamed)
    run = RunResult(scheme=scheme, workload=workload, note=note, repro=repro, seconds=round(seconds, 2))
    for op, st in sorted(merged.items()):
        run.ops[op] = {"total": st.total, "ok": st.ok, "errors": dict(sorted(st.errors.items()))}
        run.latency_us[op] = {k: round(v, 1) for k, v in st.latency_us.items()}
        if op in CALLER_OPS:
            run.spurious_failures += st.total - st.ok
            run.failed_during_unload += st.failed_during_unload
            if st.first_failure_ms is not None:
                first = round(st.first_failure_ms / 1000, 3)
                run.first_spurious_s = min(first, run.first_spurious_s or first)
    run.role_errors = [f"{r.role}: {r.error}" for r in roles if r.error]
    run.splats = [{"kind": s.kind, "title": s.title} for s in splats]
    run.verdict = verdict(run)
    return run


def _errors(d: dict) -> str:
    return " ".join(f"{k}:{v}" for k, v in d.get("errors", {}).items()) or "-"


def render_table(report: RaceReport) -> str:
    """Side by side: per scheme and workload, ops, errnos, spurious, latency, splats."""
    head = (f"kernel {report.kernel} ({report.kernel_spec}), accel {report.accel}, seed {report.seed}, "
            f"{report.duration_s:g}s per run, knobs "
            f"{' '.join(f'{k}={v}' for k, v in report.knobs.items()) or '-'}, "
            f"rcu_expedited={int(report.rcu_expedited)}, reload={report.reload}")
    cols = ["scheme", "workload", "calls ok/total", "caller errors", "spurious", "rmmod ok/total",
            "rmmod errors", "call p50/p99/max us", "splats", "verdict"]
    rows = [cols]
    for r in report.runs:
        callers = [r.ops[o] for o in CALLER_OPS if o in r.ops]
        ok = sum(c["ok"] for c in callers)
        total = sum(c["total"] for c in callers)
        errs: dict[str, int] = {}
        for c in callers:
            for k, v in c["errors"].items():
                errs[k] = errs.get(k, 0) + v
        lat = next((r.latency_us[o] for o in CALLER_OPS if o in r.latency_us), {})
        dm = r.ops.get("delete_module", {"ok": 0, "total": 0})
        rows.append([
            r.scheme, r.workload, f"{ok}/{total}", _errors({"errors": errs}), str(r.spurious_failures),
            f"{dm['ok']}/{dm['total']}", _errors(dm),
            "/".join(f"{lat.get(k, 0):.0f}" for k in ("p50", "p99", "max")) if lat else "-",
            "; ".join(s["title"] for s in r.splats)[:60] or "-", r.verdict,
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = [head, ""]
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"{r.scheme}/{r.workload}: {r.note}" for r in report.runs if r.note]
    notes += [f"{r.scheme}/{r.workload}: {e}" for r in report.runs for e in r.role_errors]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
