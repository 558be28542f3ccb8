"""Find kernel crash reports ("splats") in a guest console log.

Modelled on syzkaller's pkg/report: one table of header regexes (``HEADERS``)
decides what starts a report, its kind and its title; everything else here is
plumbing that copes with real serial logs (``\\r``, printk timestamps with or
without ``[ T123]``/``[ C1]`` caller ids, serial noise glued in front of a
timestamp, lines interleaved from other CPUs).

Grouping rules (tested in tests/unit/test_splat.py):

* An ``Oops:``/``Internal error: Oops`` or ``invalid opcode:`` line printed while
  a report from the same task/CPU is still open is part of that report (the
  kernel prints "BUG: unable to handle page fault" / "kernel BUG at" first and
  the Oops/invalid-opcode line second); on its own it starts a report.
* ``Kernel panic - not syncing: ...`` is folded into the report it ends
  (inside it, or within 5 lines after its ``---[ end trace``); the record's
  ``panicked`` property then says so. A panic with no report before it
  (e.g. "VFS: Unable to mount root fs") is a record of kind ``panic``.
* Lockdep reports print ``WARNING:``/``BUG:`` headers; they get kind
  ``lockdep``, never ``warning``.
* When the log carries caller ids, a report only collects lines from the
  task/CPU that printed its header, so another CPU's lines do not end or
  pollute it. Lines without a timestamp in a timestamped log (user-space
  output on the same serial port) are ignored.
* A report ends at ``---[ end trace ...]---`` / ``---[ end Kernel panic``
  (included), ``Kernel Offset:`` / ``Rebooting in`` (excluded), the closing
  ``=====`` of a sanitizer report, the next report header from the same
  task/CPU, a shell or login prompt, or after ``MAX_LINES`` lines.

To support a new report format, add one row to ``HEADERS``, saying whether its
kind is a crash or a warning (a ``SplatKind`` member for a new kind).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

__all__ = ["Splat", "SplatKind", "KINDS", "HEADERS", "parse", "parse_file", "new_splats"]

MAX_LINES = 200
PANIC_FOLD_WINDOW = 5  # lines after "---[ end trace" in which a panic still belongs


class SplatKind(str, enum.Enum):
    """What a report is; the value is the name in reports and JSON.  Whether
    a kind is a crash or a warning is said by its rows in ``HEADERS``
    (``SplatKind.crash``)."""

    __str__ = str.__str__  # "kasan", not "SplatKind.KASAN", on every Python

    OOPS = "oops"
    BUG = "bug"
    GPF = "gpf"
    INVALID_OPCODE = "invalid_opcode"
    PANIC = "panic"
    KASAN = "kasan"
    KFENCE = "kfence"
    KMSAN = "kmsan"
    KCSAN = "kcsan"
    UBSAN = "ubsan"
    WARNING = "warning"
    LOCKDEP = "lockdep"
    LOCKUP = "lockup"
    RCU_STALL = "rcu_stall"
    HUNG_TASK = "hung_task"
    OOM = "oom"

    @property
    def crash(self) -> bool:
        """A crash (the run's verdict: crashed), else a warning (warned)."""
        return _CRASH[self]


@dataclass(frozen=True)
class Splat:
    """One crash report found in a console log.

    ``start_line`` is the 0-based index of the header line in the log split on
    "\\n". ``lines`` are the raw log lines (without "\\r"), timestamps kept.
    A ``kind`` given as its name is turned into its ``SplatKind``.
    """

    kind: SplatKind
    title: str
    lines: tuple[str, ...]
    modules: tuple[str, ...]
    last_unloaded: Optional[str]
    # Where the report was in the console log it came from: not the report
    # itself, and not kept in JSON reports, so two equal reports may differ here.
    start_line: int = field(compare=False)
    # The lines again with file:line on each frame (symbolize.py), when the
    # kernel's debug info was there to say; () otherwise.
    decoded: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, SplatKind):
            object.__setattr__(self, "kind", SplatKind(self.kind))

    @classmethod
    def from_lines(cls, kind: SplatKind, title: str, lines: Sequence[str], start_line: int = 0) -> "Splat":
        """A report rebuilt from its kind, title and lines (what a JSON report
        keeps): the modules are read from the lines again."""
        mods, last = _modules([ln.body for ln in _split("\n".join(lines))])
        return cls(kind, title, tuple(lines), mods, last, start_line)

    @property
    def crash(self) -> bool:
        return self.kind.crash

    @property
    def uptime_s(self) -> float | None:
        """The printk time of its first timestamped line (seconds since boot)."""
        for line in self.lines:
            m = _UPTIME.search(line)
            if m:
                return float(m.group(1))
        return None

    @property
    def panicked(self) -> bool:
        """True if the kernel panicked as part of this report."""
        return any("Kernel panic - not syncing" in ln for ln in self.lines)


