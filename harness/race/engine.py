"""The race engine: one fresh guest per scheme, roles started together over
SSH channels, their JSON joined with the console's splats of the same interval.

A crashed or hung guest is a result, not a harness failure: `run_roles` says
how the roles ended (`RunEnd`), `outcomes.fold_verdict` what that means.  The
engine reaches the guest only through the small `RaceGuest` surface, so unit
tests drive it with a fake guest that completes, dies, hangs or splats.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from .. import kernels
from ..kernels import modbuild
from ..errors import HarnessError
from .kbuild import BuiltModules, Knobs, ModuleSetSpec
from ..progress import progress
from .racer import Role, RoleResult, RoleSpec, parse_role_output
from .outcomes import GuestState, RaceReport, RunEnd, RunResult, Verdict, summarise_run
from .schemes import DEFAULT_SCHEMES, Caller, get_scheme, get_workload
from ..guest.packages import parse_names as parse_package_names
from ..guest.packages import resolve as resolve_packages
from ..guest.snapshot import GuestStart
from ..guest.splat import Splat, new_splats
from ..guest.ssh import Running

# exit_delay_ms widens the "being removed" window; call_delay_us makes a caller
# sleep inside the provider, which is what the unsafe scheme cannot survive.
DEFAULT_KNOBS = Knobs({"call_delay_us": 1000, "exit_delay_ms": 200})
BARRIER = "/dev/shm/harness-race.barrier"
MAX_CONTENTION = 16
HANG_SLACK_S = 60.0  # a role still running this long after its deadline is hung
CONSOLE_SETTLE_S = 0.5  # after the roles: time for a late oops to reach the console
POLL_S = 0.1  # how often the engine looks at the roles, the guest and the clock


def guest_flags(rcu_expedited: bool, contention: int, cold_boot: bool, guest_packages: tuple[str, ...]) -> list[str]:
    """The guest's and host's settings of a race as `repro` writes them (schemes and targets alike)."""
    argv = ["--rcu-expedited"] if rcu_expedited else []
    argv += ["--contention", str(contention)] if contention else []
    argv += ["--cold-boot"] if cold_boot else []
    return argv + (["--guest-packages", ",".join(guest_packages)] if guest_packages else [])


@dataclass(frozen=True)
class RaceSpec:
    """Everything that defines a run; `repro()` turns it back into a command."""

    kernel: str = kernels.DEFAULT_KERNEL
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    workloads: tuple[str, ...] = ("lookup", "mount")
    duration_s: float = 15.0
    seed: int = 1
    knobs: Knobs = DEFAULT_KNOBS  # pairs or a mapping are validated into Knobs
    accel: str = "auto"
    rcu_expedited: bool = False
    providers: int = 2
    reload: str = "finit"  # how the unloader reloads: finit_module or modprobe
    unload_pause_ms: int = 100  # the reloaded module stays live this long
    contention: int = 0  # host CPU hogs spinning while the roles run
    cold_boot: bool = False  # boot every guest; never restore a snapshot
    module_src: tuple[str, ...] = ()  # the user's kbuild folders, built and put in every guest
    guest_packages: tuple[str, ...] = ()  # Debian packages in every guest (sorted names)

    def __post_init__(self) -> None:
        if not isinstance(self.knobs, Knobs):
            object.__setattr__(self, "knobs", Knobs(self.knobs))
        object.__setattr__(self, "guest_packages", parse_package_names(self.guest_packages))
        kernels.get_spec(self.kernel)
        if not self.schemes or not self.workloads:
            raise HarnessError("at least one scheme and one workload are needed")
        for kind, names in (("scheme", self.schemes), ("workload", self.workloads)):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise HarnessError(f"{kind} {', '.join(dup)} given twice; name each once")
        for s in self.schemes:
            get_scheme(s)
        rows = [get_workload(w) for w in self.workloads]
        if len({w.buses for w in rows}) > 1:
            raise HarnessError("workloads " + ", ".join(f"{w.name} ({w.buses} bus{'es' * (w.buses > 1)})"
                                                         for w in rows)
                               + " need different module builds; race them separately")
        need = max(w.providers for w in rows)
        if self.providers < need:
            raise HarnessError(f"--workload {','.join(self.workloads)} needs --providers {need} or more")
        if not 0 < self.duration_s <= 3600:
            raise HarnessError(f"--duration must be in (0, 3600] seconds, got {self.duration_s:g}")
        if not 0 <= self.unload_pause_ms <= 60000:
            raise HarnessError(f"--unload-pause must be 0..60000 ms, got {self.unload_pause_ms}")
        if self.reload not in ("finit", "modprobe"):
            raise HarnessError("--reload is finit or modprobe")
        if not 1 <= self.providers <= 16:
            raise HarnessError(f"--providers must be 1..16, got {self.providers}")
        for src in self.module_src:
            modbuild.source_files(Path(src))
        if not 0 <= self.contention <= MAX_CONTENTION:
            raise HarnessError(f"--contention must be 0..{MAX_CONTENTION} host CPU hogs, got {self.contention}")

    @property
    def buses(self) -> int:
        """The bus count every scheme's modules are built with (the workloads agree on it)."""
        return get_workload(self.workloads[0]).buses

    @property
    def hung_task_timeout_s(self) -> int:
        """The shortest hung-task timeout a workload asks for; 0 keeps the kernel's."""
        return min((t for w in self.workloads if (t := get_workload(w).hung_task_timeout_s)), default=0)

    def repro(self, scheme: str | None = None, workload: str | None = None) -> str:
        argv = ["python", "-m", "harness", "race", "--kernel", self.kernel,
                "--scheme", scheme or ",".join(self.schemes),
                "--workload", workload or ",".join(self.workloads),
                "--duration", f"{self.duration_s:g}", "--seed", str(self.seed), "--accel", self.accel,
                "--providers", str(self.providers), "--reload", self.reload,
                "--unload-pause", str(self.unload_pause_ms)]
        argv += [a for knob in self.knobs.args() for a in ("--knob", knob)]
        argv += guest_flags(self.rcu_expedited, self.contention, self.cold_boot, self.guest_packages)
        argv += [a for src in self.module_src for a in ("--module-src", src)]
        return " ".join(shlex.quote(a) for a in argv)


