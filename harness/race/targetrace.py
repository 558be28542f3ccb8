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

import functools
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import kernels
from ..errors import HarnessError
from ..kernels import modbuild
from ..paths import data_dir
from .engine import BARRIER, GuestPayload, OpenGroup, RaceGuest, RaceStages, RunGroup, RunPlan
from .kbuild import Knobs
from .ops import MountOp
from .outcomes import TargetInfo
from .racer import Role, RoleSpec
from .spec import RaceSpec

MOUNT_ROOT = "/mnt/target"
MODPROBE_CONF = "/etc/modprobe.d/harness-target.conf"


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


def resolve(spec: RaceSpec, kfiles: kernels.KernelFiles) -> ResolvedTarget:
    """Which module the race unloads on this kernel; a module the kernel does
    not have, or has built in, is refused in one line."""
    from ..guest.modtree import module_name, module_state

    row, name = spec.row, spec.target or ""
    extra: tuple[Path, ...] = ()
    if row is not None and row.source is not None:
        extra = modbuild.build_dir(kfiles, data_dir("kmods") / row.source).ko_files
        module, kmods = row.module, row.kmods
    elif row is not None:
        module, kmods = row.module, (*row.kmods, row.module)
    elif name.endswith(".ko"):
        from ..guest.modcheck import check_module

        check_module(Path(name), kfiles.release)
        extra, module, kmods = (Path(name),), module_name(Path(name)), ()
    elif "/" in name:
        built = modbuild.build_dir(kfiles, Path(name))
        extra, module, kmods = built.ko_files, module_name(built.ko_files[0]), ()
    else:
        module, kmods = name.replace("-", "_"), (name.replace("-", "_"),)
    if not extra:
        state = module_state(kfiles, module)
        if state == "builtin":
            raise HarnessError(
                f"target {module} is built into kernel {kfiles.name} ({kfiles.release}): it can never be unloaded"
            )
        if state is None:
            raise HarnessError(f"kernel {kfiles.name} ({kfiles.release}) has no module {module!r}")
    ko = next((f"/lib/modules/{kfiles.release}/extra/{p.name}" for p in extra if module_name(p) == module), "")
    return ResolvedTarget(
        module,
        tuple(kmods),
        tuple(extra),
        row.setup if row else (),
        row.params if row else "",
        bool(row and row.control),
        ko,
    )


def mount_dir(index: int) -> str:
    return f"{MOUNT_ROOT}{index}"


def roles_for(spec: RaceSpec, target: ResolvedTarget) -> list[RoleSpec]:
    """The unloader, then `callers` callers per operation and hold, at one barrier."""
    rows = spec.caller_rows
    parties = 1 + len(rows)
    common: dict[str, Any] = dict(
        duration_ms=int(spec.duration_s * 1000), seed=spec.seed, barrier=BARRIER, parties=parties, progress=True
    )
    finit = spec.reload == "finit"
    unloader = RoleSpec(
        Role.UNLOADER,
        name=target.module,
        load=spec.reload,
        ko=target.ko_in_guest if finit else None,
        params=target.params or None,
        pause_us=spec.unload_pause_ms * 1000,
        **common,
    )
    callers = []
    for i, (op, hold_ms) in enumerate(rows):
        extra = {"dir": mount_dir(i)} if isinstance(op, MountOp) else {}
        callers.append(op.role_spec(name=target.module, hold_ms=hold_ms, **common, **extra))
    return [unloader, *callers]


def prepare_guest(vm: RaceGuest, spec: RaceSpec, target: ResolvedTarget) -> None:
    """The setup, the target loaded, proof that it can be unloaded, and the
    callers' paths there: each failure one line naming what failed."""
    ops = spec.op_rows
    mounts = [mount_dir(i) for i in range(len(spec.caller_rows))]
    if target.params:
        vm.ssh.upload(f"options {target.module} {target.params}\n".encode(), MODPROBE_CONF)
    deps = [k for k in target.kmods if k != target.module]
    steps = (
        ([f"mkdir -p {' '.join(mounts)}"] if mounts else [])
        + ([f"/sbin/modprobe -a {' '.join(deps)}"] if deps else [])
        + list(target.setup)
        + [f"/sbin/modprobe {target.module}"]
    )
    for line in steps:
        res = vm.ssh.run(line, timeout=120)
        if not res.ok:
            raise HarnessError(
                f"target {spec.target}: `{line}` failed in the guest: "
                f"{(res.stderr or res.stdout).strip().splitlines()[-1:] or res.exit_status}"
            )
    res = vm.ssh.run(f"/sbin/rmmod {target.module} && /sbin/modprobe {target.module}", timeout=120)
    if not res.ok:
        holders = vm.ssh.run(
            f"ls /sys/module/{target.module}/holders 2>/dev/null; grep '^{target.module} ' /proc/modules", timeout=30
        ).stdout.split()
        raise HarnessError(
            f"target {target.module} cannot be unloaded here ({(res.stderr or '').strip()}); "
            f"/proc/modules: {' '.join(holders) or '-'}"
        )
    for op in ops:
        path = getattr(op, "path", None) or (op.source if isinstance(op, MountOp) and op.source != "none" else None)
        if path and not vm.ssh.run(f"test -e {shlex.quote(path)}", timeout=30).ok:
            raise HarnessError(f"--op {op.text}: {path} does not exist in the guest with {target.module} loaded")


def target_info(spec: RaceSpec, target: ResolvedTarget) -> TargetInfo:
    return TargetInfo(target.module, tuple(dict.fromkeys(op.call_op for op in spec.op_rows)), target.control)


@dataclass(frozen=True)
class TargetRace:
    """One module raced: one group, one guest, one run."""

    spec: RaceSpec

    @property
    def knobs(self) -> Knobs:
        return Knobs()  # a real module has no knobs of the harness's

    def groups(self, stages: RaceStages) -> Sequence[RunGroup]:
        return [RunGroup(functools.partial(self._open, stages))]

    def _open(self, stages: RaceStages) -> OpenGroup:
        spec = self.spec
        target = resolve(spec, stages.kernel_files())
        plan = RunPlan(spec.target or "", spec.label, tuple(roles_for(spec, target)), target_info(spec, target))
        return OpenGroup(
            f"target-{target.module}",
            GuestPayload(target.extra, target.kmods),
            [plan],
            functools.partial(prepare_guest, spec=spec, target=target),
        )
