"""The race engine: one settings record (`spec.RaceSpec`), one run of every
kind of race (`run_race`, behind `kinds.race`), roles started together over SSH channels, their JSON
joined with the console's splats of the same interval.

What differs between kinds is a strategy (kinds.KINDS: schemerace.SchemeRace,
targetrace.TargetRace): the groups of runs that share a guest, what each
guest holds and its setup, the roles of each run.  A crashed or hung guest is
a result, not a harness failure: `run_roles` says how the roles ended
(`RunEnd`), `outcomes.fold_verdict` what that means.  The engine reaches the
guest only through the small `RaceGuest` surface, so unit tests drive it with
a fake guest that completes, dies, hangs or splats.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Sequence

from .. import kernels
from ..errors import HarnessError
from ..guest.packages import resolve as resolve_packages
from ..guest.snapshot import GuestStart
from ..guest.splat import Splat, new_splats
from ..guest.ssh import Running
from ..kernels import modbuild
from ..paths import build_dir
from ..progress import progress
from .kbuild import BuiltModules, Knobs, ModuleSetSpec
from .outcomes import GuestState, MemoryDump, RaceReport, Replay, RunEnd, RunResult, TargetInfo, Verdict, summarise_run
from .racer import RoleResult, RoleSpec, parse_role_output
from .spec import DEFAULT_KNOBS, MAX_CONTENTION, RaceSpec, guest_flags

if TYPE_CHECKING:
    from ..guest.symbolize import Decoder

__all__ = ["DEFAULT_KNOBS", "MAX_CONTENTION", "RaceSpec", "guest_flags", "run_race"]

BARRIER = "/dev/shm/harness-race.barrier"
HANG_SLACK_S = 60.0  # a role still running this long after its deadline is hung
CONSOLE_SETTLE_S = 0.5  # after the roles: time for a late oops to reach the console
POLL_S = 0.1  # how often the engine looks at the roles, the guest and the clock


# ---------------------------------------------------------------- what the engine needs of a guest


class RaceSsh(Protocol):
    def run(self, command: str, timeout: float | None = 300, check: bool = False, stdin: bytes | None = None): ...
    def start(
        self,
        command: str,
        stdin: bytes | None = None,
        pty: bool = False,
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> Running: ...
    def upload(self, local: Path | bytes, remote: str, mode: int = 0o644) -> None: ...
    def alive(self) -> bool: ...


class RaceGuest(Protocol):
    """The part of `vm.Vm` the engine uses."""

    accel: str
    port: int
    log_path: Path
    start: GuestStart | None
    boot_splats: tuple[Splat, ...]

    @property
    def ssh(self) -> RaceSsh: ...
    def alive(self) -> bool: ...
    def kill(self) -> None: ...
    def console_text(self) -> str: ...
    def console_size(self) -> int: ...
    def dump_memory(self, path: Path) -> int: ...


@dataclass
class RolesOutcome:
    """What `run_roles` saw: per-role results in order, how they ended, how long."""

    results: list[RoleResult]
    end: RunEnd
    detail: str = ""
    seconds: float = 0.0


def _guest_gone(vm: RaceGuest) -> RunEnd | None:
    if not vm.alive():
        return RunEnd.GUEST_DIED
    if not vm.ssh.alive():
        return RunEnd.SSH_LOST
    return None


def run_roles(
    vm: RaceGuest,
    roles: Sequence[RoleSpec],
    duration_s: float,
    label: str = "",
    slack_s: float = HANG_SLACK_S,
    poll_s: float = POLL_S,
) -> RolesOutcome:
    """Start racer roles together on parallel SSH channels and collect them.
    A role still running `slack_s` after `duration_s` counts as a hang."""
    vm.ssh.run(f"rm -f {BARRIER}", check=True)
    t0 = time.monotonic()
    counts = [0] * len(roles)

    def counter(i: int) -> Callable[[bytes], None]:
        def on_stderr(data: bytes) -> None:
            for line in data.decode(errors="replace").splitlines():
                if line.startswith("progress "):
                    counts[i] = int(line.split()[1])

        return on_stderr

    running = [vm.ssh.start(r.command(), on_stderr=counter(i)) for i, r in enumerate(roles)]
    end: RunEnd | None = None
    detail = ""
    deadline = t0 + duration_s + slack_s
    last_report = 0.0
    while not all([r.done() for r in running]):  # a list: drain every channel
        now = time.monotonic()
        end = _guest_gone(vm)
        if end is not None:
            break
        if now > deadline:
            end = RunEnd.HUNG
            detail = f"roles still running {duration_s + slack_s:.0f}s after the start"
            break
        if label and now - last_report >= 5:
            left = max(0.0, duration_s - (now - t0))
            ops = ", ".join(f"{r.role} {c}" for r, c in zip(roles, counts))
            progress(f"race {label}: {left:4.0f}s left; iterations: {ops}")
            last_report = now
        time.sleep(poll_s)
    if end is None:  # every channel closed: maybe because the guest went away
        time.sleep(5 * poll_s)
        end = _guest_gone(vm) or RunEnd.COMPLETED
    results: list[RoleResult] = []
    for r, role in zip(running, roles):
        if end is not RunEnd.COMPLETED and not r.done():
            results.append(RoleResult.failed(role.role, f"no result ({end.value})"))
            continue
        res = r.wait(5)
        results.append(parse_role_output(res.stdout, role=role.role, exit_status=res.exit_status, stderr=res.stderr))
    return RolesOutcome(results, end, detail, time.monotonic() - t0)


@contextlib.contextmanager
def host_contention(hogs: int) -> Iterator[None]:
    """`hogs` host processes spinning on a CPU each, for as long as the block
    runs: the load a busy CI runner puts next to the guest's vCPU threads."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(hogs):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL, start_new_session=True
                )
            )
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def parse_debug_locks(text: str) -> bool | None:
    """`debug_locks` from /proc/lockdep_stats: whether lockdep still checks;
    None when the text has no such line."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "debug_locks" and value.strip().isdigit():
            return value.strip() != "0"
    return None


def debug_locks(vm: RaceGuest) -> bool | None:
    """Whether the guest's lockdep is still checking; None if unreadable
    (no lockdep, or the guest is gone)."""
    if _guest_gone(vm) is not None:
        return None
    res = vm.ssh.run("cat /proc/lockdep_stats", timeout=60)
    return parse_debug_locks(res.stdout) if res.ok else None


def observe_roles(
    vm: RaceGuest, roles: Sequence[RoleSpec], duration_s: float, contention: int, label: str, lockdep: bool
) -> tuple[RolesOutcome, list[Splat], GuestState]:
    """Run the roles with `contention` host hogs, and what the guest showed:
    the console's new splats and, on a lockdep kernel, debug_locks before and
    after (the scheme and target races alike)."""
    before = debug_locks(vm) if lockdep else None
    offset = vm.console_size()
    with host_contention(contention):
        outcome = run_roles(vm, roles, duration_s, label=label, slack_s=HANG_SLACK_S, poll_s=POLL_S)
    time.sleep(CONSOLE_SETTLE_S)
    splats = new_splats(vm.console_text(), offset)
    guest = GuestState(
        tuple(vm.boot_splats), before, debug_locks(vm) if lockdep and outcome.end is RunEnd.COMPLETED else None
    )
    return outcome, splats, guest


# ---------------------------------------------------------------- runs, groups and the strategies' surface


@dataclass(frozen=True)
class GuestPayload:
    """What one guest holds besides the base image: built modules (installed
    under extra/) and the kernel's own modules by name, with their deps."""

    ko_files: tuple[Path, ...] = ()
    kmods: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunPlan:
    """One run: its columns in the report, its roles, and for a target race
    what makes it one (the module, its ops, whether it is a control)."""

    scheme: str  # a scheme, or the target's name
    workload: str  # a workload, or the target's operations
    roles: tuple[RoleSpec, ...]
    target: TargetInfo | None = None