# --------------------------------------------------------------------------
# Title helpers. Each gets the header match and the bodies (timestamps
# stripped) of the record's lines, so titles can use the RIP or the stack.

_RIP_RES = (
    re.compile(r"\bRIP: [0-9a-f]{4}:(?:\[<[0-9a-f]+>\]\s*)*([A-Za-z_][\w.]*)\+0x"),
    re.compile(r"\bRIP: ([A-Za-z_][\w.]*)\+0x"),  # old "RIP: func+0x.. RSP: ..."
    re.compile(r"^\s*IP: (?:\[<[0-9a-f]+>\]\s*)?([A-Za-z_][\w.]*)\+0x"),  # 4.x "IP:"
    re.compile(r"^\s*pc : ([A-Za-z_][\w.]*)\+0x"),  # arm64
    re.compile(r"^\s*PC is at ([A-Za-z_][\w.]*)\+0x"),  # arm32
    re.compile(r"^\s*NIP \[[0-9a-f]+\] ([A-Za-z_][\w.]*)\+0x"),  # powerpc
)
_FRAME_RES = (
    re.compile(r"^\s*(?:\[<[0-9a-f]+>\]\s*)?([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+"),
    re.compile(r"^\s*\[<[0-9a-f]+>\] \(([A-Za-z_][\w.]*)\) from"),  # arm32 backtrace
)
_TRACE_START = re.compile(r"^\s*(Call Trace|Call trace|Backtrace|stack backtrace):?")
# Frames that say "waiting", not "who waited": skipped when naming hangs.
_SCHED_FRAMES = re.compile(
    r"^(__switch_to|__schedule|schedule\w*|preempt_schedule\w*|io_schedule\w*|"
    r"context_switch|__wait_for_common|wait_for_common\w*|wait_for_completion\w*|"
    r"__mutex_lock\w*|mutex_lock\w*|rwsem_\w+|down_\w+|__down\w*|"
    r"folio_wait\w*|__folio_lock\w*|wait_on_page\w*|__lock_page\w*|"
    r"rcu_\w+|__flush_work|flush_work|kthread|ret_from_fork\w*)$"
)


def _rip_func(bodies: Sequence[str]) -> Optional[str]:
    """Function the faulting CPU was in, from the register dump."""
    for b in bodies:
        for rx in _RIP_RES:
            m = rx.search(b)
            if m:
                return m.group(1)
    return None


def _first_frame(bodies: Sequence[str], skip: Optional[re.Pattern] = None) -> Optional[str]:
    """First reliable stack frame after "Call Trace:", skipping ``skip`` names."""
    in_trace = False
    for b in bodies:
        if _TRACE_START.match(b):
            in_trace = True
            continue
        if not in_trace or b.lstrip().startswith("?"):
            continue
        for rx in _FRAME_RES:
            m = rx.match(b)
            if m:
                name = m.group(1)
                base = name.split(".")[0]  # drop .cold/.isra/.constprop suffixes
                if base.startswith("__pfx_") or (skip is not None and skip.match(base)):
                    break
                return name
    return None


