"""Target races (`race --target`): any module's unload raced against generic
callers.

A target is a ready-made row (targets.py), one of the kernel's own modules by
name, a built `.ko`, or a module folder built as `harness build` does.  The
guest loads what the target needs, runs the row's setup, loads the target and
checks it can be unloaded at all; then an unloader (today's: delete_module
with O_NONBLOCK, refusals retried, reload by modprobe or finit_module) races
`--callers N` callers per `--op` at one barrier.  Verdicts, timeline and
reports are the schemes' (outcomes.py), with the callers' failures counted
as facts: while the module is gone a caller is meant to fail.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import kernels
from ..errors import HarnessError
from ..kernels import modbuild
from ..paths import data_dir
from ..progress import progress
from . import targets
from .engine import BARRIER, MAX_CONTENTION, KernelStage, RaceGuest, guest_flags, observe_roles
from .kbuild import Knobs
from .ops import MountOp, Op, parse as parse_op
from .outcomes import RaceReport, RunResult, TargetInfo, summarise_run
from .racer import Role, RoleSpec

MAX_CALLERS = 16
MOUNT_ROOT = "/mnt/target"
MODPROBE_CONF = "/etc/modprobe.d/harness-target.conf"


@dataclass(frozen=True)
class TargetRaceSpec:
    """Everything that defines a target race; `repro()` turns it back into a command."""

    target: str
    kernel: str = kernels.DEFAULT_KERNEL
    ops: tuple[str, ...] = ()  # caller operations (ops.py text); none: the row's own
    callers: int = 1  # callers per operation
    duration_s: float = 15.0
    seed: int = 1
    accel: str = "auto"
    rcu_expedited: bool = False
    reload: str = "modprobe"
    unload_pause_ms: int = 100
    contention: int = 0
    cold_boot: bool = False
    guest_packages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.target:
            raise HarnessError("--target is empty")
        kernels.get_spec(self.kernel)
        if not self.ops and self.row is None:
            raise HarnessError(f"--target {self.target} is no ready-made target: give its callers with --op "
                               f"(ready-made: {', '.join(targets.ROWS)})")
        self.op_rows  # every --op parses, or one line says which does not
        if self.row is None and ("/" in self.target or self.target.endswith(".ko")):
            path = Path(self.target)
            if self.target.endswith(".ko") and not path.is_file():
                raise HarnessError(f"--target {self.target}: no such .ko file")
            if not self.target.endswith(".ko"):
                modbuild.source_files(path)
        if not 1 <= self.callers <= MAX_CALLERS:
            raise HarnessError(f"--callers must be 1..{MAX_CALLERS}, got {self.callers}")
        if not 0 < self.duration_s <= 3600:
            raise HarnessError(f"--duration must be in (0, 3600] seconds, got {self.duration_s:g}")
        if self.reload not in ("finit", "modprobe"):
            raise HarnessError("--reload is finit or modprobe")
        if not 0 <= self.unload_pause_ms <= 60000:
            raise HarnessError(f"--unload-pause must be 0..60000 ms, got {self.unload_pause_ms}")
        if not 0 <= self.contention <= MAX_CONTENTION:
            raise HarnessError(f"--contention must be 0..{MAX_CONTENTION} host CPU hogs, got {self.contention}")

    @property
    def row(self) -> targets.TargetRow | None:
        return targets.ROWS.get(self.target)

    @property
    def op_rows(self) -> tuple[Op, ...]:
        texts = self.ops or (self.row.ops if self.row else ())
        return tuple(parse_op(t) for t in texts)

    @property
    def label(self) -> str:
        """The run's workload column: its operations."""
        return "+".join(op.kind for op in self.op_rows)

    def repro(self) -> str:
        argv = ["python", "-m", "harness", "race", "--kernel", self.kernel, "--target", self.target]
        for op in self.ops:
            argv += ["--op", op]
        argv += ["--callers", str(self.callers), "--duration", f"{self.duration_s:g}", "--seed", str(self.seed),
                 "--accel", self.accel, "--reload", self.reload, "--unload-pause", str(self.unload_pause_ms)]
        argv += guest_flags(self.rcu_expedited, self.contention, self.cold_boot, self.guest_packages)
        return " ".join(shlex.quote(a) for a in argv)