# ---------------------------------------------------------------- what the engine needs of a guest


class RaceSsh(Protocol):
    def run(self, command: str, timeout: float | None = 300, check: bool = False,
            stdin: bytes | None = None): ...
    def start(self, command: str, stdin: bytes | None = None, pty: bool = False,
              on_stdout: Callable[[bytes], None] | None = None,
              on_stderr: Callable[[bytes], None] | None = None) -> Running: ...
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


# ---------------------------------------------------------------- roles


def mount_dir(c: Caller) -> str:
    """Where a mounting caller mounts: one folder per provider and kind (the
    bus's file system for mounter, the provider's own for fsmounter)."""
    kind = "bus" if c.role is Role.MOUNTER else "own"
    return f"/mnt/{kind}{c.provider or ''}"


def roles_for(workload: str, mods: BuiltModules, spec: RaceSpec, release: str) -> list[RoleSpec]:
    """The workload's unloaders (one per unloaded provider), then its callers,
    meeting at one barrier."""
    row = get_workload(workload)
    names = mods.spec.provider_names
    parties = len(row.unloaded) + len(row.callers)

    def role(which: Role, target: str, **kw: Any) -> RoleSpec:
        return RoleSpec(which, name=target, duration_ms=int(spec.duration_s * 1000), seed=spec.seed,
                        barrier=BARRIER, parties=parties, progress=True, **kw)

    def caller(c: Caller) -> RoleSpec:
        target = names[c.provider]
        if c.role is Role.LOOKER:
            return role(c.role, target, ctl=mods.spec.ctl_device, bus=c.bus)
        if c.role is Role.MOUNTER:
            data = None if c.bus is None else f"backend={target},bus={c.bus}"
            return role(c.role, target, fstype=mods.spec.fs_name, dir=mount_dir(c), data=data)
        return role(c.role, target, fstype=f"{target}fs", dir=mount_dir(c))

    unloaders = [role(Role.UNLOADER, names[i], ko=f"/lib/modules/{release}/extra/{names[i]}.ko",
                      params=" ".join(spec.knobs.args()), load=spec.reload,
                      pause_us=spec.unload_pause_ms * 1000)
                 for i in row.unloaded]
    return [*unloaders, *(caller(c) for c in row.callers)]