def _lock_func(bodies: Sequence[str]) -> Optional[str]:
    """Where lockdep says the offending lock was taken ("..., at: func+0x")."""
    for b in bodies:
        m = re.search(r"\bat: (?:\[<[0-9a-f]+>\]\s*)?([A-Za-z_][\w.]*)\+0x", b)
        if m:
            return m.group(1)
    return None


def _normalise(s: str) -> str:
    """Drop what differs between two hits of the same bug: addresses, pids, CPUs."""
    s = re.sub(r"\+0x[0-9a-f]+/0x[0-9a-f]+", "", s)
    s = re.sub(r"\b(?:0x)?[0-9a-fA-F]{8,}\b", "ADDR", s)
    s = re.sub(r"\b0x[0-9a-fA-F]+\b", "ADDR", s)
    s = re.sub(r"\bCPU#?:? ?\d+", "CPU", s)
    s = re.sub(r"\bPID: ?\d+\s*", "", s)
    s = re.sub(r"\s*\[#\d+\]", "", s)
    s = re.sub(r"([\w.-]+)[:/]\d+(?:/ADDR)?\b", r"\1", s)  # comm:pid, comm/pid/0x..
    s = re.sub(r"\b\d+(s| seconds| jiffies)\b", r"N\1", s)
    return re.sub(r"\s+", " ", s).strip()


def _in(prefix: str, func: Optional[str], fallback: str) -> str:
    return f"{prefix} in {func}" if func else _normalise(fallback)


def _t_fault(m: re.Match, bodies: Sequence[str]) -> str:
    return _in(m.group("what"), _rip_func(bodies), m.string)


def _t_rip(prefix: str) -> Callable[[re.Match, Sequence[str]], str]:
    return lambda m, bodies: _in(prefix, _rip_func(bodies), m.group(0))


def _t_warning(m: re.Match, bodies: Sequence[str]) -> str:
    return f"WARNING in {m.group('func')}"


def _t_sanitizer(m: re.Match, bodies: Sequence[str]) -> str:
    access = ""
    for b in bodies[1:4]:
        a = re.match(r"\s*(Read|Write) of size", b)
        if a:
            access = " " + a.group(1)
            break
    return f"{m.group('tool')}: {m.group('bug')}{access} in {m.group('func')}"


def _t_kernel_bug(m: re.Match, bodies: Sequence[str]) -> str:
    func = _rip_func(bodies)
    return f"kernel BUG in {func}" if func else f"kernel BUG at {m.group('where')}"


def _t_lockdep(m: re.Match, bodies: Sequence[str]) -> str:
    return _in(m.group("what").rstrip("!"), _lock_func(bodies), m.string)


def _t_hung(m: re.Match, bodies: Sequence[str]) -> str:
    return _in("INFO: task hung", _first_frame(bodies, _SCHED_FRAMES), "INFO: task hung")


# Frames of the stall detector itself and of the timer interrupt it runs in.
_STALL_FRAMES = re.compile(
    _SCHED_FRAMES.pattern[:-2] + r"|_?sched_show_task|dump_stack\w*|show_stack\w*|"
    r"update_process_times|tick_\w+|(?:__)?hrtimer\w*|\w*apic_timer_interrupt\w*|"
    r"\w*sysvec_\w+|irq_exit\w*|__irq_exit\w*|nmi_\w+|\w*trigger_\w*backtrace\w*)$"
)


def _t_rcu(m: re.Match, bodies: Sequence[str]) -> str:
    func = _rip_func(bodies) or _first_frame(bodies, _STALL_FRAMES)
    return _in("INFO: rcu detected stall", func, "INFO: rcu detected stall")


def _t_header(m: re.Match, bodies: Sequence[str]) -> str:
    return _normalise(m.group(0))


def _t_line(m: re.Match, bodies: Sequence[str]) -> str:
    """The whole header line, for a row that matches only its start."""
    return _normalise(m.string)