@dataclass
class OpenGroup:
    """A group ready to run: what its guest holds, its runs, and the setup of
    each fresh guest it boots."""

    name: str  # the guest's name in logs
    payload: GuestPayload
    plans: list[RunPlan]
    prepare: Callable[["RaceGuest"], None]


@dataclass(frozen=True)
class RunGroup:
    """Runs that share one guest (booted again after a splat or a death): a
    scheme's workloads, or a target's one run.  `open` builds what the guest
    needs only when the group's turn comes."""

    open: Callable[[], OpenGroup]


class Strategy(Protocol):
    """A kind of race: its groups of runs and the knobs its report records."""

    @property
    def knobs(self) -> Knobs: ...

    def groups(self, stages: "RaceStages") -> Sequence[RunGroup]: ...


def run_plan(vm: "RaceGuest", spec: RaceSpec, plan: RunPlan, lockdep: bool = False, kasan: bool = False) -> RunResult:
    """One run in a prepared guest; the guest may die doing it.  `lockdep`:
    the kernel has CONFIG_PROVE_LOCKING (what a lock-order control must show),
    and then its lockdep must still be on for a lockdep-clean run to mean
    anything; `kasan`: CONFIG_KASAN (what the KASAN control must show)."""
    outcome, splats, guest = observe_roles(
        vm, plan.roles, spec.duration_s, spec.contention, f"{plan.scheme}/{plan.workload}", lockdep
    )
    run = summarise_run(
        plan.scheme,
        plan.workload,
        outcome.results,
        splats,
        outcome.end,
        outcome.detail,
        spec.repro(plan.scheme, plan.workload),
        outcome.seconds,
        lockdep=lockdep,
        kasan=kasan,
        guest=guest,
        target=plan.target,
    )
    run.console_log = str(vm.log_path)
    run.guest_start = getattr(vm, "start", None)
    return run


