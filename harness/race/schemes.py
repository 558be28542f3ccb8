"""The unload-protection schemes and the race workloads: one row each.

A new scheme variant is one `Scheme` row here plus its template folder under
kmods/ (when it needs a bus of its own); nothing else decides by its name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import HarnessError
from .racer import Role


class Gate(enum.Enum):
    """Where a scheme's delete_module gate releases the bus rwsems."""

    NONE = "none"  # no gate: refcount and unsafe
    IN_EXIT = "in-exit"  # the provider's exit releases them, as the seed proposes
    AFTER_DELETE = "after-delete"  # only once delete_module has returned


class LockOrder(enum.Enum):
    """The order in which the gate takes a module's bus rwsems."""

    SORTED = "sorted"  # by address (rwsems_add_sorted), as the seed proposes
    # As the provider registered: two providers registered on two buses in
    # opposite orders make two gates lock ABBA, what sorting exists to prevent.
    REGISTRATION = "registration"


class Reach(enum.Enum):
    """How /dev/P_ctl's lookup-call reaches the provider it looked up."""

    CALL = "call"  # through ops->call(): sleeps inside the provider's text
    # Reads the provider's kmalloc'd state through the driver's pointer, across
    # a sleep in the core's own text: after an unload that is a read of freed
    # memory and nothing else, which only KASAN's shadow can see.
    STATE = "state"


@dataclass(frozen=True)
class Scheme:
    name: str
    prefix: str  # module and device names: P_core, P_prov0, /dev/P_ctl, Pfs
    template: str  # folder under kmods/ with the core's bus.c.j2
    gate: Gate
    # The negative control: takes no reference at all.  A race that calls
    # through the ops pointer must crash it, or the run showed nothing.
    negative_control: bool = False
    lock_order: LockOrder = LockOrder.SORTED  # only means something with a gate
    # In `race`'s default scheme list: a variant that behaves like another one
    # in the default workloads only costs time there.
    race_by_default: bool = True
    reach: Reach = Reach.CALL
    summary: str = ""

    @property
    def uses_rwsem(self) -> bool:
        return self.gate is not Gate.NONE


SCHEME_ROWS: tuple[Scheme, ...] = (
    Scheme(
        "refcount", "rc", "refcount", Gate.NONE, summary="try_module_get before the call, module_put after (mainline)"
    ),
    Scheme(
        "rwsem",
        "rw",
        "rwsem",
        Gate.IN_EXIT,
        summary="bus rwsems write-locked by delete_module, released in the provider's exit",
    ),
    Scheme(
        "rwsem-deferred",
        "rwd",
        "rwsem",
        Gate.AFTER_DELETE,
        summary="as rwsem, released only after delete_module returned",
    ),
    Scheme(
        "unsafe",
        "un",
        "unsafe",
        Gate.NONE,
        negative_control=True,
        summary="no reference at all: must crash when a call meets an unload",
    ),
    Scheme(
        "rwsem-unsorted",
        "rwu",
        "rwsem",
        Gate.IN_EXIT,
        lock_order=LockOrder.REGISTRATION,
        race_by_default=False,
        summary="as rwsem, but the gate locks the buses in registration order: ABBA across two buses",
    ),
    # Needs a kernel with KASAN, and a call_delay_us long enough to straddle
    # the unload (the README's command uses 200000).
    Scheme(
        "unsafe-uaf",
        "uf",
        "unsafe",
        Gate.NONE,
        negative_control=True,
        reach=Reach.STATE,
        race_by_default=False,
        summary="no reference; reads the provider's freed state: KASAN must report a use-after-free",
    ),
)
SCHEMES: dict[str, Scheme] = {s.name: s for s in SCHEME_ROWS}
DEFAULT_SCHEMES: tuple[str, ...] = tuple(s.name for s in SCHEME_ROWS if s.race_by_default)

CALLER_ROLES: tuple[Role, ...] = tuple(r for r in Role if r.caller)