class Severity(enum.Enum):
    """What a kind of report makes of a run: crashed, or warned."""

    CRASH = "crash"
    WARNING = "warning"


CRASH, WARNS = Severity.CRASH, Severity.WARNING


@dataclass(frozen=True)
class _Header:
    regex: re.Pattern
    kind: SplatKind
    severity: Severity
    title: Callable[[re.Match, Sequence[str]], str]
    fold: bool = False  # part of an already-open report from the same task/CPU
    sanitizer: bool = False  # the report ends at its closing "=====" line


def _h(rx: str, kind: SplatKind, severity: Severity, title, fold: bool = False, sanitizer: bool = False) -> _Header:
    return _Header(re.compile(rx), kind, severity, title, fold, sanitizer)


def _sanitizer(tool: str, kind: SplatKind, severity: Severity) -> _Header:
    return _h(
        r"^BUG: (?P<tool>" + tool + r"): (?P<bug>[\w:-]+(?: [\w-]+)??) in (?P<func>[\w.]+)",
        kind,
        severity,
        _t_sanitizer,
        sanitizer=True,
    )


_UBSAN_FRAMES = re.compile(r"^(dump_stack\w*|show_stack\w*|ubsan_\w+|__ubsan_\w+)$")


def _t_ubsan(m: re.Match, bodies: Sequence[str]) -> str:
    func = _first_frame(bodies, _UBSAN_FRAMES)
    return f"UBSAN: {m.group('bug')} in {func or m.group('file')}"


_LOCKDEP_WHAT = (
    r"possible circular locking dependency detected|inconsistent lock state|"
    r"possible recursive locking detected|possible irq lock inversion dependency detected|"
    r"\S+-safe -> \S+-unsafe lock order detected|suspicious RCU usage|"
    r"bad unlock balance detected!|held lock freed!|lock held when returning to user space!|"
    r"Nested lock was not taken|bad contention detected!|still has locks held!|"
    r"lock held at task exit time!|locking bug detected"
)