@dataclass(frozen=True)
class ResolvedTarget:
    """A target for one kernel: the module to unload and what its guest needs."""

    module: str
    kmods: tuple[str, ...] = ()  # the kernel's own modules in the guest (the target's too, if in-tree)
    extra: tuple[Path, ...] = ()  # built .ko files (installed under extra/)
    setup: tuple[str, ...] = ()
    params: str = ""
    control: bool = False
    ko_in_guest: str = ""  # for --reload finit


def _module_name(path: Path) -> str:
    return path.name.split(".ko")[0].replace("-", "_")


def resolve(spec: TargetRaceSpec, kfiles: kernels.KernelFiles) -> ResolvedTarget:
    """Which module the race unloads on this kernel; a module the kernel does
    not have, or has built in, is refused in one line."""
    from ..guest.image import module_state

    row = spec.row
    extra: tuple[Path, ...] = ()
    if row is not None and row.source is not None:
        extra = modbuild.build_dir(kfiles, data_dir("kmods") / row.source).ko_files
        module, kmods = row.module, row.kmods
    elif row is not None:
        module, kmods = row.module, (*row.kmods, row.module)
    elif spec.target.endswith(".ko"):
        from ..guest.modcheck import check_module

        check_module(Path(spec.target), kfiles.release)
        extra, module, kmods = (Path(spec.target),), _module_name(Path(spec.target)), ()
    elif "/" in spec.target:
        built = modbuild.build_dir(kfiles, Path(spec.target))
        extra, module, kmods = built.ko_files, _module_name(built.ko_files[0]), ()
    else:
        module, kmods = spec.target.replace("-", "_"), (spec.target.replace("-", "_"),)
    if not extra:
        state = module_state(kfiles, module)
        if state == "builtin":
            raise HarnessError(f"target {module} is built into kernel {kfiles.name} ({kfiles.release}): "
                               "it can never be unloaded")
        if state is None:
            raise HarnessError(f"kernel {kfiles.name} ({kfiles.release}) has no module {module!r}")
    ko = next((f"/lib/modules/{kfiles.release}/extra/{p.name}" for p in extra if _module_name(p) == module), "")
    return ResolvedTarget(module, tuple(kmods), tuple(extra), row.setup if row else (),
                          row.params if row else "", bool(row and row.control), ko)


def mount_dir(index: int) -> str:
    return f"{MOUNT_ROOT}{index}"


def roles_for(spec: TargetRaceSpec, target: ResolvedTarget) -> list[RoleSpec]:
    """The unloader, then `callers` callers per operation, at one barrier."""
    ops = spec.op_rows
    parties = 1 + len(ops) * spec.callers
    common: dict[str, Any] = dict(duration_ms=int(spec.duration_s * 1000), seed=spec.seed, barrier=BARRIER,
                                  parties=parties, progress=True)
    finit = spec.reload == "finit"
    unloader = RoleSpec(Role.UNLOADER, name=target.module, load=spec.reload, ko=target.ko_in_guest if finit else None,
                        params=target.params or None, pause_us=spec.unload_pause_ms * 1000, **common)
    callers = []
    for i, op in enumerate(op for op in ops for _ in range(spec.callers)):
        extra = {"dir": mount_dir(i)} if isinstance(op, MountOp) else {}
        callers.append(op.role_spec(name=target.module, **common, **extra))
    return [unloader, *callers]


