"""One race's settings: the one record every kind of race fills in.

The kernel arrives resolved (a kernel row: the front end parsed `--kernel`
once) and is never looked up again by name.  What differs between the
harness's own schemes and a target module is a small strategy per `kind`
(kinds.KINDS: schemerace.SchemeRace, targetrace.TargetRace): which
modules go into the guest, its setup, the roles, and what a control is.
`repro()` turns a run back into the command line that reruns it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from .. import kernels
from ..errors import HarnessError
from ..guest.packages import parse_names as parse_package_names
from ..kernels import modbuild
from . import targets
from .kbuild import Knobs
from .ops import Op
from .ops import parse as parse_op
from .schemes import DEFAULT_SCHEMES, get_scheme, get_workload

# exit_delay_ms widens the "being removed" window; call_delay_us makes a caller
# sleep inside the provider, which is what the unsafe scheme cannot survive.
DEFAULT_KNOBS = Knobs({"call_delay_us": 1000, "exit_delay_ms": 200})
DEFAULT_WORKLOADS = ("lookup", "mount")
MAX_CONTENTION = 16
MAX_CALLERS = 16
# How the unloader reloads by default: the schemes' own .ko by finit_module,
# a real module as the kernel would (modprobe, with its dependencies).
DEFAULT_RELOAD = {"scheme": "finit", "target": "modprobe"}


def guest_flags(rcu_expedited: bool, contention: int, cold_boot: bool, guest_packages: tuple[str, ...]) -> list[str]:
    """The guest's and host's settings of a race as `repro` writes them (schemes and targets alike)."""
    argv = ["--rcu-expedited"] if rcu_expedited else []
    argv += ["--contention", str(contention)] if contention else []
    argv += ["--cold-boot"] if cold_boot else []
    return argv + (["--guest-packages", ",".join(guest_packages)] if guest_packages else [])


def _dups(kind: str, names: tuple[str, ...]) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise HarnessError(f"{kind} {', '.join(dup)} given twice; name each once")


KernelArg = Union[str, "kernels.KernelRow"]


@dataclass(frozen=True)
class RaceSpec:
    """Everything that defines a race.  With `target` set it races that module
    against `ops` x `callers`; else the harness's `schemes` x `workloads`."""

    kernel: KernelArg = kernels.DEFAULT_KERNEL  # a row (a name is resolved once, here)
    # the harness's own schemes
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    workloads: tuple[str, ...] = DEFAULT_WORKLOADS
    knobs: Knobs = DEFAULT_KNOBS  # pairs or a mapping are validated into Knobs
    providers: int = 2
    module_src: tuple[str, ...] = ()  # the user's kbuild folders, built and put in every guest
    # a target module
    target: str | None = None  # a ready-made row, a module name, a .ko or a module folder
    ops: tuple[str, ...] = ()  # caller operations (ops.py text); none: the row's own
    callers: int = 1  # callers per operation (and per hold: ops.Op.holds)
    hold: bool = True  # each op without its own hold= gets a held caller beside the quick one
    # every race
    duration_s: float = 15.0
    seed: int = 1
    accel: str = "auto"
    rcu_expedited: bool = False
    reload: str = ""  # finit_module or modprobe; "": the kind's default (DEFAULT_RELOAD)
    unload_pause_ms: int = 100  # the reloaded module stays live this long
    contention: int = 0  # host CPU hogs spinning while the roles run
    cold_boot: bool = False  # boot every guest; never restore a snapshot
    guest_packages: tuple[str, ...] = ()  # Debian packages in every guest (sorted names)
    # The target's row: ready-made or the project's (found once from `target`),
    # or derived by the front end from the module itself (`discover.derive_row`).
    row: targets.TargetRow | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.kernel, str):
            object.__setattr__(self, "kernel", kernels.get_spec(self.kernel))
        if not isinstance(self.knobs, Knobs):
            object.__setattr__(self, "knobs", Knobs(self.knobs))
        object.__setattr__(self, "guest_packages", parse_package_names(self.guest_packages))
        if not self.reload:
            object.__setattr__(self, "reload", DEFAULT_RELOAD[self.kind])
        if self.reload not in ("finit", "modprobe"):
            raise HarnessError("--reload is finit or modprobe")
        if self.target is not None:
            if self.row is None:
                object.__setattr__(self, "row", targets.find(self.target))
            self._check_target()
        else:
            self._check_schemes()
        if not 0 < self.duration_s <= 3600:
            raise HarnessError(f"--duration must be in (0, 3600] seconds, got {self.duration_s:g}")
        if not 0 <= self.unload_pause_ms <= 60000:
            raise HarnessError(f"--unload-pause must be 0..60000 ms, got {self.unload_pause_ms}")
        if not 0 <= self.contention <= MAX_CONTENTION:
            raise HarnessError(f"--contention must be 0..{MAX_CONTENTION} host CPU hogs, got {self.contention}")

    def _check_schemes(self) -> None:
        if not self.schemes or not self.workloads:
            raise HarnessError("at least one scheme and one workload are needed")
        _dups("scheme", self.schemes)
        _dups("workload", self.workloads)
        for s in self.schemes:
            get_scheme(s)
        rows = [get_workload(w) for w in self.workloads]
        if len({w.buses for w in rows}) > 1:
            raise HarnessError(
                "workloads "
                + ", ".join(f"{w.name} ({w.buses} bus{'es' * (w.buses > 1)})" for w in rows)
                + " need different module builds; race them separately"
            )
        need = max(w.providers for w in rows)
        if self.providers < need:
            raise HarnessError(f"--workload {','.join(self.workloads)} needs --providers {need} or more")
        if not 1 <= self.providers <= 16:
            raise HarnessError(f"--providers must be 1..16, got {self.providers}")
        for src in self.module_src:
            modbuild.source_files(Path(src))

    def _check_target(self) -> None:
        if not self.target:
            raise HarnessError("--target is empty")
        if not self.ops and self.row is None:
            raise HarnessError(
                f"--target {self.target} is no ready-made target: give its callers with --op "
                f"(ready-made: {', '.join(targets.names())})"
            )
        self.op_rows  # every --op parses, or one line says which does not
        if self.row is None and ("/" in self.target or self.target.endswith(".ko")):
            path = Path(self.target)
            if self.target.endswith(".ko") and not path.is_file():
                raise HarnessError(f"--target {self.target}: no such .ko file")
            if not self.target.endswith(".ko"):
                modbuild.source_files(path)
        if not 1 <= self.callers <= MAX_CALLERS:
            raise HarnessError(f"--callers must be 1..{MAX_CALLERS}, got {self.callers}")

    # ------------------------------------------------------------ what kind of race

    @property
    def kind(self) -> str:
        return "scheme" if self.target is None else "target"

    @property
    def kernel_row(self) -> "kernels.KernelRow":
        assert not isinstance(self.kernel, str)  # __post_init__ resolved it
        return self.kernel

    @property
    def kernel_name(self) -> str:
        return self.kernel_row.name

    # ------------------------------------------------------------ schemes

    @property
    def buses(self) -> int:
        """The bus count every scheme's modules are built with (the workloads agree on it)."""
        return get_workload(self.workloads[0]).buses

    @property
    def hung_task_timeout_s(self) -> int:
        """The shortest hung-task timeout a workload asks for; 0 keeps the kernel's."""
        if self.target is not None:
            return 0
        return min((t for w in self.workloads if (t := get_workload(w).hung_task_timeout_s)), default=0)

    # ------------------------------------------------------------ targets

    @property
    def op_rows(self) -> tuple[Op, ...]:
        texts = self.ops or (self.row.ops if self.row else ())
        return tuple(parse_op(t) for t in texts)

    @property
    def caller_rows(self) -> tuple[tuple[Op, int], ...]:
        """Each caller role's op and hold in ms (0: quick), in start order:
        per op its quick callers, then its held ones."""
        return tuple((op, ms) for op in self.op_rows for ms in op.holds(self.hold) for _ in range(self.callers))

    @property
    def label(self) -> str:
        """A target run's workload column: its operations."""
        return "+".join(op.kind for op in self.op_rows)

    # ------------------------------------------------------------ the command that reruns it

    def repro(self, scheme: str | None = None, workload: str | None = None) -> str:
        """The command line of this race, or of one scheme x workload of it."""
        argv = ["python", "-m", "harness", "race", "--kernel", self.kernel_name]
        if self.target is not None:
            argv += ["--target", self.target]
            argv += [a for op in self.ops for a in ("--op", op)]
            argv += ["--callers", str(self.callers)] + ([] if self.hold else ["--no-hold"])
        else:
            argv += ["--scheme", scheme or ",".join(self.schemes), "--workload", workload or ",".join(self.workloads)]
        argv += ["--duration", f"{self.duration_s:g}", "--seed", str(self.seed), "--accel", self.accel]
        argv += ["--providers", str(self.providers)] if self.target is None else []
        argv += ["--reload", self.reload, "--unload-pause", str(self.unload_pause_ms)]
        argv += [a for knob in self.knobs.args() for a in ("--knob", knob)] if self.target is None else []
        argv += guest_flags(self.rcu_expedited, self.contention, self.cold_boot, self.guest_packages)
        argv += [a for src in self.module_src for a in ("--module-src", src)]
        return " ".join(shlex.quote(a) for a in argv)