# The table. Matched against each line with timestamp/caller id/serial noise
# removed, anchored at its start; first matching row wins, so specific rows
# come before generic ones.
HEADERS: tuple[_Header, ...] = (
    # A bad access to memory (KASAN, KFENCE) or a use of memory nobody wrote
    # (KMSAN) has happened: the kernel went on with a wrong value, as after an
    # oops it would not.  Crashes.
    _sanitizer("KASAN", SplatKind.KASAN, CRASH),
    _sanitizer("KFENCE", SplatKind.KFENCE, CRASH),
    _sanitizer("KMSAN", SplatKind.KMSAN, CRASH),
    # A data race KCSAN's sampling watchpoints saw: two accesses overlapped,
    # which many intended races in the kernel do too; nothing was shown to
    # go wrong.  A warning, as lockdep's reports are.
    _sanitizer("KCSAN", SplatKind.KCSAN, WARNS),
    # Undefined behaviour in C arithmetic or indexing (a shift too wide, an
    # overflow, an index past a declared bound): the kernel goes on, and an
    # access that really left its object is KASAN's report.  A warning, as
    # the kernel itself treats it (panic_on_warn).
    _h(
        r"^UBSAN: (?P<bug>[\w -]+?) in (?P<file>[^\s:]+)(?::\d+)*\s*$", SplatKind.UBSAN, WARNS, _t_ubsan, sanitizer=True
    ),
    _h(
        r"^(?P<what>BUG: unable to handle (?:page fault|kernel paging request|kernel NULL pointer "
        r"dereference))",
        SplatKind.BUG,
        CRASH,
        _t_fault,
    ),
    _h(r"^(?P<what>BUG: kernel NULL pointer dereference)", SplatKind.BUG, CRASH, _t_fault),
    _h(
        r"^(?P<what>Unable to handle kernel (?:paging request|NULL pointer dereference|"
        r"access to user memory|execute from non-executable memory|write to read-only memory)\w*)",
        SplatKind.OOPS,
        CRASH,
        _t_fault,
    ),
    _h(r"^(?:watchdog: )?BUG: soft lockup", SplatKind.LOCKUP, WARNS, _t_rip("BUG: soft lockup")),
    _h(r"^(?:watchdog: )?Watchdog detected hard LOCKUP", SplatKind.LOCKUP, WARNS, _t_rip("hard LOCKUP")),
    _h(r"^BUG: workqueue lockup", SplatKind.LOCKUP, WARNS, lambda m, b: "BUG: workqueue lockup"),
    _h(
        r"^BUG: sleeping function called from invalid context",
        SplatKind.LOCKDEP,
        WARNS,
        lambda m, b: _in(
            "BUG: sleeping function called from invalid context",
            _first_frame(
                b,
                re.compile(
                    r"^(dump_stack\w*|__might_\w+|might_\w+|"
                    r"__might_resched|mutex_lock\w*|down_\w+|"
                    r"__\w*lock\w*|_raw_\w+|kmalloc\w*|"
                    r"__kmalloc\w*|kmem_cache_alloc\w*|"
                    r"slab_pre_alloc_hook\w*)$"
                ),
            ),
            m.string,
        ),
    ),
    _h(r"^(?:WARNING|BUG|INFO): (?P<what>" + _LOCKDEP_WHAT + ")", SplatKind.LOCKDEP, WARNS, _t_lockdep),
    # A lock whose class key lockdep never saw registered: static data of a
    # module gone since (a file system type's i_lock_key after its unload).
    _h(
        r"^BUG: key \S+ has not been registered!",
        SplatKind.LOCKDEP,
        WARNS,
        lambda m, b: "BUG: key has not been registered!",
    ),
    _h(r"^BUG: scheduling while atomic", SplatKind.BUG, CRASH, _t_rip("BUG: scheduling while atomic")),
    _h(r"^WARNING: (?:CPU: \d+ PID: \d+ )?at \S+ (?P<func>[\w.]+)\+0x", SplatKind.WARNING, WARNS, _t_warning),
    _h(
        r"^WARNING: \S+:\d+ at (?P<func>[\w.]+)\+0x[0-9a-f]+/0x[0-9a-f]+, CPU#\d+", SplatKind.WARNING, WARNS, _t_warning
    ),
    _h(r"^WARNING: (?:CPU: \d+ PID: \d+ at )?\S+:\d+", SplatKind.WARNING, WARNS, _t_header),  # no symbol
    _h(r"^(?:Oops: )?general protection fault", SplatKind.GPF, CRASH, _t_rip("general protection fault")),
    _h(r"^kernel BUG at (?P<where>\S+?)!?$", SplatKind.BUG, CRASH, _t_kernel_bug),
    _h(r"^(?:rcu: )?INFO: rcu_\w+ (?:self-)?detected stalls?", SplatKind.RCU_STALL, WARNS, _t_rcu),
    _h(r"^INFO: task .*blocked (?:in I/O wait )?for more than \d+ seconds", SplatKind.HUNG_TASK, WARNS, _t_hung),
    # The guest ran out of memory (a module that allocates without bound, or
    # a leak): the OOM killer's report.  A crash: something died for it.
    _h(
        r"^(?P<comm>\S+) invoked oom-killer: ",
        SplatKind.OOM,
        CRASH,
        lambda m, b: f"out of memory: {m.group('comm')} invoked oom-killer",
    ),
    _h(
        r"^(?:Internal error: )?Oops(?: - [\w ]+)?: (?:[\w ]+: )?[0-9a-fx]+ \[#\d+\]",
        SplatKind.OOPS,
        CRASH,
        _t_rip("Oops"),
        fold=True,
    ),
    _h(r"^invalid opcode: [0-9a-f]+ \[#\d+\]", SplatKind.INVALID_OPCODE, CRASH, _t_rip("invalid opcode"), fold=True),
    _h(
        r"^Kernel panic - not syncing: (?P<why>.*)",
        SplatKind.PANIC,
        CRASH,
        lambda m, b: "Kernel panic - not syncing: " + _normalise(m.group("why")),
        fold=True,
    ),
    _h(r"^BUG: [A-Za-z]", SplatKind.BUG, CRASH, _t_line),  # any other BUG: (Bad page state, ...)
)

