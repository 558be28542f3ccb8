"""The guest-side racer: its static build, its command lines, and its JSON
turned into dataclasses.

The C source is `images/racer.c` (built by `guest.programs`); one process runs one role and prints
one JSON object on stdout (schema in `parse_role_output`).  Latencies are kept
in a log-linear histogram (buckets at most 1/128 wide) that the racer prints
too, so roles that share an operation merge exactly here: `merge_ops` adds the
histograms and recomputes the percentiles with the racer's own arithmetic
(`hist_index`, `hist_value`, `percentile_ns` mirror the C code).  Without
histograms (hand-made `OpStats`) the merge falls back to the worst value of
each percentile, an upper bound.

Since output format 2 a role also reports timeline events (`RoleEvents`):
the unloader's unload windows, a caller's failed calls (the first 20 000; the
count stays exact) and its calls completed per 100 ms, in microseconds since
the role's start, with that start on the guest's CLOCK_MONOTONIC so that the
host can put every role on one axis (`outcomes.Timeline`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import HarnessError
from ..guest.programs import RACER_PATH

PERCENTILES = ("p50", "p90", "p99", "max")
PERMILLE = {"p50": 500, "p90": 900, "p99": 990}
SUB_BITS = 7  # must match racer.c
HIST_BUCKETS = (1 << SUB_BITS) * 40

Hist = tuple[tuple[int, int], ...]  # sparse ((bucket index, count), ...), sorted by index


class Role(str, enum.Enum):
    """A racer role; the value is its name on the racer's command line and in its JSON."""

    __str__ = str.__str__  # "looker", not "Role.LOOKER", on every Python

    UNLOADER = "unloader"
    LOOKER = "looker"
    MOUNTER = "mounter"
    FSMOUNTER = "fsmounter"
    HOLDER = "holder"
    LOADER = "loader"
    # A generic caller of any module: --op KIND and its arguments (`race.ops`).
    CALLER = "caller"

    @property
    def caller(self) -> bool:
        """A workload's caller: it calls into the provider the unloaders unload."""
        return self in (Role.LOOKER, Role.MOUNTER, Role.FSMOUNTER, Role.CALLER)

    @property
    def loads(self) -> bool:
        """It loads the provider itself (finit_module of --ko, or modprobe)."""
        return self in (Role.UNLOADER, Role.LOADER)

    @property
    def mounts(self) -> bool:
        """It mounts a file system (--dir, --fstype)."""
        return self in (Role.MOUNTER, Role.FSMOUNTER)

    @property
    def takes_bus(self) -> bool:
        """A caller that can be pointed at a bus; fsmounter goes through get_fs_type, which knows none."""
        return self in (Role.LOOKER, Role.MOUNTER)

    @property
    def caller_op(self) -> str | None:
        """The operation a caller's calls are recorded as in reports (`op_name` of its call).
        None for CALLER, whose op decides: its calls are named by its kind (`RoleSpec.caller_op`)."""
        return {Role.LOOKER: "lookup", Role.MOUNTER: "mount", Role.FSMOUNTER: "fsmount"}.get(self)

    def op_name(self, op: str) -> str:
        """An operation of this role as reports name it: fsmounter's mounts go
        through get_fs_type, so they are kept apart from mounter's."""
        return "fs" + op if self is Role.FSMOUNTER and op in ("mount", "umount") else op

    @property
    def needs(self) -> tuple[str, ...]:
        """RoleSpec options the role cannot run without (a loading role: unless it modprobes)."""
        if self.mounts:
            return ("dir", "fstype")
        if self in (Role.LOOKER, Role.HOLDER):
            return ("ctl",)
        if self is Role.CALLER:
            return ("op",)
        return ("ko",) if self.loads else ()


ROLES: tuple[Role, ...] = tuple(Role)


def op_name(role: Role | None, op: str) -> str:
    """An op of a role's as reports name it (`Role.op_name`); a role-less result keeps the racer's name."""
    return role.op_name(op) if role is not None else op


# ---------------------------------------------------------------- histogram maths