def prepare_guest(vm: RaceGuest, mods: BuiltModules, spec: RaceSpec) -> None:
    """Knobs for request_module loads, the core loaded, the workloads' providers loaded."""
    options = "".join(f"options {p} " + " ".join(spec.knobs.args()) + "\n"
                      for p in mods.spec.provider_names if spec.knobs)
    vm.ssh.upload(options.encode(), "/etc/modprobe.d/harness.conf")
    rows = [get_workload(w) for w in spec.workloads]
    dirs = sorted({"/mnt/bus", "/mnt/own"} | {mount_dir(c) for w in rows for c in w.callers
                                            if c.role.mounts})
    used = sorted({0} | {i for w in rows for i in w.unloaded})
    vm.ssh.run(f"mkdir -p {' '.join(dirs)} && /sbin/modprobe {mods.spec.core} && "
               + " && ".join(f"/sbin/modprobe {mods.spec.provider_names[i]}" for i in used), check=True)


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


def run_roles(vm: RaceGuest, roles: Sequence[RoleSpec], duration_s: float, label: str = "",
              slack_s: float = HANG_SLACK_S, poll_s: float = POLL_S) -> RolesOutcome:
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
        results.append(parse_role_output(res.stdout, role=role.role, exit_status=res.exit_status,
                                         stderr=res.stderr))
    return RolesOutcome(results, end, detail, time.monotonic() - t0)


@contextlib.contextmanager
def host_contention(hogs: int) -> Iterator[None]:
    """`hogs` host processes spinning on a CPU each, for as long as the block
    runs: the load a busy CI runner puts next to the guest's vCPU threads."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(hogs):
            procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                          stdin=subprocess.DEVNULL, start_new_session=True))
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


def observe_roles(vm: RaceGuest, roles: Sequence[RoleSpec], duration_s: float, contention: int, label: str,
                  lockdep: bool) -> tuple[RolesOutcome, list[Splat], GuestState]:
    """Run the roles with `contention` host hogs, and what the guest showed:
    the console's new splats and, on a lockdep kernel, debug_locks before and
    after (the scheme and target races alike)."""
    before = debug_locks(vm) if lockdep else None
    offset = vm.console_size()
    with host_contention(contention):
        outcome = run_roles(vm, roles, duration_s, label=label, slack_s=HANG_SLACK_S, poll_s=POLL_S)
    time.sleep(CONSOLE_SETTLE_S)
    splats = new_splats(vm.console_text(), offset)
    guest = GuestState(tuple(vm.boot_splats), before,
                       debug_locks(vm) if lockdep and outcome.end is RunEnd.COMPLETED else None)
    return outcome, splats, guest


def run_one(vm: RaceGuest, mods: BuiltModules, spec: RaceSpec, scheme: str, workload: str,
            release: str, lockdep: bool = False, kasan: bool = False) -> RunResult:
    """One workload in a booted guest; the guest may die doing it.  `lockdep`:
    the kernel has CONFIG_PROVE_LOCKING (what a lock-order control must show),
    and then its lockdep must still be on for a lockdep-clean run to mean
    anything; `kasan`: CONFIG_KASAN (what the KASAN control must show)."""
    roles = roles_for(workload, mods, spec, release)
    outcome, splats, guest = observe_roles(vm, roles, spec.duration_s, spec.contention, f"{scheme}/{workload}",
                                           lockdep)
    run = summarise_run(scheme, workload, outcome.results, splats, outcome.end, outcome.detail,
                        spec.repro(scheme, workload), outcome.seconds, lockdep=lockdep, kasan=kasan,
                        guest=guest)
    run.console_log = str(vm.log_path)
    run.guest_start = getattr(vm, "start", None)
    return run


# ---------------------------------------------------------------- the pipeline stages a race needs


class RaceStages(Protocol):
    """Kernel, modules and guests for `race()`; `PipelineStages` is the real one."""

    release: str
    describe: str  # where the kernel comes from (KernelFiles.describe)
    lockdep: bool  # the kernel has CONFIG_PROVE_LOCKING
    kasan: bool  # the kernel has CONFIG_KASAN

    def modules(self, scheme: str) -> BuiltModules: ...
    def boot(self, scheme: str, mods: BuiltModules) -> RaceGuest: ...


def proves_locking(kfiles: kernels.KernelFiles) -> bool:
    """Whether the kernel's lockdep checks lock order (CONFIG_PROVE_LOCKING)."""
    return kfiles.config.get("CONFIG_PROVE_LOCKING") == "y"


