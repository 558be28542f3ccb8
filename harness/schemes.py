"""The unload-protection schemes and the race workloads: one row each.

A new scheme variant is one `Scheme` row here plus its template folder under
kmods/ (when it needs a bus of its own); nothing else decides by its name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import HarnessError


class Gate(enum.Enum):
    """Where a scheme's delete_module gate releases the bus rwsems."""

    NONE = "none"  # no gate: refcount and unsafe
    IN_EXIT = "in-exit"  # the provider's exit releases them, as the seed proposes
    AFTER_DELETE = "after-delete"  # only once delete_module has returned


@dataclass(frozen=True)
class Scheme:
    name: str
    prefix: str  # module and device names: P_core, P_prov0, /dev/P_ctl, Pfs
    template: str  # folder under kmods/ with the core's bus.c.j2
    gate: Gate
    # The negative control: takes no reference at all.  A race that calls
    # through the ops pointer must crash it, or the run showed nothing.
    negative_control: bool = False
    summary: str = ""

    @property
    def uses_rwsem(self) -> bool:
        return self.gate is not Gate.NONE


SCHEME_ROWS: tuple[Scheme, ...] = (
    Scheme("refcount", "rc", "refcount", Gate.NONE,
           summary="try_module_get before the call, module_put after (mainline)"),
    Scheme("rwsem", "rw", "rwsem", Gate.IN_EXIT,
           summary="bus rwsems write-locked by delete_module, released in the provider's exit"),
    Scheme("rwsem-deferred", "rwd", "rwsem", Gate.AFTER_DELETE,
           summary="as rwsem, released only after delete_module returned"),
    Scheme("unsafe", "un", "unsafe", Gate.NONE, negative_control=True,
           summary="no reference at all: must crash when a call meets an unload"),
)
SCHEMES: dict[str, Scheme] = {s.name: s for s in SCHEME_ROWS}


@dataclass(frozen=True)
class Workload:
    name: str
    callers: tuple[str, ...]  # racer roles raced against the unloader
    # Whether a caller runs provider code through the ops pointer while
    # holding its "reference": the only way the negative control can crash.
    calls_through_ops: bool
    summary: str = ""


WORKLOAD_ROWS: tuple[Workload, ...] = (
    Workload("lookup", ("looker",), True, "lookup-call on /dev/P_ctl: get, call through ops, put"),
    Workload("mount", ("mounter",), False,
             "mount -t Pfs -o backend=P_prov0: the get held for the superblock's life, ops never called"),
    Workload("fsmount", ("fsmounter",), False,
             "mount -t P_prov0fs: the kernel's get_fs_type, try_module_get, request_module"),
    Workload("all", ("looker", "mounter", "fsmounter"), True, "the three together"),
)
WORKLOADS: dict[str, Workload] = {w.name: w for w in WORKLOAD_ROWS}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise HarnessError(f"unknown scheme {name!r}; valid: {', '.join(SCHEMES)}") from None


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise HarnessError(f"unknown workload {name!r}; valid: {', '.join(WORKLOADS)}") from None


def control_must_fire(scheme: Scheme, workload: Workload) -> bool:
    """Whether this run is a negative control that must crash the guest."""
    return scheme.negative_control and workload.calls_through_ops