def bus_order(provider: int, buses: int) -> list[int]:
    """The order in which provider i registers on the buses: (0, 1) if i is
    even, (1, 0) if odd."""
    order = list(range(buses))
    return order if provider % 2 == 0 else order[::-1]


@dataclass(frozen=True)
class Caller:
    """One caller role of a workload: the provider it gets, on which bus
    (None: the role's default, bus 0)."""

    role: Role  # a name is turned into its Role
    provider: int = 0
    bus: int | None = None

    def __post_init__(self) -> None:
        role = self.role if isinstance(self.role, Role) else next((r for r in Role if r.value == self.role), None)
        if role is None or not role.caller:
            raise HarnessError(f"caller role {str(self.role)!r}; valid: {', '.join(CALLER_ROLES)}")
        object.__setattr__(self, "role", role)
        if self.bus is not None and not role.takes_bus:
            raise HarnessError(f"{role.value} goes through get_fs_type, which knows no bus")


@dataclass(frozen=True)
class Workload:
    name: str
    callers: tuple[Caller, ...]  # racer roles raced against the unloaders
    # Whether a caller runs provider code through the ops pointer while
    # holding its "reference": the only way the negative control can crash.
    calls_through_ops: bool
    summary: str = ""
    buses: int = 1  # the module set is built with this many buses
    unloaded: tuple[int, ...] = (0,)  # providers that get an unloader each
    hung_task_timeout_s: int = 0  # the guest's hung-task timeout; 0 keeps the kernel's

    def __post_init__(self) -> None:
        if any(c.bus is not None and not 0 <= c.bus < self.buses for c in self.callers):
            raise HarnessError(f"workload {self.name}: a caller's bus is not one of its {self.buses}")

    @property
    def providers(self) -> int:
        """How many providers the module set needs (P_prov0 .. P_prov<n-1>)."""
        return 1 + max((*self.unloaded, *(c.provider for c in self.callers)))

    @property
    def opposite_orders(self) -> bool:
        """Two of the unloaded providers registered on the buses in opposite orders."""
        orders = {tuple(bus_order(i, self.buses)) for i in self.unloaded}
        return len(orders) > 1


WORKLOAD_ROWS: tuple[Workload, ...] = (
    Workload("lookup", (Caller(Role.LOOKER),), True, "lookup-call on /dev/P_ctl: get, call through ops, put"),
    Workload(
        "mount",
        (Caller(Role.MOUNTER),),
        False,
        "mount -t Pfs -o backend=P_prov0: the get held for the superblock's life, ops never called",
    ),
    Workload(
        "fsmount",
        (Caller(Role.FSMOUNTER),),
        False,
        "mount -t P_prov0fs: the kernel's get_fs_type, try_module_get, request_module",
    ),
    Workload("all", (Caller(Role.LOOKER), Caller(Role.MOUNTER), Caller(Role.FSMOUNTER)), True, "the three together"),
    # Claim 5's race: a deadlock must show within the run, hence the 5 s.
    Workload(
        "twobus",
        (Caller(Role.LOOKER, provider=0, bus=1), Caller(Role.LOOKER, provider=1, bus=0)),
        True,
        "two buses; P_prov0 (buses 0,1) and P_prov1 (1,0) each unloaded and reloaded, "
        "lookup-call of each on its second bus",
        buses=2,
        unloaded=(0, 1),
        hung_task_timeout_s=5,
    ),
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


def bus_lock_class(prefix: str, bus: int) -> str:
    """The lockdep name of a bus rwsem, as kmods/common/bus_list.c.j2 gives it."""
    return f"{prefix}_bus{bus}_rwsem"


def lock_order_control(scheme: Scheme, workload: Workload) -> bool:
    """Whether this run takes bus rwsems ABBA: a kernel with lockdep must
    report it; without lockdep it may deadlock, or the race may miss it."""
    return scheme.uses_rwsem and scheme.lock_order is LockOrder.REGISTRATION and workload.opposite_orders