class KernelStage:
    """The kernel a race runs on, fetched once, with what the verdicts need to
    know of it; an unknown guest package is refused before anything is built."""

    def __init__(self, kernel: str, guest_packages: tuple[str, ...]) -> None:
        self.kfiles = kernels.fetch(kernels.get_spec(kernel), quiet=True)
        self.release = self.kfiles.release
        self.describe = self.kfiles.describe
        self.lockdep = proves_locking(self.kfiles)
        self.kasan = self.kfiles.config.get("CONFIG_KASAN") == "y"
        resolve_packages(guest_packages)


class PipelineStages(KernelStage):
    """kernel -> modules -> image -> VM, as everywhere else."""

    def __init__(self, spec: RaceSpec) -> None:
        super().__init__(spec.kernel, spec.guest_packages)
        self.spec = spec
        self.extra_modules = tuple(ko for src in spec.module_src
                                   for ko in modbuild.build_dir(self.kfiles, Path(src)).ko_files)

    def modules(self, scheme: str) -> BuiltModules:
        from .kbuild import build

        return build(self.kfiles, ModuleSetSpec(scheme, providers=self.spec.providers, buses=self.spec.buses))

    def boot(self, scheme: str, mods: BuiltModules) -> RaceGuest:
        from ..guest.image import build_image
        from ..guest.vm import Vm, VmConfig

        # The racer is in every base image.
        img = build_image(self.kfiles, (*mods.ko_files, *self.extra_modules), packages=self.spec.guest_packages)
        vm = Vm(img, VmConfig(accel=self.spec.accel, rcu_expedited=self.spec.rcu_expedited,
                              hung_task_timeout_s=self.spec.hung_task_timeout_s,
                              cold_boot=self.spec.cold_boot),
                name=f"race-{scheme}")
        try:
            return vm.boot()
        except BaseException:
            vm.kill()
            raise


def race(spec: RaceSpec, keep: bool = False,
         stages: RaceStages | None = None) -> tuple[RaceReport, RaceGuest | None]:
    """Run every scheme x workload, one fresh guest per scheme (and a new one
    after a splat or a dead guest).  With `keep`, the last guest is returned
    still running (the caller must kill it)."""
    stages = stages or PipelineStages(spec)
    report = RaceReport(kernel=stages.release, kernel_spec=spec.kernel, kernel_describe=stages.describe,
                        accel="", seed=spec.seed,
                        duration_s=spec.duration_s, rcu_expedited=spec.rcu_expedited,
                        knobs=spec.knobs, reload=spec.reload, contention=spec.contention,
                        lockdep=stages.lockdep, kasan=stages.kasan)
    for i, scheme in enumerate(spec.schemes):
        mods = stages.modules(scheme)
        vm: RaceGuest | None = None
        try:
            for workload in spec.workloads:
                last = report.runs[-1] if report.runs else None
                # A guest that splatted, was broken, or whose lockdep went off
                # cannot vouch for the next workload: a new one.
                spoiled = last is not None and last.scheme == scheme and (
                    bool(last.splats) or last.verdict is Verdict.BROKEN or last.guest.debug_locks_after is False)
                if vm is None or spoiled or _guest_gone(vm) is not None:
                    if vm is not None:
                        vm.kill()
                    vm = stages.boot(scheme, mods)
                    report.accel = vm.accel
                    prepare_guest(vm, mods, spec)
                run = run_one(vm, mods, spec, scheme, workload, stages.release, stages.lockdep, stages.kasan)
                report.runs.append(run)
                progress(f"race {scheme}/{workload}: {run.verdict.value}")
        except BaseException:
            if vm is not None:
                vm.kill()
            raise
        if keep and i == len(spec.schemes) - 1 and vm is not None and vm.alive():
            return report, vm
        if vm is not None:
            vm.kill()
    return report, None
