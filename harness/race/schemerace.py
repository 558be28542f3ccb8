"""The seed's schemes as a kind of race: per scheme the harness's own
modules (kmods/ templates) built for the kernel, per workload an unloader of
each unloaded provider and the workload's callers (schemes.py rows)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

from .engine import BARRIER, GuestPayload, OpenGroup, RaceGuest, RaceStages, RunGroup, RunPlan, run_plan
from .kbuild import BuiltModules, Knobs
from .outcomes import RunResult
from .racer import Role, RoleSpec
from .schemes import Caller, get_workload
from .spec import RaceSpec


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
        return RoleSpec(
            which,
            name=target,
            duration_ms=int(spec.duration_s * 1000),
            seed=spec.seed,
            barrier=BARRIER,
            parties=parties,
            progress=True,
            **kw,
        )

    def caller(c: Caller) -> RoleSpec:
        target = names[c.provider]
        if c.role is Role.LOOKER:
            return role(c.role, target, ctl=mods.spec.ctl_device, bus=c.bus)
        if c.role is Role.MOUNTER:
            data = None if c.bus is None else f"backend={target},bus={c.bus}"
            return role(c.role, target, fstype=mods.spec.fs_name, dir=mount_dir(c), data=data)
        return role(c.role, target, fstype=f"{target}fs", dir=mount_dir(c))

    unloaders = [
        role(
            Role.UNLOADER,
            names[i],
            ko=f"/lib/modules/{release}/extra/{names[i]}.ko",
            params=" ".join(spec.knobs.args()),
            load=spec.reload,
            pause_us=spec.unload_pause_ms * 1000,
        )
        for i in row.unloaded
    ]
    return [*unloaders, *(caller(c) for c in row.callers)]


def prepare_guest(vm: RaceGuest, mods: BuiltModules, spec: RaceSpec) -> None:
    """Knobs for request_module loads, the core loaded, the workloads' providers loaded."""
    options = "".join(
        f"options {p} " + " ".join(spec.knobs.args()) + "\n" for p in mods.spec.provider_names if spec.knobs
    )
    vm.ssh.upload(options.encode(), "/etc/modprobe.d/harness.conf")
    rows = [get_workload(w) for w in spec.workloads]
    dirs = sorted({"/mnt/bus", "/mnt/own"} | {mount_dir(c) for w in rows for c in w.callers if c.role.mounts})
    used = sorted({0} | {i for w in rows for i in w.unloaded})
    vm.ssh.run(
        f"mkdir -p {' '.join(dirs)} && /sbin/modprobe {mods.spec.core} && "
        + " && ".join(f"/sbin/modprobe {mods.spec.provider_names[i]}" for i in used),
        check=True,
    )


def run_one(
    vm: RaceGuest,
    mods: BuiltModules,
    spec: RaceSpec,
    scheme: str,
    workload: str,
    release: str,
    lockdep: bool = False,
    kasan: bool = False,
) -> RunResult:
    """One workload in a booted guest (the claims' tests drive runs this way)."""
    return run_plan(vm, spec, plan_of(scheme, workload, mods, spec, release), lockdep, kasan)


def plan_of(scheme: str, workload: str, mods: BuiltModules, spec: RaceSpec, release: str) -> RunPlan:
    return RunPlan(scheme, workload, tuple(roles_for(workload, mods, spec, release)))


@dataclass(frozen=True)
class SchemeRace:
    """The harness's own schemes: a group per scheme (its modules built for
    the kernel, one guest), a run per workload."""

    spec: RaceSpec

    @property
    def knobs(self) -> Knobs:
        return self.spec.knobs

    def groups(self, stages: RaceStages) -> Sequence[RunGroup]:
        return [RunGroup(functools.partial(self._open, stages, scheme)) for scheme in self.spec.schemes]

    def _open(self, stages: RaceStages, scheme: str) -> OpenGroup:
        mods = stages.modules(scheme)
        return OpenGroup(
            f"race-{scheme}",
            GuestPayload(tuple(mods.ko_files)),
            [plan_of(scheme, w, mods, self.spec, stages.release) for w in self.spec.workloads],
            functools.partial(prepare_guest, mods=mods, spec=self.spec),
        )