def hist_index(ns: int, sub_bits: int = SUB_BITS) -> int:
    """Bucket of a latency in ns (racer.c `hist_index`)."""
    sub = 1 << sub_bits
    if ns < sub:
        return max(0, int(ns))
    shift = int(ns).bit_length() - 1 - sub_bits
    return min((shift + 1) * sub + ((int(ns) >> shift) - sub), HIST_BUCKETS - 1)


def hist_value(idx: int, sub_bits: int = SUB_BITS) -> int:
    """The ns a bucket stands for: its middle, exact for 1-ns buckets (racer.c `hist_value`)."""
    sub = 1 << sub_bits
    if idx < sub:
        return idx
    shift = idx // sub - 1
    return ((sub + idx % sub) << shift) + ((1 << shift) >> 1)


def percentile_ns(hist: Hist, permille: int, max_ns: float | None = None) -> float:
    """Nearest-rank percentile (rank = ceil(n * permille / 1000)) of a histogram,
    capped at the exact maximum when known; 0 for no samples."""
    n = sum(c for _, c in hist)
    if n == 0:
        return 0.0
    rank = max(1, (n * permille + 999) // 1000)
    seen = 0
    value = 0
    for idx, count in sorted(hist):
        seen += count
        if seen >= rank:
            value = hist_value(idx)
            break
    return float(min(value, max_ns)) if max_ns is not None else float(value)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of raw samples (p in 0..100); 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil without floats going astray
    return float(ordered[min(int(rank), len(ordered)) - 1])


def hist_of(samples_ns: Iterable[int]) -> Hist:
    """Histogram of raw ns samples, as the racer would have counted them."""
    counts: dict[int, int] = {}
    for v in samples_ns:
        i = hist_index(v)
        counts[i] = counts.get(i, 0) + 1
    return tuple(sorted(counts.items()))


def merge_hists(hists: Iterable[Hist]) -> Hist:
    counts: dict[int, int] = {}
    for h in hists:
        for i, c in h:
            counts[i] = counts.get(i, 0) + c
    return tuple(sorted((i, c) for i, c in counts.items() if c))


def latency_from_hist(hist: Hist, max_us: float) -> dict[str, float]:
    """p50/p90/p99/max in microseconds, exactly as the racer prints them (3 decimals)."""
    max_ns = round(max_us * 1000)
    out = {k: round(percentile_ns(hist, pm, max_ns) / 1000, 3) for k, pm in PERMILLE.items()}
    out["max"] = round(max_us, 3)
    return out


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class OpStats:
    total: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # errno name -> count
    failed_during_unload: int = 0  # failures that overlapped an unloader's delete..reload
    latency_us: dict[str, float] = field(default_factory=dict)  # p50 p90 p99 max
    first_failure_ms: float | None = None  # since the barrier
    hist: Hist = ()  # sparse log-linear latency histogram (ns buckets), () if unknown
    # Failures by how many unloads they overlapped: 0, 1, 2 or more (older racers: zeros).
    failed_by_unloads_met: tuple[int, int, int] = (0, 0, 0)
    hist_failed: Hist = ()  # the failed calls' latencies alone (format 2), () if unknown
    # Successes with the module live from the call's start to its end (format
    # 3); None: not known (an older racer or report).
    ok_live: int | None = None

    @property
    def failed(self) -> int:
        return self.total - self.ok

    @property
    def has_hist(self) -> bool:
        return sum(c for _, c in self.hist) == self.total

    @property
    def has_failed_hist(self) -> bool:
        return self.has_hist and sum(c for _, c in self.hist_failed) == self.failed

    @property
    def hist_ok(self) -> Hist:
        """The successful calls' latencies: every call's less the failed ones'."""
        failed = dict(self.hist_failed)
        return tuple((i, c - failed.get(i, 0)) for i, c in self.hist if c > failed.get(i, 0))


@dataclass(frozen=True)
class UnloadWindow:
    """One unload: delete_module begun, returned, and the reload done (ms)."""

    begin_ms: float
    deleted_ms: float
    reloaded_ms: float
    # ENOENT: the module was already gone (an earlier reload had failed).
    delete_error: str | None = None
    load_error: str | None = None  # the reload failed: the module stays absent
    module: str = ""  # which module (workloads with two unloaders)

    def shifted(self, ms: float, module: str) -> "UnloadWindow":
        return dataclasses.replace(
            self,
            begin_ms=round(self.begin_ms + ms, 3),
            deleted_ms=round(self.deleted_ms + ms, 3),
            reloaded_ms=round(self.reloaded_ms + ms, 3),
            module=module,
        )


@dataclass(frozen=True)
class CallFailure:
    start_ms: float
    end_ms: float
    errno: str

    def shifted(self, ms: float) -> "CallFailure":
        return CallFailure(round(self.start_ms + ms, 3), round(self.end_ms + ms, 3), self.errno)


@dataclass(frozen=True)
class CallEvents:
    """A caller's one call operation over time."""

    op: str
    failures: tuple[CallFailure, ...] = ()  # the first MAX_FAILURES, in order
    failures_total: int = 0  # exact
    bin_ms: int = 100
    done: tuple[int, ...] = ()  # calls completed (any outcome) per bin
    ok: tuple[int, ...] = ()  # of which succeeded


@dataclass(frozen=True)
class RoleEvents:
    start_ns: int  # the role's start on the guest's CLOCK_MONOTONIC
    windows: tuple[UnloadWindow, ...] = ()  # the unloader's, the first MAX_WINDOWS
    windows_total: int = 0
    calls: CallEvents | None = None  # a caller's (looker, mounter, fsmounter, holder)


@dataclass(frozen=True)
class RoleResult:
    role: Role | None  # None: parse_role_output was not told, and the output did not say
    name: str = ""
    duration_ms: int = 0
    iterations: int = 0
    ops: dict[str, OpStats] = field(default_factory=dict)
    error: str | None = None
    unload_generation: int = 0  # unload/reload cycles the barrier file saw
    events: RoleEvents | None = None  # None: an older racer, or no result
    hold_us: int = 0  # a held caller's longest hold (race.ops); 0: quick

    def __post_init__(self) -> None:
        if self.role is not None and not isinstance(self.role, Role):
            object.__setattr__(self, "role", Role(self.role))

    @classmethod
    def failed(cls, role: Role | str | None, error: str) -> "RoleResult":
        return cls(role=_role_or_none(role), error=error)


def _role_or_none(role: Role | str | None) -> Role | None:
    """A role named by a caller of parse_role_output; an unknown name is no role."""
    try:
        return None if role is None else Role(role)
    except ValueError:
        return None


def _met(value: object) -> tuple[int, int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return (0, 0, 0)
    a, b, c = (int(v) for v in value)
    return (a, b, c)


def _hist(hist_doc: Mapping) -> Hist:
    if hist_doc and int(hist_doc.get("sub_bits", SUB_BITS)) != SUB_BITS:
        raise HarnessError(f"racer histogram with sub_bits {hist_doc.get('sub_bits')}, expected {SUB_BITS}")
    return tuple(sorted((int(i), int(c)) for i, c in hist_doc.get("buckets", [])))


def _op(d: Mapping) -> OpStats:
    lat = d.get("latency_us") or {}
    hist = _hist(d.get("hist") or {})
    ff = d.get("first_failure_ms")
    return OpStats(
        total=int(d.get("total", 0)),
        ok=int(d.get("ok", 0)),
        errors={str(k): int(v) for k, v in (d.get("errors") or {}).items()},
        failed_during_unload=int(d.get("failed_during_unload", 0)),
        failed_by_unloads_met=_met(d.get("failed_by_unloads_met")),
        latency_us={k: float(lat.get(k, 0.0)) for k in PERCENTILES},
        first_failure_ms=None if ff is None else float(ff),
        hist=hist,
        hist_failed=_hist(d.get("hist_failed") or {}),
        ok_live=None if d.get("ok_live") is None else int(d["ok_live"]),
    )


def _name(value: object) -> str | None:
    return None if value is None else str(value)


def _events(d: Mapping | None) -> RoleEvents | None:
    """The racer's "events" object (times in us) with times in ms."""
    if not d:
        return None
    unloads = d.get("unloads") or {}
    windows = tuple(
        UnloadWindow(int(b) / 1000, int(e) / 1000, int(r) / 1000, _name(de), _name(le))
        for b, e, r, de, le in unloads.get("windows", [])
    )
    calls = None
    if d.get("calls"):
        c = d["calls"]
        calls = CallEvents(
            op=str(c["op"]),
            failures_total=int(c.get("failures_total", 0)),
            failures=tuple(CallFailure(int(t0) / 1000, int(t1) / 1000, str(e)) for t0, t1, e in c.get("failures", [])),
            bin_ms=int(c.get("bin_ms", 100)),
            done=tuple(int(n) for n in c.get("done", [])),
            ok=tuple(int(n) for n in c.get("ok", [])),
        )
    return RoleEvents(
        start_ns=int(d.get("start_ns", 0)),
        windows=windows,
        windows_total=int(unloads.get("total", len(windows))),
        calls=calls,
    )


def parse_role_output(text: str, role: Role | str | None = None, exit_status: int = 0, stderr: str = "") -> RoleResult:
    """The last line of `text` that parses as a JSON object, as a RoleResult.

    Never raises for bad output: a role that printed no such line (it was
    killed, the guest died, garbage) gives a RoleResult with `error` set
    ("no result (exit status N): <last stderr line>"); a negative
    `exit_status` means killed.  The racer's JSON:

        {"role", "name", "duration_ms" (since the barrier), "iterations",
         "unload_generation", "ops": {OP: {"total", "ok", "ok_live",
           "errors": {"ENODEV": n, ...}, "failed_during_unload",
           "failed_by_unloads_met": [n0, n1, n2_or_more],
           "latency_us": {"p50", "p90", "p99", "max"}, "first_failure_ms",
           "hist": {"sub_bits": 7, "buckets": [[index, count], ...]},
           "hist_failed": (the same, failed calls only)}},
         "events": {"start_ns",
           "unloads": {"total", "windows": [[begin_us, deleted_us, reloaded_us,
                                             delete_errno|null, load_errno|null], ...]},
           "calls": {"op", "failures_total", "failures": [[start_us, end_us, errno], ...],
                     "bin_ms": 100, "done": [n, ...], "ok": [n, ...]}},
         "hold_us" (only a held caller's), "error" (only on failure: "barrier timeout", ...)}

    Format 1 (no "format" key) has no "events" and no "hist_failed"; only
    format 3 has "ok_live" (successes with every unloaded module present from
    the call's start to its end).
    """
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(doc, dict):
            continue
        try:
            return RoleResult(
                role=Role(doc["role"]) if "role" in doc else _role_or_none(role),
                name=str(doc.get("name", "")),
                duration_ms=int(doc.get("duration_ms", 0)),
                iterations=int(doc.get("iterations", 0)),
                ops={str(k): _op(v) for k, v in (doc.get("ops") or {}).items()},
                error=doc.get("error"),
                unload_generation=int(doc.get("unload_generation", 0)),
                events=_events(doc.get("events")),
                hold_us=int(doc.get("hold_us", 0)),
            )
        except (TypeError, ValueError, AttributeError, KeyError, HarnessError) as e:
            return RoleResult.failed(role, f"malformed racer output: {e}")
    why = f"exit status {exit_status}" if exit_status >= 0 else "killed (oops or guest death)"
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("progress ")]
    detail = lines[-1] if lines else ""
    return RoleResult.failed(role, f"no result ({why}){': ' + detail if detail else ''}")


def _merge_two(cur: OpStats, st: OpStats) -> OpStats:
    errors = dict(cur.errors)
    for k, v in st.errors.items():
        errors[k] = errors.get(k, 0) + v
    firsts = [f for f in (cur.first_failure_ms, st.first_failure_ms) if f is not None]
    max_us = max(cur.latency_us.get("max", 0.0), st.latency_us.get("max", 0.0))
    if cur.has_hist and st.has_hist:
        hist = merge_hists((cur.hist, st.hist))
        latency = latency_from_hist(hist, max_us)
    else:
        hist = ()
        latency = {k: max(cur.latency_us.get(k, 0.0), st.latency_us.get(k, 0.0)) for k in PERCENTILES}
    both_failed = cur.has_failed_hist and st.has_failed_hist
    hist_failed = merge_hists((cur.hist_failed, st.hist_failed)) if both_failed else ()
    ok_live = None if cur.ok_live is None or st.ok_live is None else cur.ok_live + st.ok_live
    return OpStats(
        total=cur.total + st.total,
        ok=cur.ok + st.ok,
        ok_live=ok_live,
        errors=errors,
        failed_during_unload=cur.failed_during_unload + st.failed_during_unload,
        failed_by_unloads_met=_met([a + b for a, b in zip(cur.failed_by_unloads_met, st.failed_by_unloads_met)]),
        latency_us=latency,
        first_failure_ms=min(firsts, default=None),
        hist=hist,
        hist_failed=hist_failed,
    )


def merge_ops(per_role: Iterable[Mapping[str, OpStats]]) -> dict[str, OpStats]:
    """Sum counts per operation across roles.  Latency: max of max; the
    percentiles exactly from the summed histograms when every part has one,
    else the worst of each (an upper bound).  First failure: the earliest."""
    merged: dict[str, OpStats] = {}
    for ops in per_role:
        for name, st in ops.items():
            merged[name] = st if name not in merged else _merge_two(merged[name], st)
    return merged


# ---------------------------------------------------------------- command lines


@dataclass(frozen=True)
class RoleSpec:
    """One racer invocation.  None / False options are left out (racer defaults:
    --load finit, --duration-ms 10000, no count, --parties 1, --seed 1)."""

    role: Role  # a name is turned into its Role
    name: str
    ctl: str | None = None
    dir: str | None = None
    fstype: str | None = None
    data: str | None = None
    ko: str | None = None
    params: str | None = None
    load: str | None = None  # "finit" | "modprobe"
    unload: bool = False
    bus: int | None = None
    check_result: int | None = None
    duration_ms: int | None = None
    count: int | None = None
    pause_us: int | None = None
    jitter_us: int | None = None
    hold_us: int | None = None
    barrier: str | None = None
    parties: int | None = None
    seed: int | None = None
    progress: bool = False
    # The caller's op kind (--op) and its arguments, passed after "--" (see `race.ops`).
    op: str | None = None
    op_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            if self.role not in {r.value for r in Role}:
                raise HarnessError(f"unknown racer role {self.role!r}; one of: {', '.join(ROLES)}")
            object.__setattr__(self, "role", Role(self.role))
        if not self.name:
            raise HarnessError("a racer role needs a name")
        if self.load not in (None, "finit", "modprobe"):
            raise HarnessError(f"racer --load is finit or modprobe, not {self.load!r}")
        need = self.role.needs if not (self.role.loads and self.load == "modprobe") else ()
        missing = [n for n in need if getattr(self, n) is None]
        if missing:
            raise HarnessError(f"racer {self.role} needs " + ", ".join("--" + m for m in missing))
        if self.barrier is not None and self.parties is None:
            raise HarnessError("racer --barrier needs --parties")
        object.__setattr__(self, "op_args", tuple(str(a) for a in self.op_args))
        if self.role is not Role.CALLER and (self.op is not None or self.op_args):
            raise HarnessError(f"racer {self.role} takes no --op (only caller does)")

    @property
    def caller_op(self) -> str | None:
        """What this role's calls are recorded as: its role's, or a caller's op kind."""
        return self.op if self.role is Role.CALLER else self.role.caller_op

    def argv(self, racer_path: str | Path = RACER_PATH) -> list[str]:
        out = [str(racer_path), self.role.value]
        for f in fields(self):
            if f.name in ("role", "op_args"):
                continue
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if value is None or value is False:
                continue
            if value is True:
                out.append(flag)
            else:
                out += [flag, str(value)]
        return out + ["--", *self.op_args] if self.op_args else out

    def command(self, racer_path: str | Path = RACER_PATH) -> str:
        """The argv as one shell-quoted string (for SSH)."""
        return " ".join(shlex.quote(a) for a in self.argv(racer_path))