KINDS = frozenset(SplatKind)


def _severities() -> dict[SplatKind, Severity]:
    """Each kind's severity, from its rows, which must agree."""
    out: dict[SplatKind, Severity] = {}
    for h in HEADERS:
        if out.setdefault(h.kind, h.severity) is not h.severity:
            raise AssertionError(f"splat kind {h.kind.value} is a crash in one HEADERS row, a warning in another")
    missing = sorted(k.value for k in SplatKind if k not in out)
    if missing:
        raise AssertionError(f"splat kinds without a HEADERS row: {', '.join(missing)}")
    return out


_CRASH = {kind: sev is Severity.CRASH for kind, sev in _severities().items()}

# --------------------------------------------------------------------------
# Line handling.

_UPTIME = re.compile(r"\[\s*(\d+\.\d+)\]")
_TS = re.compile(r"(?:<\d>)?\[\s*\d+\.\d+\](?:\[\s*(?P<ctx>[TC]\d+)\])? ?")
_PROMPT = re.compile(r"^(?:\S+@\S+:.*[#$]\s*|\S+ login:\s*)$")
_MODULES = re.compile(r"Modules linked in:(?P<mods>.*)$")
_LAST_UNLOADED = re.compile(r"\[last unloaded: (?P<mod>[^\]\s(]+)(?:\([^)]*\))?\s*\]")


@dataclass
class _Line:
    raw: str
    body: str
    ctx: Optional[str]
    has_ts: bool
    offset: int  # byte offset of the line in the log (UTF-8)


def _split(text: str) -> list[_Line]:
    """Split on "\\n" only (so line numbers and byte offsets stay honest)."""
    out: list[_Line] = []
    offset = 0
    for seg in text.split("\n"):
        raw = seg.replace("\r", "")
        m = _TS.search(raw)
        if m:
            out.append(_Line(raw, raw[m.end() :], m.group("ctx"), True, offset))
        else:
            out.append(_Line(raw, raw, None, False, offset))
        offset += len(seg.encode("utf-8", "surrogateescape")) + 1
    return out


def _match_header(body: str):
    for h in HEADERS:
        m = h.regex.match(body)
        if m:
            return h, m
    return None


@dataclass
class _Rec:
    header: _Header
    match: re.Match
    start: int
    ctx: Optional[str]
    idx: list = field(default_factory=list)
    closed: bool = False
    since_end_trace: Optional[int] = None  # same-ctx lines seen after "---[ end trace"


# Where a report names the address it faulted on or at: a page fault's
# address, KASAN's access, a RIP without a symbol (text that is gone).
_FAULT_ADDRESSES = (
    re.compile(r"unable to handle page fault for address: ([0-9a-f]{16})"),
    re.compile(r"\bat addr ([0-9a-f]{16})\b"),
    re.compile(r"\bRIP: 0010:0x([0-9a-f]{16})\b"),
)
# x86-64's module mapping space (MODULES_VADDR..MODULES_END, with or without
# KASLR): an address there that faults is module memory no longer mapped.
_MODULE_SPACE = (0xFFFFFFFFA0000000, 0xFFFFFFFFFF000000)


def _freed_module_address(bodies: Sequence[str]) -> bool:
    """The report faulted on module memory: with the kernel's "[last
    unloaded: X]" in it, X is the module that had been there (a race unloads
    one module)."""
    for body in bodies:
        for rx in _FAULT_ADDRESSES:
            m = rx.search(body)
            if m and _MODULE_SPACE[0] <= int(m.group(1), 16) < _MODULE_SPACE[1]:
                return True
    return False