# ---------------------------------------------------------------- the pipeline stages a race needs


class RaceStages(Protocol):
    """Kernel, modules and guests for `race()`; `PipelineStages` is the real
    one.  A scheme race asks for `modules`, a target race for `kernel_files`."""

    release: str
    describe: str  # where the kernel comes from (KernelFiles.describe)
    lockdep: bool  # the kernel has CONFIG_PROVE_LOCKING
    kasan: bool  # the kernel has CONFIG_KASAN

    def modules(self, scheme: str) -> BuiltModules: ...
    def kernel_files(self) -> kernels.KernelFiles: ...
    def boot(self, name: str, payload: GuestPayload) -> RaceGuest: ...
    def guest_modules(self, payload: GuestPayload) -> tuple[Path, ...]: ...
    def debug_vmlinux(self) -> tuple[str, str]: ...
    def symbolize(self, splats: Sequence[Splat], modules: Sequence[Path]) -> tuple[list[Splat], str]: ...


class PipelineStages:
    """kernel -> modules -> image -> VM: the kernel fetched once, with what the
    verdicts need to know of it; an unknown guest package is refused before
    anything is built."""

    def __init__(self, spec: RaceSpec) -> None:
        self.spec = spec
        self.kfiles = kernels.fetch(spec.kernel_row, quiet=True)
        self.release = self.kfiles.release
        self.describe = self.kfiles.describe
        self.lockdep = self.kfiles.lockdep
        self.kasan = self.kfiles.kasan
        resolve_packages(spec.guest_packages)
        self.extra_modules = tuple(
            ko for src in spec.module_src for ko in modbuild.build_dir(self.kfiles, Path(src)).ko_files
        )
        self._decoders: dict[tuple[Path, ...], tuple[Decoder | None, str]] = {}

    def kernel_files(self) -> kernels.KernelFiles:
        return self.kfiles

    def modules(self, scheme: str) -> BuiltModules:
        from .kbuild import build

        return build(self.kfiles, ModuleSetSpec(scheme, providers=self.spec.providers, buses=self.spec.buses))

    def guest_modules(self, payload: GuestPayload) -> tuple[Path, ...]:
        """The .ko files its guests get besides the kernel's own."""
        return (*payload.ko_files, *self.extra_modules)

    def debug_vmlinux(self) -> tuple[str, str]:
        """The kernel with its symbols, for reading a vmcore; or "" and why not."""
        from ..kernels.vmlinux import symbols_of

        return symbols_of(self.kfiles)

    def symbolize(self, splats: Sequence[Splat], modules: Sequence[Path]) -> tuple[list[Splat], str]:
        """The splats with file:line frames, where the kernel has DWARF; else
        as they are, and why."""
        from ..guest.symbolize import decode, decoder_for

        key = tuple(modules)
        if key not in self._decoders:  # modules.dep and readelf once per race, not per splatting run
            self._decoders[key] = decoder_for(self.kfiles, modules)
        dec, why = self._decoders[key]
        if dec is None:
            return list(splats), why
        progress(f"symbolize: {len(splats)} splat(s) with {dec.script.name}")
        return decode(dec, splats), ""

    def boot(self, name: str, payload: GuestPayload) -> RaceGuest:
        from ..guest.image import build_image
        from ..guest.vm import Vm, VmConfig

        # The racer is in every base image.
        img = build_image(self.kfiles, self.guest_modules(payload), (), payload.kmods, self.spec.guest_packages)
        vm = Vm(
            img,
            VmConfig(
                accel=self.spec.accel,
                rcu_expedited=self.spec.rcu_expedited,
                hung_task_timeout_s=self.spec.hung_task_timeout_s,
                cold_boot=self.spec.cold_boot,
            ),
            name=name,
        )
        try:
            return vm.boot()
        except BaseException:
            vm.kill()
            raise