def prepare_guest(vm: RaceGuest, spec: TargetRaceSpec, target: ResolvedTarget) -> None:
    """The setup, the target loaded, proof that it can be unloaded, and the
    callers' paths there: each failure one line naming what failed."""
    ops = spec.op_rows
    mounts = [mount_dir(i) for i in range(len(ops) * spec.callers)]
    if target.params:
        vm.ssh.upload(f"options {target.module} {target.params}\n".encode(), MODPROBE_CONF)
    deps = [k for k in target.kmods if k != target.module]
    steps = ([f"mkdir -p {' '.join(mounts)}"] if mounts else []) + (
        [f"/sbin/modprobe -a {' '.join(deps)}"] if deps else []) + list(target.setup) + [
        f"/sbin/modprobe {target.module}"]
    for line in steps:
        res = vm.ssh.run(line, timeout=120)
        if not res.ok:
            raise HarnessError(f"target {spec.target}: `{line}` failed in the guest: "
                               f"{(res.stderr or res.stdout).strip().splitlines()[-1:] or res.exit_status}")
    res = vm.ssh.run(f"/sbin/rmmod {target.module} && /sbin/modprobe {target.module}", timeout=120)
    if not res.ok:
        holders = vm.ssh.run(f"ls /sys/module/{target.module}/holders 2>/dev/null; "
                             f"grep '^{target.module} ' /proc/modules", timeout=30).stdout.split()
        raise HarnessError(f"target {target.module} cannot be unloaded here ({(res.stderr or '').strip()}); "
                           f"/proc/modules: {' '.join(holders) or '-'}")
    for op in ops:
        path = getattr(op, "path", None) or (op.source if isinstance(op, MountOp) and op.source != "none" else None)
        if path and not vm.ssh.run(f"test -e {shlex.quote(path)}", timeout=30).ok:
            raise HarnessError(f"--op {op.text}: {path} does not exist in the guest with {target.module} loaded")


class TargetStages(Protocol):
    """Kernel, target and guests for `race_target`; `PipelineTargetStages` is the real one."""

    release: str
    describe: str
    lockdep: bool
    kasan: bool

    def resolve(self) -> ResolvedTarget: ...
    def boot(self, target: ResolvedTarget) -> RaceGuest: ...


class PipelineTargetStages(KernelStage):
    """kernel -> target -> image -> VM."""

    def __init__(self, spec: TargetRaceSpec) -> None:
        super().__init__(spec.kernel, spec.guest_packages)
        self.spec = spec

    def resolve(self) -> ResolvedTarget:
        return resolve(self.spec, self.kfiles)

    def boot(self, target: ResolvedTarget) -> RaceGuest:
        from ..guest.image import build_image
        from ..guest.vm import Vm, VmConfig

        img = build_image(self.kfiles, target.extra, (), target.kmods, self.spec.guest_packages)
        vm = Vm(img, VmConfig(accel=self.spec.accel, rcu_expedited=self.spec.rcu_expedited,
                              cold_boot=self.spec.cold_boot), name=f"target-{target.module}")
        try:
            return vm.boot()
        except BaseException:
            vm.kill()
            raise


def run_target(vm: RaceGuest, spec: TargetRaceSpec, target: ResolvedTarget, lockdep: bool = False,
               kasan: bool = False) -> RunResult:
    """One target race in a prepared guest; the guest may die doing it."""
    outcome, splats, guest = observe_roles(vm, roles_for(spec, target), spec.duration_s, spec.contention,
                                           f"{spec.target}/{spec.label}", lockdep)
    info = TargetInfo(target.module, tuple(dict.fromkeys(op.call_op for op in spec.op_rows)), target.control)
    run = summarise_run(spec.target, spec.label, outcome.results, splats, outcome.end, outcome.detail,
                        spec.repro(), outcome.seconds, lockdep=lockdep, kasan=kasan, guest=guest, target=info)
    run.console_log = str(vm.log_path)
    run.guest_start = getattr(vm, "start", None)
    return run


def race_target(spec: TargetRaceSpec, keep: bool = False,
                stages: TargetStages | None = None) -> tuple[RaceReport, RaceGuest | None]:
    """One guest, one target race; with `keep` the guest is returned still running."""
    stages = stages or PipelineTargetStages(spec)
    target = stages.resolve()
    report = RaceReport(kernel=stages.release, kernel_spec=spec.kernel, kernel_describe=stages.describe, accel="", seed=spec.seed,
                        duration_s=spec.duration_s, rcu_expedited=spec.rcu_expedited, knobs=Knobs(),
                        reload=spec.reload, contention=spec.contention, lockdep=stages.lockdep, kasan=stages.kasan)
    vm = stages.boot(target)
    try:
        report.accel = vm.accel
        prepare_guest(vm, spec, target)
        run = run_target(vm, spec, target, stages.lockdep, stages.kasan)
        report.runs.append(run)
        progress(f"race {spec.target}/{spec.label}: {run.verdict.value}")
    except BaseException:
        vm.kill()
        raise
    if keep and vm.alive():
        return report, vm
    vm.kill()
    return report, None
