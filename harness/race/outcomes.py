"""Race results: typed outcomes, the verdict, the exit status and the JSON.

Pure functions, no guest: what a number in the report means is decided here,
and so is what a run ended as.  Nothing here looks at English text.

A *spurious failure* is a lookup, mount or fsmount that returned an error
although its provider was installed in the guest the whole time and loadable
by `request_module`: the unloader reloads it every cycle and never removes the
file, so a scheme that let callers wait out the unload (and reload it) would
have served every one of them.  It is counted from the roles' own records:
the failures of those operations, by errno.
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Callable, Mapping, Sequence

from ..errors import HarnessError
from ..exitcodes import ExitStatus
from ..guest.snapshot import GuestStart
from ..guest.splat import Splat, SplatKind
from .kbuild import Knobs
from .racer import Hist, OpStats, Role, RoleResult, merge_ops, op_name
from .reach import RoleReach, role_reach
from .schemes import SCHEMES, WORKLOADS, Reach, bus_lock_class, control_must_fire, lock_order_control
from .timeline import Timeline, timeline

CALLER_OPS: tuple[str, ...] = tuple(op for op in (r.caller_op for r in Role) if op)  # lookup, mount, fsmount


class RunEnd(enum.Enum):
    """How the roles of one run ended, as the engine saw it."""

    COMPLETED = "completed"  # every role's channel closed with the guest still up
    GUEST_DIED = "guest died"  # the QEMU process exited
    SSH_LOST = "SSH lost"  # QEMU runs but the connection is gone
    HUNG = "hung"  # roles still running long after their deadline


class Verdict(enum.Enum):
    """One run's verdict.  Precedence: the first member whose condition holds
    (see `fold_verdict`), so a crash outranks a warning outranks a hang."""

    # The guest splatted while booting, or its lockdep was already off: the run
    # proves nothing, whatever it saw.  Never the run's finding.
    BROKEN = "broken guest"
    CRASHED = "crashed"  # a crash splat (SplatKind.crash: oops, BUG, GPF, panic, KASAN...), or the guest/SSH died
    WARNED = "warned"  # any other splat: WARNING, lockdep, hung task, RCU stall, KCSAN, UBSAN
    HUNG = "hung"  # roles did not finish
    ERROR = "error"  # a role produced no result, or an unusable one
    NO_RACE = "no-race"  # the unloader never unloaded: nothing was raced
    # A caller role none of whose calls succeeded while the module was live:
    # it never reached the module, so a clean end says nothing of it.
    UNREACHED = "unreached"
    SPURIOUS = "spurious"  # callers failed although the provider could be loaded
    CLEAN = "clean"


class Control(enum.Enum):
    """What a control run showed (NONE for the schemes that claim safety).

    The negative control (`unsafe`) must crash.  The lock-order control
    (`rwsem-unsorted` in a workload whose providers registered on two buses in
    opposite orders) must make lockdep report the bus rwsems; without lockdep
    it fires only if the ABBA really deadlocks (a hung task, or roles that
    never finish), and a run that missed the window proves nothing either way.
    """

    NONE = "-"
    FIRED = "fired"  # it crashed / lockdep named the bus rwsems / it deadlocked, as it may
    MISSED = "missed"  # it must fire here and did not: the run proved nothing
    BY_DESIGN = "clean by design"  # this workload never calls through ops
    NOT_HIT = "not hit, no lockdep"  # no lockdep and no deadlock this time: possible, not a failure
    NO_SHADOW = "unseen, no KASAN"  # a use-after-free read only KASAN's shadow shows; this kernel has none


def fold_verdict(
    end: RunEnd,
    splats: Sequence[Splat],
    role_errors: Sequence[str],
    unloads: int,
    spurious: int,
    broken: bool = False,
    unreached: bool = False,
) -> Verdict:
    """The verdict's precedence, in one place.  `broken`: the guest was broken
    before the run began (`GuestState.broken`); `unreached`: a caller role
    never succeeded while the module was live (`RoleReach.reached`)."""
    if broken:
        return Verdict.BROKEN
    if any(s.crash for s in splats) or end in (RunEnd.GUEST_DIED, RunEnd.SSH_LOST):
        return Verdict.CRASHED
    if splats:
        return Verdict.WARNED
    if end is RunEnd.HUNG:
        return Verdict.HUNG
    if role_errors:
        return Verdict.ERROR
    if unloads == 0:
        return Verdict.NO_RACE
    if unreached:
        return Verdict.UNREACHED
    if spurious:
        return Verdict.SPURIOUS
    return Verdict.CLEAN


def fold_control(
    scheme: str,
    workload: str,
    verdict: Verdict,
    splats: Sequence[Splat] = (),
    end: RunEnd = RunEnd.COMPLETED,
    lockdep: bool = False,
    kasan: bool = False,
) -> Control:
    """`lockdep`: the kernel has CONFIG_PROVE_LOCKING; `kasan`: CONFIG_KASAN."""
    row, wl = SCHEMES[scheme], WORKLOADS[workload]
    if verdict is Verdict.BROKEN:
        return Control.NONE  # nothing to judge: problem() says why
    if lock_order_control(row, wl):
        names = [bus_lock_class(row.prefix, b) for b in range(wl.buses)]
        if any(s.kind is SplatKind.LOCKDEP and all(n in "\n".join(s.lines) for n in names) for s in splats):
            return Control.FIRED
        if lockdep:
            return Control.MISSED
        deadlocked = end is RunEnd.HUNG or any(s.kind is SplatKind.HUNG_TASK for s in splats)
        return Control.FIRED if deadlocked else Control.NOT_HIT
    if not row.negative_control:
        return Control.NONE
    if not control_must_fire(row, wl):
        return Control.BY_DESIGN
    if row.reach is Reach.STATE:
        if not kasan:
            return Control.NO_SHADOW
        return Control.FIRED if any(s.kind is SplatKind.KASAN for s in splats) else Control.MISSED
    return Control.FIRED if verdict is Verdict.CRASHED else Control.MISSED


def fold_target_control(target: TargetInfo, verdict: Verdict) -> Control:
    """A target that breaks the golden rule must crash; any other has no control."""
    if not target.control or verdict is Verdict.BROKEN:
        return Control.NONE
    return Control.FIRED if verdict is Verdict.CRASHED else Control.MISSED


def control_label(run: "RunResult") -> str:
    """Which control a run is, in words for the table."""
    if run.target is not None:
        return "control"
    row, wl = SCHEMES[run.scheme], WORKLOADS[run.workload]
    return "lock-order control" if lock_order_control(row, wl) else "control"


# Verdicts that fail a run of a scheme that claims to be safe.
_SAFE_SCHEME_FAILS = frozenset(
    {Verdict.CRASHED, Verdict.WARNED, Verdict.HUNG, Verdict.ERROR, Verdict.NO_RACE, Verdict.UNREACHED}
)
# A negative control may crash, warn or hang anywhere; it must still have raced.
_CONTROL_FAILS = frozenset({Verdict.ERROR, Verdict.NO_RACE, Verdict.UNREACHED})
# A lock-order control may warn or hang only by firing (lockdep, a deadlock); a crash is a finding.
_LOCK_ORDER_FAILS = frozenset({Verdict.CRASHED, Verdict.ERROR, Verdict.NO_RACE, Verdict.UNREACHED})


def end_text(run: "RunResult") -> str:
    return run.end.value + (f": {run.end_detail}" if run.end_detail else "")


def problem(run: "RunResult") -> str | None:
    """Why this run fails the race (exit status 1), or None when it does not."""
    where = f"{run.scheme}/{run.workload}"
    if run.verdict is Verdict.BROKEN:
        return f"{where}: broken guest: {run.guest.why_broken()}; console log: {run.console_log}"
    lock_order = run.target is None and lock_order_control(SCHEMES[run.scheme], WORKLOADS[run.workload])
    if run.control is Control.MISSED and lock_order:
        return (
            f"{where}: lock-order control missed: the kernel has lockdep and no lockdep report "
            f"named the bus rwsems (verdict {run.verdict.value})"
        )
    if run.control is Control.MISSED and run.target is None and SCHEMES[run.scheme].reach is Reach.STATE:
        return (
            f"{where}: negative control missed: the kernel has KASAN and it reported no bad access "
            f"(verdict {run.verdict.value}), so this run did not show that KASAN is watching"
        )
    if run.control is Control.MISSED:
        return (
            f"{where}: negative control missed: no crash (verdict {run.verdict.value}), so this "
            "run did not show that the harness can see one"
        )
    if lock_order:
        fails = run.verdict in _LOCK_ORDER_FAILS or (
            run.verdict in (Verdict.WARNED, Verdict.HUNG) and run.control is not Control.FIRED
        )
    elif run.control is not Control.NONE:
        fails = run.verdict in _CONTROL_FAILS
    else:
        fails = run.verdict in _SAFE_SCHEME_FAILS
    if not fails:
        return None
    module = "module" if run.target else "provider"
    why = {
        Verdict.NO_RACE: f"the unloader never unloaded the {module}: nothing was raced",
        Verdict.UNREACHED: "; ".join(
            f"{r.label}: no call succeeded while the {module} was loaded ({errors_text(r.errors)})"
            for r in run.reach
            if not r.reached
        ),
        Verdict.ERROR: "; ".join(run.role_errors),
    }.get(run.verdict, "")
    if run.end is not RunEnd.COMPLETED:
        why = "; ".join(x for x in (end_text(run), why) if x)
    titles = "; ".join(s.title for s in run.splats[:3])
    return f"{where}: {run.verdict.value}" + "".join(f" ({x})" for x in (why, titles) if x)


@dataclass(frozen=True)
class GuestState:
    """What the guest was like around a run: what its boot showed, and on a
    kernel with lockdep whether lockdep was still checking (its
    `debug_locks`, which a first report or a taint turns off for good)."""

    boot_splats: tuple[Splat, ...] = ()
    debug_locks_before: bool | None = None  # None: no lockdep, or not read
    debug_locks_after: bool | None = None

    @property
    def broken(self) -> bool:
        return bool(self.boot_splats) or self.debug_locks_before is False

    def why_broken(self) -> str:
        if self.boot_splats:
            return "its boot showed " + "; ".join(s.title for s in self.boot_splats[:3])
        if self.debug_locks_before is False:
            return "lockdep was already off (debug_locks 0) when the run began"
        return ""

    def to_json(self) -> dict[str, Any]:
        return {
            "boot_splats": [splat_json(s) for s in self.boot_splats],
            "debug_locks": [self.debug_locks_before, self.debug_locks_after],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> "GuestState":
        if not d:
            return cls()
        before, after = d.get("debug_locks") or (None, None)
        return cls(tuple(splats_from_json(d.get("boot_splats", []))), before, after)


def splat_json(s: Splat) -> dict[str, Any]:
    """A splat in the JSON report: its kind, title and console lines (and
    the lines with file:line, where it was symbolized)."""
    doc: dict[str, Any] = {"kind": s.kind.value, "title": s.title, "lines": list(s.lines)}
    if s.decoded:
        doc["decoded"] = list(s.decoded)
    return doc


def splats_from_json(items: Sequence[Mapping[str, Any]]) -> list[Splat]:
    """`splat_json`'s inverse: the modules are read again from the lines;
    where the lines were in their console log is not kept (`Splat.start_line`)."""
    return [
        replace(
            Splat.from_lines(SplatKind(s["kind"]), s["title"], tuple(s["lines"])), decoded=tuple(s.get("decoded", ()))
        )
        for s in items
    ]


LOCKDEP_WENT_OFF = (
    "guest: lockdep turned itself off during the run (debug_locks 0) with no report the "
    "harness recognised: its lockdep-clean result means nothing"
)


@dataclass(frozen=True)
class TargetInfo:
    """What makes a run a target race (race/targets.py): the module unloaded,
    the caller operations' names in the racer's output, and whether it is a
    negative control that must crash."""

    module: str
    caller_ops: tuple[str, ...]
    control: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "caller_ops": list(self.caller_ops), "control": self.control}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> "TargetInfo | None":
        return None if not d else cls(str(d["module"]), tuple(d["caller_ops"]), bool(d.get("control")))


@dataclass(frozen=True)
class Replay:
    """What a run did in its guest, as a user would type it: the modules it
    brought, the files its setup wrote, its setup's commands and the racer
    command lines started together.  `export` turns it into a reproducer
    that runs without the harness."""

    release: str  # the kernel it needs (uname -r)
    modules: tuple[str, ...] = ()  # host paths of the .ko files installed under extra/
    kmods: tuple[str, ...] = ()  # the kernel's own modules its guest held
    files: tuple[tuple[str, str], ...] = ()  # (guest path, text) its setup wrote
    setup: tuple[str, ...] = ()  # its setup's shell commands, in order
    roles: tuple[str, ...] = ()  # racer command lines, started together
    barrier: str = ""  # the roles' start barrier, removed before they start

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "modules": list(self.modules),
            "kmods": list(self.kmods),
            "files": [list(f) for f in self.files],
            "setup": list(self.setup),
            "roles": list(self.roles),
            "barrier": self.barrier,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> "Replay | None":
        if not d:
            return None
        return cls(
            release=str(d["release"]),
            modules=tuple(d.get("modules", ())),
            kmods=tuple(d.get("kmods", ())),
            files=tuple((str(a), str(b)) for a, b in d.get("files", ())),
            setup=tuple(d.get("setup", ())),
            roles=tuple(d.get("roles", ())),
            barrier=str(d.get("barrier", "")),
        )


@dataclass(frozen=True)
class MemoryDump:
    """The guest's memory after a run (`race --dump`): an ELF vmcore and what
    reads it, or why there is none."""

    vmcore: str = ""
    vmlinux: str = ""  # the kernel with its symbols (and DWARF, where built with it)
    modules: tuple[str, ...] = ()  # the run's own .ko files
    bytes: int = 0
    seconds: float = 0.0
    note: str = ""  # why no vmcore, or what is missing to read it

    def to_json(self) -> dict[str, Any]:
        return {
            "vmcore": self.vmcore,
            "vmlinux": self.vmlinux,
            "modules": list(self.modules),
            "bytes": self.bytes,
            "seconds": self.seconds,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> "MemoryDump | None":
        if not d:
            return None
        return cls(
            vmcore=str(d.get("vmcore", "")),
            vmlinux=str(d.get("vmlinux", "")),
            modules=tuple(d.get("modules", ())),
            bytes=int(d.get("bytes", 0)),
            seconds=float(d.get("seconds", 0.0)),
            note=str(d.get("note", "")),
        )


@dataclass
class RunResult:
    """One scheme x workload in one guest, or one target race (`target` set:
    `scheme` is then the target's name and `workload` its operations)."""

    scheme: str
    workload: str
    end: RunEnd = RunEnd.COMPLETED
    end_detail: str = ""
    ops: dict[str, OpStats] = field(default_factory=dict)
    spurious_failures: int = 0
    first_spurious_s: float | None = None  # seconds after the start
    failed_during_unload: int = 0
    # Spurious failures by the unloads they overlapped: 0, 1, 2 or more.  A
    # lookup that meets a second unload within one request_module round trip
    # fails even under rwsem-deferred (the seed's lookup retries once).
    failed_by_unloads_met: tuple[int, int, int] = (0, 0, 0)
    splats: list[Splat] = field(default_factory=list)
    role_errors: list[str] = field(default_factory=list)
    verdict: Verdict = Verdict.CLEAN
    control: Control = Control.NONE
    seconds: float = 0.0
    repro: str = ""
    console_log: str = ""
    timeline: Timeline | None = None  # unload windows, failed calls, call rate
    guest_start: GuestStart | None = None  # restored or cold, and why
    guest: GuestState = field(default_factory=GuestState)
    target: TargetInfo | None = None
    reach: tuple[RoleReach, ...] = ()  # per caller role
    replay: Replay | None = None  # what it did in its guest (export)
    dump: MemoryDump | None = None  # its guest's memory (race --dump)

    @property
    def caller_ops(self) -> tuple[str, ...]:
        """The operations its callers' calls are recorded as."""
        return self.target.caller_ops if self.target else CALLER_OPS

    def op(self, name: str) -> OpStats:
        """Counts of one operation; all zero when it never ran."""
        return self.ops.get(name, OpStats())

    @property
    def unloads(self) -> int:
        return self.op("delete_module").ok

    @property
    def callers(self) -> OpStats:
        """Every caller operation (lookup, mount, fsmount; a target's ops) together."""
        merged = merge_ops({"calls": self.ops[o]} for o in self.caller_ops if o in self.ops)
        return merged.get("calls", OpStats())

    @property
    def first_splat_ms(self) -> float | None:
        """When its first splat was printed, on the timeline's axis (ms since
        the roles started): how long the race took to catch it."""
        if not self.splats or self.timeline is None:
            return None
        at = self.splats[0].uptime_s
        return None if at is None else self.timeline.at_ms(at)

    def to_json(self) -> dict[str, Any]:
        first = self.first_splat_ms
        return {
            "scheme": self.scheme,
            "workload": self.workload,
            "end": self.end.value,
            "end_detail": self.end_detail,
            "verdict": self.verdict.value,
            "control": self.control.value,
            "problem": problem(self),
            "ops": {k: op_json(v) for k, v in sorted(self.ops.items())},
            "spurious_failures": self.spurious_failures,
            "first_spurious_s": self.first_spurious_s,
            "failed_during_unload": self.failed_during_unload,
            "failed_by_unloads_met": list(self.failed_by_unloads_met),
            "splats": [splat_json(s) for s in self.splats],
            "first_splat_ms": first,
            "unloads_before_splat": self.timeline.unloads_before(first)
            if self.timeline and first is not None
            else None,
            "role_errors": self.role_errors,
            "seconds": self.seconds,
            "repro": self.repro,
            "console_log": self.console_log,
            "guest_start": self.guest_start.to_json() if self.guest_start else None,
            "guest": self.guest.to_json(),
            "events": self.timeline.to_json() if self.timeline else None,
            "target": self.target.to_json() if self.target else None,
            "reach": [r.to_json() for r in self.reach],
            "replay": self.replay.to_json() if self.replay else None,
            "dump": self.dump.to_json() if self.dump else None,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RunResult":
        met = d.get("failed_by_unloads_met") or (0, 0, 0)
        start = d.get("guest_start")
        return cls(
            scheme=d["scheme"],
            workload=d["workload"],
            end=RunEnd(d["end"]),
            end_detail=d.get("end_detail", ""),
            ops={str(k): op_from_json(v) for k, v in d["ops"].items()},
            spurious_failures=int(d["spurious_failures"]),
            first_spurious_s=d.get("first_spurious_s"),
            failed_during_unload=int(d.get("failed_during_unload", 0)),
            failed_by_unloads_met=(int(met[0]), int(met[1]), int(met[2])),
            splats=splats_from_json(d.get("splats", [])),
            role_errors=list(d.get("role_errors", [])),
            verdict=Verdict(d["verdict"]),
            control=Control(d["control"]),
            seconds=float(d.get("seconds", 0.0)),
            repro=d.get("repro", ""),
            console_log=d.get("console_log", ""),
            timeline=Timeline.from_json(d.get("events")),
            guest_start=None if start is None else GuestStart.from_json(start),
            guest=GuestState.from_json(d.get("guest")),
            target=TargetInfo.from_json(d.get("target")),
            reach=tuple(RoleReach.from_json(r) for r in d.get("reach") or ()),
            replay=Replay.from_json(d.get("replay")),
            dump=MemoryDump.from_json(d.get("dump")),
        )


def op_json(st: OpStats) -> dict[str, Any]:
    return {
        "total": st.total,
        "ok": st.ok,
        "errors": dict(sorted(st.errors.items())),
        "failed_during_unload": st.failed_during_unload,
        "failed_by_unloads_met": list(st.failed_by_unloads_met),
        "latency_us": st.latency_us,
        "ok_live": st.ok_live,
        "first_failure_ms": st.first_failure_ms,
        "hist": [list(b) for b in st.hist],
        "hist_failed": [list(b) for b in st.hist_failed],
    }


def _hist_from_json(buckets: Sequence[Sequence[int]] | None) -> Hist:
    return tuple(sorted((int(i), int(c)) for i, c in buckets or ()))


def op_from_json(d: Mapping[str, Any]) -> OpStats:
    """`op_json`'s inverse."""
    met = d.get("failed_by_unloads_met") or (0, 0, 0)
    ff = d.get("first_failure_ms")
    return OpStats(
        total=int(d["total"]),
        ok=int(d["ok"]),
        errors={str(k): int(v) for k, v in d["errors"].items()},
        failed_during_unload=int(d.get("failed_during_unload", 0)),
        latency_us={str(k): float(v) for k, v in (d.get("latency_us") or {}).items()},
        first_failure_ms=None if ff is None else float(ff),
        hist=_hist_from_json(d.get("hist")),
        failed_by_unloads_met=(int(met[0]), int(met[1]), int(met[2])),
        hist_failed=_hist_from_json(d.get("hist_failed")),
        ok_live=None if d.get("ok_live") is None else int(d["ok_live"]),
    )


@dataclass
class RaceReport:
    kernel: str
    kernel_spec: str  # the spec, or a local tree's path
    accel: str
    seed: int
    duration_s: float
    rcu_expedited: bool
    knobs: Knobs
    reload: str
    contention: int = 0  # host CPU hogs running during every run
    lockdep: bool = False  # the kernel has CONFIG_PROVE_LOCKING
    kasan: bool = False  # the kernel has CONFIG_KASAN
    kernel_describe: str = ""  # where the kernel comes from: "Debian 6.1.192-3", "build tree, git v6.12.1"
    # Why its splats' frames are function+offset, not file:line ("" when
    # they were decoded, or when nothing splatted).
    frames_note: str = ""
    # The run under way (scheme/workload) when Ctrl-C or SIGTERM stopped the
    # race: the runs before it are whole, it and the rest are not in the report.
    interrupted: str = ""
    runs: list[RunResult] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [p for p in map(problem, self.runs) if p]

    def to_json(self) -> dict[str, Any]:
        """The fields by name in their order (knobs as a plain object), then the
        exit status and problems, then the runs."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "runs"}
        out["knobs"] = dict(self.knobs)
        return {
            **out,
            "exit_status": int(exit_status([self])),
            "problems": self.problems(),
            "runs": [r.to_json() for r in self.runs],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RaceReport":
        """`to_json`'s inverse; a field with a default may be missing (older reports)."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "knobs":
                kw[f.name] = Knobs({str(k): int(v) for k, v in d["knobs"].items()})
            elif f.name == "runs":
                kw[f.name] = [RunResult.from_json(x) for x in d["runs"]]
            elif f.name in d or f.default is MISSING:
                kw[f.name] = _SCALARS[str(f.type)](d[f.name])
        return cls(**kw)


_SCALARS: dict[str, Callable[[Any], Any]] = {"str": str, "int": int, "float": float, "bool": bool}


def stopped_report(e: BaseException) -> RaceReport | None:
    """The runs a race had done when `e` (Ctrl-C, SIGTERM) stopped it, if any."""
    report = getattr(e, "race_report", None)
    return report if isinstance(report, RaceReport) else None


def exit_status(reports: Sequence[RaceReport]) -> ExitStatus:
    """OK only when every run raced and showed what its scheme claims."""
    return ExitStatus.FINDINGS if any(r.problems() for r in reports) else ExitStatus.OK


def summarise_run(
    scheme: str,
    workload: str,
    roles: Sequence[RoleResult],
    splats: Sequence[Splat],
    end: RunEnd,
    end_detail: str,
    repro: str,
    seconds: float,
    lockdep: bool = False,
    kasan: bool = False,
    guest: GuestState = GuestState(),
    target: TargetInfo | None = None,
) -> RunResult:
    """A target race's caller failures are facts (the module was gone), not
    spurious failures: only how many overlapped unloads is counted."""
    merged = merge_ops({op_name(r.role, op): st for op, st in r.ops.items()} for r in roles)
    run = RunResult(
        scheme=scheme,
        workload=workload,
        end=end,
        end_detail=end_detail,
        ops=dict(sorted(merged.items())),
        repro=repro,
        seconds=round(seconds, 2),
        splats=list(splats),
        role_errors=[f"{r.role}: {r.error}" for r in roles if r.error],
        timeline=timeline(roles),
        guest=guest,
        target=target,
        reach=role_reach(roles),
    )
    if not splats and guest.debug_locks_before and guest.debug_locks_after is False:
        run.role_errors.append(LOCKDEP_WENT_OFF)
    for op in run.caller_ops:
        st = run.ops.get(op)
        if st is None:
            continue
        if target is None:
            run.spurious_failures += st.failed
        run.failed_during_unload += st.failed_during_unload
        a, b, c = (x + y for x, y in zip(run.failed_by_unloads_met, st.failed_by_unloads_met))
        run.failed_by_unloads_met = (a, b, c)
        if st.first_failure_ms is not None:
            first = round(st.first_failure_ms / 1000, 3)
            run.first_spurious_s = min(first, run.first_spurious_s or first)
    run.verdict = fold_verdict(
        end,
        run.splats,
        run.role_errors,
        run.unloads,
        run.spurious_failures,
        broken=guest.broken,
        unreached=not all(r.reached for r in run.reach),
    )
    run.control = (
        fold_target_control(target, run.verdict)
        if target is not None
        else fold_control(scheme, workload, run.verdict, run.splats, end, lockdep, kasan)
    )
    return run


def errors_text(errors: dict[str, int]) -> str:
    """Errno counts as `ENODEV:3 ENOENT:1`, or `-`."""
    return " ".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "-"


# ---------------------------------------------------------------- JSON back into reports (to_json's inverse)


def reports_from_json(doc: Any) -> list[RaceReport]:
    """The RaceReports of a JSON report (one object, or a list for several
    kernels), to draw its page again; a bad document is a HarnessError."""
    try:
        return [RaceReport.from_json(r) for r in (doc if isinstance(doc, list) else [doc])]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise HarnessError(f"not a race JSON report: {type(e).__name__}: {e}") from None