class _Recorder:
    """Writes down what a guest's setup does over SSH (commands, files), for
    the runs' `Replay`."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.files: list[tuple[str, str]] = []

    def guest(self, vm: RaceGuest) -> RaceGuest:
        return _RecordingGuest(vm, self)  # type: ignore[return-value]

    def replay(self, release: str, modules: Sequence[Path], payload: GuestPayload, plan: RunPlan) -> Replay:
        return Replay(
            release=release,
            modules=tuple(str(m) for m in modules),
            kmods=tuple(payload.kmods),
            files=tuple(self.files),
            setup=tuple(self.commands),
            roles=tuple(r.command() for r in plan.roles),
            barrier=BARRIER,
        )


class _RecordingSsh:
    def __init__(self, ssh: RaceSsh, rec: _Recorder) -> None:
        self._ssh, self._rec = ssh, rec

    def __getattr__(self, name: str) -> object:
        return getattr(self._ssh, name)

    def run(self, command: str, timeout: float | None = 300, check: bool = False, stdin: bytes | None = None):
        self._rec.commands.append(command)
        return self._ssh.run(command, timeout=timeout, check=check, stdin=stdin)

    def upload(self, local: Path | bytes, remote: str, mode: int = 0o644) -> None:
        data = local if isinstance(local, bytes) else Path(local).read_bytes()
        self._rec.files.append((remote, data.decode(errors="replace")))
        self._ssh.upload(local, remote, mode)


class _RecordingGuest:
    def __init__(self, vm: RaceGuest, rec: _Recorder) -> None:
        self._vm, self._rec = vm, rec

    def __getattr__(self, name: str) -> object:
        return getattr(self._vm, name)

    @property
    def ssh(self) -> _RecordingSsh:
        return _RecordingSsh(self._vm.ssh, self._rec)


def dump_guest(vm: RaceGuest, run: RunResult, stages: RaceStages) -> MemoryDump:
    """The guest's memory after `run` beside its console log, with what reads
    it; a guest that died first leaves a note instead."""
    vmlinux, why = stages.debug_vmlinux()
    modules = run.replay.modules if run.replay else ()
    gone = _guest_gone(vm)
    if gone is RunEnd.GUEST_DIED:
        return MemoryDump(note="the guest had died before its memory could be dumped (a panic ends QEMU)")
    logs = build_dir() / "logs"  # where console logs go: the vmcore beside its guest's
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{Path(vm.log_path).stem}.vmcore"
    progress(f"dump: writing the guest's memory to {path}")
    t0 = time.monotonic()
    try:
        size = vm.dump_memory(path)
    except HarnessError as e:  # a full disk, say: the race and its report go on without it
        progress(f"dump: none: {e}")
        return MemoryDump(note=f"no vmcore: {e}")
    took = time.monotonic() - t0
    progress(f"dump: {size >> 20} MiB in {took:.1f}s")
    return MemoryDump(str(path), vmlinux, modules, size, round(took, 2), why)


def _spoiled(last: RunResult | None, plan: RunPlan) -> bool:
    """A guest that splatted, was broken, or whose lockdep went off cannot
    vouch for the next run of its group: a new one."""
    return (
        last is not None
        and last.scheme == plan.scheme
        and (bool(last.splats) or last.verdict is Verdict.BROKEN or last.guest.debug_locks_after is False)
    )


def run_race(
    spec: RaceSpec, strategy: Strategy, keep: bool = False, stages: RaceStages | None = None, dump: bool = False
) -> tuple[RaceReport, RaceGuest | None]:
    """Every run of the race, one fresh guest per group (and a new one after a
    splat or a dead guest).  With `keep`, the last guest is returned still
    running (the caller must kill it).  With `dump`, the guest's memory is
    written at the first splat, or after the last run if none splatted."""
    stages = stages or PipelineStages(spec)
    report = RaceReport(
        kernel=stages.release,
        kernel_spec=spec.kernel_name,
        kernel_describe=stages.describe,
        accel="",
        seed=spec.seed,
        duration_s=spec.duration_s,
        rcu_expedited=spec.rcu_expedited,
        knobs=strategy.knobs,
        reload=spec.reload,
        contention=spec.contention,
        lockdep=stages.lockdep,
        kasan=stages.kasan,
    )
    groups = strategy.groups(stages)
    dumped = False
    current = ""
    for i, group in enumerate(groups):
        opened = group.open()
        modules = stages.guest_modules(opened.payload)
        vm: RaceGuest | None = None
        setup = _Recorder()
        try:
            for j, plan in enumerate(opened.plans):
                current = f"{plan.scheme}/{plan.workload}"
                last = report.runs[-1] if report.runs else None
                if vm is None or _spoiled(last, plan) or _guest_gone(vm) is not None:
                    if vm is not None:
                        vm.kill()
                    vm = stages.boot(opened.name, opened.payload)
                    report.accel = vm.accel
                    setup = _Recorder()
                    opened.prepare(setup.guest(vm))
                run = run_plan(vm, spec, plan, stages.lockdep, stages.kasan)
                run.replay = setup.replay(stages.release, modules, opened.payload, plan)
                if run.splats:
                    run.splats, report.frames_note = stages.symbolize(run.splats, modules)
                last_run = i == len(groups) - 1 and j == len(opened.plans) - 1
                if dump and not dumped and (run.splats or last_run):
                    run.dump = dump_guest(vm, run, stages)
                    dumped = True
                report.runs.append(run)
                progress(f"race {plan.scheme}/{plan.workload}: {run.verdict.value}")
        except BaseException as e:
            if vm is not None:
                vm.kill()
            if isinstance(e, KeyboardInterrupt):  # the front end writes the runs done (stopped_report)
                report.interrupted = current or "the first guest's boot"
                setattr(e, "race_report", report)
            raise
        if keep and i == len(groups) - 1 and vm is not None and vm.alive():
            return report, vm
        if vm is not None:
            vm.kill()
    return report, None