def _modules(bodies: Sequence[str]) -> tuple[tuple[str, ...], Optional[str]]:
    for b in bodies:
        m = _MODULES.search(b)
        if not m:
            continue
        text = m.group("mods")
        lu = _LAST_UNLOADED.search(text)
        text = _LAST_UNLOADED.sub("", text)
        mods = tuple(re.sub(r"\(.*?\)", "", w) for w in text.split())
        return tuple(x for x in mods if x), (lu.group("mod") if lu else None)
    return (), None


def _clean(s: str) -> str:
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _scan(text: str) -> list[tuple[Splat, int]]:
    """All records with the byte offset of their header line."""
    lines = _split(text)
    timestamped = any(ln.has_ts for ln in lines)
    recs: list[_Rec] = []
    open_by_ctx: dict[Optional[str], _Rec] = {}

    for i, ln in enumerate(lines):
        if _PROMPT.match(ln.raw):
            open_by_ctx.clear()
            continue
        if timestamped and not ln.has_ts:
            continue  # user-space output sharing the serial port
        rec = open_by_ctx.get(ln.ctx)
        hit = _match_header(ln.body)
        if hit:
            header, m = hit
            foldable = (
                rec is not None
                and header.fold
                and (
                    not rec.closed
                    or (
                        header.kind is SplatKind.PANIC
                        and rec.since_end_trace is not None
                        and rec.since_end_trace <= PANIC_FOLD_WINDOW
                    )
                )
            )
            if foldable:
                assert rec is not None
                rec.closed = False
                rec.since_end_trace = None
                rec.idx.append(i)
                continue
            rec = _Rec(header, m, i, ln.ctx, [i])
            recs.append(rec)
            open_by_ctx[ln.ctx] = rec
            continue
        if rec is None:
            continue
        if rec.closed:
            if rec.since_end_trace is not None:
                rec.since_end_trace += 1
            continue
        body = ln.body.strip()
        if body.startswith(("Kernel Offset:", "Rebooting in")):
            rec.closed = True
            continue
        rec.idx.append(i)
        if body.startswith("---[ end trace"):
            rec.closed, rec.since_end_trace = True, 0
        elif body.startswith("---[ end Kernel panic"):
            rec.closed = True
        elif rec.header.sanitizer and re.fullmatch(r"={20,}", body):
            rec.closed = True
        elif len(rec.idx) >= MAX_LINES:
            rec.closed = True

    out = []
    for rec in recs:
        bodies = [lines[j].body for j in rec.idx]
        kind = rec.header.kind
        mods, last = _modules(bodies)
        title = _clean(rec.header.title(rec.match, bodies))
        if last is not None and _freed_module_address(bodies):
            title += f" (at an address of freed module {last})"
        splat = Splat(
            kind=kind,
            title=title,
            lines=tuple(_clean(lines[j].raw) for j in rec.idx),
            modules=mods,
            last_unloaded=last,
            start_line=rec.start,
        )
        out.append((splat, lines[rec.start].offset))
    return out


def parse(text: str) -> list[Splat]:
    """Every crash report in a console log, in order of their header lines."""
    return [s for s, _ in _scan(text)]


def parse_file(path) -> list[Splat]:
    """``parse`` on a log file; undecodable bytes are kept so offsets stay exact."""
    return parse(Path(path).read_bytes().decode("utf-8", "surrogateescape"))


def new_splats(text: str, since_offset: int, until_offset: int | None = None) -> list[Splat]:
    """Reports whose header starts at or after byte ``since_offset`` of the log
    (and before ``until_offset``, when given).

    Lets the harness note the console log size before a test and ask afterwards
    what the test produced. The whole log is parsed so that a report that
    started earlier is never misread as a new one.
    """
    return [s for s, off in _scan(text) if off >= since_offset and (until_offset is None or off < until_offset)]
